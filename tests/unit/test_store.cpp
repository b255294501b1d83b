#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/resource.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "call_builder.h"
#include "store/reader.h"
#include "store/store.h"
#include "store/summaries.h"

using vs::store::TraceWriter;
using vs::test::Call;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "vs_store_test_XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// Plain sqlite3 access to check what the writer left in the file. Values come back as
// text ("NULL" for NULL) so rows compare as strings.
class Sql {
 public:
  explicit Sql(const fs::path& file) {
    if (sqlite3_open_v2(file.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK)
      throw std::runtime_error("cannot open " + file.string());
  }
  ~Sql() { sqlite3_close(db_); }
  void exec(const std::string& sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string m = err ? err : "?";
      sqlite3_free(err);
      throw std::runtime_error(sql + ": " + m);
    }
  }
  std::vector<std::string> rows(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) != SQLITE_OK)
      throw std::runtime_error(sql + ": " + sqlite3_errmsg(db_));
    std::vector<std::string> out;
    while (sqlite3_step(st) == SQLITE_ROW) {
      std::string row;
      for (int i = 0; i < sqlite3_column_count(st); ++i) {
        if (i > 0) row += "|";
        const unsigned char* t = sqlite3_column_text(st, i);
        row += t ? reinterpret_cast<const char*>(t) : "NULL";
      }
      out.push_back(row);
    }
    sqlite3_finalize(st);
    return out;
  }
  std::string one(const std::string& sql) {
    auto r = rows(sql);
    return r.empty() ? "<no row>" : r.front();
  }

 private:
  sqlite3* db_ = nullptr;
};

vs::SessionInfo session_info(std::string host, std::int64_t start) {
  vs::SessionInfo s;
  s.host = std::move(host);
  s.kernel = "6.1.0-test";
  s.mode = "launch";
  s.options_json = R"({"launches":false})";
  s.version = "0.1.0";
  s.command = "python train.py";
  s.start_ts_ns = start;
  s.realtime_offset_ns = 1700000000000000000;
  s.nvml = "sampled every 100 ms";
  return s;
}

const std::string kTorch = "/opt/torch/lib/libc10_cuda.so";
const std::string kCudart = "/usr/local/cuda/lib64/libcudart.so.12";
constexpr std::uint64_t kP1 = 0x7f0000001000, kP2 = 0x7f0000200000;
constexpr std::uint64_t kHigh = 0xfffffffffffff000;  // above INT64_MAX: stored with the same bits

}  // namespace

TEST_CASE("store: a session's rows, as plain SQLite sees them", "[store]") {
  TempDir dir;
  const fs::path file = dir.path / "trace.db";
  {
    auto opened = TraceWriter::open(file.string());
    REQUIRE(opened.ok());
    auto& w = *opened.value();
    CHECK(w.next_call_id() == 1);
    REQUIRE(w.begin_session(session_info("host-a", 1000)) == 1);

    vs::LibraryRecord lib;
    lib.path = kCudart;
    lib.kind = "runtime";
    lib.found_by = "maps";
    lib.dev = 2049;
    lib.inode = 1234;
    lib.pid = 100;
    lib.attach_mode = "uprobe_multi";
    lib.probes_attached = 2;
    lib.probes_missing = 1;
    lib.attached_ts_ns = 900;
    std::vector<vs::ProbeRecord> probes = {
        {"cudaMalloc", 0x1000, "attached", std::nullopt},
        {"cudaFree", 0x2000, "attached", std::nullopt},
        {"cudaMallocAsync", std::nullopt, "missing", std::nullopt},
    };
    CHECK(w.add_library(lib, probes) == 1);

    vs::ProcessRecord proc;
    proc.pid = 100;
    proc.ppid = 1;
    proc.start_ns = 50;
    proc.comm = "python";
    proc.cmdline = "python train.py";
    proc.first_ts_ns = 1000;
    proc.how_found = "launched";
    w.process_seen(proc);
    w.process_seen(proc);  // the same (pid, start): ignored
    w.process_exec(100, "python3", "python3 train.py --epochs 1");

    w.add_call(Call(1, "cudaMalloc", 100).ptr(kP1).bytes(4096).device(0).caller(kTorch));
    // cudaMalloc(2) made cuMemAlloc_v2(3), which returned first: one allocation.
    w.add_call(Call(3, "cuMemAlloc_v2", 100).ptr(kP2).bytes(8192).device(0).caller(kCudart).parent(2, "cudaMalloc"));
    w.add_call(Call(2, "cudaMalloc", 100).ptr(kP2).bytes(8192).device(0).caller(kTorch));
    // Commit the allocation rows now, so that their frees below are UPDATEs of committed rows
    // (an allocation freed within one transaction is written by a single INSERT).
    REQUIRE(w.flush().ok());
    CHECK(w.stats().calls_written == 3);
    CHECK(w.stats().outstanding.open_count == 2);
    CHECK(w.stats().outstanding.device_bytes() == 4096 + 8192);
    {
      Call c(4, "cudaMemcpyAsync", 100);
      c.ptr(kP1).bytes(100).stream(kHigh).device(0).caller(kTorch);
      c.r.off_cpu_ns = 500;
      c.r.runq_ns = 200;
      c.r.switches = 2;
      c.r.preempted_by = 4242;
      c.r.preempted_by_comm = "kworker/0:1";
      c.r.longest_off_ns = 300;
      w.add_call(c);
    }
    w.add_call(Call(5, "cudaFree", 100, 101).ptr(kP1).device(0).caller(kTorch).ts(5000, 40));  // another thread
    w.add_call(Call(6, "cudaFree", 100).ptr(kHigh).caller(kTorch));                             // unmatched
    w.add_call(Call(7, "cudaFree", 100).ptr(0).caller(kTorch));                                 // context init
    w.add_call(Call(8, "cudaMalloc", 100).ptr(0).bytes(1ull << 40).ret(2).caller(kTorch));      // failed

    vs::SchedEventRecord ev;
    ev.ts_ns = 4500;
    ev.prev_tid = 100;
    ev.prev_pid = 100;
    ev.prev_comm = "python3";
    ev.prev_state = 0;
    ev.next_tid = 4242;
    ev.next_pid = 4242;
    ev.next_comm = "kworker/0:1";
    ev.in_call = true;
    w.add_sched_event(ev);

    w.process_exited(100, 9000, 0);

    vs::SessionEnd end;
    end.end_ts_ns = 10000;
    end.attach_ms = 1.5;
    end.detach_ms = 0.25;
    end.call_drops = 3;
    end.lifecycle_drops = 0;
    end.sched_drops = 1;
    end.unrecorded_calls = 2;
    end.status = "complete";
    vs::Status st = w.end_session(end);
    INFO(st.message());
    REQUIRE(st.ok());

    auto stats = w.stats();
    CHECK(stats.calls_queued == 8);
    CHECK(stats.calls_written == 8);
    CHECK(stats.transactions >= 1);
    CHECK(stats.outstanding.open_count == 0);
    CHECK(w.next_call_id() == 9);
  }

  Sql db(file);
  CHECK(db.one("PRAGMA user_version") == std::to_string(vs::store::kSchemaVersion));
  CHECK(db.one("PRAGMA journal_mode") == "wal");
  // end_session summarized the session's calls (store/summaries.h).
  CHECK(db.one("SELECT calls FROM summaries WHERE session_id = 1") == "8");
  CHECK(db.one("SELECT SUM(calls) FROM call_stats WHERE session_id = 1 AND pid IS NULL") == "8");

  CHECK(db.one("SELECT count(*) FROM apis") == std::to_string(vs::all_apis().size()));
  CHECK(db.one("SELECT layer, op FROM apis WHERE name = 'cudaFreeHost'") == "runtime|free_host");
  CHECK(db.one("SELECT layer, op FROM apis WHERE name = 'cuMemAddressFree'") == "driver|vmm_address_free");
  CHECK(db.one("SELECT layer, op FROM apis WHERE name = 'cuDevicePrimaryCtxRetain'") == "driver|primary_ctx_retain");

  CHECK(db.rows("SELECT id, host, kernel, command, mode, options, vramscope_version, start_ts_ns, end_ts_ns, "
                "realtime_offset_ns, attach_ms, detach_ms, calls_recorded, call_drops, lifecycle_drops, "
                "sched_drops, unrecorded_calls, status, nvml FROM sessions") ==
        std::vector<std::string>{"1|host-a|6.1.0-test|python train.py|launch|{\"launches\":false}|0.1.0|1000|10000|"
                                 "1700000000000000000|1.5|0.25|8|3|0|1|2|complete|sampled every 100 ms"});

  CHECK(db.rows("SELECT id, session_id, path, kind, dev, inode, pid, found_by, attach_mode, probes_attached, "
                "probes_missing, attached_ts_ns, error FROM libraries") ==
        std::vector<std::string>{"1|1|" + kCudart + "|runtime|2049|1234|100|maps|uprobe_multi|2|1|900|NULL"});
  CHECK(db.rows("SELECT library_id, api, offset, status, error FROM probes ORDER BY api") ==
        std::vector<std::string>{"1|cudaFree|8192|attached|NULL", "1|cudaMalloc|4096|attached|NULL",
                                 "1|cudaMallocAsync|NULL|missing|NULL"});

  CHECK(db.rows("SELECT id, session_id, pid, ppid, start_ns, comm, cmdline, first_ts_ns, exit_ts_ns, exit_code, "
                "how_found FROM processes") ==
        std::vector<std::string>{"1|1|100|1|50|python3|python3 train.py --epochs 1|1000|9000|0|launched"});

  CHECK(db.rows("SELECT id, path FROM objects ORDER BY id") ==
        std::vector<std::string>{"1|" + kTorch, "2|" + kCudart});

  CHECK(db.rows("SELECT id, session_id, ts_ns, dur_ns, pid, tid, api, layer, device, "
                "CASE WHEN stream IS NULL THEN 'NULL' ELSE printf('0x%x', stream) END, "
                "printf('0x%x', ptr), bytes, handle, ret, caller, off_cpu_ns, runq_ns, switches, preempted_by, "
                "preempted_by_comm, longest_off_ns, parent_id, incomplete FROM calls ORDER BY id") ==
        std::vector<std::string>{
            "1|1|1000|10|100|100|cudaMalloc|runtime|0|NULL|0x7f0000001000|4096|NULL|0|" + kTorch +
                "|0|0|0|NULL|NULL|NULL|NULL|0",
            "2|1|2000|10|100|100|cudaMalloc|runtime|0|NULL|0x7f0000200000|8192|NULL|0|" + kTorch +
                "|0|0|0|NULL|NULL|NULL|NULL|0",
            "3|1|3000|10|100|100|cuMemAlloc_v2|driver|0|NULL|0x7f0000200000|8192|NULL|0|" + kCudart +
                "|0|0|0|NULL|NULL|NULL|2|0",
            "4|1|4000|10|100|100|cudaMemcpyAsync|runtime|0|0xfffffffffffff000|0x7f0000001000|100|NULL|0|" + kTorch +
                "|500|200|2|4242|kworker/0:1|300|NULL|0",
            "5|1|5000|40|100|101|cudaFree|runtime|0|NULL|0x7f0000001000|NULL|NULL|0|" + kTorch +
                "|0|0|0|NULL|NULL|NULL|NULL|0",
            "6|1|6000|10|100|100|cudaFree|runtime|NULL|NULL|0xfffffffffffff000|NULL|NULL|0|" + kTorch +
                "|0|0|0|NULL|NULL|NULL|NULL|0",
            "7|1|7000|10|100|100|cudaFree|runtime|NULL|NULL|0x0|NULL|NULL|0|" + kTorch +
                "|0|0|0|NULL|NULL|NULL|NULL|0",
            "8|1|8000|10|100|100|cudaMalloc|runtime|NULL|NULL|0x0|1099511627776|NULL|2|" + kTorch +
                "|0|0|0|NULL|NULL|NULL|NULL|0",
        });
  // Pointers above INT64_MAX keep their bits.
  CHECK(db.one("SELECT ptr FROM call_rows WHERE id = 6") == "-4096");

  CHECK(db.rows("SELECT a.id, a.session_id, a.pid, a.device, a.kind, printf('0x%x', a.ptr), a.bytes, a.handle, "
                "a.alloc_call_id, a.free_call_id, a.alloc_ts_ns, a.free_ts_ns, a.end_reason, o.path "
                "FROM allocations a LEFT JOIN objects o ON o.id = a.caller_id ORDER BY a.id") ==
        std::vector<std::string>{
            "1|1|100|0|device|0x7f0000001000|4096|NULL|1|5|1000|5040|freed|" + kTorch,
            "2|1|100|0|device|0x7f0000200000|8192|NULL|2|NULL|2000|9000|process_exit|" + kTorch,
        });
  CHECK(db.rows("SELECT call_id, session_id, pid, printf('0x%x', ptr) FROM unmatched_frees") ==
        std::vector<std::string>{"6|1|100|0xfffffffffffff000"});
  CHECK(db.rows("SELECT session_id, ts_ns, prev_tid, prev_pid, prev_comm, prev_state, next_tid, next_pid, next_comm, "
                "in_call FROM sched_events") ==
        std::vector<std::string>{"1|4500|100|100|python3|0|4242|4242|kworker/0:1|1"});
}

TEST_CASE("store: a second session in the same file gets ids after the first", "[store]") {
  TempDir dir;
  const fs::path file = dir.path / "trace.db";
  vs::ProcessRecord proc;
  proc.pid = 100;
  proc.start_ns = 50;
  proc.first_ts_ns = 1000;
  proc.how_found = "pid";
  {
    auto w = TraceWriter::open(file.string());
    REQUIRE(w.ok());
    REQUIRE((*w)->begin_session(session_info("host-a", 1000)) == 1);
    (*w)->process_seen(proc);
    (*w)->add_call(Call(1, "cudaMalloc").ptr(kP1).bytes(10).caller(kTorch));
    (*w)->add_call(Call(2, "cudaMalloc").ptr(kP2).bytes(20).caller(kTorch));
    // No end_session: the tracer died; the rows are still there.
    REQUIRE((*w)->flush().ok());
  }
  {
    auto w = TraceWriter::open(file.string());
    REQUIRE(w.ok());
    const std::int64_t base = (*w)->next_call_id();
    CHECK(base == 3);
    REQUIRE((*w)->begin_session(session_info("host-b", 50000)) == 2);
    (*w)->process_seen(proc);  // the same process seen again, in the new session
    (*w)->add_call(Call(base + 0, "cudaMalloc").ptr(kP1).bytes(30).caller(kTorch));
    (*w)->add_call(Call(base + 1, "cudaFree").ptr(kP1).caller("/usr/lib/libother.so"));
    (*w)->add_call(Call(base + 2, "cudaFree").ptr(kP2).caller(kTorch));  // session 1's: unmatched here
    vs::SessionEnd end;
    end.end_ts_ns = 60000;
    end.status = "interrupted";
    REQUIRE((*w)->end_session(end).ok());
  }
  Sql db(file);
  // Session 1's recorder died: the second writer marked it so. Its two calls were counted as they were
  // committed (schema 5), so its row says how many were kept.
  CHECK(db.rows("SELECT id, host, end_ts_ns, calls_recorded, status FROM sessions ORDER BY id") ==
        std::vector<std::string>{"1|host-a|NULL|2|interrupted", "2|host-b|60000|3|interrupted"});
  CHECK(db.rows("SELECT id, session_id FROM call_rows ORDER BY id") ==
        std::vector<std::string>{"1|1", "2|1", "3|2", "4|2", "5|2"});
  CHECK(db.rows("SELECT id, session_id, alloc_call_id, bytes, free_call_id, end_reason FROM allocations ORDER BY id") ==
        std::vector<std::string>{"1|1|1|10|NULL|NULL", "2|1|2|20|NULL|NULL", "3|2|3|30|4|freed"});
  CHECK(db.rows("SELECT id, session_id, pid FROM processes ORDER BY id") ==
        std::vector<std::string>{"1|1|100", "2|2|100"});
  // The caller path keeps its object id across sessions.
  CHECK(db.rows("SELECT id, path FROM objects ORDER BY id") ==
        std::vector<std::string>{"1|" + kTorch, "2|/usr/lib/libother.so"});
  CHECK(db.rows("SELECT call_id, session_id FROM unmatched_frees") == std::vector<std::string>{"5|2"});
}

namespace {
std::string session_status(const vs::store::TraceReader& r) {
  std::string status;
  REQUIRE(r.query("SELECT status FROM sessions", {}, [&](const vs::store::Row& row) { status = row.text(0); }).ok());
  return status;
}
}  // namespace

TEST_CASE("store: a session whose recorder is gone reads as interrupted, a live one as recording", "[store]") {
  TempDir dir;
  const fs::path file = dir.path / "trace.db";
  auto w = TraceWriter::open(file.string());
  REQUIRE(w.ok());
  REQUIRE((*w)->begin_session(session_info("host-a", 1000)) == 1);
  (*w)->add_call(Call(1, "cudaMalloc").ptr(kP1).bytes(10).caller(kTorch));
  REQUIRE((*w)->flush().ok());

  auto during = vs::store::TraceReader::open(file.string());
  REQUIRE(during.ok());
  CHECK(session_status(**during) == "recording");
  // A second recorder into the same file is refused while the first lives.
  auto second = TraceWriter::open(file.string());
  REQUIRE_FALSE(second.ok());
  CHECK_THAT(second.error().message, Catch::Contains("another `vramscope trace` is recording into"));

  w.value().reset();  // the recorder goes without ending its session (as when it is killed)
  CHECK(session_status(**during) == "interrupted");  // a reader open all along sees it
  auto after = vs::store::TraceReader::open(file.string());
  REQUIRE(after.ok());
  CHECK(session_status(**after) == "interrupted");
  // The file itself is unchanged: readers derive it. A copy has no recorder either.
  CHECK(Sql(file).one("SELECT status FROM sessions") == "recording");
  const fs::path copy = dir.path / "copy.db";
  fs::copy_file(file, copy);
  fs::copy_file(file.string() + "-wal", copy.string() + "-wal");  // never checkpointed: the rows are there
  auto copied = vs::store::TraceReader::open(copy.string());
  REQUIRE(copied.ok());
  CHECK(session_status(**copied) == "interrupted");
  // Every column of the table is still there, under the same names.
  std::int64_t columns = 0;
  REQUIRE((*after)->query("SELECT COUNT(*) FROM pragma_table_info('sessions')", {},
                          [&](const vs::store::Row& row) { columns = row.i64(0); }).ok());
  CHECK(std::to_string(columns) == Sql(file).one("SELECT COUNT(*) FROM pragma_table_info('sessions')"));
}

TEST_CASE("store: the first write error stops the writer; what was committed before stays", "[store]") {
  TempDir dir;
  const fs::path file = dir.path / "trace.db";
  auto w = TraceWriter::open(file.string());
  REQUIRE(w.ok());
  REQUIRE((*w)->begin_session(session_info("host-a", 1000)) == 1);
  std::int64_t id = 1;
  for (; id <= 1000; ++id) (*w)->add_call(Call(id, "cudaMalloc").ptr(kP1 + 4096 * id).bytes(4096).caller(kTorch));
  REQUIRE((*w)->flush().ok());
  REQUIRE((*w)->health().ok());
  {
    // A full disk, as the file size limit makes it: writes past it fail (EFBIG).
    struct FileSizeLimit {
      rlimit before{};
      explicit FileSizeLimit(rlim_t bytes) {
        signal(SIGXFSZ, SIG_IGN);
        getrlimit(RLIMIT_FSIZE, &before);
        rlimit lim = before;
        lim.rlim_cur = bytes;
        setrlimit(RLIMIT_FSIZE, &lim);
      }
      ~FileSizeLimit() { setrlimit(RLIMIT_FSIZE, &before); }
    } limit(fs::file_size(file.string() + "-wal") + 16384);
    for (; id <= 200000; ++id) (*w)->add_call(Call(id, "cudaFree").ptr(kP1 + 4096 * (id % 1000)).caller(kTorch));
    const auto failed = (*w)->flush();
    REQUIRE_FALSE(failed.ok());
    CHECK_THAT(failed.message(), Catch::Contains("check free disk space"));
  }
  CHECK_FALSE((*w)->health().ok());
  // With space again, the writer stays stopped: the file has what was committed before the error.
  const std::int64_t kept = (*w)->stats().calls_written;
  CHECK(kept >= 1000);
  CHECK(kept < 200000);
  (*w)->add_call(Call(id, "cudaMalloc").ptr(kP2).bytes(1).caller(kTorch));
  CHECK_FALSE((*w)->flush().ok());
  CHECK((*w)->stats().calls_written == kept);
  CHECK_FALSE((*w)->end_session(vs::SessionEnd{}).ok());
  w.value().reset();
  Sql db(file);
  CHECK(db.one("SELECT COUNT(*) FROM call_rows") == std::to_string(kept));
  CHECK(db.one("SELECT status FROM sessions") == "recording");  // readers say interrupted: nobody records
}

TEST_CASE("store: many calls span several transactions", "[store]") {
  TempDir dir;
  const fs::path file = dir.path / "trace.db";
  constexpr int kCalls = 16000;
  {
    auto w = TraceWriter::open(file.string());
    REQUIRE(w.ok());
    REQUIRE((*w)->begin_session(session_info("h", 0)) == 1);
    for (int i = 1; i <= kCalls; ++i) {
      const std::uint64_t ptr = 0x10000 + ((i - 1) / 2) * 0x1000ull;  // call 2k-1 allocates, 2k frees
      if (i % 2) (*w)->add_call(Call(i, "cudaMalloc").ptr(ptr).bytes(256).caller(kTorch));
      else (*w)->add_call(Call(i, "cudaFree").ptr(ptr).caller(kTorch));
    }
    REQUIRE((*w)->flush().ok());
    auto st = (*w)->stats();
    CHECK(st.calls_written == kCalls);
    CHECK(st.transactions >= 3);  // 16000 call rows + 8000 allocation rows, at most 10000 per transaction
  }
  Sql db(file);
  CHECK(db.one("SELECT count(*) FROM call_rows") == std::to_string(kCalls));
  CHECK(db.one("SELECT count(*), count(free_call_id) FROM allocations") == "8000|8000");
  CHECK(db.one("SELECT count(*) FROM allocations WHERE free_call_id != alloc_call_id + 1") == "0");
  // One process, no nested calls: seq is the call id, across transactions (frees of committed rows are UPDATEs).
  CHECK(db.one("SELECT count(seq), min(seq), max(seq) FROM call_rows WHERE seq = id") == "16000|1|16000");
  CHECK(db.one("SELECT count(*) FROM allocations WHERE alloc_seq = alloc_call_id AND free_seq = free_call_id") ==
        "8000");
}

TEST_CASE("store: while recording, the session row keeps its calls' count and end (schema 5)", "[store]") {
  // What tools read instead of scanning a session still recording (tools/common.cpp): equal to the scan at
  // every commit a reader can see, the longest call's end rather than the last call's.
  TempDir dir;
  const fs::path file = dir.path / "trace.db";
  auto w = TraceWriter::open(file.string());
  REQUIRE(w.ok());
  REQUIRE((*w)->begin_session(session_info("h", 0)) == 1);
  REQUIRE((*w)->flush().ok());
  Sql db(file);
  CHECK(db.one("SELECT calls_recorded, last_call_end_ns IS NULL FROM sessions") == "0|1");
  const std::string kept_equals_scan =
      "SELECT calls_recorded = (SELECT COUNT(*) FROM call_rows), last_call_end_ns = (SELECT MAX(ts_ns + dur_ns) "
      "FROM call_rows), calls_recorded FROM sessions";
  std::int64_t id = 0;
  for (int round = 1; round <= 3; ++round) {
    for (int i = 0; i < 7000; ++i, ++id)  // > 10000 rows a transaction with the allocations: several commits
      (*w)->add_call(Call(id + 1, "cudaMalloc").ptr(0x10000 + id * 0x1000).bytes(256).ts(1000 + id * 1000,
                                                                                          id == 42 ? 1'000'000'000 : 10));
    REQUIRE((*w)->flush().ok());
    CHECK(db.one(kept_equals_scan) == "1|1|" + std::to_string(id));
  }
  CHECK(db.one("SELECT last_call_end_ns FROM sessions") == std::to_string(1000 + 42 * 1000 + 1'000'000'000));
  vs::SessionEnd end;
  end.end_ts_ns = 2'000'000'000;
  end.status = "complete";
  REQUIRE((*w)->end_session(end).ok());
  CHECK(db.one(kept_equals_scan) == "1|1|21000");
}

TEST_CASE("store: producers on several threads, stats() meanwhile", "[store]") {
  TempDir dir;
  const fs::path file = dir.path / "trace.db";
  constexpr int kThreads = 3, kPerThread = 4000;
  {
    auto w = TraceWriter::open(file.string());
    REQUIRE(w.ok());
    TraceWriter& tw = **w;
    REQUIRE(tw.begin_session(session_info("h", 0)) == 1);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&tw, t] {
        const std::uint32_t pid = 1000 + t;
        for (int i = 0; i < kPerThread; ++i) {
          const std::int64_t id = 1 + t * kPerThread + i;
          const std::uint64_t ptr = 0x10000 + (i / 2) * 0x1000ull;
          if (i % 2 == 0) tw.add_call(Call(id, "cudaMalloc", pid).ptr(ptr).bytes(64).caller("/lib" + std::to_string(t)));
          else tw.add_call(Call(id, "cudaFree", pid).ptr(ptr).caller("/lib" + std::to_string(t)));
        }
      });
    }
    // stats() while they write: counts only grow, and nothing is written before it is queued.
    std::int64_t last_written = 0;
    bool monotonic = true;
    for (int polls = 0; polls < 2000; ++polls) {
      auto st = tw.stats();
      monotonic = monotonic && st.calls_written >= last_written && st.calls_written <= st.calls_queued;
      last_written = st.calls_written;
      if (st.calls_queued == kThreads * kPerThread) break;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    CHECK(monotonic);
    for (auto& th : threads) th.join();
    REQUIRE(tw.flush().ok());
    CHECK(tw.stats().calls_written == kThreads * kPerThread);
    CHECK(tw.stats().outstanding.open_count == 0);
    CHECK(tw.next_call_id() == kThreads * kPerThread + 1);
  }
  Sql db(file);
  CHECK(db.one("SELECT count(*), count(DISTINCT pid) FROM call_rows") == "12000|3");
  CHECK(db.one("SELECT count(*), count(free_call_id) FROM allocations") == "6000|6000");
  CHECK(db.one("SELECT count(*) FROM allocations a JOIN call_rows c ON c.id = a.free_call_id "
               "WHERE c.pid != a.pid OR c.ptr != a.ptr") == "0");
  CHECK(db.one("SELECT count(*) FROM objects") == "3");
  CHECK(db.one("SELECT count(*) FROM unmatched_frees") == "0");
  // Each process's calls came from one thread, in id order: numbered 1..4000 each, whatever the interleaving.
  CHECK(db.one("SELECT count(*) FROM call_rows WHERE seq = id - (pid - 1000) * 4000") == "12000");
  CHECK(db.one("SELECT count(*) FROM allocations a JOIN call_rows c ON c.id = a.alloc_call_id "
               "JOIN call_rows f ON f.id = a.free_call_id WHERE a.alloc_seq = c.seq AND a.free_seq = f.seq") == "6000");
}

TEST_CASE("store: seq numbers each process's top-level calls; allocations carry the seq of their calls", "[store]") {
  TempDir dir;
  const fs::path file = dir.path / "trace.db";
  constexpr std::uint64_t kHandle = 0x55, kAsync = 0x7f0000900000, kLazy = 0x7f0000a00000;
  {
    auto opened = TraceWriter::open(file.string());
    REQUIRE(opened.ok());
    auto& w = *opened.value();
    REQUIRE(w.begin_session(session_info("h", 0)) == 1);
    // Two processes take turns; a nested driver call arrives before its runtime parent.
    w.add_call(Call(1, "cudaMalloc", 100).ptr(kP1).bytes(256));
    w.add_call(Call(2, "cudaMalloc", 200).ptr(kP1).bytes(512));
    w.add_call(Call(4, "cuMemAlloc_v2", 100).ptr(kP2).bytes(1024).parent(3, "cudaMalloc"));
    w.add_call(Call(3, "cudaMalloc", 100).ptr(kP2).bytes(1024));
    w.add_call(Call(5, "cuMemCreate", 200).handle(kHandle).bytes(1 << 21).device(0));
    w.add_call(Call(6, "cudaMallocAsync", 100).ptr(kAsync).bytes(4096).stream(7));
    // Committed: the frees below update rows already written.
    REQUIRE(w.flush().ok());
    w.add_call(Call(7, "cudaLaunchKernel", 200));  // not a memory call: numbered all the same
    w.add_call(Call(8, "cudaFreeAsync", 100).ptr(kAsync).stream(7));
    w.add_call(Call(9, "cuMemRelease", 200).handle(kHandle));
    w.add_call(Call(10, "cudaFree", 100).ptr(kP1));
    w.add_call(Call(12, "cuMemFree_v2", 100).ptr(kP2).parent(11, "cudaFree"));
    w.add_call(Call(11, "cudaFree", 100).ptr(kP2));
    w.add_call(Call(13, "cudaMalloc", 200).ptr(kP1).bytes(64));  // supersedes call 2's: its free was missed
    // Allocated and freed before the next commit, most likely: one INSERT with both seqs.
    w.add_call(Call(14, "cudaMalloc", 100).ptr(kP1).bytes(2048));
    w.add_call(Call(15, "cudaFree", 100).ptr(kP1));
    // A lazy allocation and its release, each by a driver call nested in a sync.
    w.add_call(Call(16, "cuMemAlloc_v2", 100).ptr(kLazy).bytes(128).parent(17, "cudaDeviceSynchronize"));
    w.add_call(Call(17, "cudaDeviceSynchronize", 100));
    w.add_call(Call(18, "cuMemFree_v2", 100).ptr(kLazy).parent(19, "cudaStreamSynchronize"));
    w.add_call(Call(19, "cudaStreamSynchronize", 100));
    w.process_exited(200, 30000, 0);  // releases call 13's allocation
    vs::SessionEnd end;
    end.end_ts_ns = 40000;
    REQUIRE(w.end_session(end).ok());

    // A new session numbers afresh.
    REQUIRE(w.begin_session(session_info("h", 50000)) == 2);
    w.add_call(Call(20, "cudaLaunchKernel", 100));
    w.add_call(Call(21, "cudaMalloc", 100).ptr(kP1).bytes(8));
    REQUIRE(w.end_session(end).ok());
  }
  Sql db(file);
  CHECK(db.rows("SELECT id, pid, seq FROM call_rows WHERE session_id = 1 ORDER BY id") ==
        std::vector<std::string>{"1|100|1", "2|200|1", "3|100|2", "4|100|NULL", "5|200|2", "6|100|3",
                                 "7|200|3", "8|100|4", "9|200|4", "10|100|5", "11|100|6", "12|100|NULL",
                                 "13|200|5", "14|100|7", "15|100|8", "16|100|NULL", "17|100|9", "18|100|NULL",
                                 "19|100|10"});
  CHECK(db.rows("SELECT id, pid, kind, alloc_call_id, alloc_seq, free_call_id, free_seq, end_reason "
                "FROM allocations WHERE session_id = 1 ORDER BY id") ==
        std::vector<std::string>{
            "1|100|device|1|1|10|5|freed",
            "2|200|device|2|1|13|5|superseded",
            "3|100|device|3|2|11|6|freed",
            "4|200|vmm_physical|5|2|9|4|freed",
            "5|100|async|6|3|8|4|freed",
            "6|200|device|13|5|NULL|NULL|process_exit",
            "7|100|device|14|7|15|8|freed",
            "8|100|device|16|NULL|18|NULL|freed",
        });
  // Whatever the path (INSERT of a row closed in its transaction, UPDATE of a committed one),
  // alloc_seq and free_seq are the seq of alloc_call_id and free_call_id.
  CHECK(db.one("SELECT count(*) FROM allocations a JOIN call_rows c ON c.id = a.alloc_call_id "
               "WHERE a.alloc_seq IS NOT c.seq") == "0");
  CHECK(db.one("SELECT count(*) FROM allocations a JOIN call_rows c ON c.id = a.free_call_id "
               "WHERE a.free_seq IS NOT c.seq") == "0");
  CHECK(db.rows("SELECT id, pid, seq FROM call_rows WHERE session_id = 2 ORDER BY id") ==
        std::vector<std::string>{"20|100|1", "21|100|2"});
  CHECK(db.one("SELECT alloc_call_id, alloc_seq FROM allocations WHERE session_id = 2") == "21|2");
}

namespace {

// The recorded traces shipped in examples/traces: the six H100 ones written with schema 1, before seq existed;
// the H200 framework ones (jax_*, cupy_*) with schema 4. Both older than the writer's.
std::vector<fs::path> shipped_traces() {
  std::vector<fs::path> out;
  for (const auto& entry : fs::directory_iterator(fs::path(VS_EXAMPLES_DIR) / "traces"))
    if (fs::exists(entry.path() / "trace.db")) out.push_back(entry.path() / "trace.db");
  std::sort(out.begin(), out.end());
  return out;
}

std::string file_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string columns_of(Sql& db, const std::string& table) {
  std::string out;
  for (const std::string& c : db.rows("SELECT name FROM pragma_table_info('" + table + "')"))
    out += (out.empty() ? "" : ",") + c;
  return out;
}

}  // namespace

TEST_CASE("store: the shipped traces (six of schema 1) open in the reader unchanged", "[store]") {
  const auto traces = shipped_traces();
  REQUIRE(traces.size() >= 6);
  int schema_1 = 0;
  for (const fs::path& trace : traces) {
    INFO(trace);
    const std::string before = file_bytes(trace);
    {
      auto r = vs::store::TraceReader::open(trace.string());
      REQUIRE(r.ok());
      std::int64_t version = -1, calls = -1;
      REQUIRE((*r)->query("PRAGMA user_version", {}, [&](const vs::store::Row& row) { version = row.i64(0); }).ok());
      REQUIRE((*r)->query("SELECT count(*) FROM calls", {}, [&](const vs::store::Row& row) { calls = row.i64(0); }).ok());
      CHECK((version == 1 || version == 4));
      schema_1 += version == 1;
      CHECK(calls > 0);
    }
    CHECK(file_bytes(trace) == before);
  }
  CHECK(schema_1 == 6);
}

TEST_CASE("store: a writer opening a schema-1 file adds the seq columns; the old session keeps NULL", "[store]") {
  TempDir dir;
  const fs::path file = dir.path / "trace.db";
  fs::copy_file(fs::path(VS_EXAMPLES_DIR) / "traces" / "leak" / "trace.db", file);
  std::string old_calls, old_allocations;
  {
    Sql db(file);
    REQUIRE(db.one("PRAGMA user_version") == "1");
    CHECK(columns_of(db, "call_rows").find("seq") == std::string::npos);
    old_calls = db.one("SELECT count(*), max(id) FROM call_rows");
    old_allocations = db.one("SELECT count(*), count(free_call_id) FROM allocations");
  }
  const std::int64_t max_old_id = std::stoll(old_calls.substr(old_calls.find('|') + 1));
  std::int64_t base = 0;
  {
    auto w = TraceWriter::open(file.string());
    INFO((w.ok() ? std::string() : w.error().message));
    REQUIRE(w.ok());
    base = (*w)->next_call_id();
    CHECK(base == max_old_id + 1);
    REQUIRE((*w)->begin_session(session_info("host-b", 1000)) == 2);
    (*w)->add_call(Call(base + 1, "cuMemAlloc_v2", 4242).ptr(kP1).bytes(64).parent(base, "cudaMalloc"));
    (*w)->add_call(Call(base, "cudaMalloc", 4242).ptr(kP1).bytes(64));
    (*w)->add_call(Call(base + 2, "cudaFree", 4242).ptr(kP1));
    vs::SessionEnd end;
    end.end_ts_ns = 9000;
    vs::Status st = (*w)->end_session(end);
    INFO(st.message());
    REQUIRE(st.ok());
  }
  Sql db(file);
  CHECK(db.one("PRAGMA user_version") == std::to_string(vs::store::kSchemaVersion));
  // Added last, as schema.sql declares them: old and new files have one column order.
  const std::string call_columns = columns_of(db, "call_rows");
  CHECK(call_columns.substr(call_columns.rfind(',') + 1) == "seq");
  const std::string alloc_columns = columns_of(db, "allocations");
  CHECK(alloc_columns.substr(alloc_columns.size() - std::string("alloc_seq,free_seq").size()) == "alloc_seq,free_seq");
  // The recorded session is as it was, without numbers (readers number its top-level calls by id).
  CHECK(db.one("SELECT count(*), max(id) FROM call_rows WHERE session_id = 1") == old_calls);
  CHECK(db.one("SELECT count(seq) FROM call_rows WHERE session_id = 1") == "0");
  CHECK(db.one("SELECT count(*), count(free_call_id) FROM allocations WHERE session_id = 1") == old_allocations);
  CHECK(db.one("SELECT count(alloc_seq), count(free_seq) FROM allocations WHERE session_id = 1") == "0|0");
  // The appended one has them.
  CHECK(db.rows("SELECT id - " + std::to_string(base) + ", seq FROM call_rows WHERE session_id = 2 ORDER BY id") ==
        std::vector<std::string>{"0|1", "1|NULL", "2|2"});
  CHECK(db.one("SELECT alloc_seq, free_seq, end_reason FROM allocations WHERE session_id = 2") == "1|2|freed");
  // Schema 5's session columns: the old session had ended, so it keeps NULL; the new one has them.
  CHECK(columns_of(db, "sessions").substr(columns_of(db, "sessions").rfind(',') + 1) == "last_call_end_ns");
  CHECK(db.one("SELECT last_call_end_ns IS NULL FROM sessions WHERE id = 1") == "1");
  CHECK(db.one("SELECT calls_recorded, last_call_end_ns = (SELECT MAX(ts_ns + dur_ns) FROM call_rows WHERE "
               "session_id = 2) FROM sessions WHERE id = 2") == "3|1");
  // And the reader opens the upgraded file.
  CHECK(vs::store::TraceReader::open(file.string()).ok());
}

TEST_CASE("store: build_summaries on a schema-1 file adds the seq columns too", "[store]") {
  TempDir dir;
  const fs::path file = dir.path / "trace.db";
  fs::copy_file(fs::path(VS_EXAMPLES_DIR) / "traces" / "attach" / "trace.db", file);
  vs::Status st = vs::store::build_summaries(file.string(), 1);
  INFO(st.message());
  REQUIRE(st.ok());
  Sql db(file);
  CHECK(db.one("PRAGMA user_version") == std::to_string(vs::store::kSchemaVersion));
  CHECK(db.one("SELECT count(*) FROM pragma_table_info('call_rows') WHERE name = 'seq'") == "1");
  CHECK(db.one("SELECT count(*) FROM pragma_table_info('allocations') WHERE name IN ('alloc_seq', 'free_seq')") ==
        "2");
  CHECK(db.one("SELECT count(*), count(seq) FROM call_rows") == "20|0");
  CHECK(db.one("SELECT calls FROM summaries WHERE session_id = 1") == "20");
  // A second upgrade finds the columns there and adds nothing.
  REQUIRE(vs::store::build_summaries(file.string(), 1).ok());
  CHECK(db.one("SELECT count(*) FROM pragma_table_info('call_rows') WHERE name = 'seq'") == "1");
}

TEST_CASE("store: a file from a newer vramscope is refused", "[store]") {
  TempDir dir;
  const fs::path file = dir.path / "new.db";
  {
    Sql db(file);
    db.exec("CREATE TABLE sessions (id INTEGER PRIMARY KEY); PRAGMA user_version = 99;");
  }
  auto w = TraceWriter::open(file.string());
  REQUIRE_FALSE(w.ok());
  const std::string& m = w.error().message;
  INFO(m);
  CHECK(m.find(file.string()) != std::string::npos);
  CHECK(m.find("newer vramscope (schema 99)") != std::string::npos);
  CHECK(m.find("upgrade vramscope") != std::string::npos);
}

TEST_CASE("store: an SQLite file that is not a trace is refused", "[store]") {
  TempDir dir;
  const fs::path file = dir.path / "other.db";
  {
    Sql db(file);
    db.exec("CREATE TABLE notes (x TEXT)");
  }
  auto w = TraceWriter::open(file.string());
  REQUIRE_FALSE(w.ok());
  INFO(w.error().message);
  CHECK(w.error().message.find("not a vramscope trace") != std::string::npos);
  Sql db(file);
  CHECK(db.one("SELECT count(*) FROM sqlite_schema") == "1");  // untouched
}

TEST_CASE("store: an unwritable path gives an error naming it", "[store]") {
  TempDir dir;
  const fs::path file = dir.path / "no" / "such" / "dir" / "trace.db";
  auto w = TraceWriter::open(file.string());
  REQUIRE_FALSE(w.ok());
  const std::string& m = w.error().message;
  INFO(m);
  CHECK(m.find(file.string()) != std::string::npos);
  CHECK(m.find("directory exists and is writable") != std::string::npos);

  // Not a database at all.
  const fs::path junk = dir.path / "junk.db";
  {
    std::FILE* f = std::fopen(junk.c_str(), "w");
    REQUIRE(f != nullptr);
    std::fputs("this is not an SQLite database, not even close to one; just some text to fill a header page\n", f);
    std::fclose(f);
  }
  auto j = TraceWriter::open(junk.string());
  REQUIRE_FALSE(j.ok());
  INFO(j.error().message);
  CHECK(j.error().message.find(junk.string()) != std::string::npos);
}
