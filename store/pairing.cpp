#include "store/pairing.h"

#include <algorithm>
#include <limits>

namespace vs::store {
namespace {

constexpr const char* kFreed = "freed";
constexpr const char* kProcessExit = "process_exit";
// A new allocation came back at a key that was still open: the old one's free was
// missed (it happened untraced, or its call could not be decoded). Closing it keeps
// the outstanding totals honest instead of counting the same memory twice.
constexpr const char* kSuperseded = "superseded";

bool is_memory_op(Op op) {
  switch (op) {
    case Op::Alloc: case Op::Free: case Op::FreeHost:
    case Op::VmmReserve: case Op::VmmAddressFree: case Op::VmmCreate: case Op::VmmRelease:
    case Op::VmmMap: case Op::VmmUnmap: case Op::VmmImport:
    case Op::IpcOpen: case Op::IpcClose: case Op::HostRegister: case Op::HostUnregister:
      return true;
    default:
      return false;
  }
}

// A nested memory call is accounted by its parent, which completes (and so arrives) after it, when
// - it performs its parent's operation: the parent forwards to it (a stub exported under the driver's
//   name, as JAX's XLA CUDA plugin has: stub cuMemCreate -> libcuda's cuMemCreate; a versioned alias,
//   cuMemAllocAsync -> cuMemAllocAsync_ptsz; a bundled runtime's cudaMalloc -> libcudart's), or
// - it is a driver call made inside a runtime alloc / free (cudaMalloc -> cuMemAlloc_v2).
// The parent, the call its caller made, is the operation.
bool counted_by_parent(const ApiInfo& api, std::uint16_t parent_api_id) {
  if (parent_api_id == 0 || !is_memory_op(api.op)) return false;
  const ApiInfo* parent = find_api(parent_api_id);
  if (parent == nullptr) return false;
  if (parent->op == api.op && parent->kind == api.kind) return true;
  if (api.layer != Layer::Driver || parent->layer != Layer::Runtime) return false;
  return parent->op == Op::Alloc || parent->op == Op::Free || parent->op == Op::FreeHost;
}

}  // namespace

std::uint64_t OutstandingTotals::device_bytes() const {
  std::uint64_t bytes = 0;
  for (AllocKind kind : kAllocKinds)
    if (occupies_gpu_memory(kind)) bytes += bytes_by_kind[static_cast<int>(kind)];
  return bytes;
}

Pairing::Pairing(std::int64_t first_allocation_id) : next_id_(first_allocation_id) {}

Pairing::Process& Pairing::process(std::uint32_t pid) { return processes_[pid]; }

Pairing::Process* Pairing::find_process(std::uint32_t pid) {
  auto it = processes_.find(pid);
  return it == processes_.end() ? nullptr : &it->second;
}

void Pairing::close(const Open& o, std::optional<std::int64_t> free_call_id, std::optional<std::int64_t> free_seq,
                    std::int64_t free_ts_ns, const char* reason, PairingOps& ops) {
  totals_.bytes_by_kind[static_cast<int>(o.kind)] -= o.bytes;
  --totals_.open_count;
  if (auto it = totals_by_pid_.find(o.pid); it != totals_by_pid_.end()) {
    it->second.bytes_by_kind[static_cast<int>(o.kind)] -= o.bytes;
    if (--it->second.open_count == 0) totals_by_pid_.erase(it);
  }
  ops.closed.push_back(AllocationClose{o.id, free_call_id, free_ts_ns, free_seq, reason});
}

template <class Map>
void Pairing::open(Map& ns, const CallRecord& call, std::optional<std::int64_t> seq, AllocKind kind,
                   std::uint64_t ptr, std::optional<std::uint64_t> handle, std::optional<std::int64_t> device,
                   PairingOps& ops) {
  const std::uint64_t bytes = call.bytes.value_or(0);
  Open fresh{next_id_++, bytes, device, kind};
  fresh.pid = call.pid;
  auto [it, inserted] = ns.try_emplace(ptr, fresh);
  if (!inserted) {
    close(it->second, call.id, seq, call.ts_ns + call.dur_ns, kSuperseded, ops);
    it->second = fresh;
  }
  totals_.bytes_by_kind[static_cast<int>(kind)] += bytes;
  ++totals_.open_count;
  OutstandingTotals& of_pid = totals_by_pid_[call.pid];
  of_pid.bytes_by_kind[static_cast<int>(kind)] += bytes;
  ++of_pid.open_count;
  AllocationOpen& row = ops.opened.emplace_back();
  row.id = fresh.id;
  row.pid = call.pid;
  row.device = device;
  row.kind = kind;
  row.ptr = ptr;
  row.bytes = bytes;
  row.handle = handle;
  row.alloc_call_id = call.id;
  row.alloc_ts_ns = call.ts_ns;
  row.alloc_seq = seq;
  row.caller = call.caller;
}

template <class Map>
bool Pairing::close_at(Map& ns, std::uint64_t key, const CallRecord& call, std::optional<std::int64_t> seq,
                       PairingOps& ops) {
  auto it = ns.find(key);
  if (it == ns.end()) return false;
  // Opened more than once (add_reference): each close drops one reference, the last one ends it.
  if (it->second.refs > 1) {
    --it->second.refs;
    return true;
  }
  close(it->second, call.id, seq, call.ts_ns + call.dur_ns, kFreed, ops);
  ns.erase(it);
  return true;
}

template <class Map>
bool Pairing::add_reference(Map& ns, std::uint64_t key) {
  auto it = ns.find(key);
  if (it == ns.end()) return false;
  ++it->second.refs;
  return true;
}

PairingOps Pairing::on_call(const CallRecord& call, std::optional<std::int64_t> seq) {
  PairingOps ops;
  on_call(call, seq, ops);
  return ops;
}

void Pairing::on_call(const CallRecord& call, std::optional<std::int64_t> seq, PairingOps& ops) {
  if (call.ret != 0 || call.incomplete) return;
  const ApiInfo* api = find_api(call.api_id);
  if (api == nullptr || !is_memory_op(api->op)) return;
  if (counted_by_parent(*api, call.parent_api_id)) return;

  auto unmatched = [&](std::optional<std::uint64_t> ptr) {
    ops.unmatched.push_back(UnmatchedFree{call.id, call.pid, ptr});
  };

  switch (api->op) {
    case Op::Alloc: {
      // A successful zero-byte cudaMalloc returns NULL: nothing was allocated.
      if (!call.ptr || *call.ptr == 0) return;
      Process& p = process(call.pid);
      open(p.pointers, call, seq, api->kind, *call.ptr, std::nullopt, call.device, ops);
      return;
    }
    case Op::Free:
    case Op::FreeHost: {
      // cudaFree(0) / cudaFreeHost(0) are no-ops (cudaFree(0) initializes a context).
      if (!call.ptr || *call.ptr == 0) return;
      Process* p = find_process(call.pid);
      if (p == nullptr || !close_at(p->pointers, *call.ptr, call, seq, ops)) unmatched(call.ptr);
      return;
    }
    case Op::VmmReserve: {
      if (!call.ptr || *call.ptr == 0) return;
      open(process(call.pid).reserved, call, seq, AllocKind::VmmReserved, *call.ptr, std::nullopt, call.device, ops);
      return;
    }
    case Op::VmmAddressFree: {
      if (!call.ptr) return;
      Process* p = find_process(call.pid);
      if (p == nullptr || !close_at(p->reserved, *call.ptr, call, seq, ops)) unmatched(call.ptr);
      return;
    }
    case Op::VmmCreate: {
      if (!call.handle) return;
      // vmm_physical rows keep the handle in `ptr` (their key) and leave `handle` NULL.
      open(process(call.pid).physical, call, seq, AllocKind::VmmPhysical, *call.handle, std::nullopt, call.device, ops);
      return;
    }
    case Op::VmmRelease: {
      if (!call.handle) return;
      // A handle imported again while open counted a reference (VmmImport): each release drops one.
      Process* p = find_process(call.pid);
      if (p == nullptr || !close_at(p->physical, *call.handle, call, seq, ops)) unmatched(call.handle);
      return;
    }
    case Op::VmmImport: {
      // Another process's physical memory (cuMemImportFromShareableHandle): a handle in this process's physical
      // namespace, so that cuMemMap finds it and cuMemRelease ends it, as for cuMemCreate's handles. Its kind is
      // vmm_imported, of 0 bytes (the call carries no `bytes`): the exporter created the memory and counts it,
      // and the size is not in the call (the handle's mappings give it). The row's `ptr` is the handle (its key),
      // as for vmm_physical; its `handle` the shareable handle the call was given (the file descriptor).
      if (!call.handle || *call.handle == 0) return;
      Process& p = process(call.pid);
      // The same handle back while it is still open (an import of memory this process already holds) is one
      // handle with one more reference, not a new allocation that would supersede the open one.
      if (add_reference(p.physical, *call.handle)) return;
      open(p.physical, call, seq, AllocKind::VmmImported, *call.handle, call.ptr, call.device, ops);
      return;
    }
    case Op::VmmMap: {
      if (!call.ptr) return;
      Process& p = process(call.pid);
      std::optional<std::int64_t> device = call.device;
      if (call.handle) {
        auto phys = p.physical.find(*call.handle);
        if (phys != p.physical.end() && phys->second.device) device = phys->second.device;
      }
      open(p.mapped, call, seq, AllocKind::VmmMapped, *call.ptr, call.handle, device, ops);
      return;
    }
    case Op::VmmUnmap: {
      if (!call.ptr) return;
      Process* p = find_process(call.pid);
      bool any = false;
      if (p != nullptr) {
        const std::uint64_t start = *call.ptr;
        const std::uint64_t size = call.bytes.value_or(0);
        // Every mapping that starts inside [start, start + size); without a size, the one at start.
        const std::uint64_t end = size == 0 ? start + 1
                                  : size > std::numeric_limits<std::uint64_t>::max() - start
                                      ? std::numeric_limits<std::uint64_t>::max()
                                      : start + size;
        auto it = p->mapped.lower_bound(start);
        while (it != p->mapped.end() && it->first < end) {
          close(it->second, call.id, seq, call.ts_ns + call.dur_ns, kFreed, ops);
          it = p->mapped.erase(it);
          any = true;
        }
      }
      if (!any) unmatched(call.ptr);
      return;
    }
    case Op::IpcOpen: {
      if (!call.ptr || *call.ptr == 0) return;
      Process& p = process(call.pid);
      // Opening a handle the process already has open returns the same pointer and counts a reference
      // (CUDA: "the reference count on the handle is incremented"): one mapping, ended by the last close.
      if (add_reference(p.ipc, *call.ptr)) return;
      // `handle`: what the call record carries of the IPC handle (the digest of its 64 bytes, as the exporter's).
      open(p.ipc, call, seq, AllocKind::IpcMapped, *call.ptr, call.handle, call.device, ops);
      return;
    }
    case Op::IpcClose: {
      if (!call.ptr || *call.ptr == 0) return;
      Process* p = find_process(call.pid);
      if (p == nullptr || !close_at(p->ipc, *call.ptr, call, seq, ops)) unmatched(call.ptr);
      return;
    }
    case Op::HostRegister: {
      if (!call.ptr || *call.ptr == 0) return;
      open(process(call.pid).registered, call, seq, AllocKind::HostRegistered, *call.ptr, std::nullopt, call.device,
           ops);
      return;
    }
    case Op::HostUnregister: {
      if (!call.ptr || *call.ptr == 0) return;
      Process* p = find_process(call.pid);
      if (p == nullptr || !close_at(p->registered, *call.ptr, call, seq, ops)) unmatched(call.ptr);
      return;
    }
    default:
      return;
  }
}

PairingOps Pairing::on_process_exit(std::uint32_t pid, std::int64_t ts_ns) {
  PairingOps ops;
  auto it = processes_.find(pid);
  if (it == processes_.end()) return ops;
  std::vector<const Open*> held;
  Process& p = it->second;
  held.reserve(p.pointers.size() + p.physical.size() + p.reserved.size() + p.mapped.size() + p.ipc.size() +
               p.registered.size());
  for (const auto& [key, o] : p.pointers) held.push_back(&o);
  for (const auto& [key, o] : p.ipc) held.push_back(&o);
  for (const auto& [key, o] : p.registered) held.push_back(&o);
  for (const auto& [key, o] : p.physical) held.push_back(&o);
  for (const auto& [key, o] : p.reserved) held.push_back(&o);
  for (const auto& [key, o] : p.mapped) held.push_back(&o);
  std::sort(held.begin(), held.end(), [](const Open* a, const Open* b) { return a->id < b->id; });
  ops.closed.reserve(held.size());
  for (const Open* o : held) close(*o, std::nullopt, std::nullopt, ts_ns, kProcessExit, ops);
  processes_.erase(it);
  return ops;
}

}  // namespace vs::store
