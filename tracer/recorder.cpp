#include "tracer/recorder.h"

#include <dirent.h>
#include <spdlog/spdlog.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/untrusted_text.h"

namespace vs::tracer {
namespace {

// Text from the traced system in vramscope's own log (stderr): paths, comm, error
// strings go through escape_untrusted (common/untrusted_text.h), cut at this many characters.
constexpr std::size_t kLogChars = 400;

std::int64_t clock_ns(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string proc_comm(std::uint32_t pid) {
  std::string s = read_file("/proc/" + std::to_string(pid) + "/comm");
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

std::string proc_cmdline(std::uint32_t pid) {
  std::string s = read_file("/proc/" + std::to_string(pid) + "/cmdline");
  while (!s.empty() && s.back() == '\0') s.pop_back();
  for (char& c : s)
    if (c == '\0') c = ' ';
  return s;
}

std::vector<std::uint32_t> every_process() {
  std::vector<std::uint32_t> pids;
  if (DIR* d = opendir("/proc")) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] >= '1' && e->d_name[0] <= '9') pids.push_back(static_cast<std::uint32_t>(std::strtoul(e->d_name, nullptr, 10)));
    closedir(d);
  }
  return pids;
}

}  // namespace

void test_hold(std::string_view point, const std::string& what) {
  const char* hold = getenv("VRAMSCOPE_TEST_HOLD");
  if (hold == nullptr || point != hold) return;
  spdlog::warn("VRAMSCOPE_TEST_HOLD={} (a test hook): {}; holding here until killed", point, what);
  for (;;) pause();
}

Recorder::Recorder(RecordSink& sink, Tracer* tracer, std::int64_t id_base, bool trace_all)
    : sink_(sink), tracer_(tracer), decoder_(id_base), trace_all_(trace_all) {}

void Recorder::on_call(const vs_call_event& ev, const vs_call_sched* sched) {
  sink_.add_call(decoder_.decode(ev, sched));
  ++calls_;
  // Call records are delivered before lifecycle records: in all-process mode
  // this is how a process's first call is usually seen first. Otherwise an
  // unknown pid is a child of a traced process whose fork record comes
  // next in the same poll (noting it here would lose its parent and "fork").
  if (trace_all_ && !known_pids_.count(ev.pid)) note_process(ev.pid, std::nullopt, std::nullopt, ev.start_ns, "first_call");
}

void Recorder::on_object(const vs_object_event& ev) { decoder_.objects().add_object(ev); }

void Recorder::on_lifecycle(const vs_lifecycle_event& ev) {
  switch (ev.kind) {
    case VS_LC_FORK:
      note_process(ev.pid, ev.ppid, ev.start_ns, ev.ts_ns, "fork");
      break;
    case VS_LC_FIRST_CALL:
      note_process(ev.pid, ev.ppid, ev.start_ns, ev.ts_ns, "first_call");
      break;
    case VS_LC_EXEC:
      sink_.process_exec(ev.pid, std::string(ev.comm, strnlen(ev.comm, VS_COMM_LEN)), proc_cmdline(ev.pid));
      decoder_.objects().scan_process(ev.pid);
      break;
    case VS_LC_CUDA_MMAP:
      // The process is stopped in mmap until we have attached: continue it in any case.
      test_hold("cuda_mmap", "pid " + std::to_string(ev.pid) + " is stopped in its mmap of a CUDA library");
      if (auto lib = candidate_from_fd(ev.pid, ev.fd)) attach(*lib);
      if (tracer_) {
        tracer_->mark_known_file(ev.file_dev, ev.file_ino);
        tracer_->resume(ev.pid);
      }
      break;
    case VS_LC_EXEC_MMAP:
      // Reported at the syscall's entry: the mapping may not exist yet, so
      // scan_mapped_files keeps looking for it for a moment.
      awaited_mappings_.push_back({ev.pid, ev.file_dev, ev.file_ino, std::chrono::steady_clock::now()});
      break;
    case VS_LC_EXIT:
      if (!known_pids_.count(ev.pid)) note_process(ev.pid, ev.ppid, ev.start_ns, ev.ts_ns, "running");
      sink_.process_exited(ev.pid, record_ns(ev.ts_ns), ev.exit_code);
      decoder_.forget_process(ev.pid);
      live_pids_.erase(ev.pid);
      break;
  }
}

void Recorder::on_sched(const vs_sched_event& ev) {
  SchedEventRecord r;
  r.ts_ns = record_ns(ev.ts_ns);
  r.prev_tid = ev.prev_tid;
  r.prev_pid = ev.prev_pid;
  r.next_tid = ev.next_tid;
  r.next_pid = ev.next_pid;
  r.prev_state = ev.prev_state;
  r.in_call = ev.in_call != 0;
  r.prev_comm.assign(ev.prev_comm, strnlen(ev.prev_comm, VS_COMM_LEN));
  r.next_comm.assign(ev.next_comm, strnlen(ev.next_comm, VS_COMM_LEN));
  sink_.add_sched_event(r);
}

void Recorder::note_process(std::uint32_t pid, std::optional<std::uint32_t> ppid, std::optional<std::uint64_t> start_ns,
                            std::uint64_t first_ts, const char* how) {
  if (!known_pids_.insert(pid).second) return;
  live_pids_.insert(pid);
  ProcessRecord p;
  p.pid = pid;
  p.ppid = ppid;
  if (start_ns) p.start_ns = record_ns(*start_ns);
  p.comm = proc_comm(pid);
  p.cmdline = proc_cmdline(pid);
  p.first_ts_ns = record_ns(first_ts);
  p.how_found = how;
  sink_.process_seen(p);
  attach_new_libraries(pid);
}

void Recorder::attach(const LibraryCandidate& lib) {
  if (!tracer_ || tracer_->is_attached(lib.dev, lib.ino) || !tried_.insert({lib.dev, lib.ino}).second) return;
  auto result = tracer_->attach_library(lib);
  decoder_.objects().add_stat_dev(lib.dev, lib.ino, lib.path);
  // The path (and an error that quotes it) is the traced system's text: escaped, so that a
  // library named with a newline or an escape sequence cannot forge or recolour log lines.
  if (result.library.error)
    spdlog::warn("{} ({}): {}", escape_untrusted(lib.path, kLogChars), lib.kind,
                 escape_untrusted(*result.library.error, kLogChars));
  else
    spdlog::info("probing {} ({}, {} functions, {})", escape_untrusted(lib.path, kLogChars), lib.kind,
                 result.library.probes_attached, *result.library.attach_mode);
  sink_.add_library(result.library, result.probes);
  if (!result.library.error) ++attached_libraries_;
}

// One read of the process's mappings serves two ends: the paths of the
// files that make calls (callers), and CUDA libraries that were not found
// beforehand (the mmap watch stops a process for libcudart/libcuda; a
// runtime linked into another file is attached here, from then on).
// Returns the process's mappings (nullopt once it is gone).
std::optional<std::vector<MapsEntry>> Recorder::attach_new_libraries(std::uint32_t pid) {
  auto maps = read_maps(pid);
  if (!maps) return maps;
  decoder_.objects().add_maps(*maps);
  if (!tracer_) return maps;
  const auto t0 = std::chrono::steady_clock::now();
  const std::size_t known = classified_.size();
  for (const auto& lib : cuda_libraries_in(pid, *maps, classified_)) attach(lib);
  if (classified_.size() > known)
    spdlog::debug("pid {}: {} newly mapped files checked for a CUDA runtime in {:.1f} ms", pid,
                  classified_.size() - known,
                  std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  return maps;
}

void Recorder::scan_mapped_files() {
  const auto now = std::chrono::steady_clock::now();
  std::erase_if(awaited_mappings_, [&](const AwaitedMapping& a) {
    auto maps = attach_new_libraries(a.pid);
    if (!maps || now - a.since > std::chrono::seconds(1)) return true;
    return std::any_of(maps->begin(), maps->end(), [&](const MapsEntry& e) {
      return e.inode == a.ino && ((e.dev_major << 20) | e.dev_minor) == a.kernel_dev;
    });
  });
}

void Recorder::rescan_live_processes() {
  for (auto pid : std::vector<std::uint32_t>(live_pids_.begin(), live_pids_.end())) attach_new_libraries(pid);
}

// ---- Recording ----

Recording::Recording(RecordSink& sink, std::unique_ptr<Tracer> tracer, const RecordingOptions& options)
    : sink_(sink), tracer_(std::move(tracer)), options_(options) {}

Recording::~Recording() {
  if (nvml_) nvml_->stop();
}

Result<std::unique_ptr<Recording>> Recording::open(RecordSink& sink, const RecordingOptions& options) {
  TracerOptions topts = options.tracer;
  topts.trace_all = options.mode == "all";
  auto tracer = Tracer::open(topts);
  if (!tracer) return Error{tracer.error().message};
  std::unique_ptr<Recording> r(new Recording(sink, std::move(*tracer), options));

  SessionInfo info;
  {
    utsname u{};
    uname(&u);
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    info.host = host;
    info.kernel = u.release;
  }
  info.mode = options.mode;
  info.version = VRAMSCOPE_VERSION;
  info.command = options.command;
  info.id = options.session_id;
  auto opts = nlohmann::json::parse(options.options_json, nullptr, false);
  if (!opts.is_object()) opts = nlohmann::json::object();
  opts["attach_mode"] = attach_mode_name(r->tracer_->attach_mode());
  info.options_json = opts.dump();
  // NVML's device view: optional; its absence is recorded, not an error.
  if (!options.nvml) {
    info.nvml = "off (--no-nvml)";
  } else if (auto n = NvmlSampler::open(options.nvml_lib); n) {
    r->nvml_ = std::move(*n);
    info.nvml = "sampled every " + std::to_string(options.nvml_interval.count()) + " ms";
  } else {
    info.nvml = n.error().message;  // stored as it is; every view escapes it
    spdlog::info("{}", escape_untrusted(n.error().message, kLogChars));
  }
  const std::int64_t mono = clock_ns(CLOCK_MONOTONIC);
  info.realtime_offset_ns = clock_ns(CLOCK_REALTIME) - mono;
  info.start_ts_ns = mono;
  r->session_id_ = sink.begin_session(info);
  if (r->session_id_ == 0) {
    Status s = sink.health();
    return Error{"cannot begin the session in the trace file" + (s ? std::string() : ": " + s.message())};
  }
  r->recorder_ = std::make_unique<Recorder>(sink, r->tracer_.get(), sink.next_call_id(), options.mode == "all");
  if (r->nvml_) {
    for (const auto& g : r->nvml_->gpus()) sink.add_gpu(g);
    r->nvml_->start(options.nvml_interval, [&sink](NvmlSamples&& s) {
      for (const auto& g : s.gpus) sink.add_gpu_memory_sample(g);
      for (const auto& p : s.processes) sink.add_gpu_process_sample(p);
    });
  }
  for (auto pid : options.pids)
    if (Status s = r->tracer_->trace_pid(pid); !s) return Error{s.message()};
  r->last_rescan_ = std::chrono::steady_clock::now();
  return r;
}

Status Recording::trace_pid(std::uint32_t pid) { return tracer_->trace_pid(pid); }

Status Recording::attach_libraries() {
  const auto t0 = std::chrono::steady_clock::now();
  auto found = discover_on_disk(options_.discovery);
  for (const auto& lib : found.found) recorder_->attach(lib);
  if (options_.discovery.cuda_libs.empty()) {
    std::vector<std::uint32_t> running = options_.mode == "all" ? every_process() : options_.pids;
    for (auto pid : running)
      if (pid != static_cast<std::uint32_t>(getpid()))
        for (const auto& lib : discover_in_process(pid)) recorder_->attach(lib);
  }
  attach_ms_ = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (recorder_->attached_libraries() == 0) {
    std::string where;
    for (const auto& s : found.searched) where += "\n  " + escape_untrusted(s, kLogChars);
    SessionEnd end = stop();
    end.status = "interrupted";
    (void)sink_.end_session(end);
    return Error{"no CUDA library found to probe. Looked in:" + where +
                 "\nGive one with --cuda-lib PATH (libcudart.so.*, libcuda.so.*, or an executable with the CUDA "
                 "runtime linked in)."};
  }
  spdlog::info("attached in {:.0f} ms ({} links)", attach_ms_, attach_mode_name(tracer_->attach_mode()));
  for (auto pid : options_.pids) note_process(pid, std::nullopt, "pid");
  return Status::success();
}

void Recording::note_process(std::uint32_t pid, std::optional<std::uint32_t> ppid, const char* how) {
  recorder_->note_process(pid, ppid, std::nullopt, static_cast<std::uint64_t>(clock_ns(CLOCK_MONOTONIC)), how);
}

Status Recording::poll(int timeout_ms) {
  if (end_) return Status::success();
  if (Status s = tracer_->poll(timeout_ms, *recorder_); !s) return s;
  recorder_->scan_mapped_files();
  const auto now = std::chrono::steady_clock::now();
  if (now - last_rescan_ >= std::chrono::milliseconds(500)) {
    recorder_->rescan_live_processes();
    last_rescan_ = now;
  }
  return Status::success();
}

RecordingCounts Recording::counts() const {
  const auto c = tracer_->counters();
  return {recorder_->calls(), c[VS_STAT_CALL_DROPS] + c[VS_STAT_LIFECYCLE_DROPS], recorder_->live_processes(),
          recorder_->attached_libraries()};
}

AttachMode Recording::attach_mode() const { return tracer_->attach_mode(); }

SessionEnd Recording::stop() {
  if (end_) return *end_;
  if (nvml_) {
    nvml_->stop();
    NvmlSamples last = nvml_->sample_once();  // the device view at the end
    for (const auto& g : last.gpus) sink_.add_gpu_memory_sample(g);
    for (const auto& p : last.processes) sink_.add_gpu_process_sample(p);
  }
  const double detach_ms = tracer_->detach_uprobes();
  // What was submitted before the probes went away is still in the rings.
  for (int i = 0; i < 3; ++i) (void)tracer_->poll(0, *recorder_);
  const auto c = tracer_->counters();
  SessionEnd end;
  end.end_ts_ns = clock_ns(CLOCK_MONOTONIC);
  end.attach_ms = attach_ms_;
  end.detach_ms = detach_ms;
  end.call_drops = static_cast<std::int64_t>(c[VS_STAT_CALL_DROPS]);
  end.lifecycle_drops = static_cast<std::int64_t>(c[VS_STAT_LIFECYCLE_DROPS]);
  end.sched_drops = static_cast<std::int64_t>(c[VS_STAT_SCHED_DROPS]);
  end.unrecorded_calls = static_cast<std::int64_t>(c[VS_STAT_DEPTH_OVERFLOW] + c[VS_STAT_NO_THREAD_STATE]);
  end_ = end;
  return end;
}

void Recording::finish_detach() { tracer_->finish_detach(); }

}  // namespace vs::tracer
