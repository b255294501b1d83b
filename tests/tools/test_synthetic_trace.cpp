// The synthetic traces (tests/tools/synthetic_trace.h) look like recorded ones:
// ids follow entry time, nested driver calls sit inside their runtime call,
// pairing gives the bytes the workload meant, NVML adds the context, and the
// summaries are built as at the end of a real session.
#include <catch2/catch.hpp>

#include "tests/tools/synthetic_trace.h"
#include "tests/tools/tool_check.h"

namespace {

namespace syn = vs::test::synthetic;
using syn::kGiB;
using syn::kMiB;

vs::test::TraceFile write_and_open(const std::string& file, const std::vector<syn::Workload>& workloads) {
  syn::write_trace(file, workloads);
  return vs::test::open_trace(file);
}

// Workloads written to a temporary trace file, opened.
struct Written {
  syn::TempDir dir{"vs_synthetic_test"};
  vs::test::TraceFile t;
  explicit Written(const std::vector<syn::Workload>& workloads) : t(write_and_open(dir.file("trace.db"), workloads)) {}
  std::int64_t q(const std::string& sql) const { return t.q(sql); }
};

}  // namespace

TEST_CASE("synthetic: every scenario is a well-formed trace, as the tracer writes one", "[synthetic]") {
  for (const auto& scenario : syn::sampled_scenarios()) {
    INFO(scenario.name);
    Written w(scenario.workloads);
    CHECK(w.t.qs("SELECT status FROM sessions") == "complete");
    CHECK(w.q("SELECT COUNT(*) FROM summaries") == 1);
    CHECK(w.q("SELECT calls_recorded FROM sessions") == w.q("SELECT COUNT(*) FROM call_rows"));
    CHECK(w.q("SELECT COUNT(*) FROM processes") == static_cast<std::int64_t>(scenario.workloads.size()));
    // Ids follow entry time.
    CHECK(w.q("SELECT COUNT(*) FROM call_rows a JOIN call_rows b ON b.id = a.id + 1 WHERE b.ts_ns < a.ts_ns") == 0);
    // A nested call lies inside its parent, in the same process, and made by libcudart.
    CHECK(w.q("SELECT COUNT(*) FROM calls c JOIN call_rows p ON p.id = c.parent_id WHERE c.ts_ns < p.ts_ns OR "
              "c.ts_ns + c.dur_ns > p.ts_ns + p.dur_ns OR c.pid != p.pid OR c.caller NOT LIKE '%libcudart.so.13'") == 0);
    CHECK(w.q("SELECT COUNT(*) FROM call_rows WHERE parent_id IS NOT NULL") > 0);
    // Every free paired, nothing superseded, every allocation call made by PyTorch's allocator.
    CHECK(w.q("SELECT COUNT(*) FROM unmatched_frees") == 0);
    CHECK(w.q("SELECT COUNT(*) FROM allocations WHERE end_reason = 'superseded'") == 0);
    CHECK(w.q("SELECT COUNT(*) FROM allocations a JOIN objects o ON o.id = a.caller_id "
              "WHERE o.path NOT LIKE '%/torch/lib/libc10_cuda.so'") == 0);
    // NVML per process: its context plus its GPU memory (here at the last sample before its exit).
    const std::int64_t pid = w.q("SELECT MIN(pid) FROM processes");
    const std::int64_t sample = w.q("SELECT MAX(ts_ns) FROM gpu_process_samples WHERE pid = " + std::to_string(pid));
    CHECK(w.q("SELECT used_bytes FROM gpu_process_samples WHERE pid = " + std::to_string(pid) + " AND ts_ns = " +
              std::to_string(sample)) ==
          static_cast<std::int64_t>(520 * kMiB) +
              w.q("SELECT COALESCE(SUM(bytes), 0) FROM allocations WHERE pid = " + std::to_string(pid) +
                  " AND kind IN ('device', 'async', 'vmm_physical') AND alloc_ts_ns <= " + std::to_string(sample) +
                  " AND (free_ts_ns IS NULL OR free_ts_ns > " + std::to_string(sample) + ")"));
    // Each tool runs on it and keeps its promises (schema, coverage, text size).
    for (const char* tool : {"trace_overview", "findings", "leak_candidates", "allocation_timeline"})
      vs::test::run_tool_checked(*w.t.reader, tool);
  }
}

TEST_CASE("synthetic: a leak after a quiet start-up, through each allocator's APIs", "[synthetic]") {
  const std::int64_t iterations = 200, per_iteration = 20 * kMiB, model = 2 * kGiB;
  const std::int64_t held = model + iterations * per_iteration;
  SECTION("cudaMalloc") {
    Written w({syn::leak_after_startup()});
    CHECK(w.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaMalloc' AND caller LIKE '%libc10_cuda.so'") == iterations + 4);
    CHECK(w.q("SELECT COUNT(*) FROM calls WHERE api = 'cuMemAlloc_v2' AND parent_id IS NOT NULL") == iterations + 4);
    CHECK(w.q("SELECT SUM(bytes) FROM allocations WHERE kind = 'device' AND end_reason = 'process_exit'") == held);
    CHECK(w.q("SELECT COUNT(*) FROM allocations") == iterations + 4);  // the nested driver calls count once
  }
  SECTION("expandable segments: VMM calls only") {
    Written w({syn::leak_after_startup({}, syn::Allocator::ExpandableSegments)});
    CHECK(w.q("SELECT COUNT(*) FROM calls WHERE api LIKE 'cudaMalloc%'") == 0);
    CHECK(w.q("SELECT COUNT(*) FROM calls WHERE api = 'cuMemAddressReserve'") == 1);
    for (const char* api : {"cuMemCreate", "cuMemMap", "cuMemSetAccess"})
      CHECK(w.q(std::string("SELECT COUNT(*) FROM calls WHERE api = '") + api + "'") == iterations + 4);
    CHECK(w.q("SELECT SUM(bytes) FROM allocations WHERE kind = 'vmm_physical' AND end_reason = 'process_exit'") == held);
    CHECK(w.q("SELECT SUM(bytes) FROM allocations WHERE kind = 'vmm_mapped'") == held);
  }
  SECTION("cudaMallocAsync: transient allocations freed, the kept ones not") {
    Written w({syn::leak_after_startup({.transient_bytes = 8 * kMiB}, syn::Allocator::MallocAsync)});
    CHECK(w.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaFreeAsync'") == iterations);
    CHECK(w.q("SELECT SUM(bytes) FROM allocations WHERE kind = 'async' AND end_reason = 'freed'") ==
          iterations * static_cast<std::int64_t>(8 * kMiB));
    CHECK(w.q("SELECT SUM(bytes) FROM allocations WHERE kind = 'async' AND end_reason = 'process_exit'") == held);
  }
}

TEST_CASE("synthetic: timing parameters land where they say", "[synthetic]") {
  syn::Workload leak = syn::leak_after_startup({.iterations = 10});
  leak.startup_ns = 3 * syn::kSec;
  leak.iteration_gap_ns = 150 * syn::kMs;
  Written w({leak});
  const std::int64_t start = w.q("SELECT start_ts_ns FROM sessions");
  // The first allocation comes start_offset + startup after the session start.
  CHECK(w.q("SELECT MIN(alloc_ts_ns) FROM allocations") - start == leak.start_offset_ns + leak.startup_ns);
  // One heartbeat per iteration (and one after the model load), iterations 150 ms apart.
  CHECK(w.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaStreamSynchronize' AND caller LIKE '%libtorch_cuda.so'") == 11);
  const std::int64_t first = w.q("SELECT MIN(alloc_ts_ns) FROM allocations WHERE bytes = " + std::to_string(20 * kMiB));
  const std::int64_t second = w.q("SELECT MIN(alloc_ts_ns) FROM allocations WHERE bytes = " + std::to_string(20 * kMiB) +
                                  " AND alloc_ts_ns > " + std::to_string(first));
  CHECK(second - first > leak.iteration_gap_ns);
  CHECK(second - first < leak.iteration_gap_ns + syn::kMs);
  CHECK(w.q("SELECT exit_ts_ns FROM processes") - w.q("SELECT MAX(ts_ns + dur_ns) FROM call_rows") ==
        leak.call_gap_ns + leak.iteration_gap_ns + *leak.exit_after_ns);
}

TEST_CASE("synthetic: empty_cache() returns the cache in a burst, the live segments stay", "[synthetic]") {
  Written w({syn::empty_cache_with_live_tensors()});
  // 40 cached segments of 64 MiB returned by cudaFree from libc10_cuda within a few ms.
  CHECK(w.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaFree' AND caller LIKE '%libc10_cuda.so'") == 40);
  CHECK(w.q("SELECT MAX(ts_ns) - MIN(ts_ns) FROM calls WHERE api = 'cudaFree'") < 10 * syn::kMs);
  CHECK(w.q("SELECT SUM(bytes) FROM allocations WHERE end_reason = 'freed'") == 40 * static_cast<std::int64_t>(64 * kMiB));
  // The model's 4 segments are held until the process exits, 2 s later.
  CHECK(w.q("SELECT SUM(bytes) FROM allocations WHERE end_reason = 'process_exit'") == static_cast<std::int64_t>(2 * kGiB));
  CHECK(w.q("SELECT exit_ts_ns FROM processes") - w.q("SELECT MAX(ts_ns) FROM calls WHERE api = 'cudaFree'") >
        2 * syn::kSec);
}

TEST_CASE("synthetic: two workers run at the same time, one leaking", "[synthetic]") {
  Written w(syn::leaking_and_steady());
  CHECK(w.q("SELECT COUNT(DISTINCT pid) FROM call_rows") == 2);
  // Their iterations interleave: the steady worker calls between the leaking one's first and last.
  CHECK(w.q("SELECT COUNT(*) FROM call_rows WHERE pid = 5002 AND ts_ns BETWEEN (SELECT MIN(alloc_ts_ns) FROM "
            "allocations WHERE pid = 5001) AND (SELECT MAX(alloc_ts_ns) FROM allocations WHERE pid = 5001)") > 100);
  CHECK(w.q("SELECT SUM(bytes) FROM allocations WHERE pid = 5001 AND end_reason = 'process_exit'") ==
        static_cast<std::int64_t>(2 * kGiB + 200 * 20 * kMiB));
  CHECK(w.q("SELECT SUM(bytes) FROM allocations WHERE pid = 5002 AND end_reason = 'process_exit'") ==
        static_cast<std::int64_t>(2 * kGiB));
  CHECK(w.t.qs("SELECT how_found FROM processes WHERE pid = 5002") == "fork");
}

TEST_CASE("synthetic: a process still growing when the trace stops is still running at its end", "[synthetic]") {
  Written w({syn::grows_to_the_end()});
  CHECK(w.q("SELECT exit_ts_ns FROM processes") == -1);  // NULL
  CHECK(w.q("SELECT COUNT(*) FROM allocations WHERE end_reason IS NULL") == 4 + 100);
  // 3 flat iterations after the last growth: 3 heartbeats after the last allocation.
  CHECK(w.q("SELECT COUNT(*) FROM calls WHERE api = 'cudaStreamSynchronize' AND ts_ns > (SELECT MAX(alloc_ts_ns) FROM "
            "allocations)") == 4);
}
