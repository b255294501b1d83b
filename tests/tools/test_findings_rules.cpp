// Boundary tests of the findings rules (tools/findings/), on small synthetic
// traces written through the store (tests/tools/synthetic_trace.h): each
// threshold just below (the rule stays silent) and just at or above it (it
// fires). The values are the rules' named constants; docs/findings.md gives
// the reason for each.

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
  if (!edit.empty()) vs::test::exec_sql(path, edit);
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

// ---- the rules issue 10 rewrote: leak_growth, allocator_cache_held, held_after_empty_cache, call_errors ----

namespace {

// A copy of a result back to the host and its synchronize: the heartbeat of a request.
std::int64_t heartbeat(syn::TraceBuilder& trace, std::int64_t ts) {
  trace.call(kPid, "cudaMemcpyAsync", ts, 10 * syn::kUs).bytes(4).stream(0x5001).caller(syn::kTorchCudaLib);
  trace.call(kPid, "cudaStreamSynchronize", ts + 20 * syn::kUs, 10 * syn::kUs).stream(0x5001).caller(syn::kTorchCudaLib);
  return ts + 1 * syn::kMs;
}

// A model load, 40 requests with no new high, then `leaking` requests that each keep `bytes`: all the growth
// after the load falls in the second half of the process's calls (1 + 80 + 3 x leaking calls).
Findings late_leak(int leaking, std::uint64_t bytes) {
  auto trace = one_process();
  std::int64_t ts = kStart + 20 * syn::kMs;
  std::uint64_t ptr = 0x7f0000000000;
  malloc_call(trace, ts, ptr, 100 * kMiB);
  ts += syn::kMs;
  for (int i = 0; i < 40; ++i) ts = heartbeat(trace, ts);
  for (int i = 0; i < leaking; ++i) {
    ptr += 1ull << 32;
    malloc_call(trace, ts, ptr, bytes);
    ts = heartbeat(trace, ts + syn::kMs);
  }
  trace.exit(kPid, ts + 10 * syn::kMs);
  return findings_of(trace);
}

// `held` bytes allocated by PyTorch's allocator and kept, then (with `release`) 100 MiB more allocated and
// freed after the last allocation, as empty_cache() does with a cached segment; the process goes on.
Findings held_at_end(std::uint64_t held, bool release, const std::string& caller = syn::kTorchAllocatorLib) {
  auto trace = one_process();
  std::int64_t ts = kStart + 20 * syn::kMs;
  malloc_call(trace, ts, 0x7f0000000000, held, caller);
  if (release) malloc_call(trace, ts + syn::kMs, 0x7f1000000000, 100 * kMiB, caller);
  ts = heartbeat(trace, ts + 2 * syn::kMs);
  if (release) free_call(trace, ts, 0x7f1000000000, caller);
  for (int i = 0; i < 5; ++i) ts = heartbeat(trace, ts + syn::kMs);
  trace.exit(kPid, ts + 10 * syn::kMs);
  return findings_of(trace);
}

// A cuMemCreate that fails with 800 (not permitted), followed on the same thread by `next`.
Findings failed_create_then(const std::string& next, std::int64_t next_ret) {
  auto trace = one_process();
  const std::int64_t ts = kStart + 20 * syn::kMs;
  trace.call(kPid, "cuMemCreate", ts, 10 * syn::kUs).bytes(20 * kMiB).ret(800).caller(syn::kTorchAllocatorLib);
  auto& c = trace.call(kPid, next, ts + syn::kMs, 10 * syn::kUs).ret(next_ret).caller(syn::kTorchAllocatorLib);
  if (next == "cuMemCreate") c.bytes(20 * kMiB).handle(0x51);
  heartbeat(trace, ts + 2 * syn::kMs);
  trace.exit(kPid, ts + 10 * syn::kMs);
  return findings_of(trace);
}

// A first cuMemCreate of `bytes` by `caller` (XLA's preallocation), then a few iterations of work; NVML's
// view of the GPU (kGpuTotalBytes) unless `nvml` is false.
Findings first_create(std::uint64_t bytes, const std::string& caller, bool nvml = true) {
  syn::TraceOptions options;
  if (!nvml) options.nvml_interval_ns = 0;
  auto trace = one_process(options);
  std::int64_t ts = kStart + 20 * syn::kMs;
  trace.call(kPid, "cuMemCreate", ts, 30 * syn::kUs).handle(0x61).bytes(bytes).device(0).caller(caller);
  for (int i = 0; i < 5; ++i) ts = heartbeat(trace, ts + syn::kMs);
  trace.exit(kPid, ts + 10 * syn::kMs);
  return findings_of(trace);
}

bool contains(const json& text, std::string_view part) {
  return text.get<std::string>().find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("leak_growth: growth after the first episode and over the second half must reach 64 MiB",
          "[findings][rules]") {
  // 16 requests each keeping 4 MiB: 64 MiB exactly; one byte less each: 16 bytes short.
  auto at = late_leak(16, 4 * kMiB);
  REQUIRE(at.of("leak_growth").size() == 1);
  const json n = at.of("leak_growth")[0]["evidence"]["numbers"];
  CHECK(n["growth_bytes"] == 64 * kMiB);
  CHECK(n["second_half_growth_bytes"] == 64 * kMiB);
  CHECK(n["episodes"] == 17);
  CHECK(n["calls_since_last_high"] == 2);
  CHECK(at.out["findings"][0]["kind"] == "leak_growth");
  auto below = late_leak(16, 4 * kMiB - 1);
  CHECK(below.fired("leak_growth") == 0);
}

TEST_CASE("leak_growth: fewer than 8 growth episodes are a load and a warm-up, not a leak", "[findings][rules]") {
  // Each request keeps 100 MiB: the bytes are far above the threshold, only the count of episodes decides.
  CHECK(late_leak(6, 100 * kMiB).fired("leak_growth") == 0);  // the load + 6 = 7 episodes
  CHECK(late_leak(7, 100 * kMiB).fired("leak_growth") == 1);  // 8
}

TEST_CASE("allocator_cache_held: 64 MiB held with no release after the last allocation", "[findings][rules]") {
  CHECK(held_at_end(64 * kMiB - 1, false).fired("allocator_cache_held") == 0);
  auto at = held_at_end(64 * kMiB, false);
  REQUIRE(at.of("allocator_cache_held").size() == 1);
  CHECK(at.of("allocator_cache_held")[0]["evidence"]["numbers"]["held_bytes"] == 64 * kMiB);
  CHECK(at.fired("held_after_empty_cache") == 0);
  // Released after its last allocation: what stayed is not the cache, whatever its size.
  CHECK(held_at_end(1024 * kMiB, true).fired("allocator_cache_held") == 0);
}

TEST_CASE("held_after_empty_cache: 256 MiB still held after a release that followed the last allocation",
          "[findings][rules]") {
  CHECK(held_at_end(256 * kMiB - 1, true).fired("held_after_empty_cache") == 0);
  auto at = held_at_end(256 * kMiB, true);
  REQUIRE(at.of("held_after_empty_cache").size() == 1);
  const json f = at.of("held_after_empty_cache")[0];
  CHECK(f["severity"] == "medium");
  CHECK(f["evidence"]["numbers"]["held_bytes"] == 256 * kMiB);
  CHECK(f["evidence"]["numbers"]["released_bytes"] == 100 * kMiB);
  CHECK(f["evidence"]["numbers"]["held_segments"] == 1);
  // Without the release, the same memory is the cache's to report.
  CHECK(held_at_end(256 * kMiB, false).fired("held_after_empty_cache") == 0);
}

TEST_CASE("call_errors: a failure the next call on its thread repeats with success is handled", "[findings][rules]") {
  auto handled = failed_create_then("cuMemCreate", 0);
  REQUIRE(handled.of("call_errors").size() == 1);
  CHECK(handled.of("call_errors")[0]["severity"] == "info");
  auto retried_in_vain = failed_create_then("cuMemCreate", 800);
  REQUIRE(retried_in_vain.of("call_errors").size() == 1);
  CHECK(retried_in_vain.of("call_errors")[0]["severity"] == "low");
  auto other_call = failed_create_then("cudaStreamSynchronize", 0);
  REQUIRE(other_call.of("call_errors").size() == 1);
  CHECK(other_call.of("call_errors")[0]["severity"] == "low");
}

TEST_CASE("held_after_empty_cache: not after the allocator's own out-of-memory retry", "[findings][rules]") {
  // An allocation fails, the allocator frees its cached segment and tries again, which fails too: what stayed
  // (512 MiB) was in use, not a reference the program forgot; out_of_memory tells the story.
  auto trace = one_process();
  std::int64_t ts = kStart + 20 * syn::kMs;
  malloc_call(trace, ts, 0x7f0000000000, 512 * kMiB);
  malloc_call(trace, ts + syn::kMs, 0x7f1000000000, 100 * kMiB);
  ts = heartbeat(trace, ts + 2 * syn::kMs);
  trace.call(kPid, "cudaMalloc", ts, 20 * syn::kUs).bytes(512 * syn::kGiB).device(0).ret(2).caller(syn::kTorchAllocatorLib);
  free_call(trace, ts + syn::kMs, 0x7f1000000000);
  trace.call(kPid, "cudaMalloc", ts + 2 * syn::kMs, 20 * syn::kUs).bytes(512 * syn::kGiB).device(0).ret(2).caller(
      syn::kTorchAllocatorLib);
  for (int i = 0; i < 5; ++i) ts = heartbeat(trace, ts + 3 * syn::kMs);
  trace.exit(kPid, ts + 10 * syn::kMs);
  auto f = findings_of(trace);
  CHECK(f.out["findings"][0]["kind"] == "out_of_memory");
  CHECK(f.fired("held_after_empty_cache") == 0);
  CHECK(f.fired("allocator_cache_held") == 0);
}

// ---- framework allocators other than PyTorch's (issue 12 item 2) ----

TEST_CASE("preallocated_pool: a framework allocator's first allocation of >= 25% of the GPU", "[findings][rules]") {
  const std::uint64_t quarter = syn::kGpuTotalBytes / 4;
  CHECK(first_create(quarter - 1, syn::kXlaPluginLib).fired("preallocated_pool") == 0);
  auto at = first_create(quarter, syn::kXlaPluginLib);
  REQUIRE(at.of("preallocated_pool").size() == 1);
  const json f = at.of("preallocated_pool")[0];
  CHECK(f["evidence"]["numbers"]["preallocated_bytes"] == quarter);
  CHECK(f["evidence"]["numbers"]["gpu_total_bytes"] == syn::kGpuTotalBytes);
  CHECK(f["evidence"]["numbers"]["share_pct"] == 25.0);
  CHECK(contains(f["title"], "XLA's BFC allocator (JAX) preallocated"));
  CHECK(contains(f["summary"], "XLA_PYTHON_CLIENT_PREALLOCATE=false"));
  CHECK(contains(f["summary"], "XLA_PYTHON_CLIENT_MEM_FRACTION"));
  // The pool is reported once: allocator_cache_held leaves it to preallocated_pool.
  CHECK(at.fired("allocator_cache_held") == 0);
  // JAX's default: 75%.
  auto jax_default = first_create(syn::kGpuTotalBytes / 4 * 3, syn::kXlaPluginLib);
  REQUIRE(jax_default.of("preallocated_pool").size() == 1);
  CHECK(jax_default.of("preallocated_pool")[0]["evidence"]["numbers"]["share_pct"] == 75.0);
}

TEST_CASE("preallocated_pool: needs the GPU's size and a framework allocator", "[findings][rules]") {
  auto no_nvml = first_create(syn::kGpuTotalBytes / 2, syn::kXlaPluginLib, false);
  CHECK(no_nvml.fired("preallocated_pool") == 0);
  // Without the GPU's size the pool is still memory held with no release: allocator_cache_held reports it.
  CHECK(no_nvml.fired("allocator_cache_held") == 1);
  // A program's own large allocation is not a framework's pool.
  CHECK(first_create(syn::kGpuTotalBytes / 2, "/opt/app/libsolver.so").fired("preallocated_pool") == 0);
}

TEST_CASE("framework allocators are named with their own release call and settings", "[findings][rules]") {
  struct Case {
    const std::string& caller;
    std::string_view name, release, objects;
  };
  for (const Case& c : {Case{syn::kTorchAllocatorLib, "PyTorch's caching allocator", "torch.cuda.empty_cache()", "tensors"},
                        Case{syn::kCupyRuntimeLib, "CuPy's memory pool", "free_all_blocks()", "arrays"},
                        Case{syn::kXlaPluginLib, "XLA's BFC allocator (JAX)", "XLA_PYTHON_CLIENT_ALLOCATOR=platform",
                             "arrays"}}) {
    INFO(c.name);
    auto cached = held_at_end(128 * kMiB, false, c.caller);
    REQUIRE(cached.of("allocator_cache_held").size() == 1);
    const json f = cached.of("allocator_cache_held")[0];
    CHECK(contains(f["title"], c.name));
    CHECK(contains(f["summary"], c.release));
    CHECK(contains(f["summary"], c.objects));
    if (c.caller != syn::kTorchAllocatorLib) CHECK_FALSE(contains(f["summary"], "torch"));
    auto live = held_at_end(512 * kMiB, true, c.caller);
    REQUIRE(live.of("held_after_empty_cache").size() == 1);
    CHECK(contains(live.of("held_after_empty_cache")[0]["title"], c.name));
    CHECK(contains(live.of("held_after_empty_cache")[0]["title"], std::string("live ") + std::string(c.objects)));
  }
}

TEST_CASE("two framework allocators in one process are judged apart", "[findings][rules]") {
  // PyTorch keeps 128 MiB cached; CuPy's pool returns a block after its last allocation (free_all_blocks())
  // while 512 MiB of live arrays stay: one finding each, each naming its allocator.
  auto trace = one_process();
  std::int64_t ts = kStart + 20 * syn::kMs;
  malloc_call(trace, ts, 0x7f0000000000, 128 * kMiB);
  malloc_call(trace, ts + syn::kMs, 0x7f2000000000, 512 * kMiB, syn::kCupyRuntimeLib);
  malloc_call(trace, ts + 2 * syn::kMs, 0x7f3000000000, 100 * kMiB, syn::kCupyRuntimeLib);
  ts = heartbeat(trace, ts + 3 * syn::kMs);
  free_call(trace, ts, 0x7f3000000000, syn::kCupyRuntimeLib);
  for (int i = 0; i < 5; ++i) ts = heartbeat(trace, ts + syn::kMs);
  trace.exit(kPid, ts + 10 * syn::kMs);
  auto f = findings_of(trace);
  REQUIRE(f.of("allocator_cache_held").size() == 1);
  CHECK(contains(f.of("allocator_cache_held")[0]["title"], "PyTorch's caching allocator"));
  CHECK(f.of("allocator_cache_held")[0]["evidence"]["numbers"]["held_bytes"] == 128 * kMiB);
  REQUIRE(f.of("held_after_empty_cache").size() == 1);
  CHECK(contains(f.of("held_after_empty_cache")[0]["title"], "CuPy's memory pool"));
  CHECK(f.of("held_after_empty_cache")[0]["evidence"]["numbers"]["held_bytes"] == 512 * kMiB);
}
