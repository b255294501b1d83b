// The analyses an agent (or `vramscope report`) runs on a trace. Each tool is
// a pure function of (trace, arguments) -> result, in its own file
// tools/<name>.cpp, with its JSON Schemas in schemas/<name>.input.json and
// schemas/<name>.output.json (embedded into the binary). Adding a tool is
// those three files and one line in tools/catalog.cpp. Tools know nothing of
// MCP: the server maps ToolOutput to a CallToolResult, and an Error to a
// result with isError (a message that says what to change).
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "store/reader.h"

namespace vs::tools {

using json = nlohmann::json;

// How a long tool reports how far it got and learns that the caller gave up.
// The server wires these to MCP progress notifications and
// notifications/cancelled; both may be empty.
struct Progress {
  std::function<void(double done, double total, const std::string& message)> report;
  std::function<bool()> cancelled;

  void operator()(double done, double total, const std::string& message) const {
    if (report) report(done, total, message);
  }
  bool stop_requested() const { return cancelled && cancelled(); }
};

struct Image {
  std::string mime_type;  // "image/svg+xml" or "image/png"
  std::string data;       // raw bytes; the server base64-encodes them
};

struct ToolOutput {
  json structured;           // validates against schemas/<name>.output.json
  std::string text;          // compact rendering for clients that read only `content`
  std::vector<Image> images;  // optional, for clients that show images
};

struct ToolInput {
  const store::TraceReader& db;
  const json& args;  // already validated against schemas/<name>.input.json
  const Progress& progress;
};

using ToolFn = Result<ToolOutput> (*)(const ToolInput&);

struct ToolSpec {
  std::string_view name;
  std::string_view title;
  std::string_view description;  // says when to use it
  ToolFn run;
};

// Every tool, in the order an agent should meet them (tools/catalog.cpp).
const std::vector<ToolSpec>& catalog();
const ToolSpec* find_tool(std::string_view name);

// The tool's schemas, parsed from schemas/<name>.{input,output}.json.
const json& input_schema(std::string_view name);
const json& output_schema(std::string_view name);

// What the server and `vramscope report` do for a call: check the arguments
// against the input schema (an Error says which argument and why), fill
// nothing in (defaults are the tool's), run it, and stop it if cancelled.
Result<ToolOutput> run_tool(const store::TraceReader& db, std::string_view name, const json& args,
                            const Progress& progress);

}  // namespace vs::tools
