#include "tracer/decoder.h"

#include <sys/sysmacros.h>

#include <algorithm>
#include <cstring>

#include "common/cuda_api.h"

namespace vs::tracer {

namespace {
// calls.id of BPF sequence number `seq` (from 1). Computed modulo 2^64: a sequence
// number no counter reaches (a corrupt record) gives a wrong id, never signed
// overflow (fuzz_decoder: seq near 2^63 overflowed id_base + seq - 1, UBSan).
std::int64_t call_id(std::int64_t id_base, std::uint64_t seq) {
  return static_cast<std::int64_t>(static_cast<std::uint64_t>(id_base) + seq - 1);
}
}  // namespace

void ObjectPaths::add(std::uint32_t dev, std::uint64_t ino, const std::string& path) {
  paths_[{dev, ino}] = path;
}

void ObjectPaths::add_stat_dev(std::uint64_t st_dev, std::uint64_t ino, const std::string& path) {
  add(static_cast<std::uint32_t>((major(st_dev) << 20) | minor(st_dev)), ino, path);
}

void ObjectPaths::add_maps(const std::vector<MapsEntry>& maps) {
  for (const auto& e : maps)
    if (e.inode != 0 && !e.path.empty() && e.path[0] == '/') add((e.dev_major << 20) | e.dev_minor, e.inode, e.path);
}

void ObjectPaths::add_object(const vs_object_event& ev) {
  if (ev.flags & VS_OBJECT_TRUNCATED || ev.ncomponents == 0 || ev.ncomponents > VS_PATH_DEPTH) return;
  std::string path;
  for (std::uint32_t i = ev.ncomponents; i-- > 0;)
    path.append("/").append(ev.components[i], strnlen(ev.components[i], VS_PATH_COMPONENT));
  paths_.try_emplace({ev.dev, ev.ino}, std::move(path));  // a path from /proc/PID/maps stays
}

bool ObjectPaths::scan_process(std::uint32_t pid) {
  auto maps = read_maps(pid);
  if (!maps) return false;
  add_maps(*maps);
  return true;
}

const std::string* ObjectPaths::find(std::uint32_t dev, std::uint64_t ino) const {
  auto it = paths_.find({dev, ino});
  return it == paths_.end() ? nullptr : &it->second;
}

void CallDecoder::forget_process(std::uint32_t pid) {
  scanned_pids_.erase(pid);
  for (auto it = context_device_.begin(); it != context_device_.end();)
    it = it->first.first == pid ? context_device_.erase(it) : std::next(it);
}

std::optional<std::string> CallDecoder::caller_path(const vs_call_event& ev) {
  if (ev.caller_ino == 0) return std::nullopt;  // anonymous code (a JIT) or unknown
  if (const auto* p = objects_.find(ev.caller_dev, ev.caller_ino)) return *p;
  // Its vs_object_event was lost (ring full) or came from another CPU an instant
  // later: read this process's mappings, once per process and per unknown file.
  bool first_scan = scanned_pids_.insert(ev.pid).second;
  if (first_scan || unresolved_.insert({ev.caller_dev, ev.caller_ino}).second) {
    objects_.scan_process(ev.pid);
    if (const auto* p = objects_.find(ev.caller_dev, ev.caller_ino)) return *p;
  }
  return std::nullopt;  // unknown rather than a guess
}

vs::CallRecord CallDecoder::decode(const vs_call_event& ev, const vs_call_sched* sched) {
  vs::CallRecord c;
  c.id = call_id(id_base_, ev.seq);
  c.ts_ns = record_ns(ev.start_ns);
  c.dur_ns = std::max<std::int64_t>(record_ns(ev.end_ns) - c.ts_ns, 0);
  c.pid = ev.pid;
  c.tid = ev.tid;
  c.api_id = ev.api;
  c.ret = ev.ret;
  c.incomplete = (ev.flags & VS_CALL_INCOMPLETE) != 0;
  if (sched && sched->switches > 0) {
    c.off_cpu_ns = record_ns(sched->off_cpu_ns);
    c.runq_ns = record_ns(sched->runq_ns);
    c.switches = sched->switches;
    c.preempted_by = sched->preemptor_pid;
    c.preempted_by_comm =
        std::string(sched->preemptor_comm, strnlen(sched->preemptor_comm, sizeof(sched->preemptor_comm)));
    c.longest_off_ns = record_ns(sched->longest_off_ns);
  }
  if (ev.parent_seq) {
    c.parent_id = call_id(id_base_, ev.parent_seq);
    c.parent_api_id = ev.parent_api;
  }
  if (!c.incomplete) c.caller = caller_path(ev);

  const ApiInfo* api = find_api(ev.api);
  if (!api) return c;
  RawCallValues raw;
  std::copy(std::begin(ev.words), std::end(ev.words), raw.words);
  std::copy(std::begin(ev.out), std::end(ev.out), raw.out);
  DecodedCall d = decode_call(*api, raw);
  c.ptr = d.ptr;
  c.bytes = d.bytes;
  c.stream = d.stream;
  c.handle = d.handle;

  bool ok = ev.ret == 0 && !c.incomplete;
  switch (api->op) {
    case Op::SetDevice:
      if (ok && d.device) runtime_device_[ev.tid] = *d.device;
      break;
    case Op::PrimaryCtxRetain:
      if (ok && d.device && d.handle) context_device_[{ev.pid, *d.handle}] = *d.device;
      break;
    case Op::SetContext:
      if (ok && d.handle) {
        auto it = context_device_.find({ev.pid, *d.handle});
        if (it != context_device_.end()) context_device_of_thread_[ev.tid] = it->second;
      }
      break;
    default:
      break;
  }
  if (d.device) {
    c.device = d.device;
  } else if (api->layer == Layer::Runtime) {
    auto it = runtime_device_.find(ev.tid);
    c.device = it == runtime_device_.end() ? 0 : it->second;
  } else if (auto it = context_device_of_thread_.find(ev.tid); it != context_device_of_thread_.end()) {
    c.device = it->second;
  } else if (auto rt = runtime_device_.find(ev.tid); rt != runtime_device_.end()) {
    c.device = rt->second;
  }
  return c;
}

}  // namespace vs::tracer
