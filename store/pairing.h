// Allocation pairing, in memory and in event order: turns the stream of
// completed calls into allocation lifetimes. No SQL here: the store writes
// what this returns.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/cuda_api.h"
#include "common/records.h"

namespace vs::store {

struct AllocationOpen {
  std::int64_t id = 0;
  std::uint32_t pid = 0;
  std::optional<std::int64_t> device;
  AllocKind kind = AllocKind::None;
  std::uint64_t ptr = 0;  // vmm_physical, vmm_imported: the handle
  std::uint64_t bytes = 0;
  std::optional<std::uint64_t> handle;  // vmm_mapped: the physical handle; vmm_imported: the shareable handle (fd)
  std::int64_t alloc_call_id = 0, alloc_ts_ns = 0;
  std::optional<std::int64_t> alloc_seq;  // the allocating call's seq (NULL: a nested call)
  std::optional<std::string> caller;
};

struct AllocationClose {
  std::int64_t id = 0;
  std::optional<std::int64_t> free_call_id;  // NULL for process_exit
  std::int64_t free_ts_ns = 0;
  // The seq of the call free_call_id (NULL: a nested call, or process_exit).
  std::optional<std::int64_t> free_seq;
  // freed | process_exit | superseded. 'superseded': a later successful allocation
  // returned the same key (pid, ptr / handle / address) while this one was still open,
  // so its free was missed (not traced, or the call failed to decode); free_call_id is
  // that later allocation call and free_ts_ns the time it returned.
  std::string end_reason;
};

struct UnmatchedFree {
  std::int64_t call_id = 0;
  std::uint32_t pid = 0;
  std::optional<std::uint64_t> ptr;
};

struct PairingOps {
  std::vector<AllocationOpen> opened;
  std::vector<AllocationClose> closed;
  std::vector<UnmatchedFree> unmatched;
};

// Outstanding bytes by allocations.kind, over all processes.
struct OutstandingTotals {
  std::uint64_t bytes_by_kind[kAllocKindSlots]{};  // indexed by AllocKind
  std::uint64_t open_count = 0;
  std::uint64_t device_bytes() const;  // what occupies GPU memory (common/cuda_api.h: occupies_gpu_memory)
};

class Pairing {
 public:
  explicit Pairing(std::int64_t first_allocation_id = 1);
  // `call.device` is final here (the caller resolved it). Failed calls (ret != 0) change nothing.
  // `seq` is the call's ordinal among the top-level calls of its process (call_rows.seq, which the
  // writer numbers), nullopt for a nested call or where no seq is kept: it becomes alloc_seq /
  // free_seq of what the call opens or closes.
  PairingOps on_call(const CallRecord& call, std::optional<std::int64_t> seq = std::nullopt);
  // The same, appending to `ops` (the caller clears it and reuses its capacity).
  void on_call(const CallRecord& call, std::optional<std::int64_t> seq, PairingOps& ops);
  PairingOps on_process_exit(std::uint32_t pid, std::int64_t ts_ns);
  const OutstandingTotals& totals() const { return totals_; }
  // The same per process (those holding something open).
  const std::map<std::uint32_t, OutstandingTotals>& totals_by_pid() const { return totals_by_pid_; }

 private:
  // One open allocation, as pairing needs it (the row itself went out in AllocationOpen).
  struct Open {
    std::int64_t id = 0;
    std::uint64_t bytes = 0;
    std::optional<std::int64_t> device;
    AllocKind kind = AllocKind::None;
    std::uint32_t refs = 1;  // ipc_mapped: opens of the same mapping not yet closed; physical: imports of an open handle
    std::uint32_t pid = 0;
  };
  // Everything one process holds open. Keys are pointers (one namespace for device,
  // async, managed and host), VMM handles, and reserved / mapped start addresses;
  // mappings are ordered because cuMemUnmap closes every mapping inside a range. IPC mappings and registered
  // host ranges have their own namespaces: only their own calls end them.
  struct Process {
    std::unordered_map<std::uint64_t, Open> pointers, physical, reserved, ipc, registered;
    std::map<std::uint64_t, Open> mapped;
  };

  Process& process(std::uint32_t pid);        // creates it
  Process* find_process(std::uint32_t pid);   // nullptr if it holds nothing known
  template <class Map>
  void open(Map& ns, const CallRecord& call, std::optional<std::int64_t> seq, AllocKind kind, std::uint64_t ptr,
            std::optional<std::uint64_t> handle, std::optional<std::int64_t> device, PairingOps& ops);
  template <class Map>
  bool close_at(Map& ns, std::uint64_t key, const CallRecord& call, std::optional<std::int64_t> seq, PairingOps& ops);
  // One more reference to what is open at `key` (an IPC handle opened again, a VMM handle imported again):
  // false when nothing is.
  template <class Map>
  bool add_reference(Map& ns, std::uint64_t key);
  void close(const Open& o, std::optional<std::int64_t> free_call_id, std::optional<std::int64_t> free_seq,
             std::int64_t free_ts_ns, const char* reason, PairingOps& ops);

  std::int64_t next_id_;
  OutstandingTotals totals_;
  std::unordered_map<std::uint32_t, Process> processes_;
  std::map<std::uint32_t, OutstandingTotals> totals_by_pid_;
};

}  // namespace vs::store
