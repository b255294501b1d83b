// Runs a tool the way the server does and checks what every tool promises:
// structuredContent valid against its outputSchema, a coverage block, and a
// text rendering within kMaxTextChars.
#pragma once

#include <catch2/catch.hpp>
#include <sqlite3.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "common/json_schema.h"
#include "tests/trace_file.h"
#include "tools/common.h"

namespace vs::test {

inline std::string example_trace(const std::string& name) {
  return std::string(VS_EXAMPLES_DIR) + "/traces/" + name + "/trace.db";
}

// Every trace recorded on a GPU that the repository ships: examples/traces/*/trace.db and the labeled corpus,
// examples/corpus/traces/**/*.db (the tuning set and the held-out set), sorted.
inline std::vector<std::filesystem::path> recorded_traces() {
  namespace fs = std::filesystem;
  std::vector<fs::path> out;
  const fs::path examples(VS_EXAMPLES_DIR);
  for (const auto& d : fs::directory_iterator(examples / "traces"))
    if (fs::exists(d.path() / "trace.db")) out.push_back(d.path() / "trace.db");
  if (fs::is_directory(examples / "corpus" / "traces"))
    for (const auto& f : fs::recursive_directory_iterator(examples / "corpus" / "traces"))
      if (f.path().extension() == ".db") out.push_back(f.path());
  std::sort(out.begin(), out.end());
  return out;
}

// Runs `sql` (several statements may follow each other) on the trace file `path`, read-write: what a test changes
// in a written trace (losses, an unfinished session, a missing index).
inline void exec_sql(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  char* msg = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &msg);
  INFO(sql << ": " << (msg ? msg : ""));
  sqlite3_free(msg);
  sqlite3_close(db);
  REQUIRE(rc == SQLITE_OK);
}

// A shipped trace copied to a temporary directory, to change (add or drop summaries and indexes) and read.
struct TraceCopy {
  std::filesystem::path dir, file;
  explicit TraceCopy(const std::string& source) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "vs_trace_copy_XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
    file = dir / "trace.db";
    std::filesystem::copy_file(source, file);
  }
  ~TraceCopy() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  TraceCopy(const TraceCopy&) = delete;
  TraceCopy& operator=(const TraceCopy&) = delete;
  void exec(const std::string& sql) const { exec_sql(file.string(), sql); }
};

inline tools::ToolOutput run_tool_checked(const store::TraceReader& db, const std::string& name,
                                          const nlohmann::json& args = nlohmann::json::object()) {
  tools::Progress progress;
  auto out = tools::run_tool(db, name, args, progress);
  INFO(name << " " << args.dump() << ": " << (out.ok() ? "" : out.error().message));
  REQUIRE(out.ok());
  auto problem = json_schema::validate(tools::output_schema(name), out->structured);
  INFO("structuredContent: " << out->structured.dump().substr(0, 2000));
  CHECK_FALSE(problem.has_value());
  if (problem) FAIL_CHECK(*problem);
  CHECK(out->structured.contains("coverage"));
  CHECK(out->text.size() <= tools::kMaxTextChars);
  CHECK(out->text.find("coverage:") != std::string::npos);
  return std::move(out.value());
}

// A tool error the model can act on: returns the message.
inline std::string run_tool_error(const store::TraceReader& db, const std::string& name, const nlohmann::json& args) {
  tools::Progress progress;
  auto out = tools::run_tool(db, name, args, progress);
  REQUIRE_FALSE(out.ok());
  return out.error().message;
}

}  // namespace vs::test
