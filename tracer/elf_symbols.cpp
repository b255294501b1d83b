#include "tracer/elf_symbols.h"

#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <vector>

namespace vs::tracer {
namespace {

struct FdCloser {
  int fd;
  ~FdCloser() { if (fd >= 0) close(fd); }
};
struct ElfCloser {
  Elf* elf;
  ~ElfCloser() { if (elf) elf_end(elf); }
};

// A symbol's virtual address -> the file offset of the same byte, through the
// PT_LOAD segment that contains it.
std::optional<std::uint64_t> to_file_offset(const std::vector<GElf_Phdr>& loads, std::uint64_t vaddr) {
  for (const auto& ph : loads)
    if (vaddr >= ph.p_vaddr && vaddr < ph.p_vaddr + ph.p_memsz) return vaddr - ph.p_vaddr + ph.p_offset;
  return std::nullopt;
}

}  // namespace

Result<ElfFunctions> read_elf_functions(const std::string& path) {
  if (elf_version(EV_CURRENT) == EV_NONE) return Error{"libelf initialisation failed"};
  FdCloser fd{open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0) return Error{"cannot open " + path + ": " + std::strerror(errno)};
  ElfCloser elf{elf_begin(fd.fd, ELF_C_READ, nullptr)};
  if (!elf.elf || elf_kind(elf.elf) != ELF_K_ELF) return Error{path + " is not an ELF file"};

  std::size_t nphdr = 0;
  if (elf_getphdrnum(elf.elf, &nphdr) != 0) return Error{path + ": cannot read program headers: " + elf_errmsg(-1)};
  std::vector<GElf_Phdr> loads;
  for (std::size_t i = 0; i < nphdr; ++i) {
    GElf_Phdr ph;
    if (gelf_getphdr(elf.elf, static_cast<int>(i), &ph) && ph.p_type == PT_LOAD) loads.push_back(ph);
  }

  ElfFunctions out;
  Elf_Scn* scn = nullptr;
  while ((scn = elf_nextscn(elf.elf, scn)) != nullptr) {
    GElf_Shdr sh;
    if (!gelf_getshdr(scn, &sh) || (sh.sh_type != SHT_DYNSYM && sh.sh_type != SHT_SYMTAB)) continue;
    if (sh.sh_type == SHT_SYMTAB) out.has_symtab = true;
    Elf_Data* data = elf_getdata(scn, nullptr);
    if (!data || sh.sh_entsize == 0) continue;
    std::size_t count = sh.sh_size / sh.sh_entsize;
    for (std::size_t i = 0; i < count; ++i) {
      GElf_Sym sym;
      if (!gelf_getsym(data, static_cast<int>(i), &sym)) continue;
      int type = GELF_ST_TYPE(sym.st_info);
      if ((type != STT_FUNC && type != STT_GNU_IFUNC) || sym.st_shndx == SHN_UNDEF || sym.st_value == 0) continue;
      const char* name = elf_strptr(elf.elf, sh.sh_link, sym.st_name);
      if (!name || !*name) continue;
      if (auto off = to_file_offset(loads, sym.st_value)) out.offsets.emplace(name, *off);
    }
  }
  return out;
}

}  // namespace vs::tracer
