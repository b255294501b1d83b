// The recorded GPU traces shipped in examples/traces open with this build's
// reader and still show what their READMEs say a good investigation finds.
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/trace_file.h"


namespace {

const std::string kAllocator = "%libc10_cuda%";

struct Trace : vs::test::TraceFile {
  nlohmann::json stats;

  explicit Trace(const std::string& name) {
    std::string dir = std::string(VS_EXAMPLES_DIR) + "/traces/" + name;
    reader = vs::test::open_trace(dir + "/trace.db").reader;
    std::ifstream in(dir + "/pytorch_memory_stats.json");
    stats = nlohmann::json::parse(in);
  }
  std::int64_t calls(const std::string& api) const {
    return q("SELECT COUNT(*) FROM calls WHERE api = ? AND ret = 0 AND caller LIKE ?", {api, kAllocator});
  }
  // Bytes of the caching allocator's that the driver released when the process exited.
  std::int64_t allocator_released_at_exit() const {
    return q("SELECT COALESCE(SUM(a.bytes), 0) FROM allocations a JOIN objects o ON o.id = a.caller_id "
             "WHERE o.path LIKE ? AND a.end_reason = 'process_exit'", {kAllocator});
  }
  // Bytes the caching allocator held at time t: the quantity PyTorch calls reserved_bytes.all.current.
  std::int64_t allocator_outstanding(const std::string& kind, std::int64_t t) const {
    return q("SELECT COALESCE(SUM(a.bytes), 0) FROM allocations a JOIN objects o ON o.id = a.caller_id "
             "WHERE a.kind = ? AND o.path LIKE ? AND a.alloc_ts_ns <= ? AND (a.free_ts_ns IS NULL OR a.free_ts_ns > ?)",
             {kind, kAllocator, t, t});
  }
};

}  // namespace

TEST_CASE("example traces: complete, nothing lost", "[examples]") {
  for (const char* name : {"empty_cache", "leak", "expandable", "contention", "exit_holding", "attach"}) {
    Trace t(name);
    INFO(name);
    CHECK(t.q("SELECT COUNT(*) FROM sessions WHERE status = 'complete' AND call_drops = 0 AND lifecycle_drops = 0") ==
          1);
    CHECK(t.q("SELECT COUNT(*) FROM gpus WHERE name LIKE 'NVIDIA H100%'") == 1);
    // Every checkpoint's reserved bytes are what the trace says the allocator held then.
    const bool vmm = std::string(name) == "expandable";
    if (std::string(name) == "attach") continue;  // tracing began mid-run: absolute numbers differ by design
    for (const auto& cp : t.stats["checkpoints"]) {
      INFO(cp["label"].get<std::string>());
      CHECK(t.allocator_outstanding(vmm ? "vmm_physical" : "device", cp["t_ns"].get<std::int64_t>()) ==
            cp["reserved_bytes.all.current"].get<std::int64_t>());
    }
  }
}

TEST_CASE("example trace empty_cache: the allocator's cache and memory outside it", "[examples]") {
  Trace t("empty_cache");
  CHECK(t.calls("cudaMalloc") == 58);
  CHECK(t.calls("cudaFree") == 56);
  CHECK(t.allocator_released_at_exit() == 134217728);
  CHECK(t.q("SELECT SUM(bytes) FROM calls WHERE api = 'cuMemAlloc_v2' AND caller LIKE '%libcublas.so%'") == 67240960);
  CHECK(t.q("SELECT COUNT(*) FROM calls WHERE api IN ('cudaMalloc', 'cudaFree') AND switches > 0") == 0);
}

TEST_CASE("example trace leak: outstanding bytes grow with every request", "[examples]") {
  Trace t("leak");
  CHECK(t.calls("cudaMalloc") == 470);
  CHECK(t.calls("cudaFree") == 0);
  std::int64_t previous = 0;
  int requests = 0;
  for (const auto& cp : t.stats["checkpoints"]) {
    if (!cp.contains("request")) continue;
    std::int64_t now = t.allocator_outstanding("device", cp["t_ns"].get<std::int64_t>());
    CHECK(now > previous);
    previous = now;
    ++requests;
  }
  CHECK(requests == 12);
  CHECK(previous == 2348810240);
}

TEST_CASE("example trace expandable: driver VMM only", "[examples]") {
  Trace t("expandable");
  CHECK(t.calls("cudaMalloc") == 0);
  CHECK(t.calls("cuMemSetAccess") == 44);
  CHECK(t.q("SELECT SUM(bytes) FROM calls WHERE api = 'cuMemCreate' AND ret = 0 AND caller LIKE ?", {kAllocator}) ==
        895483904);
  CHECK(t.q("SELECT COUNT(*) FROM calls WHERE api = 'cuMemCreate' AND ret <> 0") == 1);  // a failed try, not counted
}

TEST_CASE("example trace contention: the tail was descheduled, waiting for a CPU", "[examples]") {
  Trace t("contention");
  CHECK(t.calls("cudaMalloc") == 58);
  // The slowest cudaFree: nearly all of it off-CPU, and all of that runnable-but-waiting.
  CHECK(t.q("SELECT off_cpu_ns * 10 >= dur_ns * 9 AND runq_ns * 100 >= off_cpu_ns * 99 AND switches >= 1 "
            "FROM calls WHERE api = 'cudaFree' ORDER BY dur_ns DESC LIMIT 1") == 1);
  CHECK(t.q("SELECT dur_ns > 10000000 FROM calls WHERE api = 'cudaFree' ORDER BY dur_ns DESC LIMIT 1") == 1);
}

TEST_CASE("example trace exit_holding: released at exit, not leaked", "[examples]") {
  Trace t("exit_holding");
  CHECK(t.allocator_released_at_exit() == 469762048);
  CHECK(t.q("SELECT COUNT(*) FROM allocations WHERE end_reason IS NULL") == 0);
  CHECK(t.q("SELECT exit_code FROM processes") == 0);
}

TEST_CASE("example trace attach: only what followed the attach", "[examples]") {
  Trace t("attach");
  CHECK(t.calls("cudaMalloc") == 4);
  CHECK(t.calls("cudaFree") == 4);
  CHECK(t.q("SELECT COUNT(*) FROM processes WHERE how_found = 'pid'") == 1);
}
