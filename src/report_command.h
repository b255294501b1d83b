// `vramscope report`: the automatic findings of a trace, for a person in a
// terminal (or as JSON for a script): the same analyses the MCP tools serve.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>

namespace vs::cli {

struct ReportArgs {
  std::string db;
  std::string demo;  // name of an embedded trace, instead of --db
  std::optional<std::int64_t> session;
  std::string format = "text";  // text | json
};

CLI::App* add_report_command(CLI::App& app, ReportArgs& args);
int run_report(const ReportArgs& args);

}  // namespace vs::cli
