// Time warps (tests/tools/time_warp.h): the rewriter keeps every call and
// maps every timestamp through one monotone map; and the property the growth
// analyses must have: a warp of the idle time, which changes the pacing and
// not the program, changes no leak verdict. Run over every shipped trace (and
// the recorded corpus, where present) and every synthetic scenario.
#include <catch2/catch.hpp>
#include <filesystem>
#include <set>

#include "tests/tools/synthetic_trace.h"
#include "tests/tools/time_warp.h"
#include "tests/tools/tool_check.h"

namespace {

namespace fs = std::filesystem;
namespace syn = vs::test::synthetic;
namespace tw = vs::test::time_warp;
using nlohmann::json;

// (rowid, value) of one column, NULL as nullopt.
std::vector<std::pair<std::int64_t, std::optional<std::int64_t>>> column(const vs::test::TraceFile& t, const tw::TimeColumn& c) {
  std::vector<std::pair<std::int64_t, std::optional<std::int64_t>>> out;
  REQUIRE(t.reader->query(std::string("SELECT rowid, ") + c.column + " FROM " + c.table + " ORDER BY rowid", {},
                          [&](const vs::store::Row& r) {
                            out.push_back({r.i64(0), r.is_null(1) ? std::nullopt : std::optional(r.i64(1))});
                          }).ok());
  return out;
}

bool has_table(const vs::test::TraceFile& t, const std::string& table) {
  return t.q("SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = ?", {table}) > 0;
}

std::vector<std::string> rows(const vs::test::TraceFile& t, const std::string& sql) {
  std::vector<std::string> out;
  REQUIRE(t.reader->query(sql, {}, [&](const vs::store::Row& r) { out.push_back(r.text(0)); }).ok());
  return out;
}

// What a warp must keep, checked on one warped copy against its original.
void check_copy(const std::string& original, const std::string& copy, const tw::Warp& warp) {
  const auto before = vs::test::open_trace(original), after = vs::test::open_trace(copy);

  // Every timestamp went through the one map; in order of the original instants, the warped ones never go back.
  std::vector<std::pair<std::int64_t, std::int64_t>> instants;
  for (const tw::TimeColumn& c : tw::warped_columns()) {
    if (before.q("SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?", {std::string(c.table), std::string(c.column)}) == 0)
      continue;
    INFO(c.table << "." << c.column);
    const auto old_values = column(before, c), new_values = column(after, c);
    REQUIRE(old_values.size() == new_values.size());
    for (std::size_t i = 0; i < old_values.size(); ++i) {
      REQUIRE(old_values[i].first == new_values[i].first);
      REQUIRE(old_values[i].second.has_value() == new_values[i].second.has_value());
      if (!old_values[i].second) continue;
      REQUIRE(*new_values[i].second == warp(*old_values[i].second));
      instants.push_back({*old_values[i].second, *new_values[i].second});
    }
  }
  std::sort(instants.begin(), instants.end());
  for (std::size_t i = 1; i < instants.size(); ++i) REQUIRE(instants[i - 1].second <= instants[i].second);

  // Each call as it was but for its entry time, in the same order, distinct entries still distinct.
  const std::string call_columns =
      "SELECT printf('%d %d %d %d %d %d %d %d %d %d %d %d', id, dur_ns, off_cpu_ns, runq_ns, switches, "
      "COALESCE(longest_off_ns, -1), pid, tid, api_id, COALESCE(ptr, 0), COALESCE(bytes, 0), COALESCE(parent_id, 0)) "
      "FROM call_rows ORDER BY ts_ns, id";
  CHECK(rows(before, call_columns) == rows(after, call_columns));
  CHECK(after.q("SELECT COUNT(*) FROM (SELECT ts_ns, LAG(ts_ns) OVER (ORDER BY ts_ns, id) AS prev FROM call_rows) "
                "WHERE ts_ns = prev") ==
        before.q("SELECT COUNT(*) FROM (SELECT ts_ns, LAG(ts_ns) OVER (ORDER BY ts_ns, id) AS prev FROM call_rows) "
                 "WHERE ts_ns = prev"));

  // Allocations keep their calls' instants: made at the call's entry, freed at the freeing call's return, or
  // at the process's exit.
  CHECK(after.q("SELECT COUNT(*) FROM allocations a JOIN call_rows c ON c.id = a.alloc_call_id WHERE a.alloc_ts_ns != c.ts_ns") == 0);
  CHECK(after.q("SELECT COUNT(*) FROM allocations a JOIN call_rows c ON c.id = a.free_call_id "
                "WHERE a.free_ts_ns != c.ts_ns + c.dur_ns") == 0);
  CHECK(after.q("SELECT COUNT(*) FROM allocations a JOIN processes p ON p.pid = a.pid AND p.session_id = a.session_id "
                "WHERE a.end_reason = 'process_exit' AND a.free_ts_ns != p.exit_ts_ns") == 0);

  // The copy's idle gaps are the original's, each at its new length.
  auto gaps = tw::read_times(copy);
  REQUIRE(gaps.ok());
  REQUIRE(gaps->gaps.size() == warp.gaps().size());
  for (std::size_t i = 0; i < warp.gaps().size(); ++i) {
    INFO("gap " << i);
    CHECK(gaps->gaps[i].from_ns == warp(warp.gaps()[i].from_ns));
    CHECK(gaps->gaps[i].length() == warp.new_lengths()[i]);
  }

  // Summaries: rebuilt from the warped calls where there were some; a file without them stays without.
  CHECK(before.q("PRAGMA user_version") == after.q("PRAGMA user_version"));
  CHECK(has_table(before, "summaries") == has_table(after, "summaries"));
  if (!has_table(before, "summaries")) return;
  CHECK(rows(before, "SELECT session_id FROM summaries") == rows(after, "SELECT session_id FROM summaries"));
  CHECK(after.q("SELECT COUNT(*) FROM call_stats s WHERE first_ts_ns != (SELECT MIN(ts_ns) FROM call_rows c WHERE "
                "c.session_id = s.session_id AND c.api_id = s.api_id AND (s.pid IS NULL OR c.pid = s.pid)) OR last_ts_ns "
                "!= (SELECT MAX(ts_ns) FROM call_rows c WHERE c.session_id = s.session_id AND c.api_id = s.api_id AND "
                "(s.pid IS NULL OR c.pid = s.pid))") == 0);
  CHECK(after.q("SELECT COUNT(*) FROM call_buckets b WHERE first_ts_ns != (SELECT MIN(ts_ns) FROM call_rows c WHERE "
                "c.session_id = b.session_id AND c.id BETWEEN b.first_call_id AND b.last_call_id) OR last_ts_ns != (SELECT "
                "MAX(ts_ns) FROM call_rows c WHERE c.session_id = b.session_id AND c.id BETWEEN b.first_call_id AND "
                "b.last_call_id)") == 0);
  CHECK(after.q("SELECT COUNT(*) FROM call_stats") == before.q("SELECT COUNT(*) FROM call_stats"));
}

// ---- the verdicts a warp must not change ----

struct Verdicts {
  std::string leak_growth_pids;                          // findings' leak_growth, e.g. "476 5001"
  std::map<std::string, std::string> classification;     // leak_candidates: "pid 476 device libc10_cuda.so" -> verdict
  std::string first_finding;                             // "leak_growth pid 476", or "none"
};

Verdicts verdicts_of(const std::string& file) {
  const auto t = vs::test::open_trace(file);
  Verdicts v;
  const json findings = vs::test::run_tool_checked(*t.reader, "findings", {{"limit", 50}}).structured;
  std::set<std::int64_t> pids;
  for (const auto& f : findings["findings"])
    if (f["kind"] == "leak_growth") pids.insert(f["pid"].get<std::int64_t>());
  for (auto pid : pids) v.leak_growth_pids += (v.leak_growth_pids.empty() ? "" : " ") + std::to_string(pid);
  v.first_finding = "none";
  if (!findings["findings"].empty()) {
    const json& first = findings["findings"][0];
    v.first_finding = first["kind"].get<std::string>() +
                      (first["pid"].is_null() ? "" : " pid " + std::to_string(first["pid"].get<std::int64_t>()));
  }
  const json candidates = vs::test::run_tool_checked(*t.reader, "leak_candidates", {{"limit", 100}}).structured;
  REQUIRE(candidates["candidates_more"] == 0);
  for (const auto& c : candidates["candidates"])
    v.classification["pid " + std::to_string(c["pid"].get<std::int64_t>()) + " " + c["kind"].get<std::string>() + " " +
                     c["library"].get<std::string>()] = c["classification"].get<std::string>();
  return v;
}

// Every standard warp of `file` gives the verdicts of the original; the failure names the trace, the warp
// and the verdict that changed, with its value before and after.
void check_verdicts_keep(const std::string& name, const std::string& file, const syn::TempDir& dir) {
  const Verdicts before = verdicts_of(file);
  int n = 0;
  for (const tw::WarpSpec& warp : tw::standard_warps()) {
    const std::string copy = dir.file("warped-" + std::to_string(n++) + ".db");
    auto warped = tw::warp_trace(file, copy, warp);
    INFO("trace " << name << ", warp " << warp.name << (warped.ok() ? "" : ": " + warped.error().message));
    REQUIRE(warped.ok());
    const Verdicts after = verdicts_of(copy);
    {
      INFO("verdict: pids with a leak_growth finding");
      CHECK(before.leak_growth_pids == after.leak_growth_pids);
    }
    {
      INFO("verdict: the first finding (kind, pid)");
      CHECK(before.first_finding == after.first_finding);
    }
    std::set<std::string> series;
    for (const auto& [key, c] : before.classification) series.insert(key);
    for (const auto& [key, c] : after.classification) series.insert(key);
    for (const auto& key : series) {
      INFO("verdict: leak_candidates classification of " << key);
      const auto b = before.classification.find(key), a = after.classification.find(key);
      CHECK((b == before.classification.end() ? "(absent)" : b->second) ==
            (a == after.classification.end() ? "(absent)" : a->second));
    }
    for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(copy + suffix);
  }
}


}  // namespace

TEST_CASE("time warp: the map has slope 1 inside calls and rescales each gap", "[time_warp]") {
  // Calls in flight outside (100, 200) and (300, 310): the first gap becomes 1000 ns long, the second 1 ns.
  const tw::Warp warp({{100, 200}, {300, 310}}, {1000, 1});
  CHECK(warp(50) == 50);      // before the first gap: unchanged
  CHECK(warp(100) == 100);
  CHECK(warp(150) == 600);    // halfway through the first gap
  CHECK(warp(200) == 1100);   // its end: 1000 ns later
  CHECK(warp(250) == 1150);   // inside a call: slope 1
  CHECK(warp(300) == 1200);
  CHECK(warp(309) == 1200);   // inside the shrunk gap: rounded down, never onto the next call's entry
  CHECK(warp(310) == 1201);
  CHECK(warp(400) == 1291);   // after the last gap: slope 1
  for (std::int64_t t = -10; t < 500; ++t) CHECK(warp(t) <= warp(t + 1));
  CHECK_THROWS_WITH(tw::Warp({{100, 200}, {150, 300}}, {1, 1}), Catch::Contains("overlaps"));
  CHECK_THROWS_WITH(tw::Warp({{100, 200}}, {0}), Catch::Contains("vanish"));
}

TEST_CASE("time warp: each warp rescales the gaps it names", "[time_warp]") {
  tw::TraceTimes times;
  times.gaps = {{0, 10}, {20, 30}, {40, 50}, {60, 70}};
  times.first_gpu_allocation_ns = {{7, 25}, {8, 30}};  // start-up ends at the later one: 30
  using L = std::vector<std::int64_t>;
  CHECK(tw::scale_startup(100).new_lengths(times) == L{1000, 1000, 10, 10});
  CHECK(tw::scale_startup(0.01).new_lengths(times) == L{1, 1, 10, 10});  // never below 1 ns
  CHECK(tw::scale_startup(100, 10).new_lengths(times) == L{1000, 10, 10, 10});
  CHECK(tw::scale_after(100).new_lengths(times) == L{10, 10, 1000, 1000});
  CHECK(tw::scale_after(0.5, 60).new_lengths(times) == L{10, 10, 10, 5});
  const L inserted = tw::insert_idle(2, 1000, 3).new_lengths(times);
  CHECK(std::count(inserted.begin(), inserted.end(), 1010) == 2);
  CHECK(std::count(inserted.begin(), inserted.end(), 10) == 2);
  CHECK(tw::insert_idle(9, 1000, 3).new_lengths(times) == L{1010, 1010, 1010, 1010});
  const L random = tw::scale_randomly(7).new_lengths(times);
  CHECK(random == tw::scale_randomly(7).new_lengths(times));  // seeded
  CHECK(random != tw::scale_randomly(8).new_lengths(times));
  for (auto length : random) CHECK((length >= 1 && length <= 1000));
  tw::TraceTimes no_allocation = times;
  no_allocation.first_gpu_allocation_ns.clear();  // no start-up to name: nothing changes
  CHECK(tw::scale_startup(100).new_lengths(no_allocation) == L{10, 10, 10, 10});
}

TEST_CASE("time warp: every timestamp column of the schema is warped or rebuilt with the summaries", "[time_warp]") {
  syn::TempDir dir("vs_time_warp");
  syn::write_trace(dir.file("trace.db"), {syn::steady({.iterations = 3})});
  const auto t = vs::test::open_trace(dir.file("trace.db"));
  std::set<std::string> covered;
  for (const auto list : {tw::warped_columns(), tw::summary_columns()})
    for (const tw::TimeColumn& c : list) covered.insert(std::string(c.table) + "." + c.column);
  const auto time_columns =
      rows(t, "SELECT s.name || '.' || c.name FROM sqlite_schema s, pragma_table_info(s.name) c WHERE s.type = 'table' "
              "AND (c.name LIKE '%ts_ns' OR c.name = 'start_ns') ORDER BY 1");
  CHECK(time_columns.size() == covered.size());
  for (const auto& c : time_columns) {
    INFO(c);
    CHECK(covered.count(c) == 1);
  }
}

TEST_CASE("time warp: a warped copy keeps every call and maps every timestamp", "[time_warp]") {
  syn::TempDir dir("vs_time_warp");
  // Two processes, NVML samples and summaries (written by this store); and a recorded trace of schema 1.
  const std::string synthetic = dir.file("synthetic.db");
  syn::write_trace(synthetic, syn::leaking_and_steady());
  int n = 0;
  for (const std::string& original : {synthetic, vs::test::example_trace("leak")}) {
    for (const tw::WarpSpec& spec : tw::standard_warps()) {
      INFO(original << ", " << spec.name);
      const std::string copy = dir.file("copy-" + std::to_string(n++) + ".db");
      auto warp = tw::warp_trace(original, copy, spec);
      INFO((warp.ok() ? "" : warp.error().message));
      REQUIRE(warp.ok());
      check_copy(original, copy, *warp);
    }
  }
  CHECK_FALSE(tw::warp_trace(synthetic, synthetic, tw::scale_startup(2)).ok());  // never over an existing file
}

TEST_CASE("time warp: the verdicts of every recorded trace stay the same under each warp", "[time_warp]") {
  syn::TempDir dir("vs_time_warp");
  const auto traces = vs::test::recorded_traces();
  REQUIRE(traces.size() >= 6);
  for (const fs::path& trace : traces)
    check_verdicts_keep(fs::relative(trace, fs::path(VS_EXAMPLES_DIR)).string(), trace.string(), dir);
}

TEST_CASE("time warp: the verdicts of every synthetic scenario stay the same under each warp", "[time_warp]") {
  syn::TempDir dir("vs_time_warp");
  int n = 0;
  for (const syn::Scenario& scenario : syn::sampled_scenarios()) {
    const std::string file = dir.file("scenario-" + std::to_string(n++) + ".db");
    syn::write_trace(file, scenario.workloads);
    check_verdicts_keep("synthetic '" + scenario.name + "'", file, dir);
  }
}
