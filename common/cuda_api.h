// The catalog of traced CUDA functions: what each one is, where each column of
// its `calls` row comes from, and what the BPF side must read at return.
// The BPF programs know nothing of this table: user space hands them the
// per-API read plan (tracer/bpf/events.h: vs_api_plan) and decodes the raw
// registers they send back with the same table.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace vs {

enum class Layer : std::uint8_t { Runtime, Driver };

// What a call does to memory (or to the thread's device), for pairing.
enum class Op : std::uint8_t {
  Alloc,             // creates a pointer allocation of `kind`
  Free,              // ends a pointer allocation (device, async, managed)
  FreeHost,          // ends a pinned host allocation
  VmmReserve,        // cuMemAddressReserve: reserved virtual range
  VmmAddressFree,    // cuMemAddressFree
  VmmCreate,         // cuMemCreate: physical handle
  VmmRelease,        // cuMemRelease
  VmmMap,            // cuMemMap: mapped virtual range
  VmmUnmap,          // cuMemUnmap
  VmmSetAccess,      // cuMemSetAccess
  Memcpy,
  Launch,
  Sync,
  SetDevice,         // cudaSetDevice: the thread's runtime device
  SetContext,        // cuCtxSetCurrent / cuCtxPushCurrent_v2
  PrimaryCtxRetain,  // cuDevicePrimaryCtxRetain: context -> device
  MemGetInfo,
  IpcGetHandle,      // cudaIpcGetMemHandle: exports a device allocation to other processes
  IpcOpen,           // cudaIpcOpenMemHandle: maps another process's allocation (ipc_mapped)
  IpcClose,          // cudaIpcCloseMemHandle
  HostRegister,      // cudaHostRegister: pins existing host memory (host_registered)
  HostUnregister,    // cudaHostUnregister
  MemPoolTrim,       // cudaMemPoolTrimTo: the stream-ordered allocator's pool returns memory
  MemPoolSetAttribute,
  MemPoolGetAttribute,  // ptr = the cudaMemPoolAttr, bytes = the value (e.g. the pool's reserved bytes)
  DefaultMemPool,    // cudaDeviceGetDefaultMemPool: device -> pool
  GraphInstantiate,  // cudaGraphInstantiate*: graph -> executable graph
  GraphLaunch,       // cudaGraphLaunch
  GraphExecDestroy,  // cudaGraphExecDestroy
  VmmExport,         // cuMemExportToShareableHandle: a physical handle -> an fd for another process; changes nothing
  VmmImport,         // cuMemImportFromShareableHandle: another process's physical memory as a handle (vmm_imported)
};

// The `allocations.kind` vocabulary (store/schema.sql documents it).
enum class AllocKind : std::uint8_t {
  None, Device, Async, Managed, Host, VmmPhysical, VmmReserved, VmmMapped, IpcMapped, HostRegistered, VmmImported
};

// The kinds of allocation, in the order results list them.
inline constexpr AllocKind kAllocKinds[] = {AllocKind::Device,      AllocKind::Async,          AllocKind::Managed,
                                            AllocKind::Host,        AllocKind::VmmPhysical,    AllocKind::VmmReserved,
                                            AllocKind::VmmMapped,   AllocKind::IpcMapped,      AllocKind::HostRegistered,
                                            AllocKind::VmmImported};
// One past the largest AllocKind value: the size of arrays indexed by kind.
inline constexpr int kAllocKindSlots = static_cast<int>(AllocKind::VmmImported) + 1;

// The one definition of what occupies GPU memory, for the tracer's summary, pairing's totals and every tool:
// device, async, managed and vmm_physical bytes. host is pinned host memory; vmm_reserved is address space and
// vmm_mapped maps vmm_physical bytes: adding either would count address space or the same memory twice.
// ipc_mapped is another process's allocation mapped into this one (cudaIpcOpenMemHandle): the exporter owns
// the memory and counts it; host_registered is the program's own host memory pinned by cudaHostRegister;
// vmm_imported is another process's physical memory imported as a handle (cuMemImportFromShareableHandle): the
// exporter created it with cuMemCreate and counts it.
constexpr bool occupies_gpu_memory(AllocKind kind) {
  return kind == AllocKind::Device || kind == AllocKind::Async || kind == AllocKind::Managed ||
         kind == AllocKind::VmmPhysical;
}

// Where a decoded value comes from: an integer argument register (A0..A5),
// a stack argument (S0 is the 7th argument), or a value read at return (Out0, Out1).
enum class Src : std::uint8_t { None, A0, A1, A2, A3, A4, A5, S0, S1, S2, Out0, Out1 };

// Argument words a call record carries (tracer/bpf/events.h: VS_CALL_WORDS).
inline constexpr int kCallWords = 3;

// A CUDA IPC handle (cudaIpcMemHandle_t, CUipcMemHandle): 64 opaque bytes whose first 8 are the same in every
// handle one process exports (H200, driver 580). The tracer keeps handle_digest of all 64 instead, the same in the
// exporter's and the importer's calls (tracer/bpf/events.h: VS_FOLD_*, computed by the probes).
inline constexpr int kHandleBytes = 64;
inline constexpr std::uint64_t kHandleDigestBasis = 0xcbf29ce484222325u;  // FNV-1a 64-bit offset basis
inline constexpr std::uint64_t kHandleDigestPrime = 0x100000001b3u;       // FNV-1a 64-bit prime

// FNV-1a over the handle's 8 little-endian 64-bit words: h = basis, then h = (h ^ w) * prime for each word w.
// The user-side reference of what the probes record as an IPC call's handle.
constexpr std::uint64_t handle_digest(std::span<const std::uint8_t, kHandleBytes> bytes) {
  std::uint64_t h = kHandleDigestBasis;
  for (int w = 0; w < kHandleBytes / 8; ++w) {
    std::uint64_t word = 0;
    for (int b = 7; b >= 0; --b) word = word << 8 | bytes[static_cast<std::size_t>(w * 8 + b)];
    h = (h ^ word) * kHandleDigestPrime;
  }
  return h;
}

// A read of user memory at return: `size` bytes at (argument `arg`) + `offset`; size kHandleBytes reads a
// 64-byte handle and keeps its handle_digest.
struct ReturnRead {
  std::int8_t arg = -1;  // -1: no read
  std::uint8_t size = 0;  // 1..8, or kHandleBytes
  std::uint16_t offset = 0;
};

struct ApiInfo {
  std::uint16_t id;
  std::string_view name;  // the exported symbol
  Layer layer;
  Op op;
  AllocKind kind;  // for Op::Alloc; the VMM ops imply theirs
  bool launch;     // a kernel-launch probe: only with --launches
  Src ptr, bytes, bytes_factor, stream, handle, device;
  ReturnRead reads[2];
  std::uint8_t stack_args;  // 7th+ arguments to copy at entry
  bool stack_digest;        // S0 is the handle_digest of a 64-byte handle passed by value at the 7th argument's place
  // The argument words the call record carries, derived from the fields
  // above: 0..5 the registers, 6..8 the stack words; -1 unused.
  std::int8_t words[kCallWords];
};

std::span<const ApiInfo> all_apis();
const ApiInfo* find_api(std::uint16_t id);
const ApiInfo* find_api(std::string_view name);
constexpr std::string_view alloc_kind_name(AllocKind kind) {
  switch (kind) {
    case AllocKind::None: return "none";
    case AllocKind::Device: return "device";
    case AllocKind::Async: return "async";
    case AllocKind::Managed: return "managed";
    case AllocKind::Host: return "host";
    case AllocKind::VmmPhysical: return "vmm_physical";
    case AllocKind::VmmReserved: return "vmm_reserved";
    case AllocKind::VmmMapped: return "vmm_mapped";
    case AllocKind::IpcMapped: return "ipc_mapped";
    case AllocKind::HostRegistered: return "host_registered";
    case AllocKind::VmmImported: return "vmm_imported";
  }
  return "none";
}
// The kind named `name` (an allocations.kind value); None for any other string.
AllocKind alloc_kind_named(std::string_view name);
// occupies_gpu_memory as an SQL condition on the allocations.kind column `column`:
// "kind IN ('device', 'async', 'managed', 'vmm_physical')".
std::string gpu_memory_kinds_sql(std::string_view column = "kind");
std::string_view layer_name(Layer layer);
std::string_view op_name(Op op);  // the `apis.op` vocabulary (store/schema.sql)

// The raw values the BPF side captured for one call: the argument words the
// API's `words` name, and the return reads.
struct RawCallValues {
  std::uint64_t words[kCallWords]{};
  std::uint64_t out[2]{};
};

// The decoded columns of one call; nullopt where the API has no such value.
struct DecodedCall {
  std::optional<std::uint64_t> ptr, bytes, stream, handle;
  std::optional<std::int64_t> device;
};

DecodedCall decode_call(const ApiInfo& api, const RawCallValues& raw);

}  // namespace vs
