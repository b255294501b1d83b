// `vramscope mcp`: serve a trace's analyses to AI agents over MCP, on stdio
// (what client configs launch) or Streamable HTTP (--http HOST:PORT); with
// --allow-trace, also let them find GPU processes and trace them (live/).
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "common/result.h"

namespace vs::cli {

struct McpArgs {
  std::string db;
  std::string demo;  // name of an embedded trace, instead of --db
  std::string http;  // HOST:PORT; empty: stdio
  std::string token_file;
  std::vector<std::string> allow_hosts;
  std::vector<std::string> allow_origins;
  std::size_t max_sessions = 64;
  double session_idle_timeout_s = 300;  // an HTTP session without requests or streams ends
  std::size_t max_running_per_session = 0;  // 0: worker threads - 1
  // --allow-trace: the server records traces itself (live/), into trace_dir.
  bool allow_trace = false;
  std::string trace_dir = "/var/lib/vramscope/traces";
  std::int64_t max_trace_seconds = 3600;
  std::size_t max_traces = 4;
  bool keep_tracing = false;
  std::string nvml_lib;
};

CLI::App* add_mcp_command(CLI::App& app, McpArgs& args);
int run_mcp(const McpArgs& args);

// The trace file a command reads: --db PATH, or --demo NAME (an embedded
// trace written to a private file). Shared by `mcp` and `report`.
Result<std::string> trace_path(const std::string& db, const std::string& demo);

}  // namespace vs::cli
