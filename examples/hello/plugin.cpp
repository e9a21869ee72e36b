// hello: the smallest probe plugin, one BPF program and no record header.
// Each snapshot interval it reports how many programs were executed so far.
#include <bpf/bpf.h>
#include <time.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

// The skeleton's rodata holds common.bpf.h's filter: its type comes first.
#include "netwatcher/bpf/types.h"

#include "hello.skel.h"
#include "netwatcher/plugin.hpp"

namespace {

using namespace netwatcher;

class HelloPlugin {
 public:
  PluginDescription describe() const {
    PluginDescription d;
    d.events = {
        {"hello_execs",
         "programs executed since the plugin started",
         {{"execs", FieldType::u64, "", "execve() calls that succeeded", FieldRole::value}}}};
    d.hooks = {{"exec", "sched:sched_process_exec", {"count_exec"}, true}};
    return d;
  }
  Status configure(const ConfigValues&, const GlobalFilter&) { return Status::success(); }
  Status open(bpf_object** object) {
    skeleton_.reset(hello_bpf__open());
    if (!skeleton_)
      return Status::failure("cannot open BPF object: " + std::string(strerror(errno)));
    *object = skeleton_->obj;
    return Status::success();
  }
  Status load() {
    if (int err = hello_bpf__load(skeleton_.get()); err)
      return Status::failure("cannot load BPF object: " + std::string(strerror(-err)));
    return Status::success();
  }
  Status start(PluginHost&) { return Status::success(); }
  Status decode(std::span<const std::byte>, EventEmitter&) {
    return Status::failure("hello emits no records");
  }
  Status collect(EventEmitter& out) {
    std::uint32_t key = 0;
    std::uint64_t execs = 0;
    if (bpf_map_lookup_elem(bpf_map__fd(skeleton_->maps.hello_execs), &key, &execs) != 0)
      return Status::failure("cannot read hello_execs: " + std::string(strerror(errno)));
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    const auto ns = static_cast<std::uint64_t>(now.tv_sec) * 1'000'000'000u +
                    static_cast<std::uint64_t>(now.tv_nsec);
    out.emit(0, ns, {Value{execs}});
    return Status::success();
  }
  void stop() { skeleton_.reset(); }

 private:
  struct Deleter {
    void operator()(hello_bpf* s) const { hello_bpf__destroy(s); }
  };
  std::unique_ptr<hello_bpf, Deleter> skeleton_;
};

}  // namespace

NETWATCHER_PROBE_PLUGIN(HelloPlugin, "hello", "1.0.0", "programs executed (an out-of-tree example)")
