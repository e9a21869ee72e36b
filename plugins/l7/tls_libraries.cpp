#include "tls_libraries.hpp"

#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace netwatcher::l7 {

namespace {

std::string basename_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool file_id(const std::string& path, std::pair<std::uint64_t, std::uint64_t>& id) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  id = {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
  return true;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

bool elf_defines(const std::string& path, const std::string& symbol) {
  if (elf_version(EV_CURRENT) == EV_NONE) return false;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool found = false;
  if (Elf* elf = elf_begin(fd, ELF_C_READ, nullptr)) {
    for (Elf_Scn* scn = nullptr; !found && (scn = elf_nextscn(elf, scn));) {
      GElf_Shdr header;
      if (!gelf_getshdr(scn, &header)) continue;
      if (header.sh_type != SHT_DYNSYM && header.sh_type != SHT_SYMTAB) continue;
      Elf_Data* data = elf_getdata(scn, nullptr);
      if (!data || header.sh_entsize == 0) continue;
      const std::size_t count = header.sh_size / header.sh_entsize;
      for (std::size_t i = 0; i < count; ++i) {
        GElf_Sym sym;
        if (!gelf_getsym(data, static_cast<int>(i), &sym)) break;
        if (sym.st_shndx == SHN_UNDEF || GELF_ST_TYPE(sym.st_info) != STT_FUNC) continue;
        const char* name = elf_strptr(elf, header.sh_link, sym.st_name);
        if (name && symbol == name) {
          found = true;
          break;
        }
      }
    }
    elf_end(elf);
  }
  close(fd);
  return found;
}

bool is_tls_library_name(const std::string& file_name) {
  return file_name.rfind("libssl", 0) == 0 && file_name.find(".so") != std::string::npos;
}

std::vector<TlsMapping> mapped_tls_libraries(const std::string& maps_text) {
  std::vector<TlsMapping> out;
  std::istringstream lines(maps_text);
  std::string line;
  while (std::getline(lines, line)) {
    // address perms offset dev inode path
    std::istringstream fields(line);
    std::string address, perms, offset, device, inode, path;
    if (!(fields >> address >> perms >> offset >> device >> inode)) continue;
    std::getline(fields >> std::ws, path);
    if (perms.size() < 3 || perms[2] != 'x' || path.empty() || path[0] != '/') continue;
    const bool deleted = path.size() > 10 && path.compare(path.size() - 10, 10, " (deleted)") == 0;
    if (deleted) path.resize(path.size() - 10);
    if (!is_tls_library_name(basename_of(path))) continue;
    bool known = false;
    for (const auto& m : out) known = known || m.path == path;
    if (!known) out.push_back({path, address, deleted});
  }
  return out;
}

void TlsLibraryFinder::consider(const std::string& reach, const std::string& seen_as,
                                bool check_symbols, std::vector<TlsLibrary>& out) {
  std::pair<std::uint64_t, std::uint64_t> id;
  if (!file_id(reach, id) || seen_.count(id) || refused_.count(id)) return;
  if (check_symbols && !elf_defines(reach, "SSL_write")) {
    refused_.insert(id);
    return;
  }
  seen_.insert(id);
  // The plain path names the same file when the process shares our mounts:
  // nicer in logs and --check.
  std::pair<std::uint64_t, std::uint64_t> own;
  std::string path = file_id(seen_as, own) && own == id ? seen_as : reach;
  out.push_back({path, seen_as});
}

std::vector<TlsLibrary> TlsLibraryFinder::scan_system() {
  std::vector<TlsLibrary> out;
  // /usr first: with a merged /usr, /lib names the same files.
  for (const char* dir :
       {"/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
        "/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib", "/lib", "/usr/local/lib"}) {
    std::error_code error;
    for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
      const std::string path = entry.path().string();
      if (!is_tls_library_name(basename_of(path))) continue;
      // The real file's name, not libssl.so (the -dev symlink) or /lib/...
      const std::string real = std::filesystem::canonical(entry.path(), error).string();
      if (!error) consider(real, real, false, out);
    }
  }
  return out;
}

std::vector<TlsLibrary> TlsLibraryFinder::scan_process(pid_t pid) {
  std::vector<TlsLibrary> out;
  const std::string proc = "/proc/" + std::to_string(pid);
  for (const TlsMapping& m : mapped_tls_libraries(read_text(proc + "/maps")))
    consider(m.deleted ? proc + "/map_files/" + m.range : proc + "/root" + m.path, m.path, false,
             out);
  // A statically linked OpenSSL: the executable itself defines SSL_write.
  std::error_code error;
  std::filesystem::path exe = std::filesystem::read_symlink(proc + "/exe", error);
  if (!error && exe.is_absolute()) consider(proc + "/root" + exe.string(), exe.string(), true, out);
  return out;
}

std::vector<TlsLibrary> TlsLibraryFinder::scan_all() {
  std::vector<TlsLibrary> out;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", error)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    for (auto& library : scan_process(static_cast<pid_t>(std::stol(name))))
      out.push_back(std::move(library));
  }
  return out;
}

}  // namespace netwatcher::l7
