// Discovers plugin and sink shared objects and checks their descriptors.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "netwatcher/descriptor.hpp"
#include "netwatcher/plugin.hpp"
#include "netwatcher/sink.hpp"

namespace boost::dll {
class shared_library;
}

namespace netwatcher::host {

struct Component {
  std::string path;
  nw_plugin_kind kind = NW_PLUGIN_KIND_PROBE;
  std::string name;
  std::string version;
  std::string description;
  std::string compiler_id;
  unsigned abi_major = 0;
  unsigned abi_minor = 0;
  std::shared_ptr<boost::dll::shared_library> library;
  nw_plugin_factory factory = nullptr;
};

struct RefusedFile {
  std::string path;
  std::string name;  // from the descriptor when it could be read, else empty
  std::string reason;
};

struct Discovery {
  std::vector<Component> probes;
  std::vector<Component> sinks;
  std::vector<RefusedFile> refused;

  const Component* probe(const std::string& name) const;
  const Component* sink(const std::string& name) const;
  const RefusedFile* refused_named(const std::string& name) const;
};

// Why a descriptor is unacceptable to this host, or nullopt.
std::optional<std::string> check_descriptor(const nw_plugin_descriptor& descriptor);

// Loads one file; on failure fills `refused` and returns nullopt. Never throws.
std::optional<Component> load_component(const std::string& path, RefusedFile& refused);

// Scans each directory (not recursively) for *.so files, in name order. Later
// files with an already-seen name (of the same kind) are refused as duplicates.
Discovery discover(const std::vector<std::string>& directories);

// Runs the factory. The returned object keeps the shared object mapped for as
// long as it lives. On failure returns null and sets `error`.
std::shared_ptr<ProbePlugin> create_probe(const Component& component, std::string& error);
std::shared_ptr<Sink> create_sink(const Component& component, std::string& error);

}  // namespace netwatcher::host
