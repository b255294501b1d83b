// live::TraceDir: the directory `vramscope mcp --allow-trace` records into and serves.
#include <catch2/catch.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "live/trace_dir.h"
#include "store/store.h"

namespace fs = std::filesystem;
using vs::live::TraceDir;

namespace {

std::string fresh_dir(const std::string& name) {
  auto dir = fs::temp_directory_path() / ("vramscope-tracedir-" + std::to_string(getpid()) + "-" + name);
  fs::remove_all(dir);
  return dir.string();
}

// A trace file with one session of the given id, ended.
void write_session(const std::string& file, std::int64_t id) {
  auto w = vs::store::TraceWriter::open(file);
  REQUIRE(w);
  vs::SessionInfo info;
  info.host = "h";
  info.kernel = "k";
  info.mode = "pid";
  info.version = "test";
  info.options_json = "{}";
  info.id = id;
  REQUIRE((*w)->begin_session(info) == id);
  vs::SessionEnd end;
  end.end_ts_ns = 1;
  REQUIRE((*w)->end_session(end));
}

}  // namespace

TEST_CASE("trace dir: created 0700; refused when others can write it or it is a file", "[live]") {
  // TraceDir accepts only a directory that belongs to root: these tests run as root (scripts/test.sh).
  REQUIRE(geteuid() == 0);
  const std::string dir = fresh_dir("create") + "/a/b";
  auto d = TraceDir::open(dir);
  REQUIRE(d);
  struct stat st {};
  REQUIRE(stat(dir.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  CHECK(d->sessions().empty());

  const std::string open_dir = fresh_dir("open");
  fs::create_directories(open_dir);
  chmod(open_dir.c_str(), 0777);
  auto refused = TraceDir::open(open_dir);
  REQUIRE_FALSE(refused);
  CHECK_THAT(refused.error().message, Catch::Contains("writable by root only"));

  const std::string file = fresh_dir("file");
  { std::ofstream(file) << "x"; }
  auto not_dir = TraceDir::open(file);
  REQUIRE_FALSE(not_dir);
  CHECK_THAT(not_dir.error().message, Catch::Contains("not a directory"));
}

TEST_CASE("trace dir: sessions across files by id; a colliding id is left out; files for new sessions", "[live]") {
  REQUIRE(geteuid() == 0);
  const std::string dir = fresh_dir("sessions");
  auto d = TraceDir::open(dir);
  REQUIRE(d);
  CHECK(d->file_for_new_session() == dir + "/traces.db");
  write_session(dir + "/traces.db", 3);
  write_session(dir + "/traces-2.db", 7);
  write_session(dir + "/zz-copied.db", 3);  // the same id in a file copied in: left out
  { std::ofstream(dir + "/notes.txt") << "not a trace"; }
  auto sessions = d->sessions();
  REQUIRE(sessions.size() == 2);
  CHECK(sessions[0].id == 3);
  CHECK(sessions[0].file == dir + "/traces.db");
  CHECK(sessions[0].status == "complete");
  CHECK(sessions[1].id == 7);
  CHECK(d->find(7)->file == dir + "/traces-2.db");
  CHECK_FALSE(d->find(5));
  // traces.db is free again (no recorder holds it): sequential traces share it.
  CHECK(d->file_for_new_session() == dir + "/traces.db");
  {
    auto recording = vs::store::TraceWriter::open(dir + "/traces.db");  // a recorder holds it now
    REQUIRE(recording);
    CHECK(d->file_for_new_session() == dir + "/traces-2.db");
  }
  CHECK(d->file_for_new_session() == dir + "/traces.db");
}
