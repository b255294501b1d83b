// The leak verdicts count in each process's calls: call_rows.seq and allocations.alloc_seq/free_seq as the
// writer stores them (schema 4), or numbered when read for traces written before. Both must give the same
// findings and leak_candidates, so that a trace reads the same whichever vramscope wrote it.
#include <catch2/catch.hpp>
#include <filesystem>

#include "tests/tools/synthetic_trace.h"
#include "tests/tools/tool_check.h"

namespace vs::test {
namespace {

using nlohmann::json;

// Removes the stored numbers from a copy: what a session written before schema 4 looks like to the readers.
void forget_numbers(const std::string& path) {
  exec_sql(path, "UPDATE call_rows SET seq = NULL; UPDATE allocations SET alloc_seq = NULL, free_seq = NULL;");
}

TEST_CASE("activity numbering: stored and numbered on reading give the same verdicts", "[growth][synthetic]") {
  synthetic::TempDir dir("vs_numbering");
  for (const auto& scenario : synthetic::sampled_scenarios()) {
    INFO(scenario.name);
    const std::string stored = dir.file(scenario.name + ".db"), numbered = dir.file(scenario.name + "-old.db");
    synthetic::write_trace(stored, scenario.workloads);
    std::filesystem::copy_file(stored, numbered);
    forget_numbers(numbered);
    auto a = open_trace(stored), b = open_trace(numbered);
    REQUIRE(a.q("SELECT COUNT(*) FROM call_rows WHERE parent_id IS NULL AND seq IS NULL") == 0);
    const std::pair<std::string, json> calls[] = {{"findings", {{"limit", 50}}}, {"leak_candidates", {{"limit", 100}}}};
    for (const auto& [tool, args] : calls) {
      INFO(tool);
      const auto with = run_tool_checked(*a.reader, tool, args), without = run_tool_checked(*b.reader, tool, args);
      CHECK(with.structured == without.structured);
    }
  }
}

}  // namespace
}  // namespace vs::test
