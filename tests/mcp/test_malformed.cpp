// Malformed and hostile messages over both transports (issue 11): whatever a
// client sends is answered with a JSON-RPC error (-32700, -32600, -32602, never
// -32603 with a library's message) and the server goes on. Each case runs once
// over stdio and once over HTTP; the limits are those of docs/reliability.md.
#include <catch2/catch.hpp>

#include "server/http.h"
#include "tests/mcp/mcp_test_support.h"

using namespace vs::mcp;
using namespace vs::mcp::test;
using namespace std::chrono_literals;

namespace {

// A test server and one client session of it over `transport`.
struct TestSession {
  std::shared_ptr<Observed> observed = std::make_shared<Observed>();
  Server server;
  std::unique_ptr<Client> client;

  explicit TestSession(const std::string& transport, ServerOptions options = test_options(), bool initialize = true)
      : server({"test-server", "", "1", ""}, test_registry(observed), options), client(connect(transport, server)) {
    if (initialize) client->initialize();
  }
};

int error_code_of(const json& response) { return response.at("error").at("code").get<int>(); }
std::string error_message_of(const json& response) { return response.at("error").at("message").get<std::string>(); }

std::string nested_arrays(size_t levels) { return std::string(levels, '[') + "0" + std::string(levels, ']'); }

json echo_request(const json& id, const json& arguments) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"method", "tools/call"}, {"params", {{"name", "echo"}, {"arguments", arguments}}}};
}

bool wait_for(const std::atomic<bool>& flag, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!flag && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  return flag;
}

}  // namespace

TEST_CASE("a \"jsonrpc\" other than the string \"2.0\" is an invalid request, and the server goes on", "[malformed]") {
  TestSession session(GENERATE(as<std::string>{}, "stdio", "http"));
  INFO("transport: " << session.client->transport());
  int id = 10;
  for (const json& jsonrpc : std::vector<json>{2.0, nullptr, true, json::array({"2.0"}), {{"version", "2.0"}}, 2, "1.0"}) {
    INFO("jsonrpc: " << jsonrpc.dump());
    auto response = session.client->call({{"jsonrpc", jsonrpc}, {"id", ++id}, {"method", "ping"}});
    REQUIRE(response);
    CHECK(error_code_of(*response) == -32600);
    session.client->send({{"jsonrpc", jsonrpc}, {"method", "notifications/initialized"}});
    auto unread = session.client->answer(nullptr);  // a notification's error has no id to carry
    REQUIRE(unread);
    CHECK(error_code_of(*unread) == -32600);
  }
  CHECK(session.client->alive());
}

TEST_CASE("nesting deeper than 64 levels is refused while parsing, anywhere in a message", "[malformed]") {
  TestSession session(GENERATE(as<std::string>{}, "stdio", "http"));
  INFO("transport: " << session.client->transport());
  const std::string deep = nested_arrays(100'000);
  const std::vector<std::string> messages = {
      deep,
      R"({"jsonrpc":"2.0","id":2,"method":"ping","params":{"x":)" + deep + "}}",
      R"({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"x":)" + deep + "}}}",
      R"({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","_meta":{"progressToken":)" + deep + "}}}",
      R"({"jsonrpc":"2.0","id":)" + deep + R"(,"method":"ping"})",
  };
  for (const std::string& text : messages) {
    INFO("message: " << text.substr(0, 80));
    session.client->send_text(text);
    auto response = session.client->answer(nullptr);
    REQUIRE(response);
    CHECK(error_code_of(*response) == -32700);
    CHECK_THAT(error_message_of(*response), Catch::Contains("64 levels"));
  }
  CHECK(session.client->alive());

  // The message (1), params (2) and arguments (3) objects hold 61 arrays: 64 levels, the most there may be.
  json deepest = 0;
  for (int level = 0; level < 61; ++level) deepest = json::array({deepest});
  auto served = session.client->call(echo_request(5, {{"x", deepest}}));
  REQUIRE(served);
  CHECK(served->at("result")["structuredContent"]["x"] == deepest);
  session.client->send(echo_request(6, {{"x", json::array({deepest})}}));
  auto refused = session.client->answer(nullptr);
  REQUIRE(refused);
  CHECK(error_code_of(*refused) == -32700);
}

TEST_CASE("a message larger than the limit is refused (-32600) on both transports, and the server goes on",
          "[malformed]") {
  ServerOptions options = test_options();
  options.limits.max_message_bytes = 1024;
  TestSession session(GENERATE(as<std::string>{}, "stdio", "http"), options);
  INFO("transport: " << session.client->transport());
  const size_t envelope = to_wire(echo_request(2, {{"x", ""}})).size();
  auto fits = session.client->call(echo_request(2, {{"x", std::string(1024 - envelope, 'a')}}));
  REQUIRE(fits);
  CHECK(fits->contains("result"));
  session.client->send(echo_request(3, {{"x", std::string(1024 - envelope + 1, 'a')}}));
  auto refused = session.client->answer(nullptr);
  REQUIRE(refused);
  CHECK(error_code_of(*refused) == -32600);
  CHECK_THAT(error_message_of(*refused), Catch::Contains("larger than 1024 bytes"));
  CHECK(session.client->alive());
  CHECK(session.client->transport_failures().empty());
}

TEST_CASE("a resource URI longer than 2048 bytes is -32602, whatever reads it, and the server goes on",
          "[malformed]") {
  TestSession session(GENERATE(as<std::string>{}, "stdio", "http"));
  INFO("transport: " << session.client->transport());
  const std::string prefix = "test://item/";
  const std::string longest = prefix + std::string(2048 - prefix.size(), '7');
  auto read = session.client->call(request(2, "resources/read", {{"uri", longest}}));
  REQUIRE(read);
  CHECK(read->at("result")["contents"][0]["uri"] == longest);

  const std::string too_long = prefix + std::string(50'000, '1');
  const std::vector<json> requests = {
      request(3, "resources/read", {{"uri", too_long}}),
      request(4, "resources/read", {{"uri", longest + "7"}}),
      request(5, "resources/subscribe", {{"uri", too_long}}),
      request(6, "resources/unsubscribe", {{"uri", too_long}}),
      request(7, "completion/complete",
              {{"ref", {{"type", "ref/resource"}, {"uri", too_long}}}, {"argument", {{"name", "id"}, {"value", ""}}}}),
  };
  for (const json& message : requests) {
    INFO(message["method"]);
    auto response = session.client->call(message);
    REQUIRE(response);
    CHECK(error_code_of(*response) == -32602);
    CHECK_THAT(error_message_of(*response), Catch::Contains("uri: must be at most 2048 characters"));
  }
  CHECK(session.client->alive());
}

TEST_CASE("a template matches a URI of any length without recursion", "[registry]") {
  // std::regex matched "{id}" recursively, one frame per character: 50,000 digits overflowed the stack.
  Registry registry = test_registry(std::make_shared<Observed>());
  const std::string digits(1'000'000, '4');
  auto match = registry.match_template("test://item/" + digits);
  REQUIRE(match);
  CHECK(match->variables.at("id") == digits);
  CHECK_FALSE(registry.match_template("test://item/"));
  CHECK_FALSE(registry.match_template("test://item/1/2"));
  CHECK_FALSE(registry.match_template("test://items/1"));
}

TEST_CASE("notifications/cancelled with wrongly typed fields: the request is still cancelled, nothing aborts",
          "[malformed]") {
  TestSession session(GENERATE(as<std::string>{}, "stdio", "http"));
  INFO("transport: " << session.client->transport());
  session.client->send(request(7, "tools/call", {{"name", "slow"}, {"arguments", {{"ms", 5000}}}}));
  REQUIRE(wait_for(session.observed->slow_started, 2s));
  session.client->send(notification("notifications/cancelled", {{"requestId", 7}, {"reason", 42}}));
  CHECK(wait_for(session.observed->slow_saw_cancel, 2s));
  CHECK_FALSE(session.client->answer(7, 300ms));  // a cancelled request gets no response
  for (const json& params : std::vector<json>{{{"requestId", json::object()}},
                                              {{"requestId", nullptr}, {"reason", json::array()}},
                                              {{"reason", "no id"}},
                                              "not an object"})
    session.client->send({{"jsonrpc", "2.0"}, {"method", "notifications/cancelled"}, {"params", params}});
  CHECK(session.client->alive());
}

namespace {

// Takes the responses of one session without a transport. The first response
// it is given, it answers at once, from inside finish(), by sending
// `follow_up`: a client as fast as can be, for which any window between
// sending a response and releasing its id is wide open.
class InstantClient : public Exchange, public std::enable_shared_from_this<InstantClient> {
 public:
  InstantClient(Server& server, std::shared_ptr<Session> session, std::optional<json> follow_up)
      : server_(server), session_(std::move(session)), follow_up_(std::move(follow_up)) {}
  void send(const json&) override {}
  void finish(const json&, std::optional<json> response) override {
    std::optional<json> follow_up;
    {
      std::lock_guard lock(mutex_);
      responses_.push_back(response.value_or(nullptr));
      follow_up.swap(follow_up_);
    }
    changed_.notify_all();
    if (follow_up) server_.receive(session_, *follow_up, shared_from_this());
  }
  std::vector<json> responses(size_t count) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, 5s, [&] { return responses_.size() >= count; });
    return responses_;
  }

 private:
  Server& server_;
  std::shared_ptr<Session> session_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<json> responses_;
  std::optional<json> follow_up_;
};

}  // namespace

TEST_CASE("a request id is released before its response is handed to the transport", "[malformed]") {
  Server server({"test-server", "", "1", ""}, test_registry(std::make_shared<Observed>()), test_options());
  auto session = server.open_session(nullptr);
  auto initializing = std::make_shared<InstantClient>(server, session, std::nullopt);
  server.receive(session, initialize_request(1), initializing);
  REQUIRE(initializing->responses(1).at(0).contains("result"));
  auto client = std::make_shared<InstantClient>(server, session, echo_request(5, {{"call", "second"}}));
  server.receive(session, echo_request(5, {{"call", "first"}}), client);
  std::vector<json> responses = client->responses(2);
  REQUIRE(responses.size() == 2);
  CHECK(responses[0]["result"]["structuredContent"]["call"] == "first");
  INFO(responses[1].dump());
  CHECK(responses[1]["result"]["structuredContent"]["call"] == "second");
  session->wait_idle();
}

TEST_CASE("a request id is free again as soon as its response is sent", "[malformed]") {
  // Before, the id was released after the response went out, so a client
  // reusing it at once got -32600 "already in use" in ~40% of tries.
  TestSession session(GENERATE(as<std::string>{}, "stdio", "http"));
  INFO("transport: " << session.client->transport());
  for (int attempt = 0; attempt < 300; ++attempt) {
    auto response = session.client->call(echo_request(5, {{"attempt", attempt}}));
    INFO("transport failures: " << json(session.client->transport_failures()).dump());
    REQUIRE(response);
    INFO("attempt " << attempt << ": " << response->dump());
    REQUIRE(response->contains("result"));
    CHECK(response->at("result")["structuredContent"]["attempt"] == attempt);
  }
}

TEST_CASE("a wrongly typed field is -32602 naming the field, never -32603 with a library's message", "[malformed]") {
  TestSession session(GENERATE(as<std::string>{}, "stdio", "http"), test_options(), /*initialize=*/false);
  INFO("transport: " << session.client->transport());
  auto expect_invalid = [&](const json& message, const std::string& names) {
    INFO(message.dump());
    auto response = session.client->call(message);
    REQUIRE(response);
    CHECK(error_code_of(*response) == -32602);
    CHECK_THAT(error_message_of(*response), Catch::Contains(names));
  };
  json initialize = initialize_request(1);
  initialize["params"]["clientInfo"]["name"] = 5;
  expect_invalid(initialize, "/clientInfo/name: must be string");
  initialize = initialize_request(1);
  initialize["params"]["capabilities"] = "all";
  expect_invalid(initialize, "/capabilities: must be object");
  session.client->initialize();  // the refused ones did not initialize the session

  expect_invalid(request(2, "tools/list", {{"cursor", base64_encode("offset:99999999999999999999999")}}),
                 "unknown cursor");
  expect_invalid(request(3, "tools/list", {{"cursor", json::object()}}), "/cursor: must be string");
  expect_invalid(request(4, "tools/call", {{"name", 5}}), "/name: must be string");
  expect_invalid(request(5, "tools/call", {{"name", "echo"}, {"arguments", "x"}}), "/arguments: must be object");
  expect_invalid(request(6, "tools/call", {{"name", "echo"}, {"_meta", {{"progressToken", json::object()}}}}),
                 "/_meta/progressToken: must be string or number");
  expect_invalid(request(7, "prompts/get", {{"name", "greet"}, {"arguments", {{"name", 5}}}}),
                 "/arguments/name: must be string");
  expect_invalid(request(8, "resources/read", {{"uri", 5}}), "/uri: must be string");
  expect_invalid(request(9, "completion/complete",
                         {{"ref", {{"type", "ref/prompt"}, {"name", 5}}}, {"argument", {{"name", "name"}, {"value", ""}}}}),
                 "/ref/name: must be string");
  expect_invalid(request(10, "completion/complete",
                         {{"ref", {{"type", "ref/prompt"}, {"name", "greet"}}}, {"argument", {{"name", "name"}, {"value", 5}}}}),
                 "/argument/value: must be string");
  expect_invalid(request(11, "completion/complete",
                         {{"ref", {{"type", "ref/prompt"}, {"name", "greet"}}},
                          {"argument", {{"name", "name"}, {"value", ""}}},
                          {"context", {{"arguments", {{"name", 5}}}}}}),
                 "/context/arguments/name: must be string");
  expect_invalid(request(12, "logging/setLevel", {{"level", 5}}), "/level: must be one of");
  CHECK(session.client->alive());
  for (int code : session.client->error_codes()) CHECK(code != -32603);
}
