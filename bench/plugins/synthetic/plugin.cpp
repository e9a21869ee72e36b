// synthetic: a bench-only event source. The load generator
// (bench/pipeline_capacity.sh) calls getppid() in a paced loop; every call
// becomes one record and one `synthetic_packet` event, decoded like a real
// per-packet event (addresses formatted, comm copied).
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include "netwatcher/format.hpp"
#include "netwatcher/plugin.hpp"
#include "synthetic.h"
#include "synthetic.skel.h"

namespace {

using namespace netwatcher;

enum Field : std::size_t {
  kFamily,
  kSourceAddr,
  kSourcePort,
  kDestAddr,
  kDestPort,
  kLength,
  kLatency,
  kSequence,
  kPid,
  kComm,
  kFieldCount
};

class SyntheticPlugin {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    auto label = [](const char* name, FieldType type, const char* help) {
      return FieldSchema{name, type, "", help, FieldRole::label};
    };
    d.events = {
        {"synthetic_packet",
         "one getppid() of the load generator, shaped like a packet event",
         {
             label("family", FieldType::text, "ipv4"),
             label("saddr", FieldType::text, "source address"),
             label("sport", FieldType::u64, "source port"),
             label("daddr", FieldType::text, "destination address"),
             label("dport", FieldType::u64, "destination port"),
             {"length", FieldType::u64, "bytes", "made-up size", FieldRole::value},
             {"latency_us", FieldType::f64, "microseconds", "made-up latency", FieldRole::value},
             {"sequence", FieldType::u64, "", "per-CPU record number", FieldRole::value},
             label("pid", FieldType::u64, "generator process"),
             label("comm", FieldType::text, "generator command"),
         }}};
    d.config = {{"burst", ConfigType::integer, std::int64_t{1},
                 "records per getppid() of the generator", 1, 64}};
    d.hooks = {{"getppid", "syscalls:sys_enter_getppid", {"synthetic_tick"}, true}};
    return d;
  }

  Status configure(const ConfigValues& config, const GlobalFilter& filter) {
    burst_ = static_cast<std::uint32_t>(config.get_int("burst"));
    if (!filter.pid)
      return Status::failure("the synthetic plugin needs the generator's pid (-p/--pid)");
    pid_ = filter.pid;
    return Status::success();
  }

  Status open(bpf_object** object) {
    skeleton_.reset(synthetic_bpf__open());
    if (!skeleton_)
      return Status::failure("cannot open BPF object: " + std::string(std::strerror(errno)));
    skeleton_->rodata->nw_filter_cfg.pid = pid_;
    skeleton_->rodata->synthetic_burst = burst_;
    *object = skeleton_->obj;
    return Status::success();
  }

  Status load() {
    if (int err = synthetic_bpf__load(skeleton_.get()); err)
      return Status::failure("cannot load BPF object: " + std::string(std::strerror(-err)));
    return Status::success();
  }

  Status start(PluginHost&) { return Status::success(); }

  Status decode(std::span<const std::byte> bytes, EventEmitter& out) {
    synthetic_record rec;
    if (bytes.size() < sizeof rec)
      return Status::failure("synthetic record of " + std::to_string(bytes.size()) + " bytes");
    std::memcpy(&rec, bytes.data(), sizeof rec);
    std::vector<Value> v = out.make_values(kFieldCount);
    if (v.size() != kFieldCount) return Status::failure("out of memory");
    v[kFamily] = std::string(family_name(rec.tuple.family));
    v[kSourceAddr] = format_address(rec.tuple.family, rec.tuple.saddr);
    v[kSourcePort] = std::uint64_t{rec.tuple.sport};
    v[kDestAddr] = format_address(rec.tuple.family, rec.tuple.daddr);
    v[kDestPort] = std::uint64_t{rec.tuple.dport};
    v[kLength] = std::uint64_t{rec.length};
    v[kLatency] = static_cast<double>(rec.latency_ns) / 1e3;
    v[kSequence] = rec.sequence;
    v[kPid] = std::uint64_t{rec.pid};
    v[kComm] = std::string(rec.comm, strnlen(rec.comm, sizeof rec.comm));
    out.emit(0, rec.hdr.timestamp_ns, std::move(v));
    return Status::success();
  }

  Status collect(EventEmitter&) { return Status::success(); }
  void stop() { skeleton_.reset(); }

 private:
  struct SkeletonDeleter {
    void operator()(synthetic_bpf* skeleton) const { synthetic_bpf__destroy(skeleton); }
  };
  std::unique_ptr<synthetic_bpf, SkeletonDeleter> skeleton_;
  std::uint32_t pid_ = 0, burst_ = 1;
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(SyntheticPlugin, "synthetic", "1.0.0",
                        "bench only: one event per getppid() of the load generator")
