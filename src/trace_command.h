// `vramscope trace`: launch a command, attach to processes, or watch every
// CUDA process, and record their CUDA calls into a trace file.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace vs::cli {

struct TraceArgs {
  std::string db;
  std::vector<std::uint32_t> pids;
  std::string duration;  // e.g. 90s, 500ms, 2m; empty: until the command exits or Ctrl-C
  std::vector<std::string> cuda_libs;
  bool launches = false;
  bool sched_events = false;
  bool perf_links = false;
  bool quiet = false;
  std::uint32_t ring_mib = 64;
  std::string nvml_lib;  // empty: libnvidia-ml.so.1 from the loader's path
  std::uint32_t nvml_interval_ms = 100;
  bool no_nvml = false;
  std::vector<std::string> command;
};

CLI::App* add_trace_command(CLI::App& app, TraceArgs& args);
int run_trace(const TraceArgs& args);

// "90s", "500ms", "2m", "1h", or plain seconds -> milliseconds; nullopt if malformed.
std::optional<std::int64_t> parse_duration_ms(const std::string& text);

}  // namespace vs::cli
