// libFuzzer harness: the ELF symbol reader (tracer/elf_symbols.h), which
// reads every library a traced process maps executable (a file anyone on the
// machine may have written). The input is the file: it is written to a
// memfd and opened through /proc/self/fd/N, as the tracer opens
// /proc/PID/map_files/... Both entry points run: read_elf_functions (the
// functions to probe, as file offsets) and elf_defines_function (the
// bundled-runtime check). Properties: no memory error or UB; a file
// read_elf_functions reads, elf_defines_function reads too; an offset for
// cudaMalloc implies that elf_defines_function finds it defined.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "tests/fuzz/fuzz_support.h"
#include "tracer/elf_symbols.h"

using namespace vs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const int fd = [] {
    int f = memfd_create("fuzz-elf", MFD_CLOEXEC);
    if (f < 0) fuzz::fail("memfd_create failed");
    return f;
  }();
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) fuzz::fail("writing the memfd");

  auto functions = tracer::read_elf_functions(path);
  auto defines = tracer::elf_defines_function(path, "cudaMalloc");
  // Both open the file the same way; read_elf_functions also needs the program headers.
  if (functions.ok() && !defines.ok()) fuzz::fail("read_elf_functions read a file elf_defines_function refused");
  if (!functions) {
    if (functions.error().message.empty()) fuzz::fail("an unreadable ELF file gave an error without a message");
    return 0;
  }
  // read_elf_functions keeps only the functions inside a PT_LOAD segment, so cudaMalloc may be
  // defined outside any (then it cannot be probed); the other way round it must be defined.
  if (functions->offsets.count("cudaMalloc") && !*defines)
    fuzz::fail("cudaMalloc has an offset but elf_defines_function says it is not defined");
  return 0;
}
