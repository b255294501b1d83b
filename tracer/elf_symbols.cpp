#include "tracer/elf_symbols.h"

#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <unistd.h>

#include <cstring>
#include <memory>
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

// Calls visit(name, symbol) for each defined function of `elf` until it returns false.
template <class Visit>
void for_each_function(Elf* elf, bool& has_symtab, Visit visit) {
  Elf_Scn* scn = nullptr;
  while ((scn = elf_nextscn(elf, scn)) != nullptr) {
    GElf_Shdr sh;
    if (!gelf_getshdr(scn, &sh) || (sh.sh_type != SHT_DYNSYM && sh.sh_type != SHT_SYMTAB)) continue;
    if (sh.sh_type == SHT_SYMTAB) has_symtab = true;
    Elf_Data* data = elf_getdata(scn, nullptr);
    if (!data || sh.sh_entsize == 0) continue;
    std::size_t count = sh.sh_size / sh.sh_entsize;
    for (std::size_t i = 0; i < count; ++i) {
      GElf_Sym sym;
      if (!gelf_getsym(data, static_cast<int>(i), &sym)) continue;
      int type = GELF_ST_TYPE(sym.st_info);
      if ((type != STT_FUNC && type != STT_GNU_IFUNC) || sym.st_shndx == SHN_UNDEF || sym.st_value == 0) continue;
      const char* name = elf_strptr(elf, sh.sh_link, sym.st_name);
      if (!name || !*name) continue;
      if (!visit(name, sym)) return;
    }
  }
}

struct OpenElf {
  FdCloser fd{-1};
  ElfCloser elf{nullptr};
};

Result<std::unique_ptr<OpenElf>> open_elf(const std::string& path) {
  if (elf_version(EV_CURRENT) == EV_NONE) return Error{"libelf initialisation failed"};
  auto f = std::make_unique<OpenElf>();  // in place: the closers are not movable
  f->fd.fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f->fd.fd < 0) return Error{"cannot open " + path + ": " + std::strerror(errno)};
  f->elf.elf = elf_begin(f->fd.fd, ELF_C_READ, nullptr);
  if (!f->elf.elf || elf_kind(f->elf.elf) != ELF_K_ELF) return Error{path + " is not an ELF file"};
  return f;
}

}  // namespace

Result<ElfFunctions> read_elf_functions(const std::string& path) {
  auto f = open_elf(path);
  if (!f) return f.error();
  Elf* elf = (*f)->elf.elf;

  std::size_t nphdr = 0;
  if (elf_getphdrnum(elf, &nphdr) != 0) return Error{path + ": cannot read program headers: " + elf_errmsg(-1)};
  std::vector<GElf_Phdr> loads;
  for (std::size_t i = 0; i < nphdr; ++i) {
    GElf_Phdr ph;
    if (gelf_getphdr(elf, static_cast<int>(i), &ph) && ph.p_type == PT_LOAD) loads.push_back(ph);
  }

  ElfFunctions out;
  for_each_function(elf, out.has_symtab, [&](const char* name, const GElf_Sym& sym) {
    if (auto off = to_file_offset(loads, sym.st_value)) out.offsets.emplace(name, *off);
    return true;
  });
  return out;
}

Result<bool> elf_defines_function(const std::string& path, const char* name) {
  auto f = open_elf(path);
  if (!f) return f.error();
  bool found = false, has_symtab = false;
  for_each_function((*f)->elf.elf, has_symtab, [&](const char* n, const GElf_Sym&) {
    found = std::strcmp(n, name) == 0;
    return !found;
  });
  return found;
}

}  // namespace vs::tracer
