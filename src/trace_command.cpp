#include "src/trace_command.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string_view>

#include "common/cuda_api.h"
#include "common/untrusted_text.h"
#include "store/reader.h"
#include "store/store.h"
#include "tracer/decoder.h"
#include "tracer/loader.h"
#include "tracer/nvml_sampler.h"

namespace vs::cli {
namespace {

std::atomic<int> g_stop_signal{0};

// Text from the traced system in vramscope's own log (stderr): paths, comm, error
// strings go through escape_untrusted (common/untrusted_text.h), cut at this many characters.
constexpr std::size_t kLogChars = 400;

void on_stop_signal(int sig) { g_stop_signal.store(sig); }

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

// A hook for vramscope's own tests (tests/integration), never for use otherwise: with
// VRAMSCOPE_TEST_HOLD=POINT in its environment, vramscope stops at POINT, says so on
// stderr, and waits there until it is killed, so that a test can kill it at that very
// moment. POINTs: "attach" (the probes are attached, the launched command is not released
// yet), "cuda_mmap" (a traced process is stopped in its mmap of a CUDA library that is not
// probed yet, before vramscope attaches to it and continues the process).
void test_hold(std::string_view point, const std::string& what) {
  const char* hold = getenv("VRAMSCOPE_TEST_HOLD");
  if (hold == nullptr || point != hold) return;
  spdlog::warn("VRAMSCOPE_TEST_HOLD={} (a test hook): {}; holding here until killed", point, what);
  for (;;) pause();
}

std::string human_bytes(std::uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

// Resolves a command name the way execvp will.
std::optional<std::string> resolve_executable(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

// Where a launched command will look for CUDA libraries beyond the system's:
// LD_LIBRARY_PATH, and the pip wheels of its Python environment.
std::vector<std::string> command_library_dirs(const std::optional<std::string>& exe) {
  std::vector<std::string> dirs;
  if (const char* ld = getenv("LD_LIBRARY_PATH")) {
    std::stringstream ss(ld);
    std::string d;
    while (std::getline(ss, d, ':'))
      if (!d.empty()) dirs.push_back(d);
  }
  std::vector<std::string> prefixes;
  if (const char* venv = getenv("VIRTUAL_ENV")) prefixes.emplace_back(venv);
  if (exe) {
    std::filesystem::path p(*exe);
    if (p.parent_path().filename() == "bin") prefixes.push_back(p.parent_path().parent_path().string());
  }
  for (const auto& prefix : prefixes)
    for (auto& d : tracer::wheel_lib_dirs(prefix)) dirs.push_back(d);
  return dirs;
}

// Receives the tracer's records, turns them into rows, and keeps library
// coverage current as processes appear and map new files.
class Recorder : public tracer::EventSink {
 public:
  Recorder(store::TraceWriter& writer, tracer::Tracer& tracer, std::int64_t id_base, bool trace_all)
      : writer_(writer), tracer_(tracer), decoder_(id_base), trace_all_(trace_all) {}

  void on_call(const vs_call_event& ev, const vs_call_sched* sched) override {
    writer_.add_call(decoder_.decode(ev, sched));
    ++calls_;
    // Call records are delivered before lifecycle records: in all-process mode
    // this is how a process's first call is usually seen first. Otherwise an
    // unknown pid is a child of a traced process whose fork record comes
    // next in the same poll (noting it here would lose its parent and "fork").
    if (trace_all_ && !known_pids_.count(ev.pid))
      note_process(ev.pid, std::nullopt, std::nullopt, ev.start_ns, "first_call");
  }

  void on_object(const vs_object_event& ev) override { decoder_.objects().add_object(ev); }

  void on_lifecycle(const vs_lifecycle_event& ev) override {
    auto ts = static_cast<std::int64_t>(ev.ts_ns);
    switch (ev.kind) {
      case VS_LC_FORK:
        note_process(ev.pid, ev.ppid, ev.start_ns, ev.ts_ns, "fork");
        break;
      case VS_LC_FIRST_CALL:
        note_process(ev.pid, ev.ppid, ev.start_ns, ev.ts_ns, "first_call");
        break;
      case VS_LC_EXEC:
        writer_.process_exec(ev.pid, std::string(ev.comm, strnlen(ev.comm, VS_COMM_LEN)), proc_cmdline(ev.pid));
        decoder_.objects().scan_process(ev.pid);
        break;
      case VS_LC_CUDA_MMAP:
        // The process is stopped in mmap until we have attached: continue it in any case.
        test_hold("cuda_mmap", "pid " + std::to_string(ev.pid) + " is stopped in its mmap of a CUDA library");
        if (auto lib = tracer::candidate_from_fd(ev.pid, ev.fd)) attach(*lib);
        tracer_.mark_known_file(ev.file_dev, ev.file_ino);
        tracer_.resume(ev.pid);
        break;
      case VS_LC_EXEC_MMAP:
        // Reported at the syscall's entry: the mapping may not exist yet, so
        // scan_mapped_files keeps looking for it for a moment.
        awaited_mappings_.push_back({ev.pid, ev.file_dev, ev.file_ino, std::chrono::steady_clock::now()});
        break;
      case VS_LC_EXIT:
        if (!known_pids_.count(ev.pid)) note_process(ev.pid, ev.ppid, ev.start_ns, ev.ts_ns, "running");
        writer_.process_exited(ev.pid, ts, ev.exit_code);
        decoder_.forget_process(ev.pid);
        live_pids_.erase(ev.pid);
        break;
    }
  }

  void on_sched(const vs_sched_event& ev) override {
    store::SchedEventRecord r;
    r.ts_ns = static_cast<std::int64_t>(ev.ts_ns);
    r.prev_tid = ev.prev_tid;
    r.prev_pid = ev.prev_pid;
    r.next_tid = ev.next_tid;
    r.next_pid = ev.next_pid;
    r.prev_state = ev.prev_state;
    r.in_call = ev.in_call != 0;
    r.prev_comm.assign(ev.prev_comm, strnlen(ev.prev_comm, VS_COMM_LEN));
    r.next_comm.assign(ev.next_comm, strnlen(ev.next_comm, VS_COMM_LEN));
    writer_.add_sched_event(r);
  }

  void note_process(std::uint32_t pid, std::optional<std::uint32_t> ppid, std::optional<std::uint64_t> start_ns,
                    std::uint64_t first_ts, const char* how) {
    if (!known_pids_.insert(pid).second) return;
    live_pids_.insert(pid);
    store::ProcessRecord p;
    p.pid = pid;
    p.ppid = ppid;
    if (start_ns) p.start_ns = static_cast<std::int64_t>(*start_ns);
    p.comm = proc_comm(pid);
    p.cmdline = proc_cmdline(pid);
    p.first_ts_ns = static_cast<std::int64_t>(first_ts);
    p.how_found = how;
    writer_.process_seen(p);
    attach_new_libraries(pid);
  }

  void attach(const tracer::LibraryCandidate& lib) {
    if (tracer_.is_attached(lib.dev, lib.ino) || !tried_.insert({lib.dev, lib.ino}).second) return;
    auto result = tracer_.attach_library(lib);
    decoder_.objects().add_stat_dev(lib.dev, lib.ino, lib.path);
    // The path (and an error that quotes it) is the traced system's text: escaped, so that a
    // library named with a newline or an escape sequence cannot forge or recolour log lines.
    if (result.library.error)
      spdlog::warn("{} ({}): {}", escape_untrusted(lib.path, kLogChars), lib.kind,
                   escape_untrusted(*result.library.error, kLogChars));
    else
      spdlog::info("probing {} ({}, {} functions, {})", escape_untrusted(lib.path, kLogChars), lib.kind,
                   result.library.probes_attached, *result.library.attach_mode);
    writer_.add_library(result.library, result.probes);
    if (!result.library.error) ++attached_libraries_;
  }

  // One read of the process's mappings serves two ends: the paths of the
  // files that make calls (callers), and CUDA libraries that were not found
  // beforehand (the mmap watch stops a process for libcudart/libcuda; a
  // runtime linked into another file is attached here, from then on).
  // Returns the process's mappings (nullopt once it is gone).
  std::optional<std::vector<tracer::MapsEntry>> attach_new_libraries(std::uint32_t pid) {
    auto maps = tracer::read_maps(pid);
    if (!maps) return maps;
    decoder_.objects().add_maps(*maps);
    const auto t0 = std::chrono::steady_clock::now();
    const std::size_t known = classified_.size();
    for (const auto& lib : tracer::cuda_libraries_in(pid, *maps, classified_)) attach(lib);
    if (classified_.size() > known)
      spdlog::debug("pid {}: {} newly mapped files checked for a CUDA runtime in {:.1f} ms", pid,
                    classified_.size() - known,
                    std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    return maps;
  }

  // Files just mapped executable (VS_LC_EXEC_MMAP): their process's mappings
  // are read until the file shows up there (a runtime bundled in it is then
  // probed within milliseconds, not at the next periodic rescan), the process
  // is gone, or a second has passed.
  void scan_mapped_files() {
    const auto now = std::chrono::steady_clock::now();
    std::erase_if(awaited_mappings_, [&](const AwaitedMapping& a) {
      auto maps = attach_new_libraries(a.pid);
      if (!maps || now - a.since > std::chrono::seconds(1)) return true;
      return std::any_of(maps->begin(), maps->end(), [&](const tracer::MapsEntry& e) {
        return e.inode == a.ino && ((e.dev_major << 20) | e.dev_minor) == a.kernel_dev;
      });
    });
  }

  void rescan_live_processes() {
    for (auto pid : std::vector<std::uint32_t>(live_pids_.begin(), live_pids_.end())) attach_new_libraries(pid);
  }

  std::uint64_t calls() const { return calls_; }
  std::size_t live_processes() const { return live_pids_.size(); }
  int attached_libraries() const { return attached_libraries_; }

 private:
  store::TraceWriter& writer_;
  tracer::Tracer& tracer_;
  tracer::CallDecoder decoder_;
  bool trace_all_;
  std::uint64_t calls_ = 0;
  int attached_libraries_ = 0;
  std::set<std::uint32_t> known_pids_, live_pids_;
  std::set<std::pair<std::uint64_t, std::uint64_t>> tried_;
  tracer::ClassifiedFiles classified_;
  struct AwaitedMapping {
    std::uint32_t pid, kernel_dev;
    std::uint64_t ino;
    std::chrono::steady_clock::time_point since;
  };
  std::vector<AwaitedMapping> awaited_mappings_;
};

// The launched command, held at a pipe until the probes are attached: it runs once
// release() has written to the pipe. Should vramscope die (or return) before, the pipe
// closes unwritten and the command does not run at all, rather than run untraced.
struct LaunchedChild {
  pid_t pid = -1;
  int release_fd = -1;

  void release() {
    const char go = 1;
    while (write(release_fd, &go, 1) < 0 && errno == EINTR) {
    }
    close(release_fd);
  }
};

Result<LaunchedChild> fork_held(const std::vector<std::string>& command) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return Error{std::string("pipe: ") + std::strerror(errno)};
  pid_t pid = fork();
  if (pid < 0) return Error{std::string("fork: ") + std::strerror(errno)};
  if (pid == 0) {
    close(fds[1]);
    char go;
    ssize_t n;
    while ((n = read(fds[0], &go, 1)) < 0 && errno == EINTR) {
    }
    if (n != 1) {
      std::fprintf(stderr, "vramscope: ended before its probes were attached: not running %s untraced\n",
                   command[0].c_str());
      _exit(1);
    }
    std::vector<char*> argv;
    for (const auto& a : command) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    std::fprintf(stderr, "vramscope: cannot run %s: %s\n", argv[0], std::strerror(errno));
    _exit(127);
  }
  close(fds[0]);
  return LaunchedChild{pid, fds[1]};
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

// Ends the session: the writer commits what is still queued, then builds the
// indexes and summaries, tens of seconds for a trace of millions of calls; a
// terminal is shown which step it is in.
Status finish_trace_file(store::TraceWriter& writer, const store::SessionEnd& end, bool progress) {
  if (!progress) return writer.end_session(end);
  auto ended = std::async(std::launch::async, [&] { return writer.end_session(end); });
  const auto t0 = std::chrono::steady_clock::now();
  while (ended.wait_for(std::chrono::milliseconds(250)) != std::future_status::ready) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto st = writer.stats();
    if (st.calls_written < st.calls_queued)
      std::fprintf(stderr, "\r\033[Kvramscope: finishing the trace file: %llu of %llu calls written (%.0f s)",
                   static_cast<unsigned long long>(st.calls_written), static_cast<unsigned long long>(st.calls_queued),
                   s);
    else
      std::fprintf(stderr, "\r\033[Kvramscope: finishing the trace file: building indexes and summaries (%.0f s)", s);
  }
  std::fprintf(stderr, "\r\033[K");
  return ended.get();
}

void print_summary(const std::string& db, std::int64_t session_id, double seconds) {
  auto reader = store::TraceReader::open(db);
  if (!reader) {
    spdlog::error("{}", reader.error().message);
    return;
  }
  std::int64_t calls = 0, drops = 0;
  (void)(*reader)->query("SELECT calls_recorded, call_drops + lifecycle_drops FROM sessions WHERE id = ?",
                         {session_id}, [&](const store::Row& r) {
                           calls = r.i64(0);
                           drops = r.i64(1);
                         });
  std::fprintf(stderr, "vramscope: session %lld: %lld calls in %.1f s, %lld records lost -> %s\n",
               static_cast<long long>(session_id), static_cast<long long>(calls), seconds,
               static_cast<long long>(drops), db.c_str());
  // Bytes of GPU memory only: pinned host memory and VMM address ranges are counted, not added.
  const std::string gpu = " AND " + gpu_memory_kinds_sql("a.kind");
  (void)(*reader)->query(
      "SELECT p.pid, COALESCE(p.comm, ''), "
      "  (SELECT COUNT(*) FROM allocations a WHERE a.session_id = p.session_id AND a.pid = p.pid), "
      "  (SELECT COALESCE(SUM(bytes), 0) FROM allocations a WHERE a.session_id = p.session_id AND a.pid = p.pid" +
          gpu + "), "
      "  (SELECT COUNT(*) FROM allocations a WHERE a.session_id = p.session_id AND a.pid = p.pid "
      "     AND a.end_reason IS NULL), "
      "  (SELECT COALESCE(SUM(bytes), 0) FROM allocations a WHERE a.session_id = p.session_id AND a.pid = p.pid "
      "     AND a.end_reason IS NULL" + gpu + "), "
      "  (SELECT COALESCE(SUM(bytes), 0) FROM allocations a WHERE a.session_id = p.session_id AND a.pid = p.pid "
      "     AND a.end_reason = 'process_exit'" + gpu + ") "
      "FROM processes p WHERE p.session_id = ? ORDER BY p.first_ts_ns",
      {session_id}, [&](const store::Row& r) {
        std::fprintf(stderr,
                     "  pid %lld [%s]: %lld allocations (%s of GPU memory), outstanding at end: %lld (%s), released at "
                     "exit: %s\n",
                     static_cast<long long>(r.i64(0)), escape_untrusted(r.text(1), 64).c_str(), static_cast<long long>(r.i64(2)),
                     human_bytes(static_cast<std::uint64_t>(r.i64(3))).c_str(), static_cast<long long>(r.i64(4)),
                     human_bytes(static_cast<std::uint64_t>(r.i64(5))).c_str(),
                     human_bytes(static_cast<std::uint64_t>(r.i64(6))).c_str());
      });
}

}  // namespace

std::optional<std::int64_t> parse_duration_ms(const std::string& text) {
  if (text.empty()) return std::nullopt;
  std::size_t used = 0;
  double value;
  try {
    value = std::stod(text, &used);
  } catch (...) {
    return std::nullopt;
  }
  if (value < 0) return std::nullopt;
  std::string unit = text.substr(used);
  double scale;
  if (unit.empty() || unit == "s") scale = 1000;
  else if (unit == "ms") scale = 1;
  else if (unit == "m") scale = 60000;
  else if (unit == "h") scale = 3600000;
  else return std::nullopt;
  return static_cast<std::int64_t>(value * scale);
}

CLI::App* add_trace_command(CLI::App& app, TraceArgs& args) {
  CLI::App* cmd = app.add_subcommand(
      "trace",
      "Record the CUDA calls of a command (vramscope trace --db run.db -- python3 infer.py), of running processes "
      "(--pid), or of every process that uses CUDA (neither), into a SQLite trace file. Needs root.");
  cmd->add_option("--db", args.db,
                  "Trace file to write (created if missing; a new session is appended). If writing it fails (disk "
                  "full), tracing stops and vramscope exits with status 1, saying how much the file keeps")
      ->required();
  cmd->add_option("--pid", args.pids, "Attach to this running process and the processes it forks (repeatable)");
  cmd->add_option("--duration", args.duration,
                  "Stop after this long (90s, 500ms, 2m); default: when the command exits, or on Ctrl-C");
  cmd->add_option("--cuda-lib", args.cuda_libs,
                  "Probe this libcudart/libcuda (or a file with a CUDA runtime linked in) instead of searching the "
                  "disk (repeatable); CUDA libraries a traced process maps are still probed as it maps them");
  cmd->add_flag("--launches", args.launches,
                "Also probe kernel launches (cudaLaunchKernel, cuLaunchKernel[Ex]): costs ~1-3 us per launch");
  cmd->add_flag("--sched-events", args.sched_events, "Also store every context switch of traced threads");
  cmd->add_flag("--perf-links", args.perf_links,
                "Attach with one perf-event link per probe, as on kernels before 6.6, even where uprobe_multi links "
                "work (if those misbehave); slower to attach and to detach, which finishes in the background");
  cmd->add_option("--ring-mib", args.ring_mib,
                  "Size of the call ring buffer in MiB, a power of two: each MiB holds up to 8192 calls, the burst "
                  "that can wait for the writer; raise it if calls are reported lost")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--nvml-interval", args.nvml_interval_ms,
                  "Sample NVML's device view (per-GPU and per-process used memory) every N ms")
      ->capture_default_str()
      ->check(CLI::Range(10, 60000));
  cmd->add_option("--nvml-lib", args.nvml_lib, "The NVML library to load (default: libnvidia-ml.so.1)");
  cmd->add_flag("--no-nvml", args.no_nvml, "Do not sample NVML");
  cmd->add_flag("-q,--quiet", args.quiet, "No progress line and no summary");
  cmd->add_option("command", args.command, "The command to launch and trace, after --");
  cmd->positionals_at_end();
  return cmd;
}

int run_trace(const TraceArgs& args) {
  std::optional<std::int64_t> duration_ms;
  if (!args.duration.empty()) {
    duration_ms = parse_duration_ms(args.duration);
    if (!duration_ms) {
      spdlog::error("--duration {}: expected a number with an optional unit ms, s, m or h (e.g. 90s)", args.duration);
      return 2;
    }
  }
  if ((args.ring_mib & (args.ring_mib - 1)) != 0) {
    spdlog::error("--ring-mib {}: must be a power of two", args.ring_mib);
    return 2;
  }
  const bool launch = !args.command.empty();
  if (launch && !args.pids.empty()) {
    spdlog::error("give either a command to launch or --pid, not both");
    return 2;
  }
  for (auto pid : args.pids)
    if (kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) {
      spdlog::error("--pid {}: no such process", pid);
      return 2;
    }
  const std::string mode = launch ? "launch" : (args.pids.empty() ? "all" : "pid");

  std::optional<std::string> exe;
  if (launch) {
    exe = resolve_executable(args.command[0]);
    if (!exe) {
      spdlog::error("{}: command not found in PATH", args.command[0]);
      return 127;
    }
  }

  auto writer_r = store::TraceWriter::open(args.db);
  if (!writer_r) {
    spdlog::error("{}", writer_r.error().message);
    return 1;
  }
  auto& writer = **writer_r;

  tracer::TracerOptions topts;
  topts.trace_all = mode == "all";
  topts.launches = args.launches;
  topts.sched_events = args.sched_events;
  topts.perf_links = args.perf_links;
  topts.calls_ring_mib = args.ring_mib;
  auto tracer_r = tracer::Tracer::open(topts);
  if (!tracer_r) {
    spdlog::error("{}", tracer_r.error().message);
    return 1;
  }
  auto& tracer = **tracer_r;

  // Ctrl-C and SIGTERM stop the trace cleanly (and are passed on to a launched command).
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  store::SessionInfo info;
  {
    utsname u{};
    uname(&u);
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    info.host = host;
    info.kernel = u.release;
  }
  info.mode = mode;
  info.version = VRAMSCOPE_VERSION;
  if (launch) {
    std::string joined;
    for (const auto& a : args.command) joined += (joined.empty() ? "" : " ") + a;
    info.command = joined;
  }
  info.options_json = nlohmann::json{{"launches", args.launches},
                                     {"sched_events", args.sched_events},
                                     {"perf_links", args.perf_links},
                                     {"cuda_libs", args.cuda_libs},
                                     {"pids", args.pids},
                                     {"duration", args.duration},
                                     {"attach_mode", tracer::attach_mode_name(tracer.attach_mode())}}
                          .dump();
  // NVML's device view: optional; its absence is recorded, not an error.
  std::unique_ptr<tracer::NvmlSampler> nvml;
  if (args.no_nvml) {
    info.nvml = "off (--no-nvml)";
  } else if (auto n = tracer::NvmlSampler::open(args.nvml_lib); n) {
    nvml = std::move(*n);
    info.nvml = "sampled every " + std::to_string(args.nvml_interval_ms) + " ms";
  } else {
    info.nvml = n.error().message;  // stored as it is; every view escapes it
    spdlog::info("{}", escape_untrusted(n.error().message, kLogChars));
  }
  std::int64_t mono = clock_ns(CLOCK_MONOTONIC);
  info.realtime_offset_ns = clock_ns(CLOCK_REALTIME) - mono;
  info.start_ts_ns = mono;
  std::int64_t session_id = writer.begin_session(info);

  Recorder recorder(writer, tracer, writer.next_call_id(), mode == "all");
  auto write_nvml = [&writer](tracer::NvmlSamples&& s) {
    for (const auto& g : s.gpus) writer.add_gpu_memory_sample(g);
    for (const auto& p : s.processes) writer.add_gpu_process_sample(p);
  };
  if (nvml) {
    for (const auto& g : nvml->gpus()) writer.add_gpu(g);
    nvml->start(std::chrono::milliseconds(args.nvml_interval_ms), write_nvml);
  }

  std::optional<LaunchedChild> child;
  if (launch) {
    auto c = fork_held(args.command);
    if (!c) {
      spdlog::error("{}", c.error().message);
      return 1;
    }
    child = *c;
    if (Status s = tracer.trace_pid(static_cast<std::uint32_t>(child->pid)); !s) spdlog::error("{}", s.message());
  }
  for (auto pid : args.pids)
    if (Status s = tracer.trace_pid(pid); !s) spdlog::error("{}", s.message());

  // Attach to every CUDA library we can find before anything runs.
  auto attach_t0 = std::chrono::steady_clock::now();
  tracer::DiscoveryInputs in;
  in.cuda_libs = args.cuda_libs;
  in.executable = exe;
  in.extra_dirs = command_library_dirs(exe);
  auto found = tracer::discover_on_disk(in);
  for (const auto& lib : found.found) recorder.attach(lib);
  if (args.cuda_libs.empty()) {
    std::vector<std::uint32_t> running = args.pids;
    if (mode == "all") {
      if (DIR* d = opendir("/proc")) {
        while (dirent* e = readdir(d))
          if (e->d_name[0] >= '1' && e->d_name[0] <= '9') running.push_back(std::stoul(e->d_name));
        closedir(d);
      }
    }
    for (auto pid : running)
      if (pid != static_cast<std::uint32_t>(getpid()))
        for (const auto& lib : tracer::discover_in_process(pid)) recorder.attach(lib);
  }
  double attach_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - attach_t0).count();
  if (recorder.attached_libraries() == 0) {
    std::string where;
    for (const auto& s : found.searched) where += "\n  " + escape_untrusted(s, kLogChars);
    spdlog::error("no CUDA library found to probe. Looked in:{}\nGive one with --cuda-lib PATH (libcudart.so.*, "
                  "libcuda.so.*, or an executable with the CUDA runtime linked in).",
                  where);
    if (child) {
      kill(child->pid, SIGKILL);
      waitpid(child->pid, nullptr, 0);
    }
    store::SessionEnd end;
    end.end_ts_ns = clock_ns(CLOCK_MONOTONIC);
    end.status = "interrupted";
    (void)writer.end_session(end);
    return 1;
  }
  spdlog::info("attached in {:.0f} ms ({} links)", attach_ms, tracer::attach_mode_name(tracer.attach_mode()));

  for (auto pid : args.pids) recorder.note_process(pid, std::nullopt, std::nullopt, clock_ns(CLOCK_MONOTONIC), "pid");
  if (child) {
    recorder.note_process(static_cast<std::uint32_t>(child->pid), static_cast<std::uint32_t>(getpid()),
                          std::nullopt, clock_ns(CLOCK_MONOTONIC), "launched");
    test_hold("attach", "the probes are attached, the command (pid " + std::to_string(child->pid) +
                            ") is not released yet");
    child->release();  // the command runs from here on
  }

  // The event loop.
  const bool progress = !args.quiet && isatty(STDERR_FILENO);
  auto t0 = std::chrono::steady_clock::now();
  auto last_progress = t0, last_rescan = t0;
  std::uint64_t last_calls = 0;
  int child_status = 0;
  bool child_done = false;
  Status poll_status;
  while (!g_stop_signal.load()) {
    poll_status = tracer.poll(50, recorder);
    if (!poll_status) break;
    if (!writer.health()) break;  // the trace file cannot be written (disk full): stop tracing
    auto now = std::chrono::steady_clock::now();
    if (child && waitpid(child->pid, &child_status, WNOHANG) == child->pid) {
      child_done = true;
      break;
    }
    // --pid: done when every traced process (and what they forked) has exited.
    if (mode == "pid" && recorder.live_processes() == 0) break;
    if (duration_ms && std::chrono::duration_cast<std::chrono::milliseconds>(now - t0).count() >= *duration_ms) break;
    recorder.scan_mapped_files();
    if (now - last_rescan >= std::chrono::milliseconds(500)) {
      recorder.rescan_live_processes();
      last_rescan = now;
    }
    if (progress && now - last_progress >= std::chrono::seconds(1)) {
      double dt = std::chrono::duration<double>(now - last_progress).count();
      auto st = writer.stats();
      auto c = tracer.counters();
      std::fprintf(stderr, "\r\033[Kvramscope: %5.0f s  %llu calls (%.0f/s)  GPU memory outstanding %s  lost %llu",
                   std::chrono::duration<double>(now - t0).count(), static_cast<unsigned long long>(recorder.calls()),
                   static_cast<double>(recorder.calls() - last_calls) / dt,
                   human_bytes(st.outstanding.device_bytes()).c_str(),
                   static_cast<unsigned long long>(c[VS_STAT_CALL_DROPS] + c[VS_STAT_LIFECYCLE_DROPS]));
      last_calls = recorder.calls();
      last_progress = now;
    }
  }
  if (progress) std::fprintf(stderr, "\r\033[K");
  if (!poll_status) spdlog::error("{}", poll_status.message());
  int sig = g_stop_signal.load();
  if (child && !child_done && sig) kill(child->pid, sig);

  if (nvml) {
    nvml->stop();
    write_nvml(nvml->sample_once());  // the device view at the end
  }
  double detach_ms = tracer.detach_uprobes();
  // What was submitted before the probes went away is still in the rings.
  for (int i = 0; i < 3; ++i) (void)tracer.poll(0, recorder);

  auto c = tracer.counters();
  store::SessionEnd end;
  end.end_ts_ns = clock_ns(CLOCK_MONOTONIC);
  end.attach_ms = attach_ms;
  end.detach_ms = detach_ms;
  end.call_drops = static_cast<std::int64_t>(c[VS_STAT_CALL_DROPS]);
  end.lifecycle_drops = static_cast<std::int64_t>(c[VS_STAT_LIFECYCLE_DROPS]);
  end.sched_drops = static_cast<std::int64_t>(c[VS_STAT_SCHED_DROPS]);
  end.unrecorded_calls = static_cast<std::int64_t>(c[VS_STAT_DEPTH_OVERFLOW] + c[VS_STAT_NO_THREAD_STATE]);
  end.status = sig ? "interrupted" : "complete";
  // A writer stopped by a write error writes nothing more: the session stays as it was (it reads as interrupted).
  Status written = writer.health();
  if (written) written = finish_trace_file(writer, end, progress);
  if (!written) {
    spdlog::error("tracing stopped: {}. The trace keeps the {} calls stored before that, of {} seen (session {}, "
                  "which reads as interrupted); the rest are lost. Trace again once there is space, or into another "
                  "--db{}",
                  written.message(), writer.stats().calls_written, recorder.calls(), session_id,
                  child && !child_done ? "; the command runs on, untraced" : "");
  } else {
    if (end.call_drops || end.lifecycle_drops)
      spdlog::warn("{} call records and {} lifecycle records were lost (ring buffer full): raise --ring-mib",
                   end.call_drops, end.lifecycle_drops);
    if (!args.quiet)
      print_summary(args.db, session_id,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }

  tracer.finish_detach();
  if (child) {
    if (!child_done) {
      // Give the command a moment to act on the signal we passed on.
      for (int i = 0; i < 50 && !child_done; ++i) {
        if (waitpid(child->pid, &child_status, WNOHANG) == child->pid) child_done = true;
        else usleep(100000);
      }
    }
    if (!written) return 1;
    if (child_done) return exit_code_of(child_status);
    return sig ? 128 + sig : 1;
  }
  return written ? 0 : 1;
}

}  // namespace vs::cli
