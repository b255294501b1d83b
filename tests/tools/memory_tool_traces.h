// What the memory tools' tests share: a shipped example trace with its
// torch.cuda.memory_stats() checkpoints, times converted to the tools' t_ms.
#pragma once

#include <fstream>
#include <string>

#include "tests/tools/tool_check.h"

namespace vs::test {

struct ExampleTrace : TraceFile {
  nlohmann::json stats;
  std::int64_t start_ns = 0;

  explicit ExampleTrace(const std::string& name) : TraceFile(open_trace(example_trace(name))) {
    std::ifstream in(std::string(VS_EXAMPLES_DIR) + "/traces/" + name + "/pytorch_memory_stats.json");
    stats = nlohmann::json::parse(in);
    start_ns = q("SELECT start_ts_ns FROM sessions");
  }
  const nlohmann::json& checkpoint(const std::string& label) const {
    for (const auto& cp : stats["checkpoints"])
      if (cp["label"] == label) return cp;
    FAIL("no checkpoint " << label);
    return stats;
  }
  // The checkpoint's instant in ms since the session start (what the tools take).
  double t_ms(const nlohmann::json& cp) const {
    return static_cast<double>(cp["t_ns"].get<std::int64_t>() - start_ns) / 1e6;
  }
  tools::ToolOutput run(const std::string& tool, const nlohmann::json& args = nlohmann::json::object()) const {
    return run_tool_checked(*reader, tool, args);
  }
  std::string error(const std::string& tool, const nlohmann::json& args) const {
    return run_tool_error(*reader, tool, args);
  }
};

}  // namespace vs::test
