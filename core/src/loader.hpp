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
  std::string compiler;  // informational: the compiler family that built it, e.g. "gcc-12"
  std::string stdlib;    // compared: e.g. "libstdc++-12/cxx11-abi-1/c++202002"
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

// Why a descriptor is unacceptable to this host, or nullopt. `descriptor` is
// a full 3.0-sized struct (read_descriptor() zero-fills what an older minor
// lacks).
std::optional<std::string> check_descriptor(const nw_plugin_descriptor& descriptor);

// Reads the NETWATCHER_DESCRIPTOR_SECTION of the ELF file at `path` without
// loading it: no code of the file runs. On success fills `out` and returns
// nullopt; otherwise returns why the file cannot be a plugin of this host
// (not ELF, not 64-bit little-endian for this machine, no section, bad size or
// magic, unterminated string). Never throws.
std::optional<std::string> read_descriptor(const std::string& path, nw_plugin_descriptor& out);

// Loads one file: read_descriptor(), check_descriptor(), and only then
// dlopen() and the cross-check of the exported descriptor. On failure fills
// `refused` and returns nullopt. Never throws.
std::optional<Component> load_component(const std::string& path, RefusedFile& refused);

// Scans each directory (not recursively) for *.so files, in name order. Later
// files with an already-seen name (of the same kind) are refused as duplicates.
Discovery discover(const std::vector<std::string>& directories);

// Runs the factory. The returned object keeps the shared object mapped for as
// long as it lives. The failure names the file and, for a factory that
// refused, the plugin's reason.
Result<std::shared_ptr<ProbePlugin>> create_probe(const Component& component);
Result<std::shared_ptr<Sink>> create_sink(const Component& component);

}  // namespace netwatcher::host
