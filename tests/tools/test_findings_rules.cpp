// Boundary tests of the findings rules (tools/findings/), on small synthetic
// traces written through the store (tests/tools/synthetic_trace.h): each
// threshold just below (the rule stays silent) and just at or above it (it
// fires). The values are the rules' named constants; docs/findings.md gives
// the reason for each.
#include <sqlite3.h>

#include <string>

#include "tests/tools/synthetic_trace.h"
#include "tests/tools/tool_check.h"

namespace {

using nlohmann::json;
namespace syn = vs::test::synthetic;

constexpr std::uint32_t kPid = 4242;
constexpr std::int64_t kStart = 100 * syn::kSec;  // TraceOptions' default session start
constexpr std::uint64_t kMiB = syn::kMiB;

// The findings of one trace: what fired and what each rule says it checked.
struct Findings {
  json out;

  std::vector<json> of(const std::string& kind) const {
    std::vector<json> found;
    for (const auto& f : out["findings"])
      if (f["kind"] == kind) found.push_back(f);
    return found;
  }
  int fired(const std::string& rule) const {
    for (const auto& c : out["checked"])
      if (c["kind"] == rule) return c["fired"].get<int>();
    FAIL("no rule " << rule << " in checked: " << out["checked"].dump());
    return -1;
  }
};

// Writes `trace` to a new file, applies `edit` (SQL on the written file, for what the builder does not
// record: losses, an unfinished session, an unprobed library), and runs findings on it.
Findings findings_of(const syn::TraceBuilder& trace, const std::string& edit = "") {
  syn::TempDir dir("vs_findings_rules");
  const std::string path = dir.file("trace.db");
  trace.write(path);
  if (!edit.empty()) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    char* error = nullptr;
    const int rc = sqlite3_exec(db, edit.c_str(), nullptr, nullptr, &error);
    INFO(edit << ": " << (error ? error : ""));
    sqlite3_free(error);
    sqlite3_close(db);
    REQUIRE(rc == SQLITE_OK);
  }
  auto t = vs::test::open_trace(path);
  Findings f{vs::test::run_tool_checked(*t.reader, "findings", {{"limit", 50}}).structured};
  INFO(f.out.dump());
  return f;
}

// One launched process: the builder's trace with it registered.
syn::TraceBuilder one_process(syn::TraceOptions options = {}, const std::string& how_found = "launched") {
  syn::TraceBuilder trace(options);
  trace.process(kPid, "python3", "python3 serve.py", kStart + 10 * syn::kMs, how_found);
  return trace;
}

// A top-level cudaMalloc from `caller` returning `ptr`.
void malloc_call(syn::TraceBuilder& trace, std::int64_t ts, std::uint64_t ptr, std::uint64_t bytes,
                 const std::string& caller = syn::kTorchAllocatorLib) {
  trace.call(kPid, "cudaMalloc", ts, 20 * syn::kUs).ptr(ptr).bytes(bytes).device(0).caller(caller);
}
void free_call(syn::TraceBuilder& trace, std::int64_t ts, std::uint64_t ptr,
               const std::string& caller = syn::kTorchAllocatorLib) {
  trace.call(kPid, "cudaFree", ts, 20 * syn::kUs).ptr(ptr).device(0).caller(caller);
}

// `calls` cudaStreamSynchronize calls of `fast_ns`, the last of them `slow_ns` of which `runq_ns` runnable
// but waiting for a CPU.
Findings sync_tail(int calls, std::int64_t fast_ns, std::int64_t slow_ns, std::int64_t runq_ns) {
  auto trace = one_process();
  std::int64_t ts = kStart + 20 * syn::kMs;
  for (int i = 0; i < calls; ++i) {
    const bool slow = i == calls - 1;
    auto& c = trace.call(kPid, "cudaStreamSynchronize", ts, slow ? slow_ns : fast_ns).stream(0x5001).caller(
        syn::kTorchCudaLib);
    if (slow) {
      c.r.off_cpu_ns = runq_ns;
      c.r.runq_ns = runq_ns;
      c.r.switches = 1;
      c.r.preempted_by = 777;
      c.r.preempted_by_comm = "cpu_hog";
    }
    ts += 1 * syn::kMs;
  }
  trace.exit(kPid, ts + 10 * syn::kMs);
  return findings_of(trace);
}

}  // namespace

TEST_CASE("preemption_tail: an API needs >= 20 calls", "[findings][rules]") {
  // The slowest call 100 us (p99 = 10 x p50), all of it waiting for a CPU: only the count decides.
  auto below = sync_tail(19, 10 * syn::kUs, 100 * syn::kUs, 100 * syn::kUs);
  CHECK(below.fired("preemption_tail") == 0);
  auto at = sync_tail(20, 10 * syn::kUs, 100 * syn::kUs, 100 * syn::kUs);
  CHECK(at.fired("preemption_tail") == 1);
  REQUIRE(at.of("preemption_tail").size() == 1);
  const json f = at.of("preemption_tail")[0];
  CHECK(f["severity"] == "medium");
  CHECK(f["evidence"]["numbers"]["calls"] == 20);
  CHECK(f["evidence"]["numbers"]["p99_ns"] == 100 * syn::kUs);
  CHECK(f["evidence"]["numbers"]["tail_runq_ns"] == 100 * syn::kUs);
}

TEST_CASE("preemption_tail: the tail must spend >= 50% of its time waiting for a CPU", "[findings][rules]") {
  const std::int64_t slow = 100 * syn::kUs;
  CHECK(sync_tail(20, 10 * syn::kUs, slow, slow / 2 - 1).fired("preemption_tail") == 0);
  CHECK(sync_tail(20, 10 * syn::kUs, slow, slow / 2).fired("preemption_tail") == 1);
}

TEST_CASE("preemption_tail: p99 must be >= 4 x p50", "[findings][rules]") {
  const std::int64_t fast = 10 * syn::kUs;
  CHECK(sync_tail(20, fast, 4 * fast - 1, 4 * fast - 1).fired("preemption_tail") == 0);
  CHECK(sync_tail(20, fast, 4 * fast, 4 * fast).fired("preemption_tail") == 1);
}

TEST_CASE("missed_frees: one superseded allocation fires, a freed and reused address does not", "[findings][rules]") {
  auto reused = one_process();
  malloc_call(reused, kStart + 20 * syn::kMs, 0x7f0000000000, 2 * kMiB);
  free_call(reused, kStart + 21 * syn::kMs, 0x7f0000000000);
  malloc_call(reused, kStart + 22 * syn::kMs, 0x7f0000000000, 2 * kMiB);
  reused.exit(kPid, kStart + 30 * syn::kMs);
  CHECK(findings_of(reused).of("missed_frees").empty());

  auto superseded = one_process();
  malloc_call(superseded, kStart + 20 * syn::kMs, 0x7f0000000000, 2 * kMiB);
  malloc_call(superseded, kStart + 22 * syn::kMs, 0x7f0000000000, 2 * kMiB);  // its free was not recorded
  superseded.exit(kPid, kStart + 30 * syn::kMs);
  auto f = findings_of(superseded);
  REQUIRE(f.of("missed_frees").size() == 1);
  CHECK(f.of("missed_frees")[0]["severity"] == "medium");
  CHECK(f.of("missed_frees")[0]["evidence"]["numbers"]["superseded_allocations"] == 1);
  CHECK(f.of("missed_frees")[0]["evidence"]["numbers"]["superseded_bytes"] == 2 * kMiB);
}

TEST_CASE("unmatched_frees: a free of an unknown pointer fires, a free of NULL does not", "[findings][rules]") {
  auto null_free = one_process();
  free_call(null_free, kStart + 20 * syn::kMs, 0);
  null_free.exit(kPid, kStart + 30 * syn::kMs);
  CHECK(findings_of(null_free).of("unmatched_frees").empty());

  auto unknown = one_process();
  free_call(unknown, kStart + 20 * syn::kMs, 0x7f0000400000);
  unknown.exit(kPid, kStart + 30 * syn::kMs);
  auto f = findings_of(unknown);
  REQUIRE(f.of("unmatched_frees").size() == 1);
  CHECK(f.of("unmatched_frees")[0]["severity"] == "low");
  CHECK(f.of("unmatched_frees")[0]["evidence"]["numbers"]["unmatched_frees"] == 1);
}

TEST_CASE("library_held: >= 1 MiB held by libraries outside the framework's allocator", "[findings][rules]") {
  const std::string cublas = "/usr/lib/python3/site-packages/nvidia/cublas/lib/libcublas.so.13";
  for (const std::uint64_t held : {kMiB - 1, kMiB}) {
    INFO("held " << held);
    auto trace = one_process();
    malloc_call(trace, kStart + 20 * syn::kMs, 0x7f0000000000, 20 * kMiB);  // the framework's own segment
    malloc_call(trace, kStart + 21 * syn::kMs, 0x7f0002000000, held, cublas);
    trace.exit(kPid, kStart + 30 * syn::kMs);
    auto f = findings_of(trace);
    CHECK(f.fired("library_held") == (held >= kMiB ? 1 : 0));
    if (held >= kMiB) {
      REQUIRE(f.of("library_held").size() == 1);
      CHECK(f.of("library_held")[0]["evidence"]["numbers"]["held_bytes"] == held);
    }
  }
}

TEST_CASE("released_at_exit: >= 1 MiB of GPU memory held at exit; pinned host memory does not count",
          "[findings][rules]") {
  for (const std::uint64_t held : {kMiB - 1, kMiB}) {
    INFO("held " << held);
    auto trace = one_process();
    malloc_call(trace, kStart + 20 * syn::kMs, 0x7f0000000000, held);
    trace.exit(kPid, kStart + 30 * syn::kMs);
    auto f = findings_of(trace);
    CHECK(f.fired("released_at_exit") == (held >= kMiB ? 1 : 0));
    if (held >= kMiB) CHECK(f.of("released_at_exit")[0]["evidence"]["numbers"]["released_bytes"] == held);
  }
  auto pinned = one_process();
  pinned.call(kPid, "cudaHostAlloc", kStart + 20 * syn::kMs, 20 * syn::kUs)
      .ptr(0x7f1000000000)
      .bytes(64 * kMiB)
      .caller(syn::kTorchAllocatorLib);
  pinned.exit(kPid, kStart + 30 * syn::kMs);
  CHECK(findings_of(pinned).fired("released_at_exit") == 0);
}

TEST_CASE("nvml_context_overhead: NVML >= 32 MiB above the traced memory (median)", "[findings][rules]") {
  for (const std::uint64_t context : {32 * kMiB - 1, 32 * kMiB}) {
    INFO("context " << context);
    auto trace = one_process({.context_bytes = context});
    malloc_call(trace, kStart + 20 * syn::kMs, 0x7f0000000000, 100 * kMiB);
    trace.exit(kPid, kStart + 2 * syn::kSec);  // ~19 samples, one every 100 ms, while it runs
    auto f = findings_of(trace);
    CHECK(f.fired("nvml_context_overhead") == (context >= 32 * kMiB ? 1 : 0));
    if (context >= 32 * kMiB) {
      REQUIRE(f.of("nvml_context_overhead").size() == 1);
      const json n = f.of("nvml_context_overhead")[0]["evidence"]["numbers"];
      CHECK(n["overhead_median_bytes"] == context);
      CHECK(n["samples_compared"].get<int>() >= 10);
    }
  }
}

TEST_CASE("coverage_gap: any lost record or unprobed library is high, an unfinished session medium, an attached "
          "process info",
          "[findings][rules]") {
  auto trace = [](const std::string& how_found = "launched") {
    auto t = one_process({}, how_found);
    malloc_call(t, kStart + 20 * syn::kMs, 0x7f0000000000, 2 * kMiB);
    free_call(t, kStart + 21 * syn::kMs, 0x7f0000000000);
    t.exit(kPid, kStart + 30 * syn::kMs);
    return t;
  };
  auto severities = [](const Findings& f) {
    std::vector<std::string> s;
    for (const auto& g : f.of("coverage_gap")) s.push_back(g["severity"].get<std::string>());
    return s;
  };
  const Findings complete = findings_of(trace());
  CHECK(complete.fired("coverage_gap") == 0);
  CHECK(severities(findings_of(trace(), "UPDATE sessions SET call_drops = 1")) == std::vector<std::string>{"high"});
  CHECK(severities(findings_of(trace(), "UPDATE sessions SET unrecorded_calls = 1")) ==
        std::vector<std::string>{"high"});
  CHECK(severities(findings_of(trace(), "UPDATE sessions SET lifecycle_drops = 1")) ==
        std::vector<std::string>{"high"});
  CHECK(severities(findings_of(trace(), "UPDATE libraries SET probes_attached = 0 WHERE path LIKE '%libcuda.so.1'")) ==
        std::vector<std::string>{"high"});
  CHECK(severities(findings_of(trace(), "UPDATE sessions SET status = 'interrupted'")) ==
        std::vector<std::string>{"medium"});
  CHECK(severities(findings_of(trace("pid"))) == std::vector<std::string>{"info"});
  CHECK(severities(findings_of(trace("fork"))).empty());  // traced from its start
}
