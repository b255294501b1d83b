// The tools of `vramscope mcp --allow-trace` that act rather than read a trace:
// gpu_processes (which processes use a GPU now), trace_start, trace_status,
// trace_stop. Same shape as the analyses (tools/tool.h): structured content
// that matches schemas/<name>.output.json and a compact text, arguments checked
// against schemas/<name>.input.json by the caller.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "live/trace_manager.h"
#include "tools/tool.h"
#include "tracer/gpu_processes.h"
#include "tracer/nvml_sampler.h"

namespace vs::live {

struct LiveToolSpec {
  std::string_view name, title, description;
};
// In the order an agent meets them.
const std::vector<LiveToolSpec>& live_tool_specs();

// The `watch` prompt: attach to a GPU process (`pid`, default: the one that uses the most
// GPU memory), watch it for `seconds`, then investigate. Arguments are MCP prompt arguments
// (strings); an Error says which one is wrong.
struct LivePromptSpec {
  std::string name, title, description;
  struct Argument {
    std::string name, description;
  };
  std::vector<Argument> arguments;
};
const LivePromptSpec& watch_prompt();
Result<std::string> watch_prompt_text(const std::map<std::string, std::string>& args, std::int64_t max_seconds);

class LiveTools {
 public:
  // `nvml_lib`: the NVML library gpu_processes asks (default libnvidia-ml.so.1), opened on first use.
  LiveTools(TraceManager& traces, std::string nvml_lib);

  // The pids gpu_processes lists now (the watch prompt's completions), most GPU memory first.
  std::vector<std::uint32_t> gpu_process_pids();

  // `owner`: the MCP session calling (its traces stop when it goes away).
  Result<tools::ToolOutput> run(std::string_view name, const tools::json& args, const std::string& owner,
                                const tools::Progress& progress);

 private:
  tracer::GpuProcessList scan();
  Result<tools::ToolOutput> gpu_processes(const tools::json& args);
  Result<tools::ToolOutput> trace_start(const tools::json& args, const std::string& owner,
                                        const tools::Progress& progress);
  Result<tools::ToolOutput> trace_status(const tools::json& args);
  Result<tools::ToolOutput> trace_stop(const tools::json& args, const tools::Progress& progress);

  TraceManager& traces_;
  std::string nvml_lib_;
  std::mutex nvml_mutex_;
  bool nvml_tried_ = false;
  std::unique_ptr<tracer::NvmlSampler> nvml_;
  std::string nvml_status_;
};

}  // namespace vs::live
