// The tool list: one line per tool. Each tools/<name>.cpp defines its
// `const ToolSpec k<Name>` and its schemas live in schemas/<name>.*.json.
#include <map>
#include <mutex>

#include "common/json_schema.h"
#include "tools/common.h"

namespace vs::schemas {
std::string_view find(std::string_view file_name);
}

namespace vs::tools {

// Tool specs, defined in their own files.
// (one `extern const ToolSpec k<Name>;` per tool)
extern const ToolSpec kTraceOverview;
extern const ToolSpec kFindings;
extern const ToolSpec kCompareSessions;
extern const ToolSpec kAllocationTimeline;
extern const ToolSpec kOutstandingAllocations;
extern const ToolSpec kLeakCandidates;
extern const ToolSpec kApiLatency;
extern const ToolSpec kOffcpuAttribution;
extern const ToolSpec kSlowestCalls;
extern const ToolSpec kFindCalls;
extern const ToolSpec kRunSql;

const std::vector<ToolSpec>& catalog() {
  static const std::vector<ToolSpec> tools = {
      // one line per tool, in the order an agent should meet them
      kTraceOverview,
      kFindings,
      kCompareSessions,
      kAllocationTimeline,
      kOutstandingAllocations,
      kLeakCandidates,
      kApiLatency,
      kOffcpuAttribution,
      kSlowestCalls,
      kFindCalls,
      kRunSql,
  };
  return tools;
}

const ToolSpec* find_tool(std::string_view name) {
  for (const auto& t : catalog())
    if (t.name == name) return &t;
  return nullptr;
}

namespace {

// Parsed schemas, by file name. Output schemas get the shared $defs
// (schemas/common.defs.json: coverage, ...) merged in, so that each file can
// say {"$ref": "#/$defs/coverage"} and the published schema is self-contained.
const json& schema_file(const std::string& file) {
  static std::mutex mu;
  static std::map<std::string, json> cache;
  std::lock_guard lock(mu);
  auto it = cache.find(file);
  if (it != cache.end()) return it->second;
  std::string_view text = schemas::find(file);
  json schema = text.empty() ? json::object() : json::parse(text);
  if (file.ends_with(".output.json")) {
    json defs = json::parse(schemas::find("common.defs.json"))["$defs"];
    for (auto& [k, v] : defs.items())
      if (!schema["$defs"].contains(k)) schema["$defs"][k] = v;
  }
  return cache.emplace(file, std::move(schema)).first->second;
}

}  // namespace

const json& input_schema(std::string_view name) { return schema_file(std::string(name) + ".input.json"); }
const json& output_schema(std::string_view name) { return schema_file(std::string(name) + ".output.json"); }

Result<ToolOutput> run_tool(const store::TraceReader& db, std::string_view name, const json& args,
                            const Progress& progress) {
  const ToolSpec* tool = find_tool(name);
  if (!tool) return Error{"no tool named " + std::string(name)};
  const json& given = args.is_null() ? json::object() : args;
  if (auto problem = json_schema::validate(input_schema(name), given))
    return Error{"invalid arguments for " + std::string(name) + ": " + *problem};
  auto out = tool->run(ToolInput{db, given, progress});
  if (!out.ok() && progress.stop_requested()) return Error{"cancelled"};
  return out;
}

}  // namespace vs::tools
