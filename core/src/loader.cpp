#include "loader.hpp"

#include <algorithm>
#include <filesystem>
#include <set>

#include <spdlog/spdlog.h>
#include <boost/dll/shared_library.hpp>

namespace netwatcher::host {

namespace {

std::string safe_string(const char* text) {
  return text ? std::string(text) : std::string();
}

template <class Interface>
std::shared_ptr<Interface> create(const Component& component, nw_plugin_kind kind,
                                  std::string& error) {
  if (component.kind != kind) {
    error = component.path + ": not a " + (kind == NW_PLUGIN_KIND_PROBE ? "probe" : "sink");
    return nullptr;
  }
  char buffer[512] = {};
  void* raw = component.factory(buffer, sizeof buffer);
  if (!raw) {
    error = component.path + ": factory of '" + component.name +
            "' failed: " + (buffer[0] ? buffer : "no reason given");
    return nullptr;
  }
  auto library = component.library;
  // Delete the object before the library that holds its code can be unmapped.
  return std::shared_ptr<Interface>(static_cast<Interface*>(raw),
                                    [library](Interface* object) { delete object; });
}

}  // namespace

const Component* Discovery::probe(const std::string& name) const {
  for (const auto& c : probes)
    if (c.name == name) return &c;
  return nullptr;
}

const Component* Discovery::sink(const std::string& name) const {
  for (const auto& c : sinks)
    if (c.name == name) return &c;
  return nullptr;
}

const RefusedFile* Discovery::refused_named(const std::string& name) const {
  for (const auto& r : refused)
    if (!r.name.empty() && r.name == name) return &r;
  return nullptr;
}

std::optional<std::string> check_descriptor(const nw_plugin_descriptor& d) {
  auto versions = [&] {
    return "plugin ABI " + std::to_string(d.abi_major) + "." + std::to_string(d.abi_minor) +
           ", host ABI " + std::to_string(NETWATCHER_ABI_MAJOR) + "." +
           std::to_string(NETWATCHER_ABI_MINOR);
  };
  if (d.struct_size < sizeof(nw_plugin_descriptor) && d.abi_major == NETWATCHER_ABI_MAJOR)
    return "descriptor is truncated (" + std::to_string(d.struct_size) + " bytes)";
  if (d.abi_major != NETWATCHER_ABI_MAJOR) return "ABI major version mismatch: " + versions();
  if (d.abi_minor > NETWATCHER_ABI_MINOR)
    return "built for a newer ABI minor version than this host: " + versions();
  if (d.kind != NW_PLUGIN_KIND_PROBE && d.kind != NW_PLUGIN_KIND_SINK)
    return "unknown plugin kind " + std::to_string(d.kind);
  if (!d.name || !*d.name) return "descriptor has no name";
  if (safe_string(d.compiler_id) != NETWATCHER_COMPILER_ID)
    return "built with compiler '" + safe_string(d.compiler_id) + "', host uses '" +
           NETWATCHER_COMPILER_ID + "'; the C++ interfaces are not compatible";
  return std::nullopt;
}

std::optional<Component> load_component(const std::string& path, RefusedFile& refused) {
  refused = RefusedFile{path, "", ""};
  auto library = std::make_shared<boost::dll::shared_library>();
  boost::dll::fs::error_code ec;
  // RTLD_LOCAL: two plugins may define the same internal symbols.
  library->load(path, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local, ec);
  if (ec) {
    refused.reason = "cannot load shared object: " + ec.message();
    return std::nullopt;
  }
  if (!library->has(NETWATCHER_DESCRIPTOR_SYMBOL)) {
    refused.reason = "not a netwatcher plugin: no '" NETWATCHER_DESCRIPTOR_SYMBOL "' symbol";
    return std::nullopt;
  }
  const auto& d = library->get_alias<const nw_plugin_descriptor>(NETWATCHER_DESCRIPTOR_SYMBOL);
  refused.name = safe_string(d.name);
  if (auto problem = check_descriptor(d)) {
    refused.reason = *problem;
    return std::nullopt;
  }
  if (!library->has(NETWATCHER_FACTORY_SYMBOL)) {
    refused.reason = "no '" NETWATCHER_FACTORY_SYMBOL "' symbol";
    return std::nullopt;
  }
  Component c;
  c.path = path;
  c.kind = static_cast<nw_plugin_kind>(d.kind);
  c.name = safe_string(d.name);
  c.version = safe_string(d.version);
  c.description = safe_string(d.description);
  c.compiler_id = safe_string(d.compiler_id);
  c.abi_major = d.abi_major;
  c.abi_minor = d.abi_minor;
  c.factory = &library->get_alias<void*(char*, std::size_t)>(NETWATCHER_FACTORY_SYMBOL);
  c.library = std::move(library);
  return c;
}

Discovery discover(const std::vector<std::string>& directories) {
  Discovery result;
  std::set<std::string> seen_files;
  for (const auto& dir : directories) {
    std::error_code ec;
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      if (entry.path().extension() == ".so" && entry.is_regular_file(ec))
        files.push_back(std::filesystem::weakly_canonical(entry.path(), ec));
    }
    if (ec) {
      spdlog::warn("plugin directory '{}': {}", dir, ec.message());
      continue;
    }
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      if (!seen_files.insert(file.string()).second) continue;
      RefusedFile refused;
      auto component = load_component(file.string(), refused);
      if (!component) {
        spdlog::error("refusing plugin '{}': {}", refused.path, refused.reason);
        result.refused.push_back(refused);
        continue;
      }
      auto& list = component->kind == NW_PLUGIN_KIND_PROBE ? result.probes : result.sinks;
      auto dup = std::find_if(list.begin(), list.end(),
                              [&](const Component& c) { return c.name == component->name; });
      if (dup != list.end()) {
        refused = {component->path, "", "duplicate of '" + component->name + "' in " + dup->path};
        spdlog::error("refusing plugin '{}': {}", refused.path, refused.reason);
        result.refused.push_back(refused);
        continue;
      }
      spdlog::debug("found {} '{}' {} in {}",
                    component->kind == NW_PLUGIN_KIND_PROBE ? "plugin" : "sink", component->name,
                    component->version, component->path);
      list.push_back(std::move(*component));
    }
  }
  return result;
}

std::shared_ptr<ProbePlugin> create_probe(const Component& component, std::string& error) {
  return create<ProbePlugin>(component, NW_PLUGIN_KIND_PROBE, error);
}

std::shared_ptr<Sink> create_sink(const Component& component, std::string& error) {
  return create<Sink>(component, NW_PLUGIN_KIND_SINK, error);
}

}  // namespace netwatcher::host
