// Prompts, completions and resources: the workflows name tools of this build
// (a renamed tool fails here), arguments are checked against the trace, and
// completions return the trace's real ids.
#include "store/store.h"
#include "tests/tools/tool_check.h"
#include "tools/prompts.h"
#include "tools/resources.h"

namespace {

vs::test::TraceFile leak_trace() { return vs::test::open_trace(vs::test::example_trace("leak")); }

}  // namespace

TEST_CASE("prompts: each workflow names tools of the catalog, with the scope's arguments", "[prompts]") {
  auto t = leak_trace();
  REQUIRE(vs::tools::prompts().size() == 3);
  for (const auto& p : vs::tools::prompts()) {
    INFO(p.name);
    CHECK(p.description.size() > 40);
    REQUIRE(p.arguments.size() == 2);
    CHECK(p.arguments[0].name == "session_id");
    CHECK(p.arguments[1].name == "pid");
    auto tools = vs::tools::prompt_tools(p.name);
    REQUIRE(tools.size() >= 4);
    auto messages = vs::tools::get_prompt(*t.reader, p.name, {{"session_id", "1"}, {"pid", "476"}});
    REQUIRE(messages.ok());
    REQUIRE(messages->size() == 1);
    const auto& m = messages->front();
    CHECK(m.role == "user");
    CHECK(m.text.find("\"pid\":476") != std::string::npos);
    CHECK(m.text.find("Never invent a number") != std::string::npos);
    CHECK(m.text.find("not observed") != std::string::npos);
    for (auto tool : tools) {
      INFO(tool);
      CHECK(vs::tools::find_tool(tool) != nullptr);
      CHECK(m.text.find("`" + std::string(tool) + "`") != std::string::npos);
    }
    // Every step's arguments are ones its tool accepts: an agent that follows the prompt gets no argument error.
    std::size_t at = 0;
    int steps = 0;
    while ((at = m.text.find(". Call `", at)) != std::string::npos) {
      std::size_t name_end = m.text.find('`', at + 8);
      std::string tool = m.text.substr(at + 8, name_end - at - 8);
      std::size_t args_begin = m.text.find('{', name_end), args_end = m.text.find("}: ", args_begin);
      auto args = nlohmann::json::parse(m.text.substr(args_begin, args_end - args_begin + 1));
      INFO(tool << " " << args.dump());
      CHECK_FALSE(vs::json_schema::validate(vs::tools::input_schema(tool), args).has_value());
      at = args_end;
      ++steps;
    }
    CHECK(steps == static_cast<int>(tools.size()));
  }
  auto investigate = vs::tools::prompt_tools("investigate");
  CHECK(investigate[0] == "trace_overview");
  CHECK(investigate[1] == "findings");
  auto newest = vs::tools::get_prompt(*t.reader, "investigate", {});
  REQUIRE(newest.ok());
  CHECK(newest->front().text.find("session 1 (command «python3") != std::string::npos);
}

TEST_CASE("prompts: arguments the user can fix", "[prompts]") {
  auto t = leak_trace();
  auto error = [&](const std::string& name, const std::map<std::string, std::string>& args) {
    auto r = vs::tools::get_prompt(*t.reader, name, args);
    REQUIRE_FALSE(r.ok());
    return r.error().message;
  };
  CHECK(error("investigat", {}).find("prompts: investigate, leak_hunt, slow_free") != std::string::npos);
  CHECK(error("investigate", {{"session_id", "one"}}).find("must be an integer") != std::string::npos);
  CHECK(error("investigate", {{"session_id", "4"}}).find("sessions: 1") != std::string::npos);
  CHECK(error("leak_hunt", {{"pid", "477"}}).find("its processes: 476") != std::string::npos);
  CHECK(error("slow_free", {{"device", "0"}}).find("unknown argument device") != std::string::npos);
}

TEST_CASE("completions: the trace's session ids and pids", "[prompts]") {
  auto t = leak_trace();
  auto complete = [&](const char* arg, const char* partial, std::map<std::string, std::string> ctx = {}) {
    auto c = vs::tools::complete_argument(*t.reader, arg, partial, ctx);
    REQUIRE(c.ok());
    return c.value();
  };
  CHECK(complete("session_id", "").values == std::vector<std::string>{"1"});
  CHECK(complete("id", "1").values == std::vector<std::string>{"1"});
  CHECK(complete("session_id", "2").values.empty());
  CHECK(complete("pid", "4").values == std::vector<std::string>{"476"});
  CHECK(complete("pid", "47", {{"session_id", "1"}}).total == 1);
  CHECK(complete("pid", "", {{"session_id", "2"}}).values.empty());
  CHECK(complete("pid", "%").values.empty());  // not a pattern
  CHECK(complete("api", "cuda").values.empty());
}

TEST_CASE("resources: schema, sessions, and a session's overview", "[prompts]") {
  auto t = leak_trace();
  REQUIRE(vs::tools::resources().size() == 2);
  REQUIRE(vs::tools::resource_templates().size() == 1);

  auto schema = vs::tools::read_resource(*t.reader, "vramscope://schema");
  REQUIRE(schema.ok());
  CHECK(schema->text == vs::store::schema_sql());

  auto sessions = vs::tools::read_resource(*t.reader, "vramscope://sessions");
  REQUIRE(sessions.ok());
  auto list = nlohmann::json::parse(sessions->text);
  REQUIRE(list["sessions"].size() == 1);
  CHECK(list["sessions"][0]["session_id"] == 1);
  CHECK(list["sessions"][0]["status"] == "complete");
  CHECK(list["sessions"][0]["processes"] == 1);
  CHECK(list["sessions"][0]["command"].get<std::string>().starts_with("python3 "));

  auto listed = vs::tools::session_resources(*t.reader);
  REQUIRE(listed.ok());
  REQUIRE(listed->size() == 1);
  CHECK(listed->front().uri == "vramscope://session/1");

  auto overview = vs::tools::read_resource(*t.reader, "vramscope://session/1");
  INFO((overview.ok() ? "" : overview.error().message));
  REQUIRE(overview.ok());
  CHECK(nlohmann::json::parse(overview->text)["coverage"]["session_id"] == 1);

  CHECK_FALSE(vs::tools::read_resource(*t.reader, "vramscope://session/2").ok());
  CHECK_FALSE(vs::tools::read_resource(*t.reader, "vramscope://session/x").ok());
  auto unknown = vs::tools::read_resource(*t.reader, "file:///etc/passwd");
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.error().message.find("vramscope://sessions") != std::string::npos);
}
