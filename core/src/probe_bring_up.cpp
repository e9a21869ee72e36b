// ProbeRuntime, part one: from a description to attached programs. Hook
// planning (config, overrides, kernel support), loading the object with a
// retry per refused candidate, and the links the host and the plugin make.
// The event pipeline is in probe_runtime.cpp.
#include "probe_runtime.hpp"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <set>

#include <spdlog/spdlog.h>

#include "attachments.hpp"
#include "bpf_uapi.hpp"
#include "bus.hpp"
#include "description_check.hpp"
#include "libbpf_log.hpp"
#include "live_programs.hpp"
#include "netwatcher/bpf/types.h"
#include "netwatcher/kernel.hpp"

namespace netwatcher::host {

namespace {

constexpr std::size_t kNoCandidate = static_cast<std::size_t>(-1);

// "user:sock_diag (no backlog)" -> "user:sock_diag": what a candidate is called
// in --check and in hook_override.
std::string candidate_name(const std::string& program) {
  return program.substr(0, program.find(' '));
}
constexpr int kMaxBringUpAttempts = 16;
// The bytes of the global `variable` in the object's .rodata (before load),
// found through the section's BTF, or nullptr when there is no such variable
// of `size` bytes.
char* rodata_variable(bpf_object* object, const char* variable, std::size_t size) {
  const btf* types = bpf_object__btf(object);
  if (!types) return nullptr;
  int section_id = btf__find_by_name_kind(types, ".rodata", BTF_KIND_DATASEC);
  if (section_id < 0) return nullptr;
  const btf_type* section = btf__type_by_id(types, static_cast<__u32>(section_id));
  bpf_map* map = nullptr;
  bpf_object__for_each_map(map, object) {
    std::string_view map_name = bpf_map__name(map);
    if (!bpf_map__is_internal(map) || !map_name.ends_with(".rodata")) continue;
    std::size_t map_size = 0;
    auto* data = static_cast<char*>(const_cast<void*>(bpf_map__initial_value(map, &map_size)));
    const btf_var_secinfo* vars = btf_var_secinfos(section);
    for (unsigned i = 0; data && i < btf_vlen(section); ++i) {
      const btf_type* var = btf__type_by_id(types, vars[i].type);
      if (std::strcmp(btf__name_by_offset(types, var->name_off), variable) != 0) continue;
      if (vars[i].size != size || vars[i].offset + size > map_size) return nullptr;
      return data + vars[i].offset;
    }
  }
  return nullptr;
}

// Sets the 8-byte global `variable` in the object's .rodata (before load).
// False when there is no such variable.
bool set_rodata_u64(bpf_object* object, const char* variable, std::uint64_t value) {
  char* data = rodata_variable(object, variable, sizeof value);
  if (data) std::memcpy(data, &value, sizeof value);
  return data != nullptr;
}

}  // namespace

std::optional<std::string> check_bpf_contract(bpf_object* object) {
  std::uint32_t contract = 0;
  const char* data = rodata_variable(object, "nw_bpf_contract", sizeof contract);
  if (!data)
    return std::string(
               "BPF object has no nw_bpf_contract: built without netwatcher/bpf/common.bpf.h, or "
               "against one before contract 1; host speaks contract ") +
           std::to_string(NW_BPF_CONTRACT_VERSION);
  std::memcpy(&contract, data, sizeof contract);
  if (contract != NW_BPF_CONTRACT_VERSION)
    return "BPF object built against contract " + std::to_string(contract) + ", host speaks " +
           std::to_string(NW_BPF_CONTRACT_VERSION);
  return std::nullopt;
}

std::string ProbeRuntime::disabled_by_config(const HookSpec& hook) const {
  if (hook.enabled_by.empty()) return {};
  if (!config_.has(hook.enabled_by) || !std::holds_alternative<bool>(config_.at(hook.enabled_by)))
    return "enabled_by names '" + hook.enabled_by + "', which is not a boolean config key";
  if (config_.get_bool(hook.enabled_by)) return {};
  return "disabled by config (" + hook.enabled_by + " = false)";
}

Status ProbeRuntime::load_object(std::uint64_t ring_buffer_bytes, std::uint64_t wakeup_bytes,
                                 const std::vector<std::size_t>& choice, std::string& failed_hook) {
  auto& hooks = description_.hooks;
  bpf_program* program = nullptr;
  bpf_object__for_each_program(program, object_) {
    bool chosen = false;
    for (std::size_t h = 0; h < hooks.size() && !chosen; ++h)
      chosen =
          choice[h] != kNoCandidate && hooks[h].programs[choice[h]] == bpf_program__name(program);
    bpf_program__set_autoload(program, chosen);
  }
  // libbpf 1.1 knows no SEC("netfilter"): give such programs their type here.
  bpf_object__for_each_program(program, object_) {
    if (attach_kind(program, false) == AttachKind::netfilter) prepare_netfilter_program(program);
  }
  bpf_map* events = bpf_object__find_map_by_name(object_, "nw_events");
  if (!events)
    return Status::failure(
        "BPF object has no 'nw_events' ring buffer (include netwatcher/bpf/common.bpf.h)");
  if (int err = bpf_map__set_max_entries(events, static_cast<__u32>(ring_buffer_bytes)); err)
    return Status::failure("cannot size ring buffer: " + std::string(std::strerror(-err)));
  // Objects built before the SDK had it simply wake the host for every record.
  if (!set_rodata_u64(object_, "nw_wakeup_bytes", wakeup_bytes))
    spdlog::debug("plugin '{}': no nw_wakeup_bytes in its BPF object", name());

  take_failed_program();
  if (Status s = plugin_->load(); !s) {
    std::string program_name = take_failed_program();
    for (std::size_t h = 0; h < hooks.size(); ++h) {
      if (choice[h] != kNoCandidate && hooks[h].programs[choice[h]] == program_name) {
        reports_[h].candidates[choice[h]].status = "load failed: " + s.message();
        failed_hook = hooks[h].name;
      }
    }
    return s;
  }
  return Status::success();
}

Status ProbeRuntime::try_bring_up(const KernelFeatures& features, std::uint64_t ring_buffer_bytes,
                                  std::uint64_t wakeup_bytes, std::vector<std::size_t>& choice,
                                  std::string& failed_hook) {
  failed_hook.clear();
  object_ = nullptr;
  if (Status s = plugin_->open(&object_); !s) return s;
  auto& hooks = description_.hooks;
  if (!object_) {
    // A protocol plugin: every hook is served by the L7 capture or by the
    // plugin itself, and nothing is loaded.
    for (const auto& hook : hooks)
      for (const auto& program : hook.programs)
        if (!is_l7_candidate(program) && !is_user_space_candidate(program))
          return Status::failure("open() returned no BPF object, yet hook '" + hook.name +
                                 "' names BPF program '" + program + "'");
  } else if (auto problem = check_bpf_contract(object_)) {
    return Status::failure(*problem);
  }

  std::vector<bool> wanted_hook(hooks.size(), false);
  for (std::size_t h = 0; h < hooks.size(); ++h) {
    auto& report = reports_[h];
    std::string off = disabled_by_config(hooks[h]);
    bool config_off = !off.empty();
    if (config_off && off.rfind("disabled", 0) != 0) return Status::failure(off);
    for (std::size_t c = choice[h]; !config_off && c < hooks[h].programs.size(); ++c) {
      auto& candidate = report.candidates[c];
      if (!candidate.status.empty()) continue;  // already known not to work
      if (is_l7_candidate(hooks[h].programs[c])) {
        candidate.section = "shared L7 capture";
        choice[h] = c;
        wanted_hook[h] = true;
        break;
      }
      if (is_user_space_candidate(hooks[h].programs[c])) {
        candidate.section = "user space";
        choice[h] = c;
        wanted_hook[h] = true;
        break;
      }
      bpf_program* program =
          bpf_object__find_program_by_name(object_, hooks[h].programs[c].c_str());
      if (!program) {
        candidate.status = "no such program in the BPF object";
        continue;
      }
      candidate.section = bpf_program__section_name(program);
      if (auto why = features.program_unavailable(program)) {
        candidate.status = *why;
        continue;
      }
      choice[h] = c;
      wanted_hook[h] = true;
      break;
    }
    report.off_by_config = config_off;
    if (config_off) {
      for (auto& candidate : report.candidates) candidate.status = off;
      choice[h] = kNoCandidate;
      continue;
    }
    if (!wanted_hook[h]) {
      choice[h] = kNoCandidate;
      if (hooks[h].required) {
        std::string reasons;
        for (const auto& candidate : report.candidates)
          reasons += "; " + candidate.program + ": " + candidate.status;
        return Status::failure("required hook '" + hooks[h].name + "' cannot attach" + reasons);
      }
    }
  }

  // A protocol plugin has no object: only its hooks' reports below.
  if (object_) {
    if (Status s = load_object(ring_buffer_bytes, wakeup_bytes, choice, failed_hook); !s) return s;
  }

  for (std::size_t h = 0; h < hooks.size(); ++h) {
    if (choice[h] == kNoCandidate) continue;
    const std::string& name = hooks[h].programs[choice[h]];
    if (is_l7_candidate(name)) {
      reports_[h].attached_program = candidate_name(name);
      reports_[h].candidates[choice[h]].status =
          std::string("served by the shared L7 capture (plugin ") + kL7CapturePlugin + ")";
      continue;
    }
    if (is_user_space_candidate(name)) {
      // The plugin serves this hook itself, without a program of its own.
      std::string::size_type note = name.find(" (");
      reports_[h].attached_program = candidate_name(name);
      reports_[h].candidates[choice[h]].status =
          "serves the hook from user space" +
          (note == std::string::npos ? std::string()
                                     : "; " + name.substr(note + 2, name.size() - note - 3));
      continue;
    }
    bpf_program* prog = bpf_object__find_program_by_name(object_, name.c_str());
    const bool iterates_map = !hooks[h].iter_map.empty();
    const AttachKind kind = attach_kind(prog, iterates_map);
    if (kind == AttachKind::netfilter) {
      // One program serves many (family, hook, priority, netns) points, which
      // depend on the plugin's config: it links them in start().
      reports_[h].attached_program = name;
      reports_[h].candidates[choice[h]].status = "loaded; no netfilter link yet";
      continue;
    }
    if (kind == AttachKind::uprobe) {
      // Per file and function, which the plugin finds: it links them itself.
      reports_[h].attached_program = name;
      reports_[h].candidates[choice[h]].status = "loaded; no uprobe yet";
      continue;
    }
    const bpf_map* iterated = nullptr;
    if (iterates_map) {
      iterated = bpf_object__find_map_by_name(object_, hooks[h].iter_map.c_str());
      if (!iterated) {
        reports_[h].candidates[choice[h]].status = "no map '" + hooks[h].iter_map + "' to iterate";
        failed_hook = hooks[h].name;
        return Status::failure("hook '" + hooks[h].name +
                               "': " + reports_[h].candidates[choice[h]].status);
      }
    }
    Result<ProgramLink> link = attach(prog, kind, iterated, features.cgroup2_path());
    if (!link) {
      reports_[h].candidates[choice[h]].status = link.status().message();
      failed_hook = hooks[h].name;
      return Status::failure("hook '" + hooks[h].name +
                             "': " + reports_[h].candidates[choice[h]].status);
    }
    links_[name] = link.take();
    reports_[h].attached_program = name;
    reports_[h].candidates[choice[h]].status = "attached";
  }
  return Status::success();
}

const std::string* ProbeRuntime::override_for(const std::string& hook) const {
  for (const std::string& key : {name() + "." + hook, name() + ".*", std::string("*")})
    if (auto it = hook_overrides_.find(key); it != hook_overrides_.end()) return &it->second;
  return nullptr;
}

Status ProbeRuntime::apply_hook_overrides() {
  const auto& hooks = description_.hooks;
  const std::string prefix = name() + ".";
  for (const auto& [key, value] : hook_overrides_) {
    if (key.rfind(prefix, 0) != 0 || key == prefix + "*") continue;
    std::string hook = key.substr(prefix.size());
    if (std::none_of(hooks.begin(), hooks.end(), [&](const HookSpec& h) { return h.name == hook; }))
      return Status::failure("netwatcher.hook_override: plugin '" + name() + "' has no hook '" +
                             hook + "'");
  }
  for (std::size_t h = 0; h < hooks.size(); ++h) {
    const std::string* forced = override_for(hooks[h].name);
    if (!forced) continue;
    auto& candidates = reports_[h].candidates;
    const std::string skipped = "skipped: netwatcher.hook_override = \"" + *forced + "\"";
    if (*forced == "fallback") {
      // A hook with one candidate keeps it: there is nothing to fall back to.
      if (candidates.size() > 1) candidates.front().status = skipped;
      continue;
    }
    if (*forced == "none") {
      if (hooks[h].required)
        return Status::failure("netwatcher.hook_override: hook '" + hooks[h].name +
                               "' is required and cannot be \"none\"");
      for (auto& candidate : candidates) candidate.status = skipped;
      continue;
    }
    auto chosen = std::find_if(candidates.begin(), candidates.end(),
                               [&](const CandidateReport& c) { return c.program == *forced; });
    if (chosen == candidates.end()) {
      std::string names;
      for (const auto& candidate : candidates)
        names += (names.empty() ? "" : ", ") + candidate.program;
      return Status::failure("netwatcher.hook_override: hook '" + hooks[h].name +
                             "' has no candidate '" + *forced + "' (candidates: " + names + ")");
    }
    for (auto& candidate : candidates)
      if (&candidate != &*chosen) candidate.status = skipped;
  }
  return Status::success();
}

Status ProbeRuntime::bring_up(const KernelFeatures& features, std::uint64_t ring_buffer_bytes,
                              std::uint64_t wakeup_bytes) {
  auto& hooks = description_.hooks;
  reports_.clear();
  for (const auto& hook : hooks) {
    HookReport report{hook.name, hook.required, false, "", {}};
    for (const auto& program : hook.programs)
      report.candidates.push_back({candidate_name(program), "", ""});
    reports_.push_back(std::move(report));
  }
  std::vector<std::size_t> choice(hooks.size(), 0);
  if (Status s = apply_hook_overrides(); !s) return s;
  Status result;
  hold_libbpf_warnings(true);
  for (int attempt = 0; attempt < kMaxBringUpAttempts; ++attempt) {
    std::string failed_hook;
    result = try_bring_up(features, ring_buffer_bytes, wakeup_bytes, choice, failed_hook);
    if (result) break;
    destroy_links();
    for (auto& report : reports_) report.attached_program.clear();
    // Only a failure pinned on one hook's candidate can be retried with the next one.
    if (failed_hook.empty()) break;
    spdlog::debug("plugin '{}': hook '{}' failed, trying the next candidate", name(), failed_hook);
  }
  hold_libbpf_warnings(false);
  std::vector<std::string> libbpf_warnings = take_held_libbpf_warnings();
  if (!result)
    for (const auto& line : libbpf_warnings) spdlog::warn("libbpf: {}", line);
  for (auto& report : reports_)
    for (auto& candidate : report.candidates)
      if (candidate.status.empty()) candidate.status = "available";
  if (!result) {
    plugin_->stop();
    object_ = nullptr;
    return result;
  }
  if (object_) {
    if (bpf_map* lost = bpf_object__find_map_by_name(object_, "nw_lost"))
      lost_map_fd_ = bpf_map__fd(lost);
    if (bpf_map* suppressed = bpf_object__find_map_by_name(object_, "nw_suppressed"))
      suppressed_map_fd_ = bpf_map__fd(suppressed);
    tables_.set_object(object_);
  }
  if (Status s = plugin_->start(*this); !s) {
    refresh_ = nullptr;
    tables_.clear();
    destroy_links();
    plugin_->stop();
    object_ = nullptr;
    return s;
  }
  started_ = true;
  // A refused candidate with a successor is the fallback working as designed.
  for (const auto& report : reports_) {
    if (report.attached_program.empty()) continue;
    for (const auto& candidate : report.candidates) {
      if (candidate.program == report.attached_program) break;
      if (candidate.status.rfind("load failed", 0) != 0 &&
          candidate.status.rfind("attach failed", 0) != 0)
        continue;
      std::string verdict = verifier_reason(libbpf_warnings, candidate.program);
      spdlog::info("plugin '{}': hook '{}': the kernel refused {} ({}{}); {} serves instead",
                   name(), report.hook, candidate.program, candidate.status,
                   verdict.empty() ? "" : ": " + verdict, report.attached_program);
    }
  }
  for (const auto& report : reports_) {
    if (!report.attached_program.empty())
      spdlog::info("plugin '{}': hook '{}' attached via {}", name(), report.hook,
                   report.attached_program);
    else if (report.off_by_config)
      spdlog::debug("plugin '{}': hook '{}' off: {}", name(), report.hook,
                    report.candidates.front().status);
    else
      spdlog::warn("plugin '{}': optional hook '{}' not attached", name(), report.hook);
  }
  return Status::success();
}

int ProbeRuntime::link_fd(std::string_view program) const noexcept {
  auto it = links_.find(program);
  return it == links_.end() ? -1 : it->second.fd();
}

Status ProbeRuntime::attach_netfilter(std::string_view program,
                                      const NetfilterPoint& point) noexcept {
  try {
    bpf_program* prog =
        object_ ? bpf_object__find_program_by_name(object_, std::string(program).c_str()) : nullptr;
    if (!prog || bpf_program__fd(prog) < 0)
      return Status::failure("no loaded program '" + std::string(program) + "'");
    if (attach_kind(prog, false) != AttachKind::netfilter)
      return Status::failure("program '" + std::string(program) + "' is not SEC(\"netfilter\")");
    Result<NetfilterLinkFd> link = link_netfilter(prog, point);
    if (!link) return link.status();
    const std::uint64_t inode = link.value().netns_inode;
    netfilter_links_.push_back({std::string(program), std::move(link.value().fd), inode});
    made_netfilter_links_ = true;
    if (netfilter_netns_.emplace(inode, point.netns).second)
      spdlog::info("plugin '{}': netfilter links in network namespace {} ({})", name(), inode,
                   point.netns.empty() ? "netwatcher's own" : point.netns);
    describe_netfilter_links();
    return Status::success();
  } catch (const std::exception& e) {
    return Status::failure(e.what());
  }
}

Status ProbeRuntime::attach_uprobe(std::string_view program, std::string_view binary,
                                   std::string_view function) noexcept {
  try {
    bpf_program* prog =
        object_ ? bpf_object__find_program_by_name(object_, std::string(program).c_str()) : nullptr;
    if (!prog || bpf_program__fd(prog) < 0)
      return Status::failure("no loaded program '" + std::string(program) + "'");
    if (attach_kind(prog, false) != AttachKind::uprobe)
      return Status::failure("program '" + std::string(program) +
                             "' is not SEC(\"uprobe\") or SEC(\"uretprobe\")");
    Result<ProgramLink> link =
        host::attach_uprobe(prog, std::string(binary), std::string(function));
    if (!link) {
      spdlog::warn("plugin '{}': {}", name(), link.status().message());
      return link.status();
    }
    const bool new_file = std::none_of(uprobe_links_.begin(), uprobe_links_.end(),
                                       [&](const UprobeLink& l) { return l.binary == binary; });
    uprobe_links_.push_back({std::string(program), std::string(binary), link.take()});
    if (new_file) spdlog::info("plugin '{}': uprobes in {}", name(), binary);
    describe_uprobe_links();
    return Status::success();
  } catch (const std::exception& e) {
    return Status::failure(e.what());
  }
}

void ProbeRuntime::describe_uprobe_links() {
  for (auto& report : reports_) {
    for (auto& candidate : report.candidates) {
      std::size_t links = 0;
      std::set<std::string> files;
      for (const auto& link : uprobe_links_) {
        if (link.program != candidate.program) continue;
        ++links;
        files.insert(link.binary);
      }
      if (links == 0) continue;
      // Which files, for --check: the first few by name.
      std::string names;
      std::size_t named = 0;
      for (const std::string& file : files) {
        if (++named > 3) {
          names += ", ...";
          break;
        }
        names += (named == 1 ? ": " : ", ") + file;
      }
      candidate.status = "attached (" + std::to_string(links) + " uprobes in " +
                         std::to_string(files.size()) + " files" + names + ")";
    }
  }
}

std::size_t ProbeRuntime::release_netfilter(std::uint64_t netns_inode) noexcept {
  // Newest first: plugins link the end of a measurement before its start
  // (nf_last before nf_first), so no packet is stamped without its end.
  std::size_t released = 0;
  for (auto it = netfilter_links_.rbegin(); it != netfilter_links_.rend(); ++it) {
    if (it->netns != netns_inode) continue;
    it->fd.reset();
    ++released;
  }
  std::erase_if(netfilter_links_, [](const NetfilterLink& link) { return !link.fd.valid(); });
  auto it = netfilter_netns_.find(netns_inode);
  if (it == netfilter_netns_.end()) return released;
  try {
    spdlog::info("plugin '{}': released {} netfilter links in network namespace {} ({})", name(),
                 released, netns_inode, it->second.empty() ? "netwatcher's own" : it->second);
    netfilter_netns_.erase(it);
    describe_netfilter_links();
  } catch (...) {
    netfilter_netns_.erase(it);  // the log line or report is lost, not the release
  }
  return released;
}

std::optional<std::size_t> ProbeRuntime::netfilter_namespaces() const {
  if (!made_netfilter_links_) return std::nullopt;
  return netfilter_netns_.size();
}

void ProbeRuntime::describe_netfilter_links() {
  for (auto& report : reports_) {
    for (auto& candidate : report.candidates) {
      std::size_t links = 0;
      std::set<std::uint64_t> namespaces;
      for (const auto& link : netfilter_links_) {
        if (link.program != candidate.program) continue;
        ++links;
        namespaces.insert(link.netns);
      }
      // A program whose last namespace went away keeps saying so.
      if (links == 0 && candidate.status.rfind("attached (", 0) != 0) continue;
      candidate.status = "attached (" + std::to_string(links) + " netfilter links in " +
                         std::to_string(namespaces.size()) + " network namespaces)";
    }
  }
}

void ProbeRuntime::destroy_links() {
  links_.clear();
  uprobe_links_.clear();
  netfilter_links_.clear();
  netfilter_netns_.clear();
}

void ProbeRuntime::detach() {
  destroy_links();
}

}  // namespace netwatcher::host
