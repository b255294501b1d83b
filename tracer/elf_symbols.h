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

}  // namespace vs::tracer
