// The real `vramscope trace`, real eBPF, on the fake CUDA libraries and the
// scripted workloads of tests/fixtures (README there gives each scenario's
// numbers). Every assertion reads the trace file the run produced.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>

#include "common/cuda_api.h"
#include "store/reader.h"
#include "tests/trace_file.h"

namespace fs = std::filesystem;
using vs::store::Row;
using vs::store::TraceReader;
using vs::test::open_trace;
using vs::test::TraceFile;

namespace {

constexpr std::int64_t MiB = 1 << 20;

std::string fixture(const std::string& name) { return std::string(VS_FIXTURE_DIR) + "/" + name; }

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct TraceRun : TraceFile {
  int exit_code = -1;
  nlohmann::json workload;  // the JSON line the workload printed
  std::string db, log;
};

std::string temp_dir() {
  static int n = 0;
  auto dir = fs::temp_directory_path() / ("vramscope-it-" + std::to_string(getpid()) + "-" + std::to_string(n++));
  fs::create_directories(dir);
  return dir.string();
}

// Runs vramscope trace with the fake libraries given explicitly.
TraceRun trace(const std::string& args_after_dashdash, const std::string& options = "") {
  TraceRun run;
  auto dir = temp_dir();
  run.db = dir + "/trace.db";
  std::string cmd = std::string(VS_BINARY) + " trace -q --db " + run.db + " --cuda-lib " + fixture("libcudart.so.13") +
                    " --cuda-lib " + fixture("libcuda.so.1") + " " + options + " -- " + args_after_dashdash + " > " +
                    dir + "/out.json 2> " + dir + "/log.txt";
  int status = std::system(cmd.c_str());
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  run.log = read_all(dir + "/log.txt");
  std::string out = read_all(dir + "/out.json");
  auto nl = out.rfind('{');
  if (nl != std::string::npos) run.workload = nlohmann::json::parse(out.substr(nl), nullptr, false);
  INFO(cmd << "\n" << run.log);
  run.reader = open_trace(run.db).reader;
  return run;
}

// Starts a shell command in the background; with `exec` in front, the pid is that of the
// program it runs (vramscope itself, for the tests that kill it).
pid_t spawn(const std::string& shell_command) {
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", shell_command.c_str(), nullptr);
    _exit(127);
  }
  return pid;
}

// `vramscope trace` of the fixture workload with the fake libraries, in the background.
pid_t spawn_trace(const std::string& dir, const std::string& db, const std::string& workload_args,
                  const std::string& env = "") {
  return spawn("exec env " + env + " " + std::string(VS_BINARY) + " trace -q --db " + db + " --cuda-lib " +
               fixture("libcudart.so.13") + " --cuda-lib " + fixture("libcuda.so.1") + " -- " + fixture("workload") +
               " " + workload_args + " > " + dir + "/out.json 2> " + dir + "/log.txt");
}

int wait_exit_code(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TraceRun trace_scenario(const std::string& scenario, const std::string& options = "") {
  auto run = trace(fixture("workload") + " " + scenario, options);
  INFO(run.log);
  REQUIRE(run.exit_code == 0);
  REQUIRE(run.workload.is_object());
  // Nothing lost, nothing left unrecorded, and the session closed.
  REQUIRE(run.q("SELECT call_drops + lifecycle_drops + unrecorded_calls FROM sessions") == 0);
  REQUIRE(run.qs("SELECT status FROM sessions") == "complete");
  REQUIRE(run.q("SELECT calls_recorded FROM sessions") == run.q("SELECT COUNT(*) FROM calls"));
  return run;
}

}  // namespace

TEST_CASE("basic: counts, bytes, pairing, nesting, release at exit", "[trace]") {
  auto run = trace_scenario("basic");
  const std::string pid = std::to_string(run.workload["pid"].get<int>());
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaMalloc'") == 6);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaMalloc' AND ret <> 0") == 1);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaFree'") == 3);
  // Bytes are counted once: the runtime call owns the allocation, its driver call is its child.
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'device'") == 5);
  CHECK(run.q("SELECT SUM(bytes) FROM allocations") == 15 * MiB);
  CHECK(run.q("SELECT COUNT(*) FROM allocations a JOIN calls c ON c.id = a.alloc_call_id "
              "WHERE c.api <> 'cudaMalloc'") == 0);
  CHECK(run.q("SELECT COUNT(*) FROM calls d JOIN calls r ON r.id = d.parent_id "
              "WHERE d.api = 'cuMemAlloc_v2' AND r.api = 'cudaMalloc' AND d.ts_ns >= r.ts_ns "
              "AND d.ts_ns + d.dur_ns <= r.ts_ns + r.dur_ns") == 6);  // the failing one too
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cuMemAlloc_v2' AND parent_id IS NULL") == 0);
  // The pointer of a freed allocation is the one its free received.
  CHECK(run.q("SELECT COUNT(*) FROM allocations a JOIN calls f ON f.id = a.free_call_id "
              "WHERE a.end_reason = 'freed' AND f.ptr = a.ptr AND f.api = 'cudaFree'") == 3);
  CHECK(run.q("SELECT SUM(bytes) FROM allocations WHERE end_reason = 'freed'") == 6 * MiB);
  // The process exited holding 4 + 5 MiB: released at exit, not a leak of a live process.
  CHECK(run.q("SELECT SUM(bytes) FROM allocations WHERE end_reason = 'process_exit'") == 9 * MiB);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE free_ts_ns IS NULL") == 0);
  CHECK(run.q("SELECT COUNT(*) FROM processes WHERE pid = " + pid + " AND exit_ts_ns IS NOT NULL AND exit_code = 0") ==
        1);
  // Who called: the executable for the runtime, libcudart for the driver, by
  // their full paths (read in the kernel: the process is gone when they are decoded).
  const std::string workload = std::filesystem::canonical(fixture("workload")).string();
  const std::string cudart = std::filesystem::canonical(fixture("libcudart.so.13")).string();
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaMalloc' AND caller = '" + workload + "'") == 6);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cuMemAlloc_v2' AND caller = '" + cudart + "'") == 6);
  CHECK(run.q("SELECT COUNT(*) FROM allocations a JOIN objects o ON o.id = a.caller_id "
              "WHERE o.path = '" + workload + "'") == 5);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE caller IS NULL OR caller NOT LIKE '/%'") == 0);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE device = 0 AND api = 'cudaMalloc'") == 6);
  CHECK(run.q("SELECT COUNT(*) FROM libraries WHERE attach_mode IS NOT NULL AND probes_attached > 0") == 2);
}

TEST_CASE("cross_thread: a free on another thread pairs with its allocation", "[trace]") {
  auto run = trace_scenario("cross_thread");
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE end_reason = 'freed' AND bytes = " + std::to_string(7 * MiB)) ==
        4);
  CHECK(run.q("SELECT COUNT(*) FROM allocations a JOIN calls al ON al.id = a.alloc_call_id "
              "JOIN calls f ON f.id = a.free_call_id WHERE al.tid <> f.tid") == 4);
}

TEST_CASE("async: stream-ordered allocations and their streams", "[trace]") {
  auto run = trace_scenario("async");
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'async'") == 4);
  CHECK(run.q("SELECT SUM(bytes) FROM allocations WHERE kind = 'async'") == 27 * MiB);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaMallocAsync' AND stream = 20481") == 3);  // 0x5001
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaFreeAsync' AND stream = 20482") == 2);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaMallocFromPoolAsync' AND stream = 20481 AND bytes = " +
              std::to_string(9 * MiB)) == 1);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'async' AND end_reason = 'freed'") == 3);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cuMemAllocAsync' AND parent_id IS NOT NULL") == 3);
}

TEST_CASE("managed, pinned host and pitched allocations", "[trace]") {
  auto run = trace_scenario("managed_host");
  CHECK(run.q("SELECT bytes FROM allocations WHERE kind = 'managed' AND end_reason = 'freed'") == 8 * MiB);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'host'") == 2);
  CHECK(run.q("SELECT bytes FROM allocations WHERE kind = 'host' AND end_reason = 'freed'") == 1 * MiB);
  CHECK(run.q("SELECT bytes FROM allocations WHERE kind = 'host' AND end_reason = 'process_exit'") == 2 * MiB);
  // cudaMallocPitch: pitch (read back at return) x height.
  CHECK(run.q("SELECT a.bytes FROM allocations a JOIN calls c ON c.id = a.alloc_call_id "
              "WHERE c.api = 'cudaMallocPitch'") == 1024 * 100);
}

TEST_CASE("the end-of-run summary counts GPU memory, not pinned host memory", "[trace]") {
  // managed_host: 8 MiB managed and 102400 bytes pitched (GPU memory, both freed); 1 MiB and 2 MiB of pinned
  // host memory, the 2 MiB kept to the exit. Of GPU memory, nothing is released at exit.
  auto dir = temp_dir();
  std::string db = dir + "/summary.db";
  std::string cmd = std::string(VS_BINARY) + " trace --db " + db + " --cuda-lib " + fixture("libcudart.so.13") +
                    " --cuda-lib " + fixture("libcuda.so.1") + " -- " + fixture("workload") +
                    " managed_host > /dev/null 2> " + dir + "/log.txt";
  REQUIRE(std::system(cmd.c_str()) == 0);
  const std::string log = read_all(dir + "/log.txt");
  INFO(log);
  CHECK(log.find("]: 4 allocations (8.1 MiB of GPU memory), outstanding at end: 0 (0 B), released at exit: 0 B\n") !=
        std::string::npos);
}

TEST_CASE("vmm: physical, reserved and mapped bytes, as expandable segments use them", "[trace]") {
  auto run = trace_scenario("vmm");
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'vmm_physical'") == 3);
  CHECK(run.q("SELECT SUM(bytes) FROM allocations WHERE kind = 'vmm_physical'") == 60 * MiB);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'vmm_physical' AND end_reason = 'freed'") == 1);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'vmm_mapped'") == 3);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'vmm_mapped' AND end_reason = 'freed'") == 1);
  CHECK(run.q("SELECT bytes FROM allocations WHERE kind = 'vmm_reserved'") == 1024 * MiB);
  // A mapping records the physical handle mapped there.
  CHECK(run.q("SELECT COUNT(*) FROM allocations m JOIN allocations p ON p.ptr = m.handle AND p.kind = 'vmm_physical' "
              "WHERE m.kind = 'vmm_mapped'") == 3);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cuMemSetAccess' AND device = 0") == 3);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cuMemCreate' AND device = 0") == 3);
}

// The tracer's in-kernel split of a call's duration must match what the
// workload measured of its own thread: wall time - off-CPU time = the CPU
// time the thread got (CLOCK_THREAD_CPUTIME_ID around the call), whatever
// else the machine is doing.
static void check_on_cpu_matches(const TraceRun& run) {
  const std::int64_t cpu = run.workload["free_cpu_ns"].get<std::int64_t>();
  const std::int64_t on_cpu = run.q("SELECT dur_ns - off_cpu_ns FROM calls WHERE api = 'cudaFree'");
  INFO("on-CPU per vramscope " << on_cpu << " ns, thread CPU time per the workload " << cpu << " ns");
  CHECK(std::llabs(on_cpu - cpu) <= std::max<std::int64_t>(2000000, cpu / 10));
}

TEST_CASE("off-CPU attribution: a sleeping free is off-CPU, a spinning one is not", "[trace][sched]") {
  SECTION("sleep") {
    auto run = trace_scenario("sleep_free");
    CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaFree' AND dur_ns >= 50000000 "
                "AND off_cpu_ns >= 50000000 AND switches >= 1") == 1);
    // The nested driver call was in flight too.
    CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cuMemFree_v2' AND off_cpu_ns >= 50000000") == 1);
    // Blocked in nanosleep, not waiting for a CPU.
    CHECK(run.q("SELECT runq_ns * 2 < off_cpu_ns FROM calls WHERE api = 'cudaFree'") == 1);
    check_on_cpu_matches(run);
  }
  SECTION("spin") {
    auto run = trace_scenario("spin_free");
    CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaFree' AND dur_ns >= 50000000") == 1);
    // A spinning thread is only ever off-CPU because it was preempted: all of it is runqueue wait.
    CHECK(run.q("SELECT runq_ns = off_cpu_ns FROM calls WHERE api = 'cudaFree'") == 1);
    check_on_cpu_matches(run);
  }
}

TEST_CASE("contention: a CPU hog on the same core shows as runqueue time and the preemptor", "[trace][sched]") {
  auto run = trace_scenario("contention", "--sched-events");
  const std::int64_t hog = run.workload["hog_pid"].get<int>();
  CHECK(run.q("SELECT switches >= 1 FROM calls WHERE api = 'cudaFree'") == 1);
  CHECK(run.q("SELECT runq_ns > 0 AND runq_ns = off_cpu_ns FROM calls WHERE api = 'cudaFree'") == 1);
  check_on_cpu_matches(run);
  // The hog took the CPU from the free (raw switches, --sched-events) ...
  CHECK(run.q("SELECT COUNT(*) > 0 FROM sched_events s, calls c WHERE c.api = 'cudaFree' AND s.prev_tid = c.tid "
              "AND s.next_pid = " + std::to_string(hog) + " AND s.ts_ns BETWEEN c.ts_ns AND c.ts_ns + c.dur_ns "
              "AND s.in_call = 1") == 1);
  // ... and gave it back: switch-ins into the call are marked as such too.
  CHECK(run.q("SELECT COUNT(*) > 0 FROM sched_events s, calls c WHERE c.api = 'cudaFree' AND s.next_tid = c.tid "
              "AND s.ts_ns BETWEEN c.ts_ns AND c.ts_ns + c.dur_ns AND s.in_call = 1") == 1);
  // ... and the longest interval's preemptor is another task (the hog, unless something else on the
  // machine took the CPU for longer).
  CHECK(run.q("SELECT preempted_by <> pid AND preempted_by_comm <> '' FROM calls WHERE api = 'cudaFree'") == 1);
}

TEST_CASE("child processes are followed; each process's memory is its own", "[trace]") {
  auto run = trace_scenario("child");
  const std::string child = std::to_string(run.workload["child_pid"].get<int>());
  const std::string parent = std::to_string(run.workload["pid"].get<int>());
  CHECK(run.qs("SELECT how_found FROM processes WHERE pid = " + child) == "fork");
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE pid = " + child + " AND end_reason = 'freed' AND bytes = " +
              std::to_string(16 * MiB)) == 1);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE pid = " + child + " AND end_reason = 'process_exit' AND bytes = " +
              std::to_string(17 * MiB)) == 1);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE pid = " + parent + " AND end_reason = 'freed' AND bytes = " +
              std::to_string(15 * MiB)) == 1);
}

TEST_CASE("copies, launches (only with --launches) and streams", "[trace]") {
  SECTION("default probe set: no launch probes") {
    auto run = trace_scenario("memcpy_launch");
    CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api LIKE '%Launch%'") == 0);
    CHECK(run.q("SELECT bytes FROM calls WHERE api = 'cudaMemcpy'") == 4096);
    CHECK(run.q("SELECT bytes FROM calls WHERE api = 'cudaMemcpyAsync' AND stream = 20483") == 8192);
    CHECK(run.q("SELECT COUNT(*) FROM probes WHERE api = 'cudaLaunchKernel' AND status = 'disabled'") == 1);
  }
  SECTION("--launches") {
    auto run = trace_scenario("memcpy_launch", "--launches");
    CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaLaunchKernel' AND stream = 20484") == 3);
    CHECK(run.q("SELECT COUNT(*) FROM calls c JOIN calls p ON p.id = c.parent_id "
                "WHERE c.api = 'cuLaunchKernel' AND p.api = 'cudaLaunchKernel' AND c.stream = 20484") == 3);
    CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cuLaunchKernelEx' AND stream = 20485") == 1);
  }
}

TEST_CASE("device attribution follows cudaSetDevice", "[trace]") {
  auto run = trace_scenario("set_device");
  CHECK(run.q("SELECT device FROM calls WHERE api = 'cudaMalloc'") == 1);
  CHECK(run.q("SELECT device FROM calls WHERE api = 'cuMemAlloc_v2'") == 1);
  CHECK(run.q("SELECT device FROM allocations") == 1);
}

TEST_CASE("a CUDA runtime linked statically into the executable is found and probed", "[trace]") {
  auto dir = temp_dir();
  std::string db = dir + "/static.db";
  std::string cmd = std::string(VS_BINARY) + " trace -q --db " + db + " --cuda-lib " + fixture("workload_static") +
                    " --cuda-lib " + fixture("libcuda.so.1") + " -- " + fixture("workload_static") +
                    " basic > /dev/null 2> " + dir + "/log.txt";
  REQUIRE(std::system(cmd.c_str()) == 0);
  auto t = open_trace(db);
  CHECK(t.qs("SELECT kind FROM libraries WHERE path LIKE '%workload_static'") == "static");
  CHECK(t.q("SELECT COUNT(*) FROM allocations WHERE kind = 'device'") == 5);
}

TEST_CASE("a stripped vramscope still attaches with uprobe_multi links", "[trace]") {
  // The GPU bundle (scripts/bundle.sh) is stripped; its self-test function
  // must survive in the dynamic symbols, or every detach takes ~0.1 s a probe.
  auto dir = temp_dir();
  const std::string stripped = dir + "/vramscope";
  REQUIRE(std::system(("strip -o " + stripped + " " + VS_BINARY).c_str()) == 0);
  std::string db = dir + "/stripped.db";
  std::string cmd = stripped + " trace -q --db " + db + " --cuda-lib " + fixture("libcudart.so.13") + " --cuda-lib " +
                    fixture("libcuda.so.1") + " -- " + fixture("workload") + " basic > /dev/null 2> " + dir +
                    "/log.txt";
  int status = std::system(cmd.c_str());
  INFO(read_all(dir + "/log.txt"));
  REQUIRE(status == 0);
  auto t = open_trace(db);
  CHECK(t.q("SELECT COUNT(*) FROM libraries WHERE attach_mode = 'uprobe_multi' AND probes_attached > 0") == 2);
  CHECK(t.q("SELECT COUNT(*) FROM allocations WHERE kind = 'device'") == 5);
}

TEST_CASE("a CUDA runtime bundled into another library is found by its symbols once mapped", "[trace]") {
  // Its calls start 250 ms after dlopen: the mmap report gets it probed within
  // milliseconds; the periodic rescan alone (every 500 ms) would often be late.
  auto run = trace_scenario("bundled 250");
  const std::string vendor = std::filesystem::canonical(fixture("libvendor_runtime.so")).string();
  CHECK(run.qs("SELECT kind || ' ' || found_by FROM libraries WHERE path = ?", {vendor}) == "static maps");
  // Its runtime calls are recorded, each with its driver call nested in it.
  CHECK(run.q("SELECT COUNT(*) FROM calls d JOIN calls r ON r.id = d.parent_id WHERE d.api = 'cuMemAlloc_v2' "
              "AND d.caller = ? AND r.api = 'cudaMalloc'", {vendor}) == 3);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'device' AND bytes = 2097152") == 3);
  CHECK(run.q("SELECT SUM(bytes) FROM allocations WHERE end_reason = 'process_exit'") == 4 * MiB);
}

TEST_CASE("forwarding stubs under the driver's names: one operation, one record", "[trace]") {
  // libfwd_stubs.so is JAX's XLA CUDA plugin in small: a bundled runtime (found by its symbols once
  // mapped) and stubs named cuMemCreate, cuMemMap, ... calling libcuda.so.1's; the workload reaches
  // the driver only through them, so every driver call runs nested in the stub of the same name.
  auto run = trace_scenario("forwarding 250");
  const std::string stubs = std::filesystem::canonical(fixture("libfwd_stubs.so")).string();
  const std::string workload = std::filesystem::canonical(fixture("workload")).string();
  CHECK(run.qs("SELECT kind || ' ' || found_by FROM libraries WHERE path = ?", {stubs}) == "static maps");
  // 15 stub calls (reserve, 2 x create/map/set access/unmap/release, address free, 2 allocs, 1 free),
  // each made by the workload, each with the real driver call, made by the stub, nested in it.
  CHECK(run.q("SELECT COUNT(*) FROM calls") == 30);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE parent_id IS NULL AND caller = ?", {workload}) == 15);
  CHECK(run.q("SELECT COUNT(*) FROM calls d JOIN calls s ON s.id = d.parent_id WHERE d.api = s.api "
              "AND d.caller = ? AND s.caller = ? AND s.parent_id IS NULL AND d.ts_ns >= s.ts_ns "
              "AND d.ts_ns + d.dur_ns <= s.ts_ns + s.dur_ns", {stubs, workload}) == 15);
  // One allocation per operation, made and ended by the stub calls, bytes as the workload allocated.
  CHECK(run.q("SELECT COUNT(*) FROM allocations") == 7);
  CHECK(run.q("SELECT COUNT(*) FROM allocations a JOIN calls c ON c.id = a.alloc_call_id "
              "JOIN objects o ON o.id = a.caller_id WHERE c.parent_id IS NULL AND c.caller = ? AND o.path = ? "
              "AND a.alloc_seq IS NOT NULL", {workload, workload}) == 7);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'vmm_reserved' AND bytes = " + std::to_string(64 * MiB)) ==
        1);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'vmm_physical'") == 2);
  CHECK(run.q("SELECT SUM(bytes) FROM allocations WHERE kind = 'vmm_physical'") == 10 * MiB);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'vmm_mapped'") == 2);
  CHECK(run.q("SELECT SUM(bytes) FROM allocations WHERE kind = 'vmm_mapped'") == 10 * MiB);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'device'") == 2);
  CHECK(run.q("SELECT SUM(bytes) FROM allocations WHERE kind IN ('vmm_physical', 'device')") ==
        run.workload["alloc_bytes"].get<std::int64_t>());
  CHECK(run.q("SELECT COUNT(*) FROM allocations a JOIN calls f ON f.id = a.free_call_id "
              "WHERE a.end_reason = 'freed' AND f.parent_id IS NULL AND f.caller = ?", {workload}) == 6);
  CHECK(run.q("SELECT SUM(bytes) FROM allocations WHERE end_reason = 'freed' AND kind IN ('vmm_physical', 'device')") ==
        run.workload["freed_bytes"].get<std::int64_t>());
  CHECK(run.q("SELECT bytes FROM allocations WHERE end_reason = 'process_exit'") ==
        run.workload["outstanding_bytes"].get<std::int64_t>());
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE end_reason = 'superseded'") == 0);
  CHECK(run.q("SELECT COUNT(*) FROM unmatched_frees") == 0);
}

TEST_CASE("--pid attaches to a running process and finds its libraries in /proc/PID/maps", "[trace]") {
  auto dir = temp_dir();
  std::string db = dir + "/pid.db";
  pid_t target = fork();
  REQUIRE(target >= 0);
  if (target == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, STDOUT_FILENO);
    execl(fixture("workload").c_str(), "workload", "delay", "1500", "basic", nullptr);
    _exit(127);
  }
  // No --cuda-lib: the libraries must be found in the target's mappings.
  std::string cmd = std::string(VS_BINARY) + " trace -q --db " + db + " --pid " + std::to_string(target) +
                    " --duration 20s 2> " + dir + "/log.txt";
  int status = std::system(cmd.c_str());
  int wstatus = 0;
  waitpid(target, &wstatus, 0);
  INFO(read_all(dir + "/log.txt"));
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  auto t = open_trace(db);
  CHECK(t.q("SELECT COUNT(*) FROM libraries WHERE found_by = 'maps' AND error IS NULL") == 2);
  CHECK(t.q("SELECT COUNT(*) FROM allocations WHERE pid = ?", {std::int64_t{target}}) == 5);
}

TEST_CASE("--pid --duration: calls of a process that then waits all reach the trace", "[trace]") {
  // Regression: call records wake the reader only every 64th of the ring; a process that made a
  // few calls and then waited (a server between requests) kept its last ones in the ring, and a
  // trace that ended by --duration (or trace_stop) lost them: 2 of 12 calls recorded.
  auto dir = temp_dir();
  std::string db = dir + "/wait.db";
  int to_workload[2];
  REQUIRE(pipe(to_workload) == 0);
  pid_t target = fork();
  REQUIRE(target >= 0);
  if (target == 0) {
    dup2(to_workload[0], STDIN_FILENO);
    close(to_workload[1]);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, STDOUT_FILENO);
    execl(fixture("workload").c_str(), "workload", "serve", nullptr);
    _exit(127);
  }
  close(to_workload[0]);
  pid_t tracer = spawn("exec " + std::string(VS_BINARY) + " trace -q --db " + db + " --pid " + std::to_string(target) +
                       " --duration 4s 2> " + dir + "/log.txt");
  // Attached once the log says so; then 3 allocations, a pause, 2 frees, and the process waits on.
  for (int i = 0; i < 100 && read_all(dir + "/log.txt").find("attached in") == std::string::npos; ++i) usleep(50000);
  REQUIRE(write(to_workload[1], "alloc 3 1048576\n", 16) == 16);
  usleep(300000);
  REQUIRE(write(to_workload[1], "free 2\n", 7) == 7);
  CHECK(wait_exit_code(tracer) == 0);
  close(to_workload[1]);  // end of input: the workload exits
  waitpid(target, nullptr, 0);
  INFO(read_all(dir + "/log.txt"));
  auto t = open_trace(db);
  CHECK(t.q("SELECT COUNT(*) FROM allocations WHERE pid = ? AND kind = 'device'", {std::int64_t{target}}) == 3);
  CHECK(t.q("SELECT COUNT(*) FROM allocations WHERE pid = ? AND free_call_id IS NOT NULL", {std::int64_t{target}}) == 2);
  CHECK(t.q("SELECT calls_recorded FROM sessions") == 10);  // 5 runtime calls, each with its driver call
}

TEST_CASE("a CUDA library found nowhere beforehand is probed when mapped, before its first call", "[trace]") {
  // No --cuda-lib, and the fixture directory is in no search path: the
  // workload maps the fake libraries through its RPATH; the mmap watch stops
  // it there until the probes are attached.
  auto dir = temp_dir();
  std::string db = dir + "/mmap.db";
  std::string cmd = "env -u LD_LIBRARY_PATH " + std::string(VS_BINARY) + " trace -q --db " + db + " -- " +
                    fixture("workload") + " basic > /dev/null 2> " + dir + "/log.txt";
  int status = std::system(cmd.c_str());
  INFO(read_all(dir + "/log.txt"));
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  auto t = open_trace(db);
  CHECK(t.q("SELECT COUNT(*) FROM libraries WHERE found_by = 'mmap' AND error IS NULL AND path LIKE ?",
            {std::string(VS_FIXTURE_DIR) + "/%"}) == 2);
  CHECK(t.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaMalloc'") == 6);
  CHECK(t.q("SELECT COUNT(*) FROM allocations WHERE kind = 'device'") == 5);
  CHECK(t.q("SELECT COUNT(*) FROM calls WHERE api = 'cuMemAlloc_v2' AND parent_id IS NOT NULL") == 6);
}

namespace {
// The state letter of /proc/PID/stat ('T': stopped), or 0 once the process is gone.
char process_state(pid_t pid) {
  const std::string stat = read_all("/proc/" + std::to_string(pid) + "/stat");
  const auto paren = stat.rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.size() ? 0 : stat[paren + 2];
}

// Waits up to 20 s for `text` in the file at `path`.
bool wait_for_text(const std::string& path, const std::string& text) {
  for (int i = 0; i < 200; ++i) {
    if (read_all(path).find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}
}  // namespace

TEST_CASE("a process stopped in its mmap runs on when vramscope is killed before it could continue it", "[trace]") {
  // As in the test above, the workload is stopped as it maps the fake runtime; the test
  // hook (VRAMSCOPE_TEST_HOLD, src/trace_command.cpp) holds vramscope right there.
  auto dir = temp_dir();
  pid_t tracer = spawn("exec env -u LD_LIBRARY_PATH VRAMSCOPE_TEST_HOLD=cuda_mmap " + std::string(VS_BINARY) +
                       " trace -q --db " + dir + "/trace.db -- " + fixture("workload") + " basic > " + dir +
                       "/out.json 2> " + dir + "/log.txt");
  REQUIRE(wait_for_text(dir + "/log.txt", "holding here until killed"));
  const std::string log = read_all(dir + "/log.txt");
  const std::string held = "VRAMSCOPE_TEST_HOLD=cuda_mmap (a test hook): pid ";
  const auto at = log.find(held);
  REQUIRE(at != std::string::npos);
  const pid_t workload = std::stoi(log.substr(at + held.size()));
  INFO(log << "\nworkload pid " << workload);
  CHECK(process_state(workload) == 'T');
  kill(tracer, SIGKILL);
  waitpid(tracer, nullptr, 0);
  // Continued by vramscope's guardian, it runs to its end (untraced: vramscope is gone).
  const bool finished = wait_for_text(dir + "/out.json", "\"scenario\":\"basic\"");
  INFO(read_all(dir + "/log.txt"));
  CHECK(finished);
  CHECK_THAT(read_all(dir + "/log.txt"), Catch::Contains("vramscope: continued pid " + std::to_string(workload)));
  if (!finished) kill(workload, SIGKILL);  // stopped for good otherwise
}

TEST_CASE("NVML's device view is sampled alongside, and its absence is recorded", "[trace][nvml]") {
  SECTION("sampled (fake libnvidia-ml)") {
    auto run = trace_scenario("sleep_free", "--nvml-lib " + fixture("libnvidia-ml.so.1") + " --nvml-interval 10");
    CHECK(run.qs("SELECT nvml FROM sessions") == "sampled every 10 ms");
    CHECK(run.qs("SELECT name FROM gpus WHERE gpu_index = 0") == "vramscope fake GPU");
    CHECK(run.q("SELECT total_bytes FROM gpus") == 80 * 1024 * MiB);
    // The 50 ms sleeping free alone spans several 10 ms samples; one more is taken at the end.
    CHECK(run.q("SELECT COUNT(*) >= 4 FROM gpu_memory_samples") == 1);
    CHECK(run.q("SELECT COUNT(*) FROM gpu_memory_samples WHERE used_bytes <> 1024 * 1048576") == 0);
    CHECK(run.q("SELECT COUNT(*) FROM gpu_process_samples WHERE pid <> 4242 OR used_bytes <> 512 * 1048576") == 0);
    CHECK(run.q("SELECT MIN(ts_ns) >= (SELECT start_ts_ns FROM sessions) FROM gpu_memory_samples") == 1);
  }
  SECTION("absent: a note, not an error") {
    auto run = trace_scenario("basic", "--nvml-lib /nonexistent/libnvidia-ml.so.1");
    CHECK_THAT(run.qs("SELECT nvml FROM sessions"), Catch::StartsWith("NVML unavailable"));
    CHECK(run.q("SELECT COUNT(*) FROM gpu_memory_samples") == 0);
  }
}

TEST_CASE("all-process mode picks up a process that starts later", "[trace]") {
  auto dir = temp_dir();
  std::string db = dir + "/all.db";
  std::string cmd = std::string(VS_BINARY) + " trace -q --db " + db + " --duration 6s 2> " + dir + "/log.txt &";
  REQUIRE(std::system(cmd.c_str()) == 0);
  // Started once attached: the log says so.
  for (int i = 0; i < 100 && read_all(dir + "/log.txt").find("attached in") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::string out = dir + "/out.json";
  REQUIRE(std::system((fixture("workload") + " basic > " + out).c_str()) == 0);
  auto workload = nlohmann::json::parse(read_all(out));
  // Wait for the tracer to finish its --duration and write the session's end.
  for (int i = 0; i < 150; ++i) {
    auto r = TraceReader::open(db);
    std::string status;
    if (r.ok()) (void)(*r)->query("SELECT status FROM sessions", {}, [&](const Row& row) { status = row.text(0); });
    if (status == "complete") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  INFO(read_all(dir + "/log.txt"));
  auto t = open_trace(db);
  const std::int64_t pid = workload["pid"].get<int>();
  CHECK(t.q("SELECT COUNT(*) FROM allocations WHERE pid = ?", {pid}) == 5);
  CHECK(t.qs("SELECT how_found FROM processes WHERE pid = ?", {pid}) == "first_call");
}

TEST_CASE("once recording stops, the trace file alone holds everything, though a reader had it open", "[trace]") {
  // A reader (an MCP server, say) open while recording keeps SQLite from folding
  // the -wal file into the trace when the writer closes; the session's end must.
  auto dir = temp_dir();
  const std::string db = dir + "/trace.db";
  pid_t tracer = spawn_trace(dir, db, "loop 3000 6000");
  std::unique_ptr<TraceReader> reader;
  int exit_code = -1;
  for (int i = 0; i < 300 && exit_code < 0; ++i) {
    if (!reader)
      if (auto r = TraceReader::open(db); r.ok()) reader = std::move(r.value());
    if (reader) (void)reader->query("SELECT COUNT(*) FROM call_rows", {}, [](const Row&) {});
    int status = 0;
    if (waitpid(tracer, &status, WNOHANG) == tracer) exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  INFO(read_all(dir + "/log.txt"));
  REQUIRE(exit_code == 0);
  REQUIRE(reader);  // opened while recording, still open
  const auto copy_dir = temp_dir();
  fs::copy_file(db, copy_dir + "/copy.db");
  REQUIRE_FALSE(fs::exists(copy_dir + "/copy.db-wal"));
  auto t = open_trace(copy_dir + "/copy.db");
  CHECK(t.qs("SELECT status FROM sessions") == "complete");
  CHECK(t.q("SELECT COUNT(*) FROM calls WHERE api IN ('cudaMalloc', 'cudaFree')") == 6000);
  CHECK(t.q("SELECT calls_recorded FROM sessions") == t.q("SELECT COUNT(*) FROM calls"));
  CHECK(t.q("SELECT COUNT(*) FROM allocations WHERE end_reason = 'freed'") == 3000);
  CHECK(t.q("SELECT COUNT(*) > 0 FROM call_stats") == 1);
}

TEST_CASE("a trace whose recorder was killed reads as interrupted, not as still recording", "[trace]") {
  auto dir = temp_dir();
  const std::string db = dir + "/trace.db";
  pid_t tracer = spawn_trace(dir, db, "loop 100000 2000");  // 100 s
  std::int64_t calls = 0, workload = 0;
  for (int i = 0; i < 100 && calls < 100; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (auto r = TraceReader::open(db); r.ok()) {
      (void)(*r)->query("SELECT COUNT(*) FROM call_rows", {}, [&](const Row& row) { calls = row.i64(0); });
      (void)(*r)->query("SELECT pid FROM processes WHERE how_found = 'launched'", {},
                        [&](const Row& row) { workload = row.i64(0); });
    }
  }
  INFO(read_all(dir + "/log.txt"));
  REQUIRE(calls >= 100);
  CHECK(open_trace(db).qs("SELECT status FROM sessions") == "recording");
  kill(tracer, SIGKILL);
  waitpid(tracer, nullptr, 0);
  if (workload > 0) kill(static_cast<pid_t>(workload), SIGKILL);  // it ran on, untraced

  auto t = open_trace(db);
  CHECK(t.qs("SELECT status FROM sessions") == "interrupted");
  const std::string report = dir + "/report.txt";
  REQUIRE(std::system((std::string(VS_BINARY) + " report --db " + db + " > " + report + " 2>&1").c_str()) == 0);
  const std::string text = read_all(report);
  INFO(text);
  CHECK_THAT(text, Catch::Contains("launch mode, interrupted"));
  CHECK_THAT(text, Catch::Contains("(interrupted), 1 processes"));
  CHECK_THAT(text, Catch::Contains("the recording stopped before its end"));
  CHECK_THAT(text, !Catch::Contains("still recording") && !Catch::Contains("still being written"));
  CHECK_THAT(text, !Catch::Contains(" 0 calls recorded"));
}

TEST_CASE("a full disk stops the trace: exit status 1 and how much the file keeps", "[trace]") {
  auto dir = temp_dir();
  const std::string small = dir + "/small";
  fs::create_directories(small);
  REQUIRE(std::system(("mount -t tmpfs -o size=1m vramscope-test " + small).c_str()) == 0);
  struct Unmount {  // lazily: vramscope's guardian keeps its mappings (the -shm file's) for a moment after it
    std::string path;
    ~Unmount() { (void)std::system(("umount -l " + path).c_str()); }
  } unmount{small};
  const std::string db = small + "/trace.db";
  pid_t tracer = spawn_trace(dir, db, "loop 200000 0");  // 400,000 calls: far more than 1 MiB holds
  const int exit_code = wait_exit_code(tracer);
  const std::string log = read_all(dir + "/log.txt");
  INFO(log);
  CHECK(exit_code == 1);
  CHECK_THAT(log, Catch::Contains("database or disk is full"));
  CHECK_THAT(log, Catch::Contains("tracing stopped: "));
  // The message's count is what the file has.
  const auto kept = log.find("The trace keeps the ");
  REQUIRE(kept != std::string::npos);
  const std::int64_t stored = std::stoll(log.substr(kept + 20));
  auto t = open_trace(db);
  CHECK(t.q("SELECT COUNT(*) FROM call_rows") == stored);
  CHECK(stored > 0);
  CHECK(stored < 400000);
  CHECK(t.qs("SELECT status FROM sessions") == "interrupted");
  // The workload was not stopped: it ran to its end, untraced from the error on.
  for (int i = 0; i < 300 && read_all(dir + "/out.json").find("\"iterations\":200000") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK_THAT(read_all(dir + "/out.json"), Catch::Contains("\"iterations\":200000"));
}

TEST_CASE("the command does not run untraced when vramscope dies before its probes are attached", "[trace]") {
  // The test hook (VRAMSCOPE_TEST_HOLD, src/trace_command.cpp) holds vramscope before it
  // releases the command; killed there, it never does.
  auto dir = temp_dir();
  const std::string marker = dir + "/the_command_ran";
  pid_t tracer = spawn("exec env VRAMSCOPE_TEST_HOLD=attach " + std::string(VS_BINARY) + " trace -q --db " + dir +
                       "/trace.db --cuda-lib " + fixture("libcudart.so.13") + " -- /bin/touch " + marker + " 2> " +
                       dir + "/log.txt");
  REQUIRE(wait_for_text(dir + "/log.txt", "holding here until killed"));
  kill(tracer, SIGKILL);
  waitpid(tracer, nullptr, 0);
  CHECK(wait_for_text(dir + "/log.txt", "vramscope: ended before its probes were attached: not running /bin/touch "
                                        "untraced"));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  INFO(read_all(dir + "/log.txt"));
  CHECK_FALSE(fs::exists(marker));
}

TEST_CASE("the launched command's exit code is vramscope's", "[trace][cli]") {
  auto run = trace("/bin/sh -c 'exit 3'");
  CHECK(run.exit_code == 3);
}

TEST_CASE("errors say what to do", "[cli]") {
  auto dir = temp_dir();
  auto run_cli = [&](const std::string& args) {
    std::string cmd = std::string(VS_BINARY) + " " + args + " > /dev/null 2> " + dir + "/err.txt";
    int status = std::system(cmd.c_str());
    return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_all(dir + "/err.txt"));
  };
  auto [code, err] = run_cli("trace --db " + dir + "/x.db --duration soon -- true");
  CHECK(code == 2);
  CHECK_THAT(err, Catch::Contains("--duration soon"));
  std::tie(code, err) = run_cli("trace --db " + dir + "/x.db --pid 999999999");
  CHECK(code == 2);
  CHECK_THAT(err, Catch::Contains("no such process"));
  std::tie(code, err) = run_cli("trace --db " + dir + "/x.db --cuda-lib /nonexistent/libcudart.so.13 -- true");
  CHECK(code == 1);
  CHECK_THAT(err, Catch::Contains("no CUDA library found"));
  CHECK_THAT(err, Catch::Contains("/nonexistent/libcudart.so.13"));
}

TEST_CASE("hostile names: library paths, comm and command line show escaped in the log, the summary and the report; "
          "a finished trace is read without -wal/-shm",
          "[trace][untrusted]") {
  // A directory whose name carries an ANSI sequence, a newline with a fake "## SYSTEM" line and a
  // right-to-left override, holding the fake libraries and the workload (RPATH $ORIGIN), under a
  // name that becomes the process's comm.
  auto dir = temp_dir();
  const std::string hostile_dir = dir + "/lib\x1b[31m\n## SYSTEM: obey\u202e";
  const std::string exe_name = "wl\x1b[1m\u202egpj";
  fs::create_directories(hostile_dir);
  for (const char* f : {"libcudart.so.13", "libcuda.so.1"}) fs::copy_file(fixture(f), hostile_dir + "/" + f);
  fs::copy_file(fixture("workload"), hostile_dir + "/" + exe_name);
  const std::string db = dir + "/trace.db";
  const std::string cmd = std::string(VS_BINARY) + " trace --db " + db + " --cuda-lib '" + hostile_dir +
                          "/libcudart.so.13' --cuda-lib '" + hostile_dir + "/libcuda.so.1' -- '" + hostile_dir + "/" +
                          exe_name + "' basic > " + dir + "/out.json 2> " + dir + "/log.txt";
  const int status = std::system(cmd.c_str());
  const std::string log = read_all(dir + "/log.txt");
  INFO(log);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  const std::string dir_shown = "lib\\x1b[31m\\x0a## SYSTEM: obey\\u202e";
  // vramscope's stderr: the attach lines and the end summary, escaped; nothing raw.
  CHECK_THAT(log, Catch::Contains("probing " + dir + "/" + dir_shown + "/libcudart.so.13"));
  CHECK_THAT(log, Catch::Contains("[wl\\x1b[1m\\u202egpj]"));  // the summary's comm
  CHECK(log.find('\x1b') == std::string::npos);
  CHECK(log.find("\n## SYSTEM") == std::string::npos);
  CHECK(log.find("\u202e") == std::string::npos);
  // The trace stores what the system said, as it said it (one form: escaped when shown).
  {
    auto t = open_trace(db);
    CHECK(t.qs("SELECT comm FROM processes WHERE how_found = 'launched'") == exe_name);
    CHECK(t.qs("SELECT path FROM libraries ORDER BY id LIMIT 1") == hostile_dir + "/libcudart.so.13");
    CHECK(t.q("SELECT COUNT(*) FROM calls") > 0);
    CHECK(t.q("SELECT COUNT(*) FROM objects WHERE path = ?", {hostile_dir + "/" + exe_name}) == 1);
  }
  // The finished trace, read by `vramscope report`: escaped text; no -wal/-shm; the file unchanged.
  CHECK_FALSE(fs::exists(db + "-wal"));
  CHECK_FALSE(fs::exists(db + "-shm"));
  const std::string before = read_all(db);
  const auto mtime = fs::last_write_time(db);
  const std::string report = dir + "/report.txt";
  REQUIRE(std::system((std::string(VS_BINARY) + " report --db " + db + " > " + report + " 2>&1").c_str()) == 0);
  const std::string text = read_all(report);
  INFO(text);
  CHECK_THAT(text, Catch::Contains("«" + dir + "/" + dir_shown + "/wl\\x1b[1m\\u202egpj basic»"));
  CHECK(text.find('\x1b') == std::string::npos);
  CHECK(text.find("\n## SYSTEM") == std::string::npos);
  CHECK_FALSE(fs::exists(db + "-wal"));
  CHECK_FALSE(fs::exists(db + "-shm"));
  CHECK(read_all(db) == before);
  CHECK(fs::last_write_time(db) == mtime);
}

namespace {
// Processes whose command line mentions `needle` (the background closer of
// perf links is a fork of vramscope: same command line).
int processes_mentioning(const std::string& needle) {
  int n = 0;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    std::string cmdline = read_all(entry.path().string() + "/cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (cmdline.find(needle) != std::string::npos) ++n;
  }
  return n;
}
}  // namespace

// Last in the file: the closing goes on for seconds after the test's checks.
TEST_CASE("perf-event links (--perf-links, as before Linux 6.6) record the same, and vramscope exits at once", "[trace]") {
  // 92 perf-event links take ~9 s to close, one after another in the kernel:
  // made inert at the end, handed to a child process, not waited for.
  auto started = std::chrono::steady_clock::now();
  auto run = trace_scenario("basic", "--perf-links");
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(5));
  CHECK(run.q("SELECT COUNT(*) FROM libraries WHERE attach_mode = 'perf' AND probes_attached > 0") == 2);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'device'") == 5);
  CHECK(run.q("SELECT SUM(bytes) FROM allocations WHERE end_reason = 'process_exit'") == 9 * MiB);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cuMemAlloc_v2' AND parent_id IS NOT NULL") == 6);
  // The closer finishes, and takes the links with it.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (processes_mentioning(run.db) > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK(processes_mentioning(run.db) == 0);
}

// The 64 bytes of a handle from their hex form (the workload's handle_a / handle_b).
static std::array<std::uint8_t, vs::kHandleBytes> handle_bytes(const std::string& hex) {
  REQUIRE(hex.size() == 2 * vs::kHandleBytes);
  std::array<std::uint8_t, vs::kHandleBytes> out{};
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::uint8_t>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}

TEST_CASE("ipc: an opened IPC handle is the importer's ipc_mapped allocation until its last close", "[trace]") {
  auto run = trace_scenario("ipc");
  const std::string child = std::to_string(run.workload["child_pid"].get<int>());
  const std::string parent = std::to_string(run.workload["pid"].get<int>());
  const auto exported_a = run.workload["exported_a"].get<std::int64_t>();
  const auto exported_b = run.workload["exported_b"].get<std::int64_t>();
  const auto mapped_a = run.workload["mapped_a"].get<std::int64_t>();
  const auto mapped_b = run.workload["mapped_b"].get<std::int64_t>();
  REQUIRE(mapped_a == exported_a + 0x100000000000);
  // The fake's handles begin with the same 8 bytes, as the real driver's do, and differ further on: the trace
  // keeps the digest of all 64 bytes (vs::handle_digest), which tells them apart.
  const auto bytes_a = handle_bytes(run.workload["handle_a"].get<std::string>());
  const auto bytes_b = handle_bytes(run.workload["handle_b"].get<std::string>());
  REQUIRE(std::equal(bytes_a.begin(), bytes_a.begin() + 8, bytes_b.begin()));
  REQUIRE(bytes_a != bytes_b);
  const auto handle_a = static_cast<std::int64_t>(vs::handle_digest(bytes_a));
  const auto handle_b = static_cast<std::int64_t>(vs::handle_digest(bytes_b));
  REQUIRE(handle_a != handle_b);
  // The exporter: two cudaIpcGetMemHandle, each with its driver call nested; ptr = the exported pointer and
  // handle = the digest of the 64 bytes written, read at return.
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaIpcGetMemHandle' AND pid = " + parent +
              " AND parent_id IS NULL AND ret = 0") == 2);
  CHECK(run.q("SELECT COUNT(*) FROM calls c JOIN calls p ON p.id = c.parent_id WHERE c.api = 'cuIpcGetMemHandle' "
              "AND p.api = 'cudaIpcGetMemHandle' AND c.ptr = p.ptr AND c.handle = p.handle") == 2);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaIpcGetMemHandle' AND ptr = ? AND handle = ?",
              {exported_a, handle_a}) == 1);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaIpcGetMemHandle' AND ptr = ? AND handle = ?",
              {exported_b, handle_b}) == 1);
  // The importer: 2 runtime opens (each nesting cuIpcOpenMemHandle_v2) of the same handle, 2 closes, and one
  // driver open of its own. The handle passed by value (on the stack) is folded at entry: the same digest.
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaIpcOpenMemHandle' AND pid = " + child +
              " AND ptr = ? AND handle = ?", {mapped_a, handle_a}) == 2);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cuIpcOpenMemHandle_v2' AND parent_id IS NOT NULL AND ptr = ? "
              "AND handle = ?", {mapped_a, handle_a}) == 2);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaIpcCloseMemHandle' AND ptr = ?", {mapped_a}) == 2);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cuIpcOpenMemHandle_v2' AND parent_id IS NULL AND ptr = ? "
              "AND handle = ?", {mapped_b, handle_b}) == 1);
  // Two mappings, both the child's, 0 bytes (the size is the exporter's): A's from the first open to the
  // second close (the reference count), B's released when the child exited.
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'ipc_mapped'") == 2);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'ipc_mapped' AND pid = " + child + " AND bytes = 0") == 2);
  CHECK(run.q("SELECT a.alloc_call_id = (SELECT MIN(id) FROM calls WHERE api = 'cudaIpcOpenMemHandle') "
              "AND a.free_call_id = (SELECT MAX(id) FROM calls WHERE api = 'cudaIpcCloseMemHandle') "
              "FROM allocations a WHERE kind = 'ipc_mapped' AND end_reason = 'freed' AND ptr = ? AND handle = ?",
              {mapped_a, handle_a}) == 1);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'ipc_mapped' AND end_reason = 'process_exit' "
              "AND ptr = ? AND handle = ?", {mapped_b, handle_b}) == 1);
  // The exporter's allocation of the same memory, found through the handle: each mapping joins exactly one
  // exporter allocation, the one it maps (the fake maps the exported pointer + 0x100000000000). With the
  // handles' first 8 bytes alone each mapping would join both. The exporter's own memory is paired as usual;
  // nothing unmatched.
  const std::string exporter_of =
      "FROM calls g JOIN allocations e ON e.pid = g.pid AND e.ptr = g.ptr AND e.kind = 'device' "
      "WHERE g.api = 'cudaIpcGetMemHandle' AND g.handle = m.handle";
  CHECK(run.q("SELECT COUNT(*) FROM allocations m WHERE m.kind = 'ipc_mapped' AND (SELECT COUNT(*) " + exporter_of +
              ") = 1") == 2);
  CHECK(run.q("SELECT COUNT(*) FROM allocations m WHERE m.kind = 'ipc_mapped' AND (SELECT e.ptr + 0x100000000000 " +
              exporter_of + ") = m.ptr") == 2);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE pid = " + parent + " AND kind = 'device' AND end_reason = 'freed'") ==
        2);
  CHECK(run.q("SELECT COUNT(*) FROM unmatched_frees") == 0);
}

TEST_CASE("vmm_share: an imported VMM handle is the importer's vmm_imported allocation until its release",
          "[trace]") {
  auto run = trace_scenario("vmm_share");
  const std::string child = std::to_string(run.workload["child_pid"].get<int>());
  const std::string parent = std::to_string(run.workload["pid"].get<int>());
  const auto handle = run.workload["handle"].get<std::int64_t>();
  const auto fd = run.workload["fd"].get<std::int64_t>();
  const auto imported = run.workload["imported"].get<std::int64_t>();
  const auto kept = run.workload["kept"].get<std::int64_t>();
  const auto va = run.workload["mapped_at"].get<std::int64_t>();
  REQUIRE(imported != kept);
  // The exporter: one export of its handle, the fd read back; it opens nothing.
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cuMemExportToShareableHandle'") == 1);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cuMemExportToShareableHandle' AND pid = " + parent +
              " AND handle = ? AND ptr = ? AND ret = 0", {handle, fd}) == 1);
  CHECK(run.qs("SELECT op FROM apis WHERE name = 'cuMemExportToShareableHandle'") == "vmm_export");
  // The importer: two imports of the fd (the handle read back), one failed import of a pipe.
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cuMemImportFromShareableHandle'") == 3);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cuMemImportFromShareableHandle' AND pid = " + child +
              " AND ptr = ? AND ret = 0 AND handle IN (?, ?)", {fd, imported, kept}) == 2);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cuMemImportFromShareableHandle' AND ret = 1") == 1);
  CHECK(run.qs("SELECT op FROM apis WHERE name = 'cuMemImportFromShareableHandle'") == "vmm_import");
  // Allocations, exactly: the exporter's 20 MiB vmm_physical, released by the exporter; the importer's two
  // vmm_imported handles of 0 bytes (the first ended by its cuMemRelease, the second by the exit), its mapping of
  // the imported handle and its reservation. The failed import opened nothing.
  CHECK(run.q("SELECT COUNT(*) FROM allocations") == 5);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'vmm_physical' AND pid = " + parent +
              " AND ptr = ? AND bytes = ? AND end_reason = 'freed'", {handle, 20 * MiB}) == 1);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'vmm_imported'") == 2);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'vmm_imported' AND pid = " + child +
              " AND bytes = 0 AND handle = ?", {fd}) == 2);
  CHECK(run.q("SELECT a.free_call_id = (SELECT id FROM calls WHERE api = 'cuMemRelease' AND pid = " + child +
              " AND handle = ?) FROM allocations a WHERE kind = 'vmm_imported' AND ptr = ? AND end_reason = 'freed'",
              {imported, imported}) == 1);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'vmm_imported' AND ptr = ? AND end_reason = 'process_exit'",
              {kept}) == 1);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'vmm_mapped' AND pid = " + child +
              " AND ptr = ? AND bytes = ? AND handle = ? AND end_reason = 'freed'", {va, 20 * MiB, imported}) == 1);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'vmm_reserved' AND pid = " + child +
              " AND end_reason = 'freed'") == 1);
  // The importer's mapping names a handle that is the importer's vmm_imported row; the exporter's memory is
  // counted once, by the exporter.
  CHECK(run.q("SELECT COUNT(*) FROM allocations m JOIN allocations i ON i.pid = m.pid AND i.ptr = m.handle "
              "AND i.kind = 'vmm_imported' WHERE m.kind = 'vmm_mapped'") == 1);
  CHECK(run.q("SELECT COALESCE(SUM(bytes), 0) FROM allocations WHERE pid = " + child + " AND " +
              vs::gpu_memory_kinds_sql()) == 0);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE end_reason = 'superseded'") == 0);
  CHECK(run.q("SELECT COUNT(*) FROM unmatched_frees") == 0);
}

TEST_CASE("the end-of-run summary does not count IPC mappings, registered host memory or imported VMM handles as "
          "GPU memory", "[trace]") {
  auto dir = temp_dir();
  for (const std::string scenario : {"ipc", "host_register", "vmm_share"}) {
    std::string cmd = std::string(VS_BINARY) + " trace --db " + dir + "/" + scenario + ".db --cuda-lib " + fixture("libcudart.so.13") +
                      " --cuda-lib " + fixture("libcuda.so.1") + " -- " + fixture("workload") + " " + scenario +
                      " > /dev/null 2> " + dir + "/log.txt";
    REQUIRE(std::system(cmd.c_str()) == 0);
    const std::string log = read_all(dir + "/log.txt");
    INFO(log);
    if (scenario == "ipc") {
      // The parent: A and B (10 MiB); the child: two mappings, no GPU memory, B's released at exit.
      CHECK(log.find("]: 2 allocations (10.0 MiB of GPU memory), outstanding at end: 0 (0 B), released at exit: 0 B\n") !=
            std::string::npos);
      CHECK(log.find("]: 2 allocations (0 B of GPU memory), outstanding at end: 0 (0 B), released at exit: 0 B\n") !=
            std::string::npos);
    } else if (scenario == "vmm_share") {
      // The exporter: its 20 MiB handle; the importer: two imported handles, a mapping and a reservation, none
      // of them GPU memory of its own.
      CHECK(log.find("]: 1 allocations (20.0 MiB of GPU memory), outstanding at end: 0 (0 B), released at exit: 0 B\n") !=
            std::string::npos);
      CHECK(log.find("]: 4 allocations (0 B of GPU memory), outstanding at end: 0 (0 B), released at exit: 0 B\n") !=
            std::string::npos);
    } else {
      CHECK(log.find("]: 2 allocations (0 B of GPU memory), outstanding at end: 0 (0 B), released at exit: 0 B\n") !=
            std::string::npos);
    }
  }
}

TEST_CASE("host_register: pinned registrations of the program's memory are host_registered, paired by address",
          "[trace]") {
  auto run = trace_scenario("host_register");
  const auto registered = run.workload["registered"].get<std::int64_t>();
  const auto kept = run.workload["kept"].get<std::int64_t>();
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaHostRegister' AND ptr = ? AND bytes = ?",
              {registered, 3 * MiB}) == 2);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaHostRegister' AND ret <> 0") == 1);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaHostUnregister' AND ptr = ?", {registered}) == 2);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaHostUnregister' AND ret <> 0") == 1);
  CHECK(run.q("SELECT COUNT(*) FROM calls c JOIN calls p ON p.id = c.parent_id "
              "WHERE c.api = 'cuMemHostRegister_v2' AND p.api = 'cudaHostRegister'") == 2);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cuMemHostRegister_v2' AND parent_id IS NULL AND ptr = ? "
              "AND bytes = ?", {kept, 5 * MiB}) == 1);
  // One allocation per successful registration, bytes counted once.
  CHECK(run.q("SELECT COUNT(*) FROM allocations") == 2);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'host_registered' AND end_reason = 'freed' AND ptr = ? "
              "AND bytes = ?", {registered, 3 * MiB}) == 1);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'host_registered' AND end_reason = 'process_exit' "
              "AND ptr = ? AND bytes = ?", {kept, 5 * MiB}) == 1);
  CHECK(run.q("SELECT COUNT(*) FROM unmatched_frees") == 0);
}

TEST_CASE("mem_pool: the stream-ordered allocator's pool, its attributes read back, a trim", "[trace]") {
  auto run = trace_scenario("mem_pool");
  const auto pool = run.workload["pool"].get<std::int64_t>();
  const std::string top = " AND parent_id IS NULL";
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaDeviceGetDefaultMemPool' AND handle = ? AND device = 0",
              {pool}) == 1);
  CHECK(run.q("SELECT COUNT(*) FROM calls c JOIN calls p ON p.id = c.parent_id WHERE c.api = 'cuDeviceGetDefaultMemPool' "
              "AND p.api = 'cudaDeviceGetDefaultMemPool' AND c.handle = ?", {pool}) == 1);
  // The setting written, and each reading as the program got it (attribute in ptr, value in bytes), in order.
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaMemPoolSetAttribute' AND handle = ? AND ptr = 4 AND bytes = ?",
              {pool, 64 * MiB}) == 1);
  std::vector<std::pair<std::int64_t, std::int64_t>> readings;
  auto st = run.reader->query("SELECT ptr, bytes FROM calls WHERE api = 'cudaMemPoolGetAttribute' AND handle = ? "
                                "ORDER BY id", {pool}, [&](const Row& r) { readings.emplace_back(r.i64(0), r.i64(1)); });
  REQUIRE(st.ok());
  CHECK(readings == std::vector<std::pair<std::int64_t, std::int64_t>>{{5, 6 * MiB}, {7, 0}, {5, 0}, {2, 1}});
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cuMemPoolGetAttribute' AND parent_id IS NOT NULL") == 4);
  CHECK(run.q("SELECT bytes FROM calls WHERE api = 'cuMemPoolGetAttribute' AND ptr = 8" + top) == 6 * MiB);
  // The trim comes between the reading of 6 MiB reserved and the reading of 0.
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaMemPoolTrimTo' AND handle = ? AND bytes = 0", {pool}) == 1);
  CHECK(run.q("SELECT (SELECT id FROM calls WHERE api = 'cudaMemPoolTrimTo') BETWEEN "
              "(SELECT MIN(id) FROM calls WHERE api = 'cudaMemPoolGetAttribute' AND ptr = 5) AND "
              "(SELECT MAX(id) FROM calls WHERE api = 'cudaMemPoolGetAttribute' AND ptr = 5)") == 1);
  CHECK(run.qs("SELECT op FROM apis WHERE name = 'cudaMemPoolGetAttribute'") == "mem_pool_get_attribute");
  // The pool calls are calls, not allocations: only the two cudaMallocAsync are.
  CHECK(run.q("SELECT COUNT(*) FROM allocations") == 2);
  CHECK(run.q("SELECT COUNT(*) FROM allocations WHERE kind = 'async' AND end_reason = 'freed'") == 2);
}

TEST_CASE("graph: instantiation, launches and destruction of executable graphs, by handle", "[trace]") {
  auto run = trace_scenario("graph");
  const auto exec1 = run.workload["exec1"].get<std::int64_t>();
  const auto exec2 = run.workload["exec2"].get<std::int64_t>();
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaGraphInstantiate' AND handle = ? AND ptr = 24577", {exec1}) ==
        1);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaGraphInstantiateWithFlags' AND handle = ? AND ptr = 24577",
              {exec2}) == 1);
  CHECK(run.q("SELECT COUNT(*) FROM calls c JOIN calls p ON p.id = c.parent_id WHERE c.api = 'cuGraphInstantiateWithFlags' "
              "AND c.handle = p.handle") == 2);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaGraphLaunch' AND handle = ? AND stream = 20486", {exec1}) == 3);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaGraphLaunch' AND handle = ? AND stream = 20486", {exec2}) == 1);
  CHECK(run.q("SELECT COUNT(*) FROM calls c JOIN calls p ON p.id = c.parent_id WHERE c.api = 'cuGraphLaunch' "
              "AND p.api = 'cudaGraphLaunch' AND c.handle = p.handle AND c.stream = p.stream") == 4);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaGraphExecDestroy' AND handle = ?", {exec1}) == 1);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaGraphExecDestroy' AND handle = ?", {exec2}) == 0);
  // Graph launches are recorded without --launches (they are not kernel launches).
  CHECK(run.q("SELECT COUNT(*) FROM probes WHERE api = 'cudaGraphLaunch' AND status = 'attached'") == 1);
  CHECK(run.q("SELECT COUNT(*) FROM allocations") == 0);
  CHECK(run.q("SELECT COUNT(*) FROM calls WHERE ret <> 0") == 0);
}
