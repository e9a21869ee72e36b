// netwatcher SDK: the plain-C descriptor every plugin and sink exports.
//
// The host reads the descriptor before it runs any code of the plugin, so its
// layout never changes within an ABI major; later minors may only append fields
// (struct_size tells the host how much of the struct the plugin knows about).
#pragma once

#include <cstddef>
#include <cstdint>

#include <boost/dll/alias.hpp>

#include "netwatcher/status.hpp"
#include "netwatcher/version.hpp"

extern "C" {

enum nw_plugin_kind : std::uint32_t { NW_PLUGIN_KIND_PROBE = 1, NW_PLUGIN_KIND_SINK = 2 };

struct nw_plugin_descriptor {
  std::uint32_t struct_size;  // sizeof(nw_plugin_descriptor) at build time
  std::uint16_t abi_major;
  std::uint16_t abi_minor;
  std::uint32_t kind;   // nw_plugin_kind
  const char* name;     // unique among plugins of the same kind
  const char* version;  // the plugin's own version
  const char* description;
  const char* compiler_id;  // NETWATCHER_COMPILER_ID
};

// Creates the plugin object (a netwatcher::ProbePlugin* or netwatcher::Sink*
// depending on the kind). Returns nullptr on failure and writes a
// NUL-terminated reason into `error` (at most `error_len` bytes). The caller
// owns the object and deletes it through its virtual destructor.
typedef void* (*nw_plugin_factory)(char* error, std::size_t error_len);
}

// Exported alias names, looked up by the host with boost::dll.
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

// Defines and exports the descriptor and factory. Used by the plugin.hpp and
// sink.hpp macros; not meant to be used directly.
#define NETWATCHER_EXPORT_COMPONENT_(kind, Interface, Adapter, name, version, description)    \
  namespace {                                                                                 \
  const ::nw_plugin_descriptor netwatcher_descriptor_data_ = {sizeof(::nw_plugin_descriptor), \
                                                              NETWATCHER_ABI_MAJOR,           \
                                                              NETWATCHER_ABI_MINOR,           \
                                                              kind,                           \
                                                              name,                           \
                                                              version,                        \
                                                              description,                    \
                                                              NETWATCHER_COMPILER_ID};        \
  void* netwatcher_factory_impl_(char* error, std::size_t error_len) noexcept {               \
    return ::netwatcher::detail::create_guarded<Interface, Adapter>(error, error_len);        \
  }                                                                                           \
  }                                                                                           \
  BOOST_DLL_ALIAS(netwatcher_descriptor_data_, netwatcher_descriptor)                         \
  BOOST_DLL_ALIAS(netwatcher_factory_impl_, netwatcher_factory)
