#include "src/trace_command.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
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
#include <sstream>
#include <string_view>

#include "common/cuda_api.h"
#include "common/untrusted_text.h"
#include "store/reader.h"
#include "store/store.h"
#include "tracer/recorder.h"

namespace vs::cli {
namespace {

std::atomic<int> g_stop_signal{0};

void on_stop_signal(int sig) { g_stop_signal.store(sig); }

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
Status finish_trace_file(store::TraceWriter& writer, const vs::SessionEnd& end, bool progress) {
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

  tracer::RecordingOptions ropts;
  ropts.mode = mode;
  ropts.pids = args.pids;
  ropts.tracer.launches = args.launches;
  ropts.tracer.sched_events = args.sched_events;
  ropts.tracer.perf_links = args.perf_links;
  ropts.tracer.calls_ring_mib = args.ring_mib;
  ropts.discovery.cuda_libs = args.cuda_libs;
  ropts.discovery.executable = exe;
  ropts.discovery.extra_dirs = command_library_dirs(exe);
  if (launch) {
    std::string joined;
    for (const auto& a : args.command) joined += (joined.empty() ? "" : " ") + a;
    ropts.command = joined;
  }
  ropts.options_json = nlohmann::json{{"launches", args.launches},
                                      {"sched_events", args.sched_events},
                                      {"perf_links", args.perf_links},
                                      {"cuda_libs", args.cuda_libs},
                                      {"pids", args.pids},
                                      {"duration", args.duration}}
                           .dump();
  ropts.nvml = !args.no_nvml;
  ropts.nvml_lib = args.nvml_lib;
  ropts.nvml_interval = std::chrono::milliseconds(args.nvml_interval_ms);
  auto recording_r = tracer::Recording::open(writer, ropts);
  if (!recording_r) {
    spdlog::error("{}", recording_r.error().message);
    return 1;
  }
  auto& recording = **recording_r;
  const std::int64_t session_id = recording.session_id();

  // Ctrl-C and SIGTERM stop the trace cleanly (and are passed on to a launched command).
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  std::optional<LaunchedChild> child;
  if (launch) {
    auto c = fork_held(args.command);
    if (!c) {
      spdlog::error("{}", c.error().message);
      return 1;
    }
    child = *c;
    if (Status s = recording.trace_pid(static_cast<std::uint32_t>(child->pid)); !s) spdlog::error("{}", s.message());
  }

  // Attach to every CUDA library we can find before anything runs.
  if (Status attached = recording.attach_libraries(); !attached) {
    spdlog::error("{}", attached.message());
    if (child) {
      kill(child->pid, SIGKILL);
      waitpid(child->pid, nullptr, 0);
    }
    return 1;
  }
  if (child) {
    recording.note_process(static_cast<std::uint32_t>(child->pid), static_cast<std::uint32_t>(getpid()), "launched");
    tracer::test_hold("attach", "the probes are attached, the command (pid " + std::to_string(child->pid) +
                                    ") is not released yet");
    child->release();  // the command runs from here on
  }

  // The event loop.
  const bool progress = !args.quiet && isatty(STDERR_FILENO);
  auto t0 = std::chrono::steady_clock::now();
  auto last_progress = t0;
  std::uint64_t last_calls = 0;
  int child_status = 0;
  bool child_done = false;
  Status poll_status;
  while (!g_stop_signal.load()) {
    poll_status = recording.poll(50);
    if (!poll_status) break;
    if (!writer.health()) break;  // the trace file cannot be written (disk full): stop tracing
    auto now = std::chrono::steady_clock::now();
    if (child && waitpid(child->pid, &child_status, WNOHANG) == child->pid) {
      child_done = true;
      break;
    }
    const auto counts = recording.counts();
    // --pid: done when every traced process (and what they forked) has exited.
    if (mode == "pid" && counts.live_processes == 0) break;
    if (duration_ms && std::chrono::duration_cast<std::chrono::milliseconds>(now - t0).count() >= *duration_ms) break;
    if (progress && now - last_progress >= std::chrono::seconds(1)) {
      double dt = std::chrono::duration<double>(now - last_progress).count();
      std::fprintf(stderr, "\r\033[Kvramscope: %5.0f s  %llu calls (%.0f/s)  GPU memory outstanding %s  lost %llu",
                   std::chrono::duration<double>(now - t0).count(), static_cast<unsigned long long>(counts.calls),
                   static_cast<double>(counts.calls - last_calls) / dt,
                   human_bytes(writer.stats().outstanding.device_bytes()).c_str(),
                   static_cast<unsigned long long>(counts.records_lost));
      last_calls = counts.calls;
      last_progress = now;
    }
  }
  if (progress) std::fprintf(stderr, "\r\033[K");
  if (!poll_status) spdlog::error("{}", poll_status.message());
  int sig = g_stop_signal.load();
  if (child && !child_done && sig) kill(child->pid, sig);

  SessionEnd end = recording.stop();
  end.status = sig ? "interrupted" : "complete";
  // A writer stopped by a write error writes nothing more: the session stays as it was (it reads as interrupted).
  Status written = writer.health();
  if (written) written = finish_trace_file(writer, end, progress);
  if (!written) {
    spdlog::error("tracing stopped: {}. The trace keeps the {} calls stored before that, of {} seen (session {}, "
                  "which reads as interrupted); the rest are lost. Trace again once there is space, or into another "
                  "--db{}",
                  written.message(), writer.stats().calls_written, recording.counts().calls, session_id,
                  child && !child_done ? "; the command runs on, untraced" : "");
  } else {
    if (end.call_drops || end.lifecycle_drops)
      spdlog::warn("{} call records and {} lifecycle records were lost (ring buffer full): raise --ring-mib",
                   end.call_drops, end.lifecycle_drops);
    if (!args.quiet)
      print_summary(args.db, session_id,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }

  recording.finish_detach();
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
