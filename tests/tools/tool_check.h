// Runs a tool the way the server does and checks what every tool promises:
// structuredContent valid against its outputSchema, a coverage block, and a
// text rendering within kMaxTextChars.
#pragma once

#include <catch2/catch.hpp>
#include <string>

#include "common/json_schema.h"
#include "tests/trace_file.h"
#include "tools/common.h"

namespace vs::test {

inline std::string example_trace(const std::string& name) {
  return std::string(VS_EXAMPLES_DIR) + "/traces/" + name + "/trace.db";
}

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
