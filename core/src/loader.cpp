#include "loader.hpp"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include <spdlog/spdlog.h>
#include <boost/dll/shared_library.hpp>

namespace netwatcher::host {

namespace {

template <class Interface>
Result<std::shared_ptr<Interface>> create(const Component& component, nw_plugin_kind kind) {
  if (component.kind != kind)
    return Status::failure(component.path + ": not a " +
                           (kind == NW_PLUGIN_KIND_PROBE ? "probe" : "sink"));
  char buffer[512] = {};
  void* raw = component.factory(buffer, sizeof buffer);
  if (!raw)
    return Status::failure(component.path + ": factory of '" + component.name +
                           "' failed: " + (buffer[0] ? buffer : "no reason given"));
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

namespace {

// The string in a fixed array: up to the first NUL (read_descriptor() made
// sure there is one).
std::string field(const char* array, std::size_t size) {
  return std::string(array, strnlen(array, size));
}
#define NW_FIELD(d, member) field((d).member, sizeof((d).member))

std::string dual_abi_text(std::int32_t dual_abi) {
  if (dual_abi < 0) return "no dual ABI";
  return "_GLIBCXX_USE_CXX11_ABI=" + std::to_string(dual_abi);
}

// The identity that must match, as one line: "libstdc++-12/cxx11-abi-1/c++202002".
std::string compat_text(const std::string& stdlib, std::int32_t dual_abi, std::uint32_t cplusplus) {
  return stdlib + (dual_abi < 0 ? "" : "/cxx11-abi-" + std::to_string(dual_abi)) + "/c++" +
         std::to_string(cplusplus);
}

#if defined(__x86_64__)
constexpr unsigned kHostMachine = EM_X86_64;
#elif defined(__aarch64__)
constexpr unsigned kHostMachine = EM_AARCH64;
#else
constexpr unsigned kHostMachine = EM_NONE;  // not checked: dlopen() will say
#endif

// Sizes no real plugin comes near; they bound what a broken file makes us read.
constexpr std::uint64_t kMaxSections = 1u << 16;
constexpr std::uint64_t kMaxSectionNames = 16u << 20;
constexpr std::uint64_t kMaxDescriptor = 64u << 10;

class ElfFile {
 public:
  explicit ElfFile(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}
  ~ElfFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  ElfFile(const ElfFile&) = delete;
  ElfFile& operator=(const ElfFile&) = delete;

  int fd() const { return fd_; }
  // Reads exactly `size` bytes at `offset`; false when the file is shorter.
  bool read(std::uint64_t offset, void* buffer, std::uint64_t size) const {
    if (offset > size_ || size > size_ - offset) return false;
    auto* out = static_cast<char*>(buffer);
    while (size > 0) {
      ssize_t n = ::pread(fd_, out, size, static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      out += n;
      offset += static_cast<std::uint64_t>(n);
      size -= static_cast<std::uint64_t>(n);
    }
    return true;
  }
  std::uint64_t size() const { return size_; }
  std::optional<std::string> stat() {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return std::string("cannot stat: ") + std::strerror(errno);
    if (!S_ISREG(st.st_mode)) return std::string("not a regular file");
    size_ = static_cast<std::uint64_t>(st.st_size);
    return std::nullopt;
  }

 private:
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

}  // namespace

std::optional<std::string> read_descriptor(const std::string& path, nw_plugin_descriptor& out) {
  std::memset(&out, 0, sizeof out);
  ElfFile file(path);
  if (file.fd() < 0) return std::string("cannot open: ") + std::strerror(errno);
  if (auto problem = file.stat()) return problem;

  unsigned char ident[EI_NIDENT] = {};
  if (!file.read(0, ident, sizeof ident) || std::memcmp(ident, ELFMAG, SELFMAG) != 0)
    return std::string("not an ELF file");
  if (ident[EI_CLASS] != ELFCLASS64)
    return std::string("ELF class ") +
           (ident[EI_CLASS] == ELFCLASS32 ? "ELFCLASS32 (32-bit)"
                                          : std::to_string(ident[EI_CLASS]) + " (unknown)") +
           ": this host loads only 64-bit little-endian plugins";
  if (ident[EI_DATA] != ELFDATA2LSB)
    return std::string("ELF data encoding ") +
           (ident[EI_DATA] == ELFDATA2MSB ? "ELFDATA2MSB (big-endian)"
                                          : std::to_string(ident[EI_DATA]) + " (unknown)") +
           ": this host loads only 64-bit little-endian plugins";
  Elf64_Ehdr header{};
  if (!file.read(0, &header, sizeof header)) return std::string("truncated ELF header");
  if (header.e_type != ET_DYN)
    return "ELF type " + std::to_string(header.e_type) + " is not a shared object (ET_DYN)";
  if (kHostMachine != EM_NONE && header.e_machine != kHostMachine)
    return "built for ELF machine " + std::to_string(header.e_machine) + ", this host is " +
           std::to_string(kHostMachine);
  if (header.e_shoff == 0) return std::string("no ELF section headers");
  if (header.e_shentsize != sizeof(Elf64_Shdr))
    return "ELF section header size " + std::to_string(header.e_shentsize) + ", expected " +
           std::to_string(sizeof(Elf64_Shdr));

  // e_shnum and e_shstrndx overflow into section 0 for very large files.
  Elf64_Shdr first{};
  if (!file.read(header.e_shoff, &first, sizeof first))
    return std::string("ELF section headers lie beyond the end of the file");
  std::uint64_t count = header.e_shnum ? header.e_shnum : first.sh_size;
  std::uint64_t names_index = header.e_shstrndx == SHN_XINDEX ? first.sh_link : header.e_shstrndx;
  if (count == 0 || count > kMaxSections)
    return "implausible ELF section count " + std::to_string(count);
  std::vector<Elf64_Shdr> sections(count);
  if (!file.read(header.e_shoff, sections.data(), count * sizeof(Elf64_Shdr)))
    return std::string("ELF section headers lie beyond the end of the file");
  if (names_index == SHN_UNDEF || names_index >= count)
    return std::string("no ELF section name table");
  const Elf64_Shdr& names_header = sections[names_index];
  if (names_header.sh_type != SHT_STRTAB || names_header.sh_size > kMaxSectionNames)
    return std::string("bad ELF section name table");
  std::string names(names_header.sh_size, '\0');
  if (!file.read(names_header.sh_offset, names.data(), names.size()))
    return std::string("ELF section name table lies beyond the end of the file");

  const Elf64_Shdr* found = nullptr;
  std::size_t matches = 0;
  for (const auto& section : sections) {
    if (section.sh_name >= names.size()) continue;
    if (std::strcmp(names.c_str() + section.sh_name, NETWATCHER_DESCRIPTOR_SECTION) != 0) continue;
    found = &section;
    ++matches;
  }
  if (!found)
    return std::string("no '" NETWATCHER_DESCRIPTOR_SECTION
                       "' section: not a netwatcher plugin, or built against an SDK before ABI "
                       "3.0");
  if (matches > 1)
    return std::to_string(matches) + " '" NETWATCHER_DESCRIPTOR_SECTION "' sections, expected one";
  const std::uint64_t size = found->sh_size;
  constexpr std::uint64_t kHeaderBytes = offsetof(nw_plugin_descriptor, name);
  if (found->sh_type == SHT_NOBITS || size < kHeaderBytes || size > kMaxDescriptor)
    return "'" NETWATCHER_DESCRIPTOR_SECTION "' section is " + std::to_string(size) +
           " bytes: not a descriptor";
  std::vector<char> bytes(size);
  if (!file.read(found->sh_offset, bytes.data(), size))
    return std::string("'" NETWATCHER_DESCRIPTOR_SECTION
                       "' section lies beyond the end of the file");
  if (std::memcmp(bytes.data(), NETWATCHER_DESCRIPTOR_MAGIC, sizeof(NETWATCHER_DESCRIPTOR_MAGIC)) !=
      0)
    return std::string("descriptor field 'magic' is not \"" NETWATCHER_DESCRIPTOR_MAGIC "\"");
  std::memcpy(&out, bytes.data(), std::min<std::uint64_t>(size, sizeof out));
  if (out.struct_size != size)
    return "descriptor field 'struct_size' says " + std::to_string(out.struct_size) +
           " bytes, its section is " + std::to_string(size);
  // The header (magic .. reserved) and `name` keep their place in every major
  // from 3 on, so a file of another major can still be named.
  auto terminated = [&](const char* array, std::size_t array_size, std::size_t offset) {
    return offset + array_size > size || std::memchr(array, '\0', array_size) != nullptr;
  };
#define NW_CHECK_TERMINATED(member)                                                       \
  if (!terminated(out.member, sizeof out.member, offsetof(nw_plugin_descriptor, member))) \
    return std::string("descriptor field '" #member "' is not NUL-terminated");
  NW_CHECK_TERMINATED(name)
  if (out.abi_major != NETWATCHER_ABI_MAJOR) return std::nullopt;  // check_descriptor() says why
  NW_CHECK_TERMINATED(version)
  NW_CHECK_TERMINATED(description)
  NW_CHECK_TERMINATED(stdlib)
  NW_CHECK_TERMINATED(compiler)
#undef NW_CHECK_TERMINATED
  return std::nullopt;
}

std::optional<std::string> check_descriptor(const nw_plugin_descriptor& d) {
  auto versions = [&] {
    return "plugin ABI " + std::to_string(d.abi_major) + "." + std::to_string(d.abi_minor) +
           ", host ABI " + std::to_string(NETWATCHER_ABI_MAJOR) + "." +
           std::to_string(NETWATCHER_ABI_MINOR);
  };
  if (std::memcmp(d.magic, NETWATCHER_DESCRIPTOR_MAGIC, sizeof(NETWATCHER_DESCRIPTOR_MAGIC)) != 0)
    return std::string("descriptor field 'magic' is not \"" NETWATCHER_DESCRIPTOR_MAGIC "\"");
  if (d.abi_major != NETWATCHER_ABI_MAJOR) return "ABI major version mismatch: " + versions();
  if (d.abi_minor > NETWATCHER_ABI_MINOR)
    return "built for a newer ABI minor version than this host: " + versions();
  if (d.struct_size < sizeof(nw_plugin_descriptor))
    return "descriptor is truncated (" + std::to_string(d.struct_size) + " bytes, ABI " +
           std::to_string(NETWATCHER_ABI_MAJOR) + ".0 has " +
           std::to_string(sizeof(nw_plugin_descriptor)) + ")";
  if (d.kind != NW_PLUGIN_KIND_PROBE && d.kind != NW_PLUGIN_KIND_SINK)
    return "descriptor field 'kind' is " + std::to_string(d.kind) +
           ", neither probe (1) nor sink (2)";
  if (NW_FIELD(d, name).empty()) return std::string("descriptor field 'name' is empty");
  const std::string stdlib = NW_FIELD(d, stdlib);
  const std::string host = compat_text(NETWATCHER_STDLIB, NETWATCHER_DUAL_ABI,
                                       static_cast<std::uint32_t>(NETWATCHER_CPLUSPLUS));
  const std::string plugin = compat_text(stdlib, d.dual_abi, d.cplusplus);
  const std::string tail = " (plugin " + plugin + ", host " + host +
                           "): the std types in the C++ interfaces would not match";
  if (stdlib != NETWATCHER_STDLIB)
    return "built against " + stdlib + ", host uses " NETWATCHER_STDLIB + tail;
  if (d.dual_abi != NETWATCHER_DUAL_ABI)
    return "built with " + dual_abi_text(d.dual_abi) + ", host uses " +
           dual_abi_text(NETWATCHER_DUAL_ABI) + tail;
  if (d.cplusplus != static_cast<std::uint32_t>(NETWATCHER_CPLUSPLUS))
    return "built as C++ " + std::to_string(d.cplusplus) + " (__cplusplus), host as " +
           std::to_string(NETWATCHER_CPLUSPLUS) + tail;
  return std::nullopt;
}

std::optional<Component> load_component(const std::string& path, RefusedFile& refused) {
  refused = RefusedFile{path, "", ""};
  // Everything about the file is decided from its bytes first: a refused
  // file is never mapped, so none of its code (static constructors) runs.
  nw_plugin_descriptor d{};
  if (auto problem = read_descriptor(path, d)) {
    refused.reason = *problem;
    return std::nullopt;
  }
  refused.name = NW_FIELD(d, name);
  if (auto problem = check_descriptor(d)) {
    refused.reason = *problem;
    return std::nullopt;
  }

  auto library = std::make_shared<boost::dll::shared_library>();
  boost::dll::fs::error_code ec;
  // RTLD_LOCAL: two plugins may define the same internal symbols. This runs
  // the file's static constructors.
  library->load(path, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local, ec);
  if (ec) {
    refused.reason = "cannot load shared object: " + ec.message();
    return std::nullopt;
  }
  if (!library->has(NETWATCHER_DESCRIPTOR_SYMBOL)) {
    refused.reason = "no '" NETWATCHER_DESCRIPTOR_SYMBOL
                     "' symbol, though the file has a '" NETWATCHER_DESCRIPTOR_SECTION "' section";
    return std::nullopt;
  }
  const auto& exported =
      library->get_alias<const nw_plugin_descriptor>(NETWATCHER_DESCRIPTOR_SYMBOL);
  if (std::memcmp(&exported, &d, std::min<std::size_t>(d.struct_size, sizeof d)) != 0) {
    std::string exported_name = field(exported.name, sizeof exported.name);
    refused.reason = "the exported '" NETWATCHER_DESCRIPTOR_SYMBOL
                     "' differs from the '" NETWATCHER_DESCRIPTOR_SECTION "' section" +
                     (exported_name != refused.name
                          ? " (name '" + exported_name + "', section says '" + refused.name + "')"
                          : std::string());
    return std::nullopt;
  }
  if (!library->has(NETWATCHER_FACTORY_SYMBOL)) {
    refused.reason = "no '" NETWATCHER_FACTORY_SYMBOL "' symbol";
    return std::nullopt;
  }
  Component c;
  c.path = path;
  c.kind = static_cast<nw_plugin_kind>(d.kind);
  c.name = NW_FIELD(d, name);
  c.version = NW_FIELD(d, version);
  c.description = NW_FIELD(d, description);
  c.compiler = NW_FIELD(d, compiler);
  c.stdlib = compat_text(NW_FIELD(d, stdlib), d.dual_abi, d.cplusplus);
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

Result<std::shared_ptr<ProbePlugin>> create_probe(const Component& component) {
  return create<ProbePlugin>(component, NW_PLUGIN_KIND_PROBE);
}

Result<std::shared_ptr<Sink>> create_sink(const Component& component) {
  return create<Sink>(component, NW_PLUGIN_KIND_SINK);
}

}  // namespace netwatcher::host
