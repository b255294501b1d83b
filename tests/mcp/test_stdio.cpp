// The dispatcher over the stdio transport, on real pipes: lifecycle, version
// negotiation, errors, pagination, cancellation, progress, logging,
// concurrency, and EOF (running calls answered); check_arguments on 2020-12 conditionals.
#include <catch2/catch.hpp>

#include "tests/mcp/mcp_test_support.h"

using namespace vs::mcp;
using namespace vs::mcp::test;
using namespace std::chrono_literals;

namespace {

struct StdioFixture {
  std::shared_ptr<Observed> observed = std::make_shared<Observed>();
  Server server{{"test-server", "Test Server", "1.2.3", "Use the tools."}, test_registry(observed), test_options()};
  StdioPeer peer{server};

  json call(int id, const std::string& method, json params = json::object()) {
    peer.send(request(id, method, std::move(params)));
    auto response = peer.response_to(id);
    REQUIRE(response);
    return *response;
  }
  json initialize(const std::string& version = "2025-11-25") {
    peer.send(initialize_request(1, version));
    auto response = peer.response_to(1);
    REQUIRE(response);
    peer.send(notification("notifications/initialized"));
    return *response;
  }
};

int error_code_of(const json& response) { return response.at("error").at("code").get<int>(); }

}  // namespace

TEST_CASE_METHOD(StdioFixture, "initialize negotiates the protocol version and describes the server", "[stdio]") {
  SECTION("a supported version is answered as asked") {
    json result = initialize("2025-06-18").at("result");
    CHECK(result["protocolVersion"] == "2025-06-18");
    CHECK(result["serverInfo"] == json({{"name", "test-server"}, {"title", "Test Server"}, {"version", "1.2.3"}}));
    CHECK(result["instructions"] == "Use the tools.");
    json capabilities = result["capabilities"];
    CHECK(capabilities["tools"]["listChanged"] == false);
    CHECK(capabilities["resources"]["subscribe"] == true);
    CHECK(capabilities.contains("prompts"));
    CHECK(capabilities.contains("logging"));
    CHECK(capabilities.contains("completions"));
  }
  SECTION("an unknown version gets the latest") {
    CHECK(initialize("2024-01-01").at("result")["protocolVersion"] == "2025-11-25");
  }
  SECTION("a second initialize is refused") {
    initialize();
    CHECK(error_code_of(call(2, "initialize", initialize_request(2)["params"])) == -32600);
  }
}

TEST_CASE_METHOD(StdioFixture, "requests before initialize are refused, ping is not", "[stdio]") {
  CHECK(error_code_of(call(1, "tools/list")) == -32600);
  CHECK(call(2, "ping").at("result") == json::object());
}

TEST_CASE_METHOD(StdioFixture, "JSON-RPC errors", "[stdio]") {
  initialize();
  SECTION("parse error") {
    peer.send_line("{\"jsonrpc\": \"2.0\", \"id\": 5, ");
    auto response = peer.next();
    REQUIRE(response);
    CHECK(error_code_of(*response) == -32700);
    CHECK((*response)["id"].is_null());
  }
  SECTION("invalid request") {
    peer.send_line(R"({"id": 3, "method": "ping"})");
    auto response = peer.next();
    REQUIRE(response);
    CHECK(error_code_of(*response) == -32600);
    CHECK((*response)["id"] == 3);
  }
  SECTION("method not found") { CHECK(error_code_of(call(2, "tools/frobnicate")) == -32601); }
  SECTION("unknown tool, prompt, and arguments that are not an object") {
    CHECK(error_code_of(call(2, "tools/call", {{"name", "nope"}})) == -32602);
    CHECK(error_code_of(call(3, "prompts/get", {{"name", "nope"}})) == -32602);
    CHECK(error_code_of(call(4, "tools/call", {{"name", "echo"}, {"arguments", json::array({1})}})) == -32602);
    CHECK(error_code_of(call(5, "prompts/get", {{"name", "greet"}})) == -32602);  // required argument missing
  }
  SECTION("invalid cursor") {
    CHECK(error_code_of(call(2, "tools/list", {{"cursor", "not-a-cursor"}})) == -32602);
    CHECK(error_code_of(call(3, "prompts/list", {{"cursor", 42}})) == -32602);
  }
  SECTION("unknown resource: -32002 with the uri") {
    json response = call(2, "resources/read", {{"uri", "test://nothing"}});
    CHECK(error_code_of(response) == -32002);
    CHECK(response["error"]["data"]["uri"] == "test://nothing");
    CHECK(error_code_of(call(3, "resources/read", {{"uri", "test://item/abc"}})) == -32002);
  }
  SECTION("batches are not part of 2025-11-25") {
    peer.send_line("[" + to_wire(request(2, "ping")) + "]");
    auto response = peer.next();
    REQUIRE(response);
    CHECK(error_code_of(*response) == -32600);
  }
  SECTION("tool failures the model can fix are results with isError") {
    json result = call(2, "tools/call", {{"name", "slow"}, {"arguments", {{"ms", -5}}}}).at("result");
    CHECK(result["isError"] == true);
    CHECK_THAT(result["content"][0]["text"].get<std::string>(), Catch::Contains("/ms"));
  }
}

TEST_CASE_METHOD(StdioFixture, "a 2025-03-26 client gets batches and no fields its version lacks", "[stdio]") {
  initialize("2025-03-26");
  peer.send_line("[" + to_wire(request(2, "ping")) + "," + to_wire(notification("notifications/initialized")) + "," +
                 to_wire(request(3, "tools/call", {{"name", "echo"}, {"arguments", {{"x", 1}}}})) + "]");
  auto batch = peer.next();
  REQUIRE(batch);
  REQUIRE(batch->is_array());
  REQUIRE(batch->size() == 2);
  for (const json& response : *batch)
    if (response["id"] == 3) CHECK_FALSE(response["result"].contains("structuredContent"));
  json tools = call(4, "tools/list").at("result")["tools"];
  CHECK_FALSE(tools[0].contains("title"));
  CHECK_FALSE(tools[0].contains("outputSchema"));
  CHECK(tools[0]["annotations"]["readOnlyHint"] == true);
}

TEST_CASE_METHOD(StdioFixture, "lists page with opaque cursors", "[stdio]") {
  initialize();
  std::vector<std::string> names;
  json params = json::object();
  for (int id = 2; id < 20; ++id) {
    json result = call(id, "tools/list", params).at("result");
    CHECK(result["tools"].size() <= 2);
    for (auto& tool : result["tools"]) names.push_back(tool["name"]);
    if (!result.contains("nextCursor")) break;
    params = {{"cursor", result["nextCursor"]}};
  }
  CHECK(names == std::vector<std::string>{"echo", "slow", "logs", "tool_0", "tool_1", "tool_2", "tool_3", "tool_4"});
  json echo = call(30, "tools/list").at("result")["tools"][0];
  CHECK(echo["title"] == "Echo");
  CHECK(echo["outputSchema"] == json({{"type", "object"}}));
}

TEST_CASE_METHOD(StdioFixture, "prompts, resources, templates and completion", "[stdio]") {
  initialize();
  json prompt = call(2, "prompts/get", {{"name", "greet"}, {"arguments", {{"name", "bob"}}}}).at("result");
  CHECK(prompt["messages"][0]["content"]["text"] == "Hello bob");
  CHECK(call(3, "resources/list").at("result")["resources"][0]["uri"] == "test://a");
  CHECK(call(4, "resources/templates/list").at("result")["resourceTemplates"][0]["uriTemplate"] == "test://item/{id}");
  CHECK(call(5, "resources/read", {{"uri", "test://item/12"}}).at("result")["contents"][0]["text"] == "item 12");
  json completion = call(6, "completion/complete", {{"ref", {{"type", "ref/prompt"}, {"name", "greet"}}},
                                                    {"argument", {{"name", "name"}, {"value", "al"}}}})
                        .at("result")["completion"];
  CHECK(completion["values"] == json({"alice", "albert"}));
  CHECK(completion["total"] == 2);
  json ids = call(7, "completion/complete", {{"ref", {{"type", "ref/resource"}, {"uri", "test://item/{id}"}}},
                                             {"argument", {{"name", "id"}, {"value", "1"}}}})
                 .at("result")["completion"]["values"];
  CHECK(ids == json({"1", "12"}));
  CHECK(call(8, "resources/subscribe", {{"uri", "test://a"}}).at("result") == json::object());
  server.notify_resource_updated("test://a");
  auto updated = peer.next();
  REQUIRE(updated);
  CHECK((*updated)["method"] == "notifications/resources/updated");
  CHECK(call(9, "resources/unsubscribe", {{"uri", "test://a"}}).at("result") == json::object());
}

TEST_CASE_METHOD(StdioFixture, "a ping is answered while a slow tool runs", "[stdio]") {
  initialize();
  peer.send(request(2, "tools/call", {{"name", "slow"}, {"arguments", {{"ms", 2000}}}}));
  auto started = std::chrono::steady_clock::now();
  auto pong = [&] {
    peer.send(request(3, "ping"));
    return peer.response_to(3);
  }();
  REQUIRE(pong);
  CHECK(std::chrono::steady_clock::now() - started < 1s);
  auto result = peer.response_to(2, 5s);
  REQUIRE(result);
  CHECK((*result)["result"]["content"][0]["text"] == "slept 2000 ms");
}

TEST_CASE_METHOD(StdioFixture, "progress is sent only with a progressToken", "[stdio]") {
  initialize();
  peer.send(request(2, "tools/call", {{"name", "slow"}, {"arguments", {{"ms", 100}}}, {"_meta", {{"progressToken", "tok"}}}}));
  REQUIRE(peer.response_to(2));
  int progress = 0;
  for (const json& message : peer.skipped())
    if (message.value("method", "") == "notifications/progress") {
      CHECK(message["params"]["progressToken"] == "tok");
      CHECK(message["params"]["total"] == 100);
      ++progress;
    }
  CHECK(progress >= 3);
  size_t before = peer.skipped().size();
  peer.send(request(3, "tools/call", {{"name", "slow"}, {"arguments", {{"ms", 60}}}}));
  REQUIRE(peer.response_to(3));
  CHECK(peer.skipped().size() == before);
}

TEST_CASE_METHOD(StdioFixture, "a cancelled request stops and gets no response", "[stdio]") {
  initialize();
  peer.send(request(7, "tools/call", {{"name", "slow"}, {"arguments", {{"ms", 5000}}}}));
  while (!observed->slow_started) std::this_thread::sleep_for(5ms);
  peer.send(notification("notifications/cancelled", {{"requestId", 7}, {"reason", "user gave up"}}));
  for (int i = 0; i < 100 && !observed->slow_saw_cancel; ++i) std::this_thread::sleep_for(10ms);
  CHECK(observed->slow_saw_cancel);
  std::this_thread::sleep_for(100ms);  // time for a response to 7, which must not come
  peer.send(request(8, "ping"));
  REQUIRE(peer.response_to(8));
  for (const json& message : peer.skipped()) CHECK(message.value("id", json()) != 7);
}

TEST_CASE_METHOD(StdioFixture, "log messages respect logging/setLevel", "[stdio]") {
  initialize();
  auto levels_logged = [&](int id) {
    size_t before = peer.skipped().size();
    peer.send(request(id, "tools/call", {{"name", "logs"}}));
    REQUIRE(peer.response_to(id));
    std::vector<std::string> levels;
    for (size_t i = before; i < peer.skipped().size(); ++i)
      if (peer.skipped()[i].value("method", "") == "notifications/message")
        levels.push_back(peer.skipped()[i]["params"]["level"]);
    return levels;
  };
  CHECK(levels_logged(2) == std::vector<std::string>{"info", "error"});
  CHECK(call(3, "logging/setLevel", {{"level", "warning"}}).at("result") == json::object());
  CHECK(levels_logged(4) == std::vector<std::string>{"error"});
  CHECK(error_code_of(call(5, "logging/setLevel", {{"level", "loud"}})) == -32602);
}

TEST_CASE_METHOD(StdioFixture, "end of input: running calls are answered, then the server stops", "[stdio]") {
  // What a piped script does: requests, then EOF at once.
  initialize();
  peer.send(request(2, "tools/call", {{"name", "slow"}, {"arguments", {{"ms", 300}}}}));
  while (!observed->slow_started) std::this_thread::sleep_for(5ms);
  peer.close_input();
  auto result = peer.response_to(2, 3s);
  REQUIRE(result);
  CHECK((*result)["result"]["content"][0]["text"] == "slept 300 ms");
  CHECK_FALSE(observed->slow_saw_cancel);
  CHECK(peer.finished(2s));
}

TEST_CASE_METHOD(StdioFixture, "a stop signal ends the input as EOF does, with the client's end still open",
                 "[stdio]") {
  // `vramscope mcp` stops its input on SIGTERM/SIGINT: run_stdio was blocked reading stdin, and the signal
  // killed the process with its traces unended. Running calls are answered as at EOF.
  initialize();
  peer.send(request(2, "tools/call", {{"name", "slow"}, {"arguments", {{"ms", 300}}}}));
  while (!observed->slow_started) std::this_thread::sleep_for(5ms);
  peer.stop_input();
  peer.send(request(3, "ping"));  // sent after the stop (while the slow call runs): never read
  auto result = peer.response_to(2, 3s);
  REQUIRE(result);
  CHECK((*result)["result"]["content"][0]["text"] == "slept 300 ms");
  CHECK(peer.finished(2s));
  CHECK_FALSE(peer.response_to(3, 300ms));
}

TEST_CASE("check_arguments: 2020-12 if/then/else and $anchor references", "[registry]") {
  const json schema = R"({
    "type": "object",
    "$defs": {"place": {"$anchor": "placeDef", "type": "object", "properties": {"city": {"type": "string"}}}},
    "properties": {"contactMethod": {"enum": ["phone", "email"]}, "phone": {"type": "string"},
                   "email": {"type": "string"}, "address": {"$ref": "#placeDef"}},
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]}})"_json;
  CHECK_FALSE(check_arguments(schema, {{"contactMethod", "phone"}, {"phone", "555"}}));
  CHECK_FALSE(check_arguments(schema, {{"email", "a@example.com"}, {"address", {{"city", "Lyon"}}}}));
  auto then_missing = check_arguments(schema, {{"contactMethod", "phone"}, {"email", "a@example.com"}});
  REQUIRE(then_missing);
  CHECK_THAT(then_missing->message, Catch::Contains("missing required property \"phone\"") && Catch::Contains("then"));
  auto else_missing = check_arguments(schema, {{"contactMethod", "email"}});
  REQUIRE(else_missing);
  CHECK_THAT(else_missing->message, Catch::Contains("missing required property \"email\"") && Catch::Contains("else"));
  auto bad_city = check_arguments(schema, {{"email", "a@example.com"}, {"address", {{"city", 3}}}});
  REQUIRE(bad_city);
  CHECK_THAT(bad_city->message, Catch::Contains("/address/city: must be string"));
}
