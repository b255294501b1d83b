// Function symbols of an ELF file, as file offsets: what uprobes attach to.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>

#include "common/result.h"

namespace vs::tracer {

struct ElfFunctions {
  std::unordered_map<std::string, std::uint64_t> offsets;  // defined function -> file offset
  bool has_symtab = false;                                 // .symtab present (not stripped)
};

// Reads the defined functions of `path` from .dynsym and .symtab.
Result<ElfFunctions> read_elf_functions(const std::string& path);

// Whether `path` defines function `name` (in .dynsym or .symtab): stops at the
// first match and keeps no table, so every library a process maps can be asked.
Result<bool> elf_defines_function(const std::string& path, const char* name);

}  // namespace vs::tracer
