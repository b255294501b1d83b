// Turns BPF call records into store rows: the API's columns (through the
// catalog), the device each call ran on, and the file that made the call.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <unordered_map>

#include "common/records.h"
#include "tracer/discovery.h"
#include "tracer/bpf/events.h"

namespace vs::tracer {

// A record's CLOCK_MONOTONIC time or duration (bpf_ktime_get_ns, u64) as a store column: below 2^62 ns (146
// years of uptime), so that a time plus a duration never overflows int64 (fuzz_decoder: a corrupt record's
// start near 2^62 plus its duration overflowed in pairing, UBSan; at exactly 2^62 each, the sum is 2^63).
constexpr std::uint64_t kMaxRecordNs = (std::uint64_t{1} << 62) - 1;
inline std::int64_t record_ns(std::uint64_t ns) { return static_cast<std::int64_t>(ns < kMaxRecordNs ? ns : kMaxRecordNs); }

// (kernel dev_t, inode) -> path of every file mapped by traced processes.
class ObjectPaths {
 public:
  // `dev` in the kernel's encoding (major << 20 | minor), as BPF reads it.
  void add(std::uint32_t dev, std::uint64_t ino, const std::string& path);
  void add_stat_dev(std::uint64_t st_dev, std::uint64_t ino, const std::string& path);
  void add_maps(const std::vector<MapsEntry>& maps);
  // A path read by the return probe from the file's dentries; ignored when incomplete.
  void add_object(const vs_object_event& ev);
  // Reads /proc/PID/maps; returns false if the process is gone.
  bool scan_process(std::uint32_t pid);
  const std::string* find(std::uint32_t dev, std::uint64_t ino) const;

 private:
  std::map<std::pair<std::uint32_t, std::uint64_t>, std::string> paths_;
};

class CallDecoder {
 public:
  // Call ids in the file are id_base + (BPF sequence - 1).
  explicit CallDecoder(std::int64_t id_base) : id_base_(id_base) {}
  // `sched`: where the thread was during the call, when it was switched out.
  vs::CallRecord decode(const vs_call_event& ev, const vs_call_sched* sched = nullptr);
  ObjectPaths& objects() { return objects_; }
  void forget_process(std::uint32_t pid);

 private:
  std::optional<std::string> caller_path(const vs_call_event& ev);
  std::int64_t id_base_;
  ObjectPaths objects_;
  std::set<std::uint32_t> scanned_pids_;
  std::set<std::pair<std::uint32_t, std::uint64_t>> unresolved_;  // rescanned once
  // Device tracking: the runtime's current device per thread (cudaSetDevice;
  // CUDA's default is 0), contexts -> devices per process, and the driver
  // context current on each thread.
  std::unordered_map<std::uint32_t, std::int64_t> runtime_device_;
  std::map<std::pair<std::uint32_t, std::uint64_t>, std::int64_t> context_device_;
  std::unordered_map<std::uint32_t, std::int64_t> context_device_of_thread_;
};

}  // namespace vs::tracer
