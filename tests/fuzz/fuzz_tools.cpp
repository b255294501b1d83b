// libFuzzer harness: tool argument validation and every tool's `run` on the
// shipped traces. Input: byte 0 picks the trace (shipped_traces(), modulo),
// byte 1 the tool (tools::catalog(), modulo), the rest is the JSON arguments
// as a client sends them, parsed within the server's message limits (as the
// server parses a tools/call). The arguments are checked against the tool's
// input schema, then the tool runs through tools::run_tool (what the server and
// `vramscope report` call). Properties:
//   - run_tool refuses exactly what the input schema refuses, and says why;
//   - a result's structuredContent validates against the tool's output schema;
//   - the text rendering is never empty; an error has a message.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <variant>

#include "common/json_schema.h"
#include "server/protocol.h"
#include "store/reader.h"
#include "tests/fuzz/fuzz_support.h"
#include "tools/tool.h"

using namespace vs;
using json = nlohmann::json;

namespace {

const store::TraceReader& reader(size_t index) {
  static std::map<size_t, std::unique_ptr<store::TraceReader>> open;
  auto& r = open[index];
  if (!r) {
    auto opened = store::TraceReader::open(fuzz::shipped_traces()[index]);
    if (!opened) fuzz::fail("opening", fuzz::shipped_traces()[index] + ": " + opened.error().message);
    r = std::move(*opened);
  }
  return *r;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const auto& traces = fuzz::shipped_traces();
  const auto& catalog = tools::catalog();
  const size_t trace = data[0] % traces.size();
  const tools::ToolSpec& tool = catalog[data[1] % catalog.size()];
  auto parsed = mcp::parse_message(std::string_view(reinterpret_cast<const char*>(data) + 2, size - 2), mcp::MessageLimits{});
  if (std::holds_alternative<mcp::RefusedMessage>(parsed)) return 0;  // the server answers -32700 before any tool
  const json& args = std::get<json>(parsed);

  // What the server's tools/call gives a tool: an object (the MCP schema types `arguments` so), or nothing.
  const json given = args.is_null() ? json::object() : args;
  auto invalid = json_schema::validate(tools::input_schema(tool.name), given);
  tools::Progress progress{[](double, double, const std::string&) {}, [] { return false; }};
  auto out = tools::run_tool(reader(trace), tool.name, args, progress);

  if (invalid) {
    if (out) fuzz::fail(std::string(tool.name) + " ran with arguments its input schema refuses:", *invalid);
    if (out.error().message.find(*invalid) == std::string::npos)
      fuzz::fail("the refusal does not say what the schema said:", out.error().message + " / " + *invalid);
    return 0;
  }
  if (!out) {
    if (out.error().message.empty()) fuzz::fail(std::string(tool.name) + " failed without a message");
    return 0;
  }
  if (auto bad = json_schema::validate(tools::output_schema(tool.name), out->structured))
    fuzz::fail(std::string(tool.name) + "'s structuredContent does not validate against its output schema:",
               *bad + " (trace " + traces[trace] + ", arguments " + given.dump() + ")");
  if (out->text.empty()) fuzz::fail(std::string(tool.name) + " rendered no text");
  // What the server sends must serialise (invalid UTF-8 from the traced system is replaced).
  (void)mcp::to_wire(out->structured);
  return 0;
}
