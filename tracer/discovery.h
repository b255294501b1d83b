// Finding the CUDA libraries to probe: on disk (ld.so cache, CUDA and pip
// wheel locations, --cuda-lib), in running processes (/proc/PID/maps, opened
// through /proc/PID/map_files so containers work), and executables with a
// CUDA runtime linked in statically.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

namespace vs::tracer {

struct LibraryCandidate {
  std::string path;       // the real path (symlinks resolved), for people
  std::string open_path;  // the path to open and attach to (may be /proc/PID/map_files/...)
  std::string kind;       // runtime | driver | static
  std::string found_by;   // cuda-lib | maps | mmap | ld-cache | search-path | executable
  std::optional<std::uint32_t> pid;
  std::uint64_t dev = 0, ino = 0;  // st_dev (userspace encoding) and st_ino
};

struct MapsEntry {
  std::uint64_t start = 0, end = 0, offset = 0;
  std::string perms;
  std::uint32_t dev_major = 0, dev_minor = 0;
  std::uint64_t inode = 0;
  std::string path;
};

// One line of /proc/PID/maps; nullopt if malformed.
std::optional<MapsEntry> parse_maps_line(const std::string& line);
// `ldconfig -p` output -> library paths.
std::vector<std::string> parse_ldconfig_output(const std::string& text);
// "runtime" for libcudart.so*, "driver" for libcuda.so*, "" otherwise.
std::string kind_from_filename(const std::string& path);

// Classifies one file: a CUDA library by name, or (check_static) a file that
// defines cudaMalloc. nullopt: not CUDA, missing, or a link-time stub.
std::optional<LibraryCandidate> classify_file(const std::string& path, const std::string& found_by,
                                              bool check_static);

struct DiscoveryInputs {
  std::vector<std::string> cuda_libs;    // --cuda-lib: used as given
  std::optional<std::string> executable;  // launch mode: the command, checked for a static runtime
  std::vector<std::string> extra_dirs;    // e.g. the command's LD_LIBRARY_PATH and virtualenv
};

struct DiscoveryResult {
  std::vector<LibraryCandidate> found;  // deduplicated by inode
  std::vector<std::string> searched;    // where it looked, for the "nothing found" error
};

// When cuda_libs is non-empty only those are used.
DiscoveryResult discover_on_disk(const DiscoveryInputs& in);
// The file a process is about to map, through /proc/PID/fd/FD (which reaches
// it in any mount namespace); nullopt if it is gone or not a CUDA library.
std::optional<LibraryCandidate> candidate_from_fd(std::uint32_t pid, int fd);
// Every line of /proc/PID/maps; nullopt if the process is gone.
std::optional<std::vector<MapsEntry>> read_maps(std::uint32_t pid);
// Mapped files already classified, by (dev major, dev minor, inode) as maps
// shows them: each file's symbols are read once, however often maps are scanned.
using ClassifiedFiles = std::set<std::tuple<std::uint32_t, std::uint32_t, std::uint64_t>>;
// The CUDA libraries among `pid`'s mappings not in `classified` (which it
// extends): libcudart/libcuda by name, and any file mapped executable that
// defines cudaMalloc (a runtime linked into the executable or a bundled library).
std::vector<LibraryCandidate> cuda_libraries_in(std::uint32_t pid, const std::vector<MapsEntry>& maps,
                                                ClassifiedFiles& classified);
std::vector<LibraryCandidate> discover_in_process(std::uint32_t pid);
// Directories where pip wheels keep CUDA libraries, for a Python prefix (e.g. a venv).
std::vector<std::string> wheel_lib_dirs(const std::string& prefix);

}  // namespace vs::tracer
