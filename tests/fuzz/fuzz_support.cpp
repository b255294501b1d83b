#include "tests/fuzz/fuzz_support.h"

#include <spdlog/sinks/null_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "server/protocol.h"
#include "server/server.h"
#include "store/reader.h"
#include "tools/prompts.h"
#include "tools/resources.h"
#include "tools/tool.h"

namespace vs::fuzz {

namespace fs = std::filesystem;

const std::vector<std::string>& shipped_traces() {
  static const std::vector<std::string> traces = [] {
    std::vector<std::string> out;
    const fs::path examples = VS_EXAMPLES_DIR;
    for (const auto& dir : fs::directory_iterator(examples / "traces"))
      if (fs::exists(dir.path() / "trace.db")) out.push_back((dir.path() / "trace.db").string());
    std::vector<std::string> corpus;
    for (const auto& entry : fs::recursive_directory_iterator(examples / "corpus" / "traces"))
      if (entry.is_regular_file() && entry.path().extension() == ".db") corpus.push_back(entry.path().string());
    std::sort(out.begin(), out.end());
    std::sort(corpus.begin(), corpus.end());
    out.insert(out.end(), corpus.begin(), corpus.end());
    if (out.empty()) fail("no shipped trace under", VS_EXAMPLES_DIR);
    return out;
  }();
  return traces;
}

namespace {

using json = nlohmann::json;

Result<std::unique_ptr<store::TraceReader>> open_for(const std::string& db_path, mcp::RequestContext& ctx) {
  auto reader = store::TraceReader::open(db_path);
  if (!reader) return Error{reader.error().message};
  (*reader)->set_interrupt([&ctx] { return ctx.cancelled(); });
  return reader;
}

std::map<std::string, std::string> string_arguments(const json& args) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : args.items()) out[k] = v.get<std::string>();
  return out;
}

mcp::Completer completer(const std::string& db_path, const std::string& argument) {
  return [db_path, argument](const json& context) {
    std::vector<std::string> values;
    auto reader = store::TraceReader::open(db_path);
    if (!reader) return values;
    auto done = tools::complete_argument(**reader, argument, "", string_arguments(context));
    if (done) values = std::move(done->values);
    return values;
  };
}

Result<json> read_contents(const std::string& db_path, const std::string& uri, mcp::RequestContext& ctx) {
  auto reader = open_for(db_path, ctx);
  if (!reader) return Error{reader.error().message};
  auto content = tools::read_resource(**reader, uri);
  if (!content) return Error{content.error().message};
  return json::array({{{"uri", content->uri}, {"mimeType", content->mime_type}, {"text", content->text}}});
}

}  // namespace

mcp::Registry vramscope_registry(const std::string& db_path) {
  mcp::Registry registry;
  auto must = [](const Status& s, std::string_view what) {
    if (!s) fail("registering", std::string(what) + ": " + s.message());
  };
  for (const auto& spec : tools::catalog()) {
    mcp::Tool tool;
    tool.name = std::string(spec.name);
    tool.title = std::string(spec.title);
    tool.description = std::string(spec.description);
    tool.input_schema = tools::input_schema(spec.name);
    tool.output_schema = tools::output_schema(spec.name);
    tool.annotations = {{"readOnlyHint", true}, {"idempotentHint", true}, {"openWorldHint", false}};
    tool.handler = [name = tool.name, db_path](const json& args, mcp::RequestContext& ctx) -> Result<json> {
      auto reader = open_for(db_path, ctx);
      if (!reader) return Error{reader.error().message};
      tools::Progress progress{
          [&ctx](double done, double total, const std::string& message) { ctx.progress(done, total, message); },
          [&ctx] { return ctx.cancelled(); }};
      auto out = tools::run_tool(**reader, name, args, progress);
      if (!out) return Error{out.error().message};
      json content = json::array({{{"type", "text"}, {"text", out->text}}});
      for (const auto& image : out->images)
        content.push_back({{"type", "image"}, {"mimeType", image.mime_type}, {"data", mcp::base64_encode(image.data)}});
      return json{{"content", std::move(content)}, {"structuredContent", std::move(out->structured)}};
    };
    must(registry.add(std::move(tool)), spec.name);
  }
  for (const auto& spec : tools::prompts()) {
    mcp::Prompt prompt{spec.name, spec.title, spec.description, {}, {}};
    for (const auto& a : spec.arguments)
      prompt.arguments.push_back({a.name, "", a.description, a.required, completer(db_path, a.name)});
    prompt.handler = [name = spec.name, db_path](const json& args, mcp::RequestContext& ctx) -> Result<json> {
      auto reader = open_for(db_path, ctx);
      if (!reader) return Error{reader.error().message};
      auto messages = tools::get_prompt(**reader, name, string_arguments(args));
      if (!messages) return Error{messages.error().message};
      json out = json::array();
      for (const auto& m : *messages) out.push_back({{"role", m.role}, {"content", {{"type", "text"}, {"text", m.text}}}});
      return json{{"messages", std::move(out)}};
    };
    must(registry.add(std::move(prompt)), spec.name);
  }
  auto reader = store::TraceReader::open(db_path);
  if (!reader) fail("opening", db_path + ": " + reader.error().message);
  auto sessions = tools::session_resources(**reader);
  if (!sessions) fail("session resources of", db_path + ": " + sessions.error().message);
  std::vector<tools::ResourceSpec> resources = tools::resources();
  resources.insert(resources.end(), sessions->begin(), sessions->end());
  for (const auto& spec : resources)
    must(registry.add(mcp::Resource{spec.uri, spec.name, spec.title, spec.description, spec.mime_type,
                                    [db_path](const std::string& uri, mcp::RequestContext& ctx) {
                                      return read_contents(db_path, uri, ctx);
                                    }}),
         spec.uri);
  for (const auto& spec : tools::resource_templates()) {
    mcp::ResourceTemplate t{spec.uri_template, spec.name, spec.title, spec.description, spec.mime_type, {}, {}};
    t.reader = [db_path](const std::string& uri, const std::map<std::string, std::string>&, mcp::RequestContext& ctx) {
      return read_contents(db_path, uri, ctx);
    };
    t.complete["id"] = completer(db_path, "id");
    must(registry.add(std::move(t)), spec.uri_template);
  }
  return registry;
}

void quiet_logs() {
  auto logger = std::make_shared<spdlog::logger>("fuzz", std::make_shared<spdlog::sinks::null_sink_mt>());
  logger->set_level(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

void fail(std::string_view what, std::string_view detail) {
  std::fprintf(stderr, "\nFUZZ FAILURE: %.*s %.*s\n", static_cast<int>(what.size()), what.data(),
               static_cast<int>(detail.size()), detail.data());
  std::fflush(stderr);
  std::abort();
}

}  // namespace vs::fuzz
