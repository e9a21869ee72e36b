// netwatcher SDK: owning a plugin's libbpf skeleton.
//
// bpftool generates `<name>.skel.h` with a struct `<name>_bpf` and the
// functions `<name>_bpf__open`, `__load` and `__destroy`. Skeleton<> owns one
// such object through ProbePlugin::open(), load() and stop():
//
//   netwatcher::Skeleton<nic_bpf> skeleton_{nic_bpf__open, nic_bpf__load, nic_bpf__destroy};
//
//   Status open(bpf_object** object) {
//     if (auto s = skeleton_.open(object, filter_); !s) return s;
//     tunable(skeleton_->rodata->nic_cfg).interfaces = ...;   // rodata, before load
//     return Status::success();
//   }
//   Status load() { return skeleton_.load(); }
//   void stop() { skeleton_.reset(); }
//
// Not thread-safe: the host calls open/load/stop from one thread, and the
// plugin reads maps through skeleton_->maps from its poller-thread calls.
#pragma once

#include <bpf/libbpf.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "netwatcher/config.hpp"
#include "netwatcher/kernel.hpp"
#include "netwatcher/status.hpp"

namespace netwatcher {

// A rodata tunable of an opened skeleton (`const volatile` in the BPF source)
// as a writable reference. Only between Skeleton::open() and load(): after
// load the kernel has frozen the map and its memory is read-only.
template <class T>
T& tunable(const volatile T& rodata_member) noexcept {
  return const_cast<T&>(rodata_member);
}

template <class Bpf>
class Skeleton {
 public:
  using OpenFn = Bpf* (*)();
  using LoadFn = int (*)(Bpf*);
  using DestroyFn = void (*)(Bpf*);

  Skeleton(OpenFn open, LoadFn load, DestroyFn destroy) noexcept
      : open_(open), load_(load), destroy_(destroy) {}
  Skeleton(const Skeleton&) = delete;
  Skeleton& operator=(const Skeleton&) = delete;
  ~Skeleton() { reset(); }

  // Destroys any earlier object (the host reopens after a failed load with
  // other candidates), opens a new one and hands its bpf_object to the host,
  // which keeps using it until the next open() or reset(). When the BPF
  // object has the SDK's filter (common.bpf.h's nw_filter_cfg), `filter` is
  // copied into it, and load() writes its address lists into the object's
  // tries.
  Status open(bpf_object** object, const GlobalFilter& filter = {}) {
    reset();
    bpf_ = open_();
    if (!bpf_)
      return Status::failure("cannot open BPF object: " + std::string(std::strerror(errno)));
    filter_ = filter;
    if constexpr (requires(Bpf * b) { b->rodata->nw_filter_cfg; })
      fill_kernel_filter(tunable(bpf_->rodata->nw_filter_cfg), filter);
    *object = bpf_->obj;
    return Status::success();
  }

  // Loads the opened object into the kernel; the verifier's reason is in the
  // host's log (libbpf prints it there).
  Status load() {
    if (!bpf_) return Status::failure("BPF object not opened");
    if (int err = load_(bpf_); err)
      return Status::failure("cannot load BPF object: " + std::string(std::strerror(-err)));
    if constexpr (requires(Bpf * b) { b->maps.nw_local_nets; })
      return fill_address_filter(bpf_map__fd(bpf_->maps.nw_local_nets),
                                 bpf_map__fd(bpf_->maps.nw_remote_nets), filter_);
    return Status::success();
  }

  // Destroys the object (links the plugin made itself, maps, programs).
  void reset() noexcept {
    if (bpf_) destroy_(bpf_);
    bpf_ = nullptr;
  }

  explicit operator bool() const noexcept { return bpf_ != nullptr; }
  Bpf* operator->() const noexcept { return bpf_; }
  Bpf& operator*() const noexcept { return *bpf_; }
  Bpf* get() const noexcept { return bpf_; }

 private:
  OpenFn open_;
  LoadFn load_;
  DestroyFn destroy_;
  Bpf* bpf_ = nullptr;
  GlobalFilter filter_;
};

}  // namespace netwatcher
