// libFuzzer harness: the text parsers of tracer/discovery.h, which read what
// the kernel and ldconfig print about files anyone may name (a path in
// /proc/PID/maps is whatever the traced process mapped). Each line of the
// input is parsed as a /proc/PID/maps line (parse_maps_line), the entries feed
// ObjectPaths as the decoder's maps scan does, the whole input is read as
// `ldconfig -p` output (parse_ldconfig_output) and each path is classified by
// name (kind_from_filename). Properties: no memory error or UB; a parsed entry
// keeps its path's bytes from the line, every ldconfig path is a CUDA library
// by name, and ObjectPaths finds each file-backed entry it was given.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_support.h"
#include "tracer/decoder.h"
#include "tracer/discovery.h"

using namespace vs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);

  std::vector<tracer::MapsEntry> entries;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    auto entry = tracer::parse_maps_line(line);
    if (!entry) continue;
    if (!entry->path.empty() && line.find(entry->path) == std::string::npos)
      fuzz::fail("a maps entry's path is not in its line:", line);
    (void)tracer::kind_from_filename(entry->path);
    entries.push_back(std::move(*entry));
  }
  tracer::ObjectPaths objects;
  objects.add_maps(entries);
  for (const auto& e : entries)
    if (e.inode != 0 && !e.path.empty() && e.path[0] == '/' &&
        !objects.find((e.dev_major << 20) | e.dev_minor, e.inode))
      fuzz::fail("ObjectPaths lost a mapped file:", e.path);

  for (const auto& path : tracer::parse_ldconfig_output(text))
    if (tracer::kind_from_filename(path).empty()) fuzz::fail("ldconfig gave a path that is not a CUDA library:", path);
  return 0;
}
