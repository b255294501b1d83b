// vramscope: one binary, subcommands. Each subcommand lives in its own file.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>

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

  CLI11_PARSE(app, argc, argv);
  if (verbose) spdlog::set_level(spdlog::level::debug);
  if (trace->parsed()) return vs::cli::run_trace(trace_args);
  return 0;
}
