#include "src/report_command.h"

#include <spdlog/spdlog.h>

#include <cstdio>
#include <filesystem>

#include "src/mcp_command.h"
#include "tools/common.h"

namespace vs::cli {
namespace {

// One line that says what the trace is: the session, its span, and the GPU.
std::string header(const store::TraceReader& db, const tools::Session& s, const tools::json& coverage) {
  std::string gpus;
  Status st = db.query("SELECT name, driver_version FROM gpus WHERE session_id = ? ORDER BY gpu_index", {s.id},
                       [&](const store::Row& r) {
                         gpus += (gpus.empty() ? "" : ", ") + tools::quote_untrusted(r.text(0), 60) + " (driver " +
                                 tools::clean_untrusted(r.text(1), 20) + ")";
                       });
  if (!st) gpus.clear();
  return "session " + std::to_string(s.id) + (s.command.empty() ? "" : " " + tools::quote_untrusted(s.command, 120)) +
         "\n  " + s.mode + " mode, " + s.status + ", " + tools::fmt_ns(s.end_ns - s.start_ns) + ", " +
         std::to_string(coverage["processes"].get<std::int64_t>()) + " processes, " +
         std::to_string(coverage["calls_recorded"].get<std::int64_t>()) + " calls" +
         (gpus.empty() ? "" : "; GPU " + gpus) + "\n";
}

}  // namespace

CLI::App* add_report_command(CLI::App& app, ReportArgs& args) {
  CLI::App* cmd = app.add_subcommand(
      "report", "Print the automatic findings of a trace (what `vramscope mcp` serves to agents), for a person");
  cmd->add_option("--db", args.db, "Trace file to read (opened read-only; may still be recording)");
  cmd->add_option("--demo", args.demo, "Report on a trace recorded on an H100 instead (empty_cache, leak, ...)");
  cmd->add_option("--session", args.session, "Session id (default: the newest session)");
  cmd->add_option("--format", args.format, "text (default) or json")->check(CLI::IsMember({"text", "json"}));
  return cmd;
}

int run_report(const ReportArgs& args) {
  auto path = trace_path(args.db, args.demo);
  if (!path) {
    spdlog::error("{}", path.error().message);
    return 2;
  }
  if (!std::filesystem::exists(*path)) {
    spdlog::error("no such file: {} (record one with `vramscope trace --db {} -- COMMAND`)", *path, *path);
    return 2;
  }
  auto db = store::TraceReader::open(*path);
  if (!db) {
    spdlog::error("{}", db.error().message);
    return 2;
  }
  tools::json scope = tools::json::object();
  if (args.session) scope["session_id"] = *args.session;
  auto session = tools::resolve_session(**db, scope);
  if (!session) {
    spdlog::error("{}", session.error().message);
    return 2;
  }
  scope["session_id"] = session->id;
  tools::Progress none;
  auto findings = tools::run_tool(**db, "findings", scope, none);
  if (!findings) {
    spdlog::error("{}", findings.error().message);
    return 1;
  }
  if (args.format == "json") {
    std::puts(tools::json{{"file", *path}, {"findings", findings->structured}}.dump(2).c_str());
    return 0;
  }
  std::string more = "\nMore: each finding's `next` names the tool to drill down with. Serve this trace to an agent "
                     "with `vramscope mcp --db " + *path + "`; its tools: ";
  for (const auto& t : tools::catalog()) more += std::string(t.name) + " ";
  std::printf("vramscope report: %s\n%s\n%s\n%s\n", path->c_str(),
              header(**db, *session, findings->structured["coverage"]).c_str(), findings->text.c_str(), more.c_str());
  return 0;
}

}  // namespace vs::cli
