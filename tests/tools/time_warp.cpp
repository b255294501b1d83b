#include "tests/tools/time_warp.h"

#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>

#include "store/reader.h"
#include "store/summaries.h"
#include "tools/timeline_model.h"

namespace vs::test::time_warp {
namespace {

constexpr TimeColumn kWarped[] = {
    {"sessions", "start_ts_ns"},   {"sessions", "end_ts_ns"},
    {"processes", "start_ns"},     {"processes", "first_ts_ns"},     {"processes", "exit_ts_ns"},
    {"libraries", "attached_ts_ns"},
    {"call_rows", "ts_ns"},
    {"allocations", "alloc_ts_ns"}, {"allocations", "free_ts_ns"},
    {"sched_events", "ts_ns"},
    {"gpu_memory_samples", "ts_ns"}, {"gpu_process_samples", "ts_ns"},
};
constexpr TimeColumn kSummaries[] = {
    {"call_stats", "first_ts_ns"},   {"call_stats", "last_ts_ns"},
    {"call_buckets", "first_ts_ns"}, {"call_buckets", "last_ts_ns"},
};

std::int64_t scaled(std::int64_t length, double factor) {
  return std::max<std::int64_t>(1, std::llround(static_cast<double>(length) * factor));
}

std::string factor_name(double factor) {
  std::ostringstream s;
  s << "x" << factor;
  return s.str();
}

std::string ms_name(std::int64_t ns) { return std::to_string(ns / 1'000'000) + " ms"; }

using Db = std::unique_ptr<sqlite3, int (*)(sqlite3*)>;

Status exec(sqlite3* db, const std::string& sql) {
  char* msg = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &msg) == SQLITE_OK) return {};
  std::string m = msg != nullptr ? msg : sqlite3_errmsg(db);
  sqlite3_free(msg);
  return Error{sql.substr(0, 120) + ": " + m};
}

// Whether `table` has `column` (an older schema may lack either).
Result<bool> has_column(const store::TraceReader& db, const char* table, const char* column) {
  bool found = false;
  Status st = db.query("SELECT 1 FROM pragma_table_info(?) WHERE name = ?", {std::string(table), std::string(column)},
                       [&](const store::Row&) { found = true; });
  if (!st) return Error{st.message()};
  return found;
}

void warp_sql_function(sqlite3_context* ctx, int, sqlite3_value** argv) {
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return sqlite3_result_null(ctx);
  const auto* warp = static_cast<const Warp*>(sqlite3_user_data(ctx));
  sqlite3_result_int64(ctx, (*warp)(sqlite3_value_int64(argv[0])));
}

}  // namespace

std::optional<std::int64_t> TraceTimes::startup_end_ns() const {
  std::optional<std::int64_t> end;
  for (const auto& [pid, ts] : first_gpu_allocation_ns) end = std::max(end.value_or(ts), ts);
  return end;
}

Warp::Warp(std::vector<Gap> gaps, std::vector<std::int64_t> new_lengths)
    : gaps_(std::move(gaps)), new_lengths_(std::move(new_lengths)) {
  if (gaps_.size() != new_lengths_.size())
    throw std::logic_error("time warp: " + std::to_string(gaps_.size()) + " gaps but " +
                           std::to_string(new_lengths_.size()) + " new lengths");
  for (std::size_t i = 0; i < gaps_.size(); ++i) {
    if (gaps_[i].length() <= 0 || (i > 0 && gaps_[i].from_ns < gaps_[i - 1].to_ns))
      throw std::logic_error("time warp: gap " + std::to_string(i) + " is empty or overlaps the one before");
    if (new_lengths_[i] < 1) throw std::logic_error("time warp: gap " + std::to_string(i) + " would vanish");
    new_from_.push_back(i == 0 ? gaps_[0].from_ns
                               : new_from_[i - 1] + new_lengths_[i - 1] + (gaps_[i].from_ns - gaps_[i - 1].to_ns));
  }
}

std::int64_t Warp::operator()(std::int64_t t) const {
  // The last gap that starts at or before t.
  auto it = std::upper_bound(gaps_.begin(), gaps_.end(), t, [](std::int64_t v, const Gap& g) { return v < g.from_ns; });
  if (it == gaps_.begin()) return t;
  const std::size_t i = static_cast<std::size_t>(it - gaps_.begin()) - 1;
  const Gap& g = gaps_[i];
  if (t >= g.to_ns) return new_from_[i] + new_lengths_[i] + (t - g.to_ns);  // in the calls after it: slope 1
  // Inside the gap: rescaled, rounded down, so an instant inside never reaches the call that ends the gap.
  const __int128 offset = static_cast<__int128>(t - g.from_ns) * new_lengths_[i] / g.length();
  return new_from_[i] + static_cast<std::int64_t>(offset);
}

WarpSpec scale_startup(double factor, std::optional<std::int64_t> until_ns) {
  return {"start-up gaps " + factor_name(factor), [=](const TraceTimes& t) {
            const std::optional<std::int64_t> until = until_ns ? until_ns : t.startup_end_ns();
            std::vector<std::int64_t> out;
            for (const Gap& g : t.gaps) out.push_back(until && g.to_ns <= *until ? scaled(g.length(), factor) : g.length());
            return out;
          }};
}

WarpSpec insert_idle(int gaps, std::int64_t idle_ns, std::uint64_t seed) {
  return {std::to_string(idle_ns / 1'000'000'000) + " s idle in " + std::to_string(gaps) + " random gaps (seed " +
              std::to_string(seed) + ")",
          [=](const TraceTimes& t) {
            std::vector<std::size_t> order(t.gaps.size());
            std::iota(order.begin(), order.end(), 0);
            std::mt19937_64 rng(seed);
            std::shuffle(order.begin(), order.end(), rng);
            std::vector<std::int64_t> out;
            for (const Gap& g : t.gaps) out.push_back(g.length());
            for (std::size_t k = 0; k < order.size() && k < static_cast<std::size_t>(gaps); ++k) out[order[k]] += idle_ns;
            return out;
          }};
}

WarpSpec scale_randomly(std::uint64_t seed, double min_factor, double max_factor) {
  return {"every gap x random in [" + factor_name(min_factor).substr(1) + ", " + factor_name(max_factor).substr(1) +
              "] (seed " + std::to_string(seed) + ")",
          [=](const TraceTimes& t) {
            std::mt19937_64 rng(seed);
            std::uniform_real_distribution<double> log_factor(std::log(min_factor), std::log(max_factor));
            std::vector<std::int64_t> out;
            for (const Gap& g : t.gaps) out.push_back(scaled(g.length(), std::exp(log_factor(rng))));
            return out;
          }};
}

WarpSpec scale_after(double factor, std::optional<std::int64_t> from_ns) {
  return {"gaps after start-up " + factor_name(factor) + (from_ns ? " from t=" + ms_name(*from_ns) : ""),
          [=](const TraceTimes& t) {
            const std::optional<std::int64_t> from = from_ns ? from_ns : t.startup_end_ns();
            std::vector<std::int64_t> out;
            for (const Gap& g : t.gaps) out.push_back(from && g.from_ns >= *from ? scaled(g.length(), factor) : g.length());
            return out;
          }};
}

std::vector<WarpSpec> standard_warps() {
  return {scale_startup(100),       scale_startup(0.01),     insert_idle(5, 10'000'000'000, 1),
          scale_randomly(7),        scale_after(100),        scale_after(0.01)};
}

std::span<const TimeColumn> warped_columns() { return kWarped; }
std::span<const TimeColumn> summary_columns() { return kSummaries; }

Result<TraceTimes> read_times(const std::string& path) {
  auto opened = store::TraceReader::open(path);
  if (!opened) return Error{opened.error().message};
  const store::TraceReader& db = *opened.value();
  const std::string ctx = "reading the times of " + path + ": ";

  // The extent: the earliest and latest instant the file stores.
  std::optional<std::int64_t> first, last;
  for (const TimeColumn& c : kWarped) {
    auto present = has_column(db, c.table, c.column);
    if (!present) return Error{ctx + present.error().message};
    if (!*present) continue;
    Status st = db.query(std::string("SELECT MIN(") + c.column + "), MAX(" + c.column + ") FROM " + c.table, {},
                         [&](const store::Row& r) {
                           if (r.is_null(0)) return;
                           first = std::min(first.value_or(r.i64(0)), r.i64(0));
                           last = std::max(last.value_or(r.i64(1)), r.i64(1));
                         });
    if (!st) return Error{ctx + st.message()};
  }
  TraceTimes times;
  if (!first) return times;
  // The union of the calls' [ts_ns, ts_ns + dur_ns]; the gaps are what lies between, within the extent.
  std::int64_t idle_from = *first;
  std::optional<std::int64_t> busy_to;
  auto close_gap = [&](std::int64_t to) {
    if (to > idle_from) times.gaps.push_back({idle_from, to});
  };
  Status st = db.query("SELECT ts_ns, ts_ns + dur_ns FROM call_rows ORDER BY ts_ns", {}, [&](const store::Row& r) {
    const std::int64_t from = r.i64(0), to = r.i64(1);
    if (busy_to && from <= *busy_to) {
      busy_to = std::max(*busy_to, to);
      return;
    }
    if (busy_to) idle_from = *busy_to;
    close_gap(from);
    busy_to = to;
  });
  if (!st) return Error{ctx + st.message()};
  if (busy_to) idle_from = std::max(idle_from, *busy_to);
  close_gap(*last);
  st = db.query("SELECT pid, kind, MIN(alloc_ts_ns) FROM allocations GROUP BY pid, kind", {}, [&](const store::Row& r) {
    if (!tools::occupies_gpu_memory(r.text(1))) return;
    auto [it, inserted] = times.first_gpu_allocation_ns.try_emplace(r.i64(0), r.i64(2));
    it->second = std::min(it->second, r.i64(2));
  });
  if (!st) return Error{ctx + st.message()};
  return times;
}

Result<Warp> warp_trace(const std::string& from, const std::string& to, const WarpSpec& spec) {
  const std::string ctx = "warping " + from + " (" + spec.name + ") into " + to + ": ";
  if (std::filesystem::exists(to)) return Error{ctx + "the destination exists already"};
  auto times = read_times(from);
  if (!times) return Error{ctx + times.error().message};
  Warp warp(times->gaps, spec.new_lengths(*times));

  // A consistent copy through SQLite's backup (the source may be a WAL file still open elsewhere).
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(from.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr);
  Db source(raw, sqlite3_close_v2);
  if (rc != SQLITE_OK) return Error{ctx + "opening the source: " + sqlite3_errmsg(raw)};
  rc = sqlite3_open_v2(to.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  Db dest(raw, sqlite3_close_v2);
  if (rc != SQLITE_OK) return Error{ctx + "creating the copy: " + sqlite3_errmsg(raw)};
  // A scratch copy: no fsync (on a loaded disk they took most of the time).
  if (Status st = exec(dest.get(), "PRAGMA synchronous = OFF"); !st) return Error{ctx + st.message()};
  sqlite3_backup* backup = sqlite3_backup_init(dest.get(), "main", source.get(), "main");
  if (backup == nullptr) return Error{ctx + "copying: " + sqlite3_errmsg(dest.get())};
  sqlite3_backup_step(backup, -1);
  if (sqlite3_backup_finish(backup) != SQLITE_OK) return Error{ctx + "copying: " + sqlite3_errmsg(dest.get())};
  source.reset();

  if (sqlite3_create_function_v2(dest.get(), "vs_warp", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, &warp,
                                 warp_sql_function, nullptr, nullptr, nullptr) != SQLITE_OK)
    return Error{ctx + "registering vs_warp: " + sqlite3_errmsg(dest.get())};
  auto reader = store::TraceReader::open(to);
  if (!reader) return Error{ctx + reader.error().message};
  std::string updates = "BEGIN;";
  for (const TimeColumn& c : kWarped) {
    auto present = has_column(**reader, c.table, c.column);
    if (!present) return Error{ctx + present.error().message};
    if (*present)
      updates += std::string("UPDATE ") + c.table + " SET " + c.column + " = vs_warp(" + c.column + ");";
  }
  // The sessions whose summaries were built: rebuilt below from the warped calls.
  std::vector<std::int64_t> summarized;
  auto has_summaries = has_column(**reader, "summaries", "session_id");
  if (!has_summaries) return Error{ctx + has_summaries.error().message};
  if (*has_summaries) {
    Status st = (*reader)->query("SELECT session_id FROM summaries ORDER BY session_id", {},
                                 [&](const store::Row& r) { summarized.push_back(r.i64(0)); });
    if (!st) return Error{ctx + st.message()};
  }
  reader.value().reset();
  if (Status st = exec(dest.get(), updates + "COMMIT;"); !st) return Error{ctx + st.message()};
  dest.reset();
  for (std::int64_t session : summarized)
    if (Status st = store::build_summaries(to, session); !st) return Error{ctx + st.message()};
  return warp;
}

}  // namespace vs::test::time_warp
