// Finding the TLS library files processes use, so that each is probed once.
//
// A uprobe is per file, so what matters is each distinct file (device and
// inode), whichever process or mount namespace maps it. A file is a
// candidate when its name starts with "libssl.so" (OpenSSL 1.1 and 3 as
// shared libraries) or when it is a process's executable that defines the
// OpenSSL entry points itself (statically linked OpenSSL).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace netwatcher::l7 {

// A TLS library file to probe: a path that reaches it from netwatcher's own
// mount namespace (the file's own path when it is the same file there, else
// /proc/<pid>/root/<path>, or /proc/<pid>/map_files/<range> for a file
// deleted since it was mapped), and the path as the process sees it.
struct TlsLibrary {
  std::string path;
  std::string seen_as;
};

// True when the ELF file at `path` defines `symbol` (in .dynsym or .symtab).
bool elf_defines(const std::string& path, const std::string& symbol);

// True for the file names of OpenSSL's libssl: libssl.so.3, libssl.so.1.1,
// and the copies bundled with wheels and apps (libssl-1a2b3c.so.3).
bool is_tls_library_name(const std::string& file_name);

// One executable mapping of a TLS library in /proc/<pid>/maps.
struct TlsMapping {
  std::string path;      // as the process names it
  std::string range;     // "7f00...-7f00...": its /proc/<pid>/map_files entry
  bool deleted = false;  // replaced on disk (an upgrade) while still mapped
};

// The executable mappings of /proc/<pid>/maps whose file is a TLS library,
// one per path; nothing when the process is gone.
std::vector<TlsMapping> mapped_tls_libraries(const std::string& maps_text);

class TlsLibraryFinder {
 public:
  // Files named libssl.so* in the dynamic loader's usual directories, so that
  // processes that start later with the system's library are covered without
  // a race.
  std::vector<TlsLibrary> scan_system();
  // What one process maps (and its executable), not seen before.
  std::vector<TlsLibrary> scan_process(pid_t pid);
  // Every process in /proc.
  std::vector<TlsLibrary> scan_all();
  std::size_t files() const { return seen_.size(); }

 private:
  // Adds `path` (reached as `reach`) to `out` when its file is new.
  void consider(const std::string& reach, const std::string& seen_as, bool check_symbols,
                std::vector<TlsLibrary>& out);
  std::set<std::pair<std::uint64_t, std::uint64_t>> seen_;     // (st_dev, st_ino) probed
  std::set<std::pair<std::uint64_t, std::uint64_t>> refused_;  // executables without OpenSSL
};

}  // namespace netwatcher::l7
