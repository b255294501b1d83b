#include "common/cuda_api.h"

#include <array>

namespace vs {
namespace {

using enum Layer;
using enum Src;

// Signatures are the CUDA 12/13 headers'; comments give the arguments used.
constexpr ReturnRead deref(int arg, int size = 8, int offset = 0) {
  return ReturnRead{static_cast<std::int8_t>(arg), static_cast<std::uint8_t>(size), static_cast<std::uint16_t>(offset)};
}
// The 64-byte handle written through argument `arg`, kept as its handle_digest.
constexpr ReturnRead handle_at(int arg) { return deref(arg, kHandleBytes); }

struct Builder {
  ApiInfo a;
  constexpr Builder(std::string_view name, Layer layer, Op op, AllocKind kind = AllocKind::None)
      : a{0, name, layer, op, kind, false, None, None, None, None, None, None, {}, 0, false, {-1, -1, -1}} {}
  constexpr Builder& ptr(Src s) { a.ptr = s; return *this; }
  constexpr Builder& bytes(Src s, Src factor = None) { a.bytes = s; a.bytes_factor = factor; return *this; }
  constexpr Builder& stream(Src s) { a.stream = s; return *this; }
  constexpr Builder& handle(Src s) { a.handle = s; return *this; }
  constexpr Builder& device(Src s) { a.device = s; return *this; }
  constexpr Builder& read(ReturnRead r0, ReturnRead r1 = {}) { a.reads[0] = r0; a.reads[1] = r1; return *this; }
  constexpr Builder& stack(int n) { a.stack_args = static_cast<std::uint8_t>(n); return *this; }
  // A 64-byte handle passed by value as the 7th+ argument: S0 is its digest.
  constexpr Builder& stack_handle() { a.stack_args = 1; a.stack_digest = true; return *this; }
  constexpr Builder& launch() { a.launch = true; return *this; }
};

// (void** out, size_t size, ...): pointer written at return, size in A1.
constexpr Builder alloc(std::string_view name, Layer layer, AllocKind kind) {
  return Builder(name, layer, Op::Alloc, kind).ptr(Out0).bytes(A1).read(deref(0));
}

// The argument word a source names (0..5 registers, 6..8 stack), or -1.
constexpr int word_of(Src s) {
  if (s >= A0 && s <= S2) return static_cast<int>(s) - static_cast<int>(A0);
  return -1;
}

// Each argument word the API's columns come from, once.
constexpr void assign_words(ApiInfo& a) {
  int n = 0;
  for (Src s : {a.ptr, a.bytes, a.bytes_factor, a.stream, a.handle, a.device}) {
    int w = word_of(s);
    if (w < 0) continue;
    bool seen = false;
    for (int i = 0; i < n; ++i) seen = seen || a.words[i] == w;
    if (seen) continue;
    if (n == kCallWords) throw "an API needs more argument words than a call record carries (VS_CALL_WORDS)";
    a.words[n++] = static_cast<std::int8_t>(w);
  }
}

// The reads the probes take (tracer/bpf/calls.bpf.c): 1..8 bytes, or a 64-byte handle kept as its digest; a
// handle passed by value is at the first stack word.
constexpr void check_reads(const ApiInfo& a) {
  for (const ReturnRead& r : a.reads)
    if (r.arg >= 0 && !((r.size >= 1 && r.size <= 8) || r.size == kHandleBytes))
      throw "a read at return takes 1 to 8 bytes, or kHandleBytes (a handle's digest)";
  if (a.stack_digest && a.stack_args < 1) throw "a handle passed by value needs the stack words copied";
}

constexpr auto make_table() {
  std::array table{
      // ---- runtime (libcudart) ----
      alloc("cudaMalloc", Runtime, AllocKind::Device),
      alloc("cudaMallocAsync", Runtime, AllocKind::Async).stream(A2),
      alloc("cudaMallocAsync_ptsz", Runtime, AllocKind::Async).stream(A2),
      alloc("cudaMallocFromPoolAsync", Runtime, AllocKind::Async).stream(A3),
      alloc("cudaMallocFromPoolAsync_ptsz", Runtime, AllocKind::Async).stream(A3),
      alloc("cudaMallocManaged", Runtime, AllocKind::Managed),
      alloc("cudaMallocHost", Runtime, AllocKind::Host),
      alloc("cudaHostAlloc", Runtime, AllocKind::Host),
      // cudaMallocPitch(void** p, size_t* pitch, size_t width, size_t height)
      Builder("cudaMallocPitch", Runtime, Op::Alloc, AllocKind::Device).ptr(Out0).bytes(Out1, A3).read(deref(0), deref(1)),
      Builder("cudaFree", Runtime, Op::Free).ptr(A0),
      Builder("cudaFreeAsync", Runtime, Op::Free).ptr(A0).stream(A1),
      Builder("cudaFreeAsync_ptsz", Runtime, Op::Free).ptr(A0).stream(A1),
      Builder("cudaFreeHost", Runtime, Op::FreeHost).ptr(A0),
      // cudaMemcpy(dst, src, count, kind); cudaMemcpyAsync(dst, src, count, kind, stream)
      Builder("cudaMemcpy", Runtime, Op::Memcpy).ptr(A0).bytes(A2),
      Builder("cudaMemcpy_ptds", Runtime, Op::Memcpy).ptr(A0).bytes(A2),
      Builder("cudaMemcpyAsync", Runtime, Op::Memcpy).ptr(A0).bytes(A2).stream(A4),
      Builder("cudaMemcpyAsync_ptsz", Runtime, Op::Memcpy).ptr(A0).bytes(A2).stream(A4),
      // cudaLaunchKernel(func, dim3 grid, dim3 block, void** args, size_t shmem, stream):
      // each dim3 takes two registers, so shmem and stream are the 7th and 8th words.
      Builder("cudaLaunchKernel", Runtime, Op::Launch).ptr(A0).stream(S1).stack(2).launch(),
      Builder("cudaLaunchKernel_ptsz", Runtime, Op::Launch).ptr(A0).stream(S1).stack(2).launch(),
      Builder("cudaStreamSynchronize", Runtime, Op::Sync).stream(A0),
      Builder("cudaStreamSynchronize_ptsz", Runtime, Op::Sync).stream(A0),
      Builder("cudaDeviceSynchronize", Runtime, Op::Sync),
      Builder("cudaSetDevice", Runtime, Op::SetDevice).device(A0),
      // cudaMemGetInfo(size_t* free, size_t* total): bytes = free, ptr = total
      Builder("cudaMemGetInfo", Runtime, Op::MemGetInfo).bytes(Out0).ptr(Out1).read(deref(0), deref(1)),

      // ---- driver (libcuda) ----
      alloc("cuMemAlloc_v2", Driver, AllocKind::Device),
      alloc("cuMemAllocAsync", Driver, AllocKind::Async).stream(A2),
      alloc("cuMemAllocAsync_ptsz", Driver, AllocKind::Async).stream(A2),
      alloc("cuMemAllocFromPoolAsync", Driver, AllocKind::Async).stream(A3),
      alloc("cuMemAllocFromPoolAsync_ptsz", Driver, AllocKind::Async).stream(A3),
      alloc("cuMemAllocManaged", Driver, AllocKind::Managed),
      alloc("cuMemAllocHost_v2", Driver, AllocKind::Host),
      alloc("cuMemHostAlloc", Driver, AllocKind::Host),
      // cuMemAllocPitch_v2(CUdeviceptr* p, size_t* pitch, size_t width, size_t height, unsigned elem)
      Builder("cuMemAllocPitch_v2", Driver, Op::Alloc, AllocKind::Device).ptr(Out0).bytes(Out1, A3).read(deref(0), deref(1)),
      Builder("cuMemFree_v2", Driver, Op::Free).ptr(A0),
      Builder("cuMemFreeAsync", Driver, Op::Free).ptr(A0).stream(A1),
      Builder("cuMemFreeAsync_ptsz", Driver, Op::Free).ptr(A0).stream(A1),
      Builder("cuMemFreeHost", Driver, Op::FreeHost).ptr(A0),
      // cuMemAddressReserve(CUdeviceptr* p, size_t size, size_t align, CUdeviceptr addr, flags)
      Builder("cuMemAddressReserve", Driver, Op::VmmReserve).ptr(Out0).bytes(A1).read(deref(0)),
      Builder("cuMemAddressFree", Driver, Op::VmmAddressFree).ptr(A0).bytes(A1),
      // cuMemCreate(handle* h, size_t size, const CUmemAllocationProp* prop, flags):
      // prop->location.id (offset 12) is the device.
      Builder("cuMemCreate", Driver, Op::VmmCreate).handle(Out0).bytes(A1).device(Out1).read(deref(0), deref(2, 4, 12)),
      Builder("cuMemRelease", Driver, Op::VmmRelease).handle(A0),
      // cuMemMap(ptr, size, offset, handle, flags); cuMemUnmap(ptr, size)
      Builder("cuMemMap", Driver, Op::VmmMap).ptr(A0).bytes(A1).handle(A3),
      Builder("cuMemUnmap", Driver, Op::VmmUnmap).ptr(A0).bytes(A1),
      // cuMemSetAccess(ptr, size, const CUmemAccessDesc* desc, count): desc->location.id (offset 4)
      Builder("cuMemSetAccess", Driver, Op::VmmSetAccess).ptr(A0).bytes(A1).device(Out0).read(deref(2, 4, 4)),
      // cuMemcpy*(dst, src, bytes[, stream])
      Builder("cuMemcpy", Driver, Op::Memcpy).ptr(A0).bytes(A2),
      Builder("cuMemcpy_ptds", Driver, Op::Memcpy).ptr(A0).bytes(A2),
      Builder("cuMemcpyAsync", Driver, Op::Memcpy).ptr(A0).bytes(A2).stream(A3),
      Builder("cuMemcpyAsync_ptsz", Driver, Op::Memcpy).ptr(A0).bytes(A2).stream(A3),
      Builder("cuMemcpyHtoD_v2", Driver, Op::Memcpy).ptr(A0).bytes(A2),
      Builder("cuMemcpyHtoD_v2_ptds", Driver, Op::Memcpy).ptr(A0).bytes(A2),
      Builder("cuMemcpyDtoH_v2", Driver, Op::Memcpy).ptr(A0).bytes(A2),
      Builder("cuMemcpyDtoH_v2_ptds", Driver, Op::Memcpy).ptr(A0).bytes(A2),
      Builder("cuMemcpyDtoD_v2", Driver, Op::Memcpy).ptr(A0).bytes(A2),
      Builder("cuMemcpyDtoD_v2_ptds", Driver, Op::Memcpy).ptr(A0).bytes(A2),
      Builder("cuMemcpyHtoDAsync_v2", Driver, Op::Memcpy).ptr(A0).bytes(A2).stream(A3),
      Builder("cuMemcpyHtoDAsync_v2_ptsz", Driver, Op::Memcpy).ptr(A0).bytes(A2).stream(A3),
      Builder("cuMemcpyDtoHAsync_v2", Driver, Op::Memcpy).ptr(A0).bytes(A2).stream(A3),
      Builder("cuMemcpyDtoHAsync_v2_ptsz", Driver, Op::Memcpy).ptr(A0).bytes(A2).stream(A3),
      Builder("cuMemcpyDtoDAsync_v2", Driver, Op::Memcpy).ptr(A0).bytes(A2).stream(A3),
      Builder("cuMemcpyDtoDAsync_v2_ptsz", Driver, Op::Memcpy).ptr(A0).bytes(A2).stream(A3),
      Builder("cuStreamSynchronize", Driver, Op::Sync).stream(A0),
      Builder("cuStreamSynchronize_ptsz", Driver, Op::Sync).stream(A0),
      Builder("cuCtxSynchronize", Driver, Op::Sync),
      // cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shmem, stream, params, extra): stream is the 9th.
      Builder("cuLaunchKernel", Driver, Op::Launch).ptr(A0).stream(S2).stack(3).launch(),
      Builder("cuLaunchKernel_ptsz", Driver, Op::Launch).ptr(A0).stream(S2).stack(3).launch(),
      // cuLaunchKernelEx(const CUlaunchConfig* cfg, f, params, extra): cfg->hStream at offset 32.
      Builder("cuLaunchKernelEx", Driver, Op::Launch).ptr(A1).stream(Out0).read(deref(0, 8, 32)).launch(),
      Builder("cuLaunchKernelEx_ptsz", Driver, Op::Launch).ptr(A1).stream(Out0).read(deref(0, 8, 32)).launch(),
      Builder("cuCtxSetCurrent", Driver, Op::SetContext).handle(A0),
      Builder("cuCtxPushCurrent_v2", Driver, Op::SetContext).handle(A0),
      // cuDevicePrimaryCtxRetain(CUcontext* pctx, CUdevice dev)
      Builder("cuDevicePrimaryCtxRetain", Driver, Op::PrimaryCtxRetain).handle(Out0).device(A1).read(deref(0)),

      // ---- appended later, so that the ids above stay what trace files already hold (a writer refuses a
      // file whose apis table maps an id to another name): memory held without being allocated (CUDA IPC,
      // registered host memory), the stream-ordered allocator's pool, CUDA graphs ----
      // runtime:
      // cudaIpcGetMemHandle(cudaIpcMemHandle_t* handle, void* devPtr): handle = the digest of the opaque 64-byte
      // handle (handle_digest), read at return.
      Builder("cudaIpcGetMemHandle", Runtime, Op::IpcGetHandle).ptr(A1).handle(Out0).read(handle_at(0)),
      // cudaIpcOpenMemHandle(void** devPtr, cudaIpcMemHandle_t handle, unsigned flags): the 64-byte handle is
      // passed by value, in memory (the stack: S0 is its digest, folded at entry); flags takes the second register.
      Builder("cudaIpcOpenMemHandle", Runtime, Op::IpcOpen, AllocKind::IpcMapped).ptr(Out0).handle(S0).stack_handle().read(deref(0)),
      Builder("cudaIpcCloseMemHandle", Runtime, Op::IpcClose).ptr(A0),
      // cudaHostRegister(void* ptr, size_t size, unsigned flags); cudaHostUnregister(void* ptr)
      Builder("cudaHostRegister", Runtime, Op::HostRegister, AllocKind::HostRegistered).ptr(A0).bytes(A1),
      Builder("cudaHostUnregister", Runtime, Op::HostUnregister).ptr(A0),
      // The stream-ordered allocator's pool (cudaMallocAsync; PyTorch's cudaMallocAsync backend):
      // cudaMemPoolTrimTo(cudaMemPool_t pool, size_t minBytesToKeep);
      // cudaMemPool{Set,Get}Attribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void* value): ptr = attr,
      // bytes = the value behind `value` at return (4 bytes for the int attributes 1..3, else 8: decode_call);
      // cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int device)
      Builder("cudaMemPoolTrimTo", Runtime, Op::MemPoolTrim).handle(A0).bytes(A1),
      Builder("cudaMemPoolSetAttribute", Runtime, Op::MemPoolSetAttribute).handle(A0).ptr(A1).bytes(Out1).read(deref(2, 4), deref(2, 8)),
      Builder("cudaMemPoolGetAttribute", Runtime, Op::MemPoolGetAttribute).handle(A0).ptr(A1).bytes(Out1).read(deref(2, 4), deref(2, 8)),
      Builder("cudaDeviceGetDefaultMemPool", Runtime, Op::DefaultMemPool).handle(Out0).device(A1).read(deref(0)),
      // CUDA graphs: cudaGraphInstantiate[WithFlags](cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags),
      // cudaGraphInstantiateWithParams[_ptsz](exec, graph, cudaGraphInstantiateParams* params): handle = the
      // executable graph (read at return), ptr = the graph; cudaGraphLaunch[_ptsz](exec, stream);
      // cudaGraphExecDestroy(exec)
      Builder("cudaGraphInstantiate", Runtime, Op::GraphInstantiate).handle(Out0).ptr(A1).read(deref(0)),
      Builder("cudaGraphInstantiateWithFlags", Runtime, Op::GraphInstantiate).handle(Out0).ptr(A1).read(deref(0)),
      Builder("cudaGraphInstantiateWithParams", Runtime, Op::GraphInstantiate).handle(Out0).ptr(A1).read(deref(0)),
      Builder("cudaGraphInstantiateWithParams_ptsz", Runtime, Op::GraphInstantiate).handle(Out0).ptr(A1).read(deref(0)),
      Builder("cudaGraphLaunch", Runtime, Op::GraphLaunch).handle(A0).stream(A1),
      Builder("cudaGraphLaunch_ptsz", Runtime, Op::GraphLaunch).handle(A0).stream(A1),
      Builder("cudaGraphExecDestroy", Runtime, Op::GraphExecDestroy).handle(A0),

      // driver:
      // cuIpcGetMemHandle(CUipcMemHandle* pHandle, CUdeviceptr dptr);
      // cuIpcOpenMemHandle[_v2](CUdeviceptr* pdptr, CUipcMemHandle handle, unsigned flags) (the handle by value,
      // in memory, as for the runtime's); cuIpcCloseMemHandle(CUdeviceptr dptr). handle: the digest, as for the runtime's.
      Builder("cuIpcGetMemHandle", Driver, Op::IpcGetHandle).ptr(A1).handle(Out0).read(handle_at(0)),
      Builder("cuIpcOpenMemHandle_v2", Driver, Op::IpcOpen, AllocKind::IpcMapped).ptr(Out0).handle(S0).stack_handle().read(deref(0)),
      Builder("cuIpcOpenMemHandle", Driver, Op::IpcOpen, AllocKind::IpcMapped).ptr(Out0).handle(S0).stack_handle().read(deref(0)),
      Builder("cuIpcCloseMemHandle", Driver, Op::IpcClose).ptr(A0),
      // cuMemHostRegister[_v2](void* p, size_t bytesize, unsigned flags); cuMemHostUnregister(void* p)
      Builder("cuMemHostRegister_v2", Driver, Op::HostRegister, AllocKind::HostRegistered).ptr(A0).bytes(A1),
      Builder("cuMemHostRegister", Driver, Op::HostRegister, AllocKind::HostRegistered).ptr(A0).bytes(A1),
      Builder("cuMemHostUnregister", Driver, Op::HostUnregister).ptr(A0),
      // The driver's pool calls, as the runtime's: cuMemPoolTrimTo(pool, minBytesToKeep),
      // cuMemPool{Set,Get}Attribute(pool, attr, value), cuDeviceGetDefaultMemPool(CUmemoryPool* pool, CUdevice dev)
      Builder("cuMemPoolTrimTo", Driver, Op::MemPoolTrim).handle(A0).bytes(A1),
      Builder("cuMemPoolSetAttribute", Driver, Op::MemPoolSetAttribute).handle(A0).ptr(A1).bytes(Out1).read(deref(2, 4), deref(2, 8)),
      Builder("cuMemPoolGetAttribute", Driver, Op::MemPoolGetAttribute).handle(A0).ptr(A1).bytes(Out1).read(deref(2, 4), deref(2, 8)),
      Builder("cuDeviceGetDefaultMemPool", Driver, Op::DefaultMemPool).handle(Out0).device(A1).read(deref(0)),
      // cuGraphInstantiateWithFlags(CUgraphExec* exec, CUgraph graph, unsigned long long flags); cuGraphInstantiate_v2
      // (CUDA 11: exec, graph, errorNode*, log, size) and cuGraphInstantiateWithParams[_ptsz](exec, graph, params*)
      // start the same; cuGraphLaunch[_ptsz](exec, stream); cuGraphExecDestroy(exec)
      Builder("cuGraphInstantiateWithFlags", Driver, Op::GraphInstantiate).handle(Out0).ptr(A1).read(deref(0)),
      Builder("cuGraphInstantiate_v2", Driver, Op::GraphInstantiate).handle(Out0).ptr(A1).read(deref(0)),
      Builder("cuGraphInstantiateWithParams", Driver, Op::GraphInstantiate).handle(Out0).ptr(A1).read(deref(0)),
      Builder("cuGraphInstantiateWithParams_ptsz", Driver, Op::GraphInstantiate).handle(Out0).ptr(A1).read(deref(0)),
      Builder("cuGraphLaunch", Driver, Op::GraphLaunch).handle(A0).stream(A1),
      Builder("cuGraphLaunch_ptsz", Driver, Op::GraphLaunch).handle(A0).stream(A1),
      Builder("cuGraphExecDestroy", Driver, Op::GraphExecDestroy).handle(A0),

      // ---- appended later again (the ids above stay): VMM memory shared between processes (PyTorch's expandable
      // segments sent to another process) ----
      // cuMemExportToShareableHandle(void* shareableHandle, CUmemGenericAllocationHandle handle,
      // CUmemAllocationHandleType handleType, unsigned long long flags): handle = the exported physical handle,
      // ptr = the first 4 bytes written to shareableHandle at return (the file descriptor, for
      // CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR).
      Builder("cuMemExportToShareableHandle", Driver, Op::VmmExport).handle(A1).ptr(Out0).read(deref(0, 4)),
      // cuMemImportFromShareableHandle(CUmemGenericAllocationHandle* handle, void* osHandle,
      // CUmemAllocationHandleType shHandleType): handle = the new handle, read at return; ptr = osHandle (the file
      // descriptor cast to a pointer). The size is the exporter's: the call does not carry it.
      Builder("cuMemImportFromShareableHandle", Driver, Op::VmmImport, AllocKind::VmmImported)
          .handle(Out0).ptr(A1).read(deref(0)),
  };
  std::array<ApiInfo, table.size()> out{};
  for (std::size_t i = 0; i < table.size(); ++i) {
    out[i] = table[i].a;
    out[i].id = static_cast<std::uint16_t>(i + 1);  // 0 means "none" on the BPF side
    assign_words(out[i]);
    check_reads(out[i]);
  }
  return out;
}

constexpr auto kApis = make_table();

std::optional<std::uint64_t> pick(Src s, const ApiInfo& api, const RawCallValues& raw) {
  switch (s) {
    case None: return std::nullopt;
    case Out0: return raw.out[0];
    case Out1: return raw.out[1];
    default:
      for (int i = 0; i < kCallWords; ++i)
        if (api.words[i] == word_of(s)) return raw.words[i];
      return std::nullopt;  // unreachable: assign_words names every argument used
  }
}

}  // namespace

std::span<const ApiInfo> all_apis() { return kApis; }

const ApiInfo* find_api(std::uint16_t id) {
  if (id == 0 || id > kApis.size()) return nullptr;
  return &kApis[id - 1];
}

const ApiInfo* find_api(std::string_view name) {
  for (const auto& api : kApis)
    if (api.name == name) return &api;
  return nullptr;
}

AllocKind alloc_kind_named(std::string_view name) {
  for (AllocKind kind : kAllocKinds)
    if (alloc_kind_name(kind) == name) return kind;
  return AllocKind::None;
}

std::string gpu_memory_kinds_sql(std::string_view column) {
  std::string list;
  for (AllocKind kind : kAllocKinds)
    if (occupies_gpu_memory(kind)) list += (list.empty() ? "'" : ", '") + std::string(alloc_kind_name(kind)) + "'";
  return std::string(column) + " IN (" + list + ")";
}

std::string_view op_name(Op op) {
  switch (op) {
    case Op::Alloc: return "alloc";
    case Op::Free: return "free";
    case Op::FreeHost: return "free_host";
    case Op::VmmReserve: return "vmm_reserve";
    case Op::VmmAddressFree: return "vmm_address_free";
    case Op::VmmCreate: return "vmm_create";
    case Op::VmmRelease: return "vmm_release";
    case Op::VmmMap: return "vmm_map";
    case Op::VmmUnmap: return "vmm_unmap";
    case Op::VmmSetAccess: return "vmm_set_access";
    case Op::Memcpy: return "memcpy";
    case Op::Launch: return "launch";
    case Op::Sync: return "sync";
    case Op::SetDevice: return "set_device";
    case Op::SetContext: return "set_context";
    case Op::PrimaryCtxRetain: return "primary_ctx_retain";
    case Op::MemGetInfo: return "mem_get_info";
    case Op::IpcGetHandle: return "ipc_get_handle";
    case Op::IpcOpen: return "ipc_open";
    case Op::IpcClose: return "ipc_close";
    case Op::HostRegister: return "host_register";
    case Op::HostUnregister: return "host_unregister";
    case Op::MemPoolTrim: return "mem_pool_trim";
    case Op::MemPoolSetAttribute: return "mem_pool_set_attribute";
    case Op::MemPoolGetAttribute: return "mem_pool_get_attribute";
    case Op::DefaultMemPool: return "default_mem_pool";
    case Op::GraphInstantiate: return "graph_instantiate";
    case Op::GraphLaunch: return "graph_launch";
    case Op::GraphExecDestroy: return "graph_exec_destroy";
    case Op::VmmExport: return "vmm_export";
    case Op::VmmImport: return "vmm_import";
  }
  return "unknown";
}

std::string_view layer_name(Layer layer) { return layer == Layer::Runtime ? "runtime" : "driver"; }

DecodedCall decode_call(const ApiInfo& api, const RawCallValues& raw) {
  DecodedCall d;
  d.ptr = pick(api.ptr, api, raw);
  d.bytes = pick(api.bytes, api, raw);
  if (d.bytes && api.bytes_factor != None) *d.bytes *= pick(api.bytes_factor, api, raw).value_or(1);
  // A pool attribute's value: cudaMemPoolReuse* (attributes 1..3) are ints, read as 4 bytes (out[0]);
  // the others (release threshold, reserved / used bytes and their highs) 64-bit (out[1]).
  if ((api.op == Op::MemPoolGetAttribute || api.op == Op::MemPoolSetAttribute) && d.ptr && *d.ptr >= 1 && *d.ptr <= 3)
    d.bytes = raw.out[0] & 0xffffffffu;
  d.stream = pick(api.stream, api, raw);
  d.handle = pick(api.handle, api, raw);
  if (auto dev = pick(api.device, api, raw)) d.device = static_cast<std::int32_t>(*dev);  // CUdevice is an int
  return d;
}

}  // namespace vs
