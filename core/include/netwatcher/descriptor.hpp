// netwatcher SDK: the plain-C descriptor every plugin and sink carries.
//
// Read this before writing a loader or a plugin by hand; plugins normally get
// all of it from NETWATCHER_PROBE_PLUGIN (plugin.hpp) or NETWATCHER_SINK
// (sink.hpp).
//
// What the host does with a file, in order
// ----------------------------------------
//  1. Reads the ELF section headers of the file itself (64-bit little-endian
//     ELF of the host's machine only) and copies the section
//     NETWATCHER_DESCRIPTOR_SECTION out of the file. No code of the file runs:
//     it is not mapped for execution, not dlopen()ed.
//  2. Refuses the file, naming it and the reason, when the section is missing,
//     its size is not the descriptor's struct_size, the magic is wrong, or the
//     descriptor is unacceptable (ABI major, newer minor, standard library
//     identity: see version.hpp).
//  3. Only then dlopen()s the file (RTLD_NOW | RTLD_LOCAL). From here on code
//     of the plugin has run: the dynamic loader runs its static constructors
//     (and those of libraries it pulls in that were not loaded yet).
//  4. Looks up NETWATCHER_DESCRIPTOR_SYMBOL and refuses the file unless the
//     exported descriptor is byte for byte the one read from the section.
//  5. Looks up NETWATCHER_FACTORY_SYMBOL; calls it later (see nw_plugin_factory).
//
// The descriptor is pointer-free (fixed char arrays, no relocations), so the
// bytes in the file are the bytes in memory.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include <boost/dll/alias.hpp>

#include "netwatcher/status.hpp"
#include "netwatcher/version.hpp"

extern "C" {

// What the factory of a file creates: a netwatcher::ProbePlugin (plugin.hpp)
// or a netwatcher::Sink (sink.hpp). Any other value refuses the file.
enum nw_plugin_kind : std::uint32_t { NW_PLUGIN_KIND_PROBE = 1, NW_PLUGIN_KIND_SINK = 2 };

// The ELF section that holds the descriptor, and its magic (the first 8
// bytes of the section: these 6 characters, zero-padded). A file with no such
// section, or with more than one, is refused.
#define NETWATCHER_DESCRIPTOR_SECTION ".netwatcher_descriptor"
#define NETWATCHER_DESCRIPTOR_MAGIC "NWDESC"

// One per shared object, in NETWATCHER_DESCRIPTOR_SECTION and exported as
// NETWATCHER_DESCRIPTOR_SYMBOL (the same object).
//
// Owner and lifetime: static data of the plugin file; the host copies it out
// of the file, so nothing here is ever freed or written. Thread: none; it is
// data. Strings are NUL-terminated within their arrays (the macro refuses, at
// compile time, a literal that does not fit); the host refuses a descriptor
// whose string is not terminated.
//
// Layout is fixed within an ABI major. A later minor may append fields at the
// end only; struct_size then tells the host how much of the struct a plugin
// knows about, and the section is exactly struct_size bytes. The fields up to
// and including `name` keep their offsets in every later major too, so that a
// host can name the file of another major it refuses.
struct nw_plugin_descriptor {
  char magic[8];              // NETWATCHER_DESCRIPTOR_MAGIC, zero-padded
  std::uint32_t struct_size;  // sizeof(nw_plugin_descriptor) at build time
  std::uint16_t abi_major;    // NETWATCHER_ABI_MAJOR
  std::uint16_t abi_minor;    // NETWATCHER_ABI_MINOR
  std::uint32_t kind;         // nw_plugin_kind
  std::int32_t dual_abi;      // NETWATCHER_DUAL_ABI: compared
  std::uint32_t cplusplus;    // NETWATCHER_CPLUSPLUS: compared
  std::uint32_t reserved;     // zero
  char name[64];              // unique among components of the same kind; not empty
  char version[32];           // the plugin's own version
  char description[192];      // one line for --list-plugins / --help
  char stdlib[32];            // NETWATCHER_STDLIB: compared
  char compiler[32];          // NETWATCHER_COMPILER_FAMILY: informational
};

// Creates the plugin object (a netwatcher::ProbePlugin* or netwatcher::Sink*
// depending on the kind).
//
// Thread: the host's main thread, once per object it wants, after the
// descriptor was accepted. Ownership: the caller owns the returned object and
// deletes it through its virtual destructor before the file is unloaded.
// Error: returns nullptr and writes a NUL-terminated reason into `error` (at
// most `error_len` bytes); the host then refuses the plugin with that reason.
// Never throws.
typedef void* (*nw_plugin_factory)(char* error, std::size_t error_len);
}

static_assert(std::endian::native == std::endian::little,
              "the descriptor section is read as little-endian");
static_assert(sizeof(nw_plugin_descriptor) == 384, "nw_plugin_descriptor 3.0 layout changed");
static_assert(offsetof(nw_plugin_descriptor, name) == 32,
              "nw_plugin_descriptor 3.0 layout changed");

// Exported alias names (Boost.DLL aliases: a pointer to the object), looked up
// by the host with boost::dll after dlopen(). The descriptor symbol must point
// at the descriptor of the section (the host compares them byte for byte);
// the factory symbol at an nw_plugin_factory. Both are required.
#define NETWATCHER_DESCRIPTOR_SYMBOL "netwatcher_descriptor"
#define NETWATCHER_FACTORY_SYMBOL "netwatcher_factory"

namespace netwatcher::detail {

inline void copy_error(char* error, std::size_t error_len, const char* message) noexcept {
  if (!error || error_len == 0) return;
  std::size_t i = 0;
  for (; message[i] && i + 1 < error_len; ++i) error[i] = message[i];
  error[i] = '\0';
}

// Runs `fn` and converts anything it throws into a failed Status.
template <class Fn>
Status guard(const char* what, Fn&& fn) noexcept {
  try {
    return fn();
  } catch (const std::exception& e) {
    return Status::failure(std::string(what) + ": " + e.what());
  } catch (...) {
    return Status::failure(std::string(what) + ": unknown exception");
  }
}

template <class Interface, class Adapter>
void* create_guarded(char* error, std::size_t error_len) noexcept {
  try {
    return static_cast<Interface*>(new Adapter());
  } catch (const std::exception& e) {
    copy_error(error, error_len, e.what());
  } catch (...) {
    copy_error(error, error_len, "unknown exception in constructor");
  }
  return nullptr;
}

}  // namespace netwatcher::detail

// The descriptor of this translation unit's build, as an initializer (for the
// macro below and for test fixtures that make broken ones).
#define NETWATCHER_DESCRIPTOR_INIT_(kind, name, version, description)                            \
  {                                                                                              \
    NETWATCHER_DESCRIPTOR_MAGIC, sizeof(::nw_plugin_descriptor), NETWATCHER_ABI_MAJOR,           \
        NETWATCHER_ABI_MINOR, kind, NETWATCHER_DUAL_ABI, NETWATCHER_CPLUSPLUS, 0, name, version, \
        description, NETWATCHER_STDLIB, NETWATCHER_COMPILER_FAMILY                               \
  }

// Defines the descriptor (in its section) and the factory, and exports both.
// Used by the plugin.hpp and sink.hpp macros; not meant to be used directly.
// `name`, `version` and `description` must be string literals that fit their
// arrays (a longer one is a compile error).
#define NETWATCHER_EXPORT_COMPONENT_(kind, Interface, Adapter, name, version, description) \
  namespace {                                                                              \
  [[gnu::section(NETWATCHER_DESCRIPTOR_SECTION),                                           \
    gnu::used]] constexpr ::nw_plugin_descriptor netwatcher_descriptor_data_ =             \
      NETWATCHER_DESCRIPTOR_INIT_(kind, name, version, description);                       \
  void* netwatcher_factory_impl_(char* error, std::size_t error_len) noexcept {            \
    return ::netwatcher::detail::create_guarded<Interface, Adapter>(error, error_len);     \
  }                                                                                        \
  }                                                                                        \
  BOOST_DLL_ALIAS(netwatcher_descriptor_data_, netwatcher_descriptor)                      \
  BOOST_DLL_ALIAS(netwatcher_factory_impl_, netwatcher_factory)
