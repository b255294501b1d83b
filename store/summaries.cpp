#include "store/summaries.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <variant>
#include <vector>

#include "store/store.h"

namespace vs::store {
namespace {

// Calls per call_buckets row: a window's edges are scanned a bucket at a time (a few ms each), and a
// window reads one call_bucket_stats row per (bucket, pid, API) inside it.
constexpr std::int64_t kBucketCalls = 8192;

// call_stats' measure columns and the CallStats fields they hold: the one
// mapping that writing and reading both use.
using IntField = std::int64_t CallStats::*;
using OptField = std::optional<std::int64_t> CallStats::*;
struct Column {
  const char* name;
  std::variant<IntField, OptField> field;
};
const Column kColumns[] = {
    {"calls", &CallStats::calls},
    {"failed", &CallStats::failed},
    {"nested", &CallStats::nested},
    {"ok_bytes", &CallStats::ok_bytes},
    {"total_ns", &CallStats::total_ns},
    {"max_ns", &CallStats::max_ns},
    {"max_call_id", &CallStats::max_call_id},
    {"p50_ns", &CallStats::p50_ns},
    {"p90_ns", &CallStats::p90_ns},
    {"p99_ns", &CallStats::p99_ns},
    {"p999_ns", &CallStats::p999_ns},
    {"descheduled", &CallStats::descheduled},
    {"off_cpu_ns", &CallStats::off_cpu_ns},
    {"runq_ns", &CallStats::runq_ns},
    {"p99_switched_ns", &CallStats::p99_switched_ns},
    {"p99_unswitched_ns", &CallStats::p99_unswitched_ns},
    {"p99_without_off_cpu_ns", &CallStats::p99_without_off_cpu_ns},
    {"p99_without_runq_ns", &CallStats::p99_without_runq_ns},
    {"tail_calls", &CallStats::tail_calls},
    {"tail_descheduled", &CallStats::tail_descheduled},
    {"slowest_descheduled_ns", &CallStats::slowest_descheduled_ns},
    {"slowest_descheduled_call_id", &CallStats::slowest_descheduled_call_id},
    {"first_ts_ns", &CallStats::first_ts_ns},
    {"last_ts_ns", &CallStats::last_ts_ns},
    {"top_level_calls", &CallStats::top_level_calls},
    {"top_level_failed", &CallStats::top_level_failed},
    {"top_level_ns", &CallStats::top_level_ns},
    {"top_level_off_cpu_ns", &CallStats::top_level_off_cpu_ns},
    {"top_level_runq_ns", &CallStats::top_level_runq_ns},
};
constexpr int kColumnCount = static_cast<int>(std::size(kColumns));

std::string column_list() {
  std::string s;
  for (const Column& c : kColumns) s += std::string(s.empty() ? "" : ", ") + c.name;
  return s;
}

std::string errmsg(sqlite3* db) { return db != nullptr ? sqlite3_errmsg(db) : "out of memory"; }

// A prepared statement on the writer's connection, finalized on every path.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt_, nullptr) != SQLITE_OK)
      error_ = "preparing \"" + sql.substr(0, 80) + "\": " + errmsg(db);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  sqlite3_stmt* get() const { return stmt_; }
  const std::string& error() const { return error_; }

  // Steps through every row; then resets, so it can be bound and run again.
  Status run(const std::function<void(const Row&)>& on_row = {}) {
    if (!error_.empty()) return Error{error_};
    int rc;
    while ((rc = sqlite3_step(stmt_)) == SQLITE_ROW)
      if (on_row) on_row(Row(stmt_));
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    if (rc != SQLITE_DONE) return Error{errmsg(db_)};
    return {};
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  std::string error_;
};

void bind_optional(sqlite3_stmt* s, int idx, std::optional<std::int64_t> v) {
  if (v) sqlite3_bind_int64(s, idx, *v);
  else sqlite3_bind_null(s, idx);
}

// The insert statements of the per-(pid, API) summaries.
struct StatsInserts {
  Statement stats, preemptor, tail, tail_preemptor;
};

Status write_stats(StatsInserts& ins, std::int64_t session_id, std::optional<std::int64_t> pid, std::int64_t api_id,
                   const CallStats& stats) {
  Statement& ins_stats = ins.stats;
  Statement& ins_preemptor = ins.preemptor;
  sqlite3_stmt* s = ins_stats.get();
  sqlite3_bind_int64(s, 1, session_id);
  bind_optional(s, 2, pid);
  sqlite3_bind_int64(s, 3, api_id);
  for (int i = 0; i < kColumnCount; ++i) {
    if (auto* f = std::get_if<IntField>(&kColumns[i].field)) sqlite3_bind_int64(s, 4 + i, stats.**f);
    else bind_optional(s, 4 + i, stats.*std::get<OptField>(kColumns[i].field));
  }
  if (Status st = ins_stats.run(); !st) return st;
  for (const PreemptorGroup& g : stats.preemptors) {
    sqlite3_stmt* p = ins_preemptor.get();
    sqlite3_bind_int64(p, 1, session_id);
    bind_optional(p, 2, pid);
    sqlite3_bind_int64(p, 3, api_id);
    sqlite3_bind_int64(p, 4, g.pid);
    sqlite3_bind_text(p, 5, g.comm.c_str(), static_cast<int>(g.comm.size()), SQLITE_TRANSIENT);
    sqlite3_bind_int64(p, 6, g.calls);
    sqlite3_bind_int64(p, 7, g.longest_off_total_ns);
    if (Status st = ins_preemptor.run(); !st) return st;
  }
  const CallStats::Tail& tail = *stats.tail;
  std::string slowest;
  for (std::int64_t id : tail.slowest_call_ids) slowest += (slowest.empty() ? "" : ",") + std::to_string(id);
  sqlite3_stmt* t = ins.tail.get();
  sqlite3_bind_int64(t, 1, session_id);
  bind_optional(t, 2, pid);
  sqlite3_bind_int64(t, 3, api_id);
  sqlite3_bind_int64(t, 4, tail.ns);
  sqlite3_bind_int64(t, 5, tail.off_cpu_ns);
  sqlite3_bind_int64(t, 6, tail.runq_ns);
  sqlite3_bind_int64(t, 7, tail.nested);
  sqlite3_bind_text(t, 8, slowest.c_str(), static_cast<int>(slowest.size()), SQLITE_TRANSIENT);
  if (Status st = ins.tail.run(); !st) return st;
  for (const auto& [comm, off_cpu_ns] : tail.off_cpu_ns_by_preemptor) {
    sqlite3_stmt* p = ins.tail_preemptor.get();
    sqlite3_bind_int64(p, 1, session_id);
    bind_optional(p, 2, pid);
    sqlite3_bind_int64(p, 3, api_id);
    sqlite3_bind_text(p, 4, comm.c_str(), static_cast<int>(comm.size()), SQLITE_TRANSIENT);
    sqlite3_bind_int64(p, 5, off_cpu_ns);
    if (Status st = ins.tail_preemptor.run(); !st) return st;
  }
  return {};
}

// The calls of one call_buckets row being collected by the scan (rowid order: one bucket at a time).
struct Bucket {
  std::int64_t number = -1;  // id / kBucketCalls
  std::int64_t first_call_id = 0, last_call_id = 0, first_ts_ns = 0, last_ts_ns = 0, calls = 0;
  std::map<std::pair<std::int64_t, std::int64_t>, CallStatsBuilder> by_pid_api;
};

Status write_bucket(Statement& ins_bucket, Statement& ins_bucket_stats, std::int64_t session_id, const Bucket& b) {
  sqlite3_stmt* s = ins_bucket.get();
  sqlite3_bind_int64(s, 1, session_id);
  sqlite3_bind_int64(s, 2, b.first_call_id);
  sqlite3_bind_int64(s, 3, b.last_call_id);
  sqlite3_bind_int64(s, 4, b.first_ts_ns);
  sqlite3_bind_int64(s, 5, b.last_ts_ns);
  sqlite3_bind_int64(s, 6, b.calls);
  if (Status st = ins_bucket.run(); !st) return st;
  for (const auto& [key, builder] : b.by_pid_api) {
    const CallStats& c = builder.counters();
    const std::string state = builder.encode();
    sqlite3_stmt* r = ins_bucket_stats.get();
    sqlite3_bind_int64(r, 1, session_id);
    sqlite3_bind_int64(r, 2, b.first_call_id);
    sqlite3_bind_int64(r, 3, key.first);
    sqlite3_bind_int64(r, 4, key.second);
    sqlite3_bind_int64(r, 5, c.calls);
    sqlite3_bind_int64(r, 6, c.failed);
    sqlite3_bind_int64(r, 7, c.total_ns);
    sqlite3_bind_int64(r, 8, c.max_ns);
    sqlite3_bind_blob(r, 9, state.data(), static_cast<int>(state.size()), SQLITE_STATIC);
    if (Status st = ins_bucket_stats.run(); !st) return st;
  }
  return {};
}

Status build_in_transaction(sqlite3* db, std::int64_t session_id) {
  for (const char* table : {"summaries", "call_stats", "call_stats_preemptors", "call_stats_tails", "call_stats_tail_preemptors",
                            "call_buckets", "call_bucket_stats"}) {
    Statement del(db, std::string("DELETE FROM ") + table + " WHERE session_id = ?");
    sqlite3_bind_int64(del.get(), 1, session_id);
    if (Status st = del.run(); !st) return Error{std::string("clearing ") + table + ": " + st.message()};
  }

  // One scan in rowid order (no index is faster for every row), grouped here: per (API, pid) for
  // call_stats, and per (pid, API) of each run of kBucketCalls ids for call_bucket_stats.
  std::map<std::pair<std::int64_t, std::int64_t>, CallStatsBuilder> by_api_pid;
  std::int64_t calls = 0;
  Statement ins_bucket(db, "INSERT INTO call_buckets (session_id, first_call_id, last_call_id, first_ts_ns, "
                           "last_ts_ns, calls) VALUES (?,?,?,?,?,?)");
  Statement ins_bucket_stats(db, "INSERT INTO call_bucket_stats (session_id, first_call_id, pid, api_id, calls, "
                                 "failed, total_ns, max_ns, state) VALUES (?,?,?,?,?,?,?,?,?)");
  Bucket bucket;
  Status bucket_status;
  auto flush_bucket = [&] {
    if (bucket.calls > 0 && bucket_status.ok())
      bucket_status = write_bucket(ins_bucket, ins_bucket_stats, session_id, bucket);
    bucket = Bucket{};
  };
  Statement scan(db, std::string("SELECT api_id, pid, ") + kCallSampleColumns +
                         " FROM call_rows NOT INDEXED WHERE session_id = ?");
  sqlite3_bind_int64(scan.get(), 1, session_id);
  Status st = scan.run([&](const Row& r) {
    const CallSample call = read_call_sample(r, 2);
    by_api_pid[{r.i64(0), r.i64(1)}].add(call);
    ++calls;
    if (call.id / kBucketCalls != bucket.number) {
      flush_bucket();
      bucket.number = call.id / kBucketCalls;
      bucket.first_call_id = call.id;
      bucket.first_ts_ns = bucket.last_ts_ns = call.ts_ns;
    }
    bucket.last_call_id = call.id;
    bucket.first_ts_ns = std::min(bucket.first_ts_ns, call.ts_ns);
    bucket.last_ts_ns = std::max(bucket.last_ts_ns, call.ts_ns);
    ++bucket.calls;
    bucket.by_pid_api[{r.i64(1), r.i64(0)}].add(call);
  });
  if (!st) return Error{"reading the calls: " + st.message()};
  flush_bucket();
  if (!bucket_status) return Error{"writing call_buckets: " + bucket_status.message()};

  std::string placeholders;
  for (int i = 0; i < kColumnCount; ++i) placeholders += ",?";
  StatsInserts ins{
      {db, "INSERT INTO call_stats (session_id, pid, api_id, " + column_list() + ") VALUES (?,?,?" + placeholders + ")"},
      {db, "INSERT INTO call_stats_preemptors (session_id, pid, api_id, preempted_by, preempted_by_comm, calls, "
           "longest_off_total_ns) VALUES (?,?,?,?,?,?,?)"},
      {db, "INSERT INTO call_stats_tails (session_id, pid, api_id, dur_ns, off_cpu_ns, runq_ns, nested, "
           "slowest_call_ids) VALUES (?,?,?,?,?,?,?,?)"},
      {db, "INSERT INTO call_stats_tail_preemptors (session_id, pid, api_id, preempted_by_comm, off_cpu_ns) "
           "VALUES (?,?,?,?,?)"}};
  // Per API: each process's row, then all processes (the union of their calls).
  for (auto it = by_api_pid.begin(); it != by_api_pid.end();) {
    const std::int64_t api_id = it->first.first;
    CallStatsBuilder all_processes;
    for (; it != by_api_pid.end() && it->first.first == api_id; it = by_api_pid.erase(it)) {
      if (st = write_stats(ins, session_id, it->first.second, api_id, it->second.finish()); !st)
        return Error{"writing call_stats: " + st.message()};
      all_processes.merge(it->second);
    }
    if (st = write_stats(ins, session_id, std::nullopt, api_id, all_processes.finish()); !st)
      return Error{"writing call_stats: " + st.message()};
  }

  Statement mark(db, "INSERT INTO summaries (session_id, built_unix_ns, calls) VALUES (?,?,?)");
  sqlite3_bind_int64(mark.get(), 1, session_id);
  sqlite3_bind_int64(mark.get(), 2,
                     std::chrono::duration_cast<std::chrono::nanoseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count());
  sqlite3_bind_int64(mark.get(), 3, calls);
  if (st = mark.run(); !st) return Error{"writing summaries: " + st.message()};
  return {};
}

}  // namespace

Status build_summaries(sqlite3* db, std::int64_t session_id) {
  const std::string ctx = "building the summaries of session " + std::to_string(session_id);
  if (sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK)
    return Error{ctx + ": " + errmsg(db)};
  if (Status st = build_in_transaction(db, session_id); !st) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    return Error{ctx + ": " + st.message()};
  }
  if (sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    std::string m = errmsg(db);
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    return Error{ctx + ": " + m + "; check free disk space"};
  }
  return {};
}

Status build_summaries(const std::string& path, std::int64_t session_id) {
  const std::string ctx = "trace file '" + path + "'";
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> db(raw, sqlite3_close_v2);
  if (rc != SQLITE_OK) return Error{"cannot open " + ctx + " for writing: " + errmsg(raw)};
  sqlite3_busy_timeout(raw, 5000);

  std::int64_t version = -1;
  std::optional<std::string> status;
  {
    Statement v(raw, "PRAGMA user_version");
    if (Status st = v.run([&](const Row& r) { version = r.i64(0); }); !st)
      return Error{"cannot read " + ctx + ": " + st.message() + "; is it a vramscope trace?"};
  }
  if (version <= 0) return Error{ctx + " is not a vramscope trace (no schema version)"};
  if (version > kSchemaVersion)
    return Error{ctx + " was written by a newer vramscope (schema " + std::to_string(version) + "); upgrade vramscope"};
  if (Status st = upgrade_schema(raw); !st)
    return Error{"cannot upgrade " + ctx + " to schema " + std::to_string(kSchemaVersion) + ": " + st.message()};
  {
    Statement s(raw, "SELECT status FROM sessions WHERE id = ?");
    sqlite3_bind_int64(s.get(), 1, session_id);
    if (Status st = s.run([&](const Row& r) { status = r.text(0); }); !st)
      return Error{"cannot read the sessions of " + ctx + ": " + st.message()};
  }
  if (!status) return Error{ctx + " has no session " + std::to_string(session_id)};
  if (*status == "recording")
    return Error{"session " + std::to_string(session_id) + " of " + ctx +
                 " is still recording (or its tracer died): its summaries are built when it ends"};
  if (Status st = build_summaries(raw, session_id); !st) return Error{ctx + ": " + st.message()};
  return {};
}

Result<std::optional<std::map<std::int64_t, CallStats>>> read_summaries(const TraceReader& db, std::int64_t session_id,
                                                                          std::optional<std::int64_t> pid) {
  using Out = std::optional<std::map<std::int64_t, CallStats>>;
  bool built = false;
  Status st = db.query(
      "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'summaries'", {},
      [&](const Row&) { built = true; });
  if (st && built) {
    built = false;
    st = db.query("SELECT 1 FROM summaries WHERE session_id = ?", {session_id}, [&](const Row&) { built = true; });
  }
  if (!st) return Error{"reading the summaries of session " + std::to_string(session_id) + ": " + st.message()};
  if (!built) return Out{};

  const SqlValue pid_value = pid ? SqlValue{*pid} : SqlValue{};
  std::map<std::int64_t, CallStats> by_api;
  st = db.query("SELECT api_id, " + column_list() + " FROM call_stats WHERE session_id = ? AND pid IS ?",
                {session_id, pid_value}, [&](const Row& r) {
                  CallStats& s = by_api[r.i64(0)];
                  for (int i = 0; i < kColumnCount; ++i) {
                    if (auto* f = std::get_if<IntField>(&kColumns[i].field)) s.**f = r.i64(1 + i);
                    else if (!r.is_null(1 + i)) s.*std::get<OptField>(kColumns[i].field) = r.i64(1 + i);
                  }
                });
  if (st)
    st = db.query(
        "SELECT api_id, preempted_by, preempted_by_comm, calls, longest_off_total_ns FROM call_stats_preemptors "
        "WHERE session_id = ? AND pid IS ?",
        {session_id, pid_value}, [&](const Row& r) {
          by_api[r.i64(0)].preemptors.push_back({r.i64(1), r.text(2), r.i64(3), r.i64(4)});
        });
  bool tails_built = false;
  if (st)
    st = db.query("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'call_stats_tails'", {},
                  [&](const Row&) { tails_built = true; });
  if (st && tails_built)
    st = db.query("SELECT api_id, dur_ns, off_cpu_ns, runq_ns, nested, slowest_call_ids FROM call_stats_tails "
                  "WHERE session_id = ? AND pid IS ?",
                  {session_id, pid_value}, [&](const Row& r) {
                    auto stats = by_api.find(r.i64(0));
                    if (stats == by_api.end()) return;
                    CallStats::Tail& t = stats->second.tail.emplace();
                    t.ns = r.i64(1);
                    t.off_cpu_ns = r.i64(2);
                    t.runq_ns = r.i64(3);
                    t.nested = r.i64(4);
                    const std::string ids = r.text(5);
                    for (std::size_t at = 0; at < ids.size();) {
                      std::size_t comma = std::min(ids.find(',', at), ids.size());
                      t.slowest_call_ids.push_back(std::stoll(ids.substr(at, comma - at)));
                      at = comma + 1;
                    }
                  });
  if (st && tails_built)
    st = db.query("SELECT api_id, preempted_by_comm, off_cpu_ns FROM call_stats_tail_preemptors "
                  "WHERE session_id = ? AND pid IS ?",
                  {session_id, pid_value}, [&](const Row& r) {
                    auto stats = by_api.find(r.i64(0));
                    if (stats != by_api.end() && stats->second.tail)
                      stats->second.tail->off_cpu_ns_by_preemptor[r.text(1)] += r.i64(2);
                  });
  if (!st) return Error{"reading the summaries of session " + std::to_string(session_id) + ": " + st.message()};
  for (auto& [api, stats] : by_api) rank_preemptors(stats.preemptors);
  return Out{std::move(by_api)};
}

Result<std::vector<CallBucket>> read_call_buckets(const TraceReader& db, std::int64_t session_id) {
  std::vector<CallBucket> out;
  bool built = false;
  Status st = db.query("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'call_buckets'", {},
                       [&](const Row&) { built = true; });
  if (st && built)
    st = db.query("SELECT first_call_id, last_call_id, first_ts_ns, last_ts_ns, calls FROM call_buckets "
                  "WHERE session_id = ? ORDER BY first_call_id",
                  {session_id}, [&](const Row& r) {
                    out.push_back({r.i64(0), r.i64(1), r.i64(2), r.i64(3), r.i64(4)});
                  });
  if (!st) return Error{"reading the call buckets of session " + std::to_string(session_id) + ": " + st.message()};
  return out;
}

Status merge_bucket_states(const TraceReader& db, std::int64_t session_id, std::int64_t from_call_id,
                           std::int64_t to_call_id, std::optional<std::int64_t> pid,
                           const std::function<CallStatsBuilder*(std::int64_t, std::int64_t)>& builder_for) {
  std::string sql =
      "SELECT first_call_id, api_id, state FROM call_bucket_stats WHERE session_id = ? AND first_call_id BETWEEN ? AND ?";
  std::vector<SqlValue> params{session_id, from_call_id, to_call_id};
  if (pid) {
    sql += " AND pid = ?";
    params.push_back(*pid);
  }
  Status merged;
  Status st = db.query(sql, params, [&](const Row& r) {
    CallStatsBuilder* builder = merged ? builder_for(r.i64(0), r.i64(1)) : nullptr;
    if (builder == nullptr) return;
    if (Status m = builder->merge_encoded(r.blob(2)); !m)
      merged = Error{m.message() + " in call_bucket_stats (first_call_id " + std::to_string(r.i64(0)) + ", api_id " +
                     std::to_string(r.i64(1)) + ")"};
  });
  if (st) st = merged;
  if (!st) return Error{"reading the call buckets of session " + std::to_string(session_id) + ": " + st.message()};
  return {};
}

}  // namespace vs::store
