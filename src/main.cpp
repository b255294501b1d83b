// vramscope: one binary, subcommands. Each subcommand lives in its own file.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>

#include "src/mcp_command.h"
#include "src/report_command.h"
#include "src/trace_command.h"

int main(int argc, char** argv) {
  // Logs go to stderr: stdout is for results (and, for `mcp`, the protocol).
  spdlog::set_default_logger(spdlog::stderr_color_mt("vramscope"));
  spdlog::set_pattern("vramscope: %^%l%$: %v");

  CLI::App app{"vramscope: see what happens to GPU memory between the framework's allocator, the CUDA runtime and "
               "driver, and the Linux scheduler"};
  app.set_version_flag("--version", std::string(VRAMSCOPE_VERSION));
  app.require_subcommand(1);
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "Debug logging (libbpf's messages included)");

  vs::cli::TraceArgs trace_args;
  CLI::App* trace = vs::cli::add_trace_command(app, trace_args);
  vs::cli::McpArgs mcp_args;
  CLI::App* mcp = vs::cli::add_mcp_command(app, mcp_args);
  vs::cli::ReportArgs report_args;
  CLI::App* report = vs::cli::add_report_command(app, report_args);

  CLI11_PARSE(app, argc, argv);
  if (verbose) spdlog::set_level(spdlog::level::debug);
  if (trace->parsed()) return vs::cli::run_trace(trace_args);
  if (mcp->parsed()) return vs::cli::run_mcp(mcp_args);
  if (report->parsed()) return vs::cli::run_report(report_args);
  return 0;
}
