// compare_sessions on a two-session trace written through the real store:
// a "before" run whose frees are slow and an "after" run that allocates less.
#include <stdlib.h>

#include <filesystem>

#include "store/store.h"
#include "tests/tools/tool_check.h"
#include "tests/unit/call_builder.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using vs::test::Call;

constexpr std::uint64_t kMiB = 1 << 20;
const std::string kTorch = "/opt/torch/lib/libc10_cuda.so";

struct TwoSessionTrace {
  fs::path dir;
  fs::path file;

  TwoSessionTrace() {
    std::string tmpl = (fs::temp_directory_path() / "vs_compare_XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
    file = dir / "trace.db";
    auto opened = vs::store::TraceWriter::open(file.string());
    REQUIRE(opened.ok());
    auto& w = *opened.value();
    // a: 4 x 8 MiB allocated, then freed one by one, each free taking 2 ms: peak 32 MiB.
    write_session(w, 1'000'000'000, 4, 8 * kMiB, 2'000'000, false);
    // b: 2 x 8 MiB, frees 100 us, and one failed cudaMalloc.
    write_session(w, 5'000'000'000, 2, 8 * kMiB, 100'000, true);
  }
  ~TwoSessionTrace() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  static void write_session(vs::store::TraceWriter& w, std::int64_t start, int n, std::uint64_t bytes,
                            std::int64_t free_ns, bool with_error) {
    vs::SessionInfo s;
    s.host = "host";
    s.kernel = "6.1";
    s.mode = "launch";
    s.options_json = "{}";
    s.version = "test";
    s.command = "python3 train.py";
    s.start_ts_ns = start;
    REQUIRE(w.begin_session(s) > 0);
    vs::ProcessRecord p;
    p.pid = 100;
    p.comm = "python3";
    p.first_ts_ns = start;
    p.how_found = "launched";
    w.process_seen(p);
    std::int64_t id = w.next_call_id(), ts = start + 1'000'000;
    for (int i = 0; i < n; ++i, ts += 10'000'000)
      w.add_call(Call(id++, "cudaMalloc").ptr(0x7f0000000000 + i * bytes).bytes(bytes).caller(kTorch).ts(ts, 50'000));
    for (int i = 0; i < n; ++i, ts += 10'000'000)
      w.add_call(Call(id++, "cudaFree").ptr(0x7f0000000000 + i * bytes).caller(kTorch).ts(ts, free_ns));
    if (with_error) w.add_call(Call(id++, "cudaMalloc").ptr(0).bytes(1ull << 40).ret(2).caller(kTorch).ts(ts, 30'000));
    vs::SessionEnd end;
    end.end_ts_ns = ts + 1'000'000'000;
    REQUIRE(w.end_session(end).ok());
  }
};

json change(const json& out, const std::string& metric) {
  for (const auto& c : out["changes"])
    if (c["metric"] == metric) return c;
  return nullptr;
}

}  // namespace

TEST_CASE("compare_sessions: deltas and ratios of two sessions, ranked by change", "[compare_sessions]") {
  TwoSessionTrace trace;
  auto t = vs::test::open_trace(trace.file.string());
  auto out = vs::test::run_tool_checked(*t.reader, "compare_sessions", {{"limit", 200}});
  INFO(out.text);
  const json& s = out.structured;
  CHECK(s["session_a"]["session_id"] == 1);  // defaults: the newest against the one before
  CHECK(s["session_b"]["session_id"] == 2);

  json calls = change(s, "api.cudaMalloc.calls");
  REQUIRE(calls.is_object());
  CHECK(calls["a"] == 4.0);
  CHECK(calls["b"] == 3.0);
  CHECK(calls["delta"] == -1.0);
  json p99 = change(s, "api.cudaFree.p99_ns");
  CHECK(p99["a"] == 2'000'000.0);
  CHECK(p99["b"] == 100'000.0);
  CHECK(p99["ratio"] == 0.05);
  json peak = change(s, "memory.device.peak_outstanding_bytes");
  CHECK(peak["a"] == 32.0 * kMiB);
  CHECK(peak["b"] == 16.0 * kMiB);
  json errors = change(s, "calls.errors");
  CHECK(errors["a"] == 0.0);
  CHECK(errors["b"] == 1.0);
  CHECK(change(s, "memory.device.outstanding_at_end_bytes").is_null());  // 0 in both: unchanged
  CHECK(s["unchanged"].get<int>() > 0);

  // Ranked: an error count from 0 to 1 (relative change 1) before a halving (0.5).
  double previous = 1.0;
  for (const auto& c : s["changes"]) {
    CHECK(c["relative_change"].get<double>() <= previous);
    previous = c["relative_change"].get<double>();
  }
  CHECK(out.text.find("api.cudaFree.p99_ns") != std::string::npos);

  auto limited = vs::test::run_tool_checked(*t.reader, "compare_sessions", {{"session_a", 2}, {"session_b", 1}, {"limit", 3}});
  CHECK(limited.structured["changes"].size() == 3);
  CHECK(limited.structured["left_out"].get<int>() > 0);
  CHECK(change(limited.structured, "calls.errors").value("delta", 0.0) == -1.0);
}

TEST_CASE("compare_sessions: errors the model can fix", "[compare_sessions]") {
  TwoSessionTrace trace;
  auto t = vs::test::open_trace(trace.file.string());
  CHECK(vs::test::run_tool_error(*t.reader, "compare_sessions", {{"session_a", 2}, {"session_b", 2}})
            .find("pick two sessions") != std::string::npos);
  CHECK(vs::test::run_tool_error(*t.reader, "compare_sessions", {{"session_a", 7}}).find("sessions: 1, 2") !=
        std::string::npos);
  auto single = vs::test::open_trace(vs::test::example_trace("leak"));
  CHECK(vs::test::run_tool_error(*single.reader, "compare_sessions", json::object()).find("holds 1 session") !=
        std::string::npos);
}
