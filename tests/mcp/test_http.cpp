// The Streamable HTTP transport on a real socket: sessions, header checks
// (Host/Origin, token, Accept, protocol version), limits, SSE answers with
// progress or for every request, concurrency and cancellation.
#include <catch2/catch.hpp>

#include <future>

#include "server/http.h"
#include "tests/mcp/mcp_test_support.h"

using namespace vs::mcp;
using namespace vs::mcp::test;
using namespace std::chrono_literals;

namespace {

struct HttpFixture {
  std::shared_ptr<Observed> observed = std::make_shared<Observed>();
  Server server;
  std::unique_ptr<HttpServer> http;
  uint16_t port = 0;

  explicit HttpFixture(HttpOptions options = {}, ServerOptions server_options = test_options())
      : server({"test-server", "", "1.0", ""}, test_registry(observed), server_options) {
    http = std::make_unique<HttpServer>(server, options);
    auto started = http->start();
    REQUIRE(started);
    port = *started;
  }
};

HttpOptions with(auto change) {
  HttpOptions options;
  change(options);
  return options;
}

}  // namespace

TEST_CASE_METHOD(HttpFixture, "initialize opens a session that later requests must name", "[http]") {
  HttpReply reply = http_post(port, initialize_request(1, "2025-06-18"));
  REQUIRE(reply.status == 200);
  CHECK(reply.header("content-type") == "application/json");
  std::string session = reply.header("mcp-session-id");
  CHECK(session.size() >= 32);
  CHECK(reply.messages().at(0)["result"]["protocolVersion"] == "2025-06-18");

  CHECK(http_post(port, notification("notifications/initialized"), session).status == 202);
  HttpReply tools = http_post(port, request(2, "tools/list"), session, {{"MCP-Protocol-Version", "2025-06-18"}});
  CHECK(tools.status == 200);
  CHECK(tools.messages().at(0)["result"]["tools"].size() == 2);

  CHECK(http_post(port, request(3, "tools/list")).status == 400);                  // no session
  CHECK(http_post(port, request(3, "tools/list"), "0123456789abcdef").status == 404);  // unknown session
  CHECK(http_call(port, "DELETE", "", {{"Mcp-Session-Id", session}}).status == 200);
  CHECK(http_post(port, request(4, "ping"), session).status == 404);  // ended
}

TEST_CASE_METHOD(HttpFixture, "JSON-RPC errors over HTTP", "[http]") {
  std::string session = http_open_session(port);
  HttpReply parse_error = http_call(port, "POST", "{not json", {{"Mcp-Session-Id", session}});
  CHECK(parse_error.status == 400);
  CHECK(parse_error.messages().at(0)["error"]["code"] == -32700);
  HttpReply unknown_method = http_post(port, request(2, "nope/nope"), session);
  CHECK(unknown_method.status == 200);
  CHECK(unknown_method.messages().at(0)["error"]["code"] == -32601);
  CHECK(http_post(port, request(3, "tools/list", {{"cursor", "zzz"}}), session).messages().at(0)["error"]["code"] == -32602);
}

TEST_CASE_METHOD(HttpFixture, "DNS rebinding protection: Host and Origin", "[http]") {
  std::string body = to_wire(initialize_request(1));
  CHECK(http_call(port, "POST", body, {{"Host", "evil.example.com"}}).status == 403);
  CHECK(http_call(port, "POST", body, {{"Host", "evil.example.com:" + std::to_string(port)}}).status == 403);
  CHECK(http_call(port, "POST", body, {{"Origin", "http://evil.example.com"}}).status == 403);
  CHECK(http_call(port, "POST", body, {{"Host", "localhost:" + std::to_string(port)}}).status == 200);
  CHECK(http_call(port, "POST", body, {{"Origin", "http://127.0.0.1:" + std::to_string(port)}}).status == 200);
}

TEST_CASE_METHOD(HttpFixture, "header checks: Accept, Content-Type, MCP-Protocol-Version, method", "[http]") {
  std::string session = http_open_session(port);
  CHECK(http_post(port, request(2, "ping"), session, {{"Accept", "application/json"}}).status == 406);
  CHECK(http_post(port, request(2, "ping"), session, {{"Content-Type", "text/plain"}}).status == 415);
  CHECK(http_post(port, request(2, "ping"), session, {{"MCP-Protocol-Version", "1999-01-01"}}).status == 400);
  CHECK(http_post(port, request(2, "ping"), session, {{"MCP-Protocol-Version", "2025-03-26"}}).status == 200);
  CHECK(http_call(port, "PUT", "", {{"Mcp-Session-Id", session}}).status == 405);
  CHECK(http_call(port, "GET", "", {{"Mcp-Session-Id", session}, {"Accept", "application/json"}}).status == 406);
  CHECK(http_call(port, "POST", to_wire(request(2, "ping")), {}, "/other").status == 404);
}

TEST_CASE("a bearer token is required when configured, and off loopback", "[http]") {
  HttpFixture fixture(with([](HttpOptions& o) { o.bearer_token = "s3cret-0123456789abcdef"; }));
  std::string body = to_wire(initialize_request(1));
  HttpReply missing = http_call(fixture.port, "POST", body);
  CHECK(missing.status == 401);
  CHECK(missing.header("www-authenticate").rfind("Bearer", 0) == 0);
  HttpReply wrong = http_call(fixture.port, "POST", body, {{"Authorization", "Bearer nope"}});
  CHECK(wrong.status == 401);
  CHECK_THAT(wrong.header("www-authenticate"), Catch::Contains("invalid_token"));
  CHECK(http_call(fixture.port, "POST", body, {{"Authorization", "Bearer s3cret-0123456789abcdef"}}).status == 200);

  Server server{{"s", "", "1", ""}, Registry{}, {}};
  HttpServer exposed(server, with([](HttpOptions& o) { o.host = "0.0.0.0"; }));
  auto refused = exposed.start();
  REQUIRE_FALSE(refused);
  CHECK_THAT(refused.error().message, Catch::Contains("bearer token"));
}

TEST_CASE("limits: body size (the server's message size), header size, sessions", "[http]") {
  ServerOptions server_options = test_options();
  server_options.limits.max_message_bytes = 1024;
  HttpFixture fixture(with([](HttpOptions& o) {
                        o.max_header_bytes = 1024;
                        o.max_sessions = 1;
                      }),
                      server_options);
  std::string session = http_open_session(fixture.port);
  json big = request(2, "tools/call", {{"name", "echo"}, {"arguments", {{"text", std::string(2000, 'x')}}}});
  HttpReply too_large = http_post(fixture.port, big, session);
  CHECK(too_large.status == 413);
  CHECK(too_large.messages().at(0)["error"]["code"] == -32600);
  CHECK(http_post(fixture.port, request(3, "ping"), session, {{"X-Padding", std::string(2000, 'y')}}).status == 431);
  HttpReply second = http_post(fixture.port, initialize_request(1));
  CHECK(second.status == 503);
  CHECK_THAT(second.body, Catch::Contains("too many sessions"));
}

TEST_CASE_METHOD(HttpFixture, "progress turns the answer into an SSE stream with event ids", "[http]") {
  std::string session = http_open_session(port);
  HttpReply reply = http_post(
      port, request(2, "tools/call", {{"name", "slow"}, {"arguments", {{"ms", 100}}}, {"_meta", {{"progressToken", 9}}}}),
      session);
  REQUIRE(reply.status == 200);
  CHECK(reply.header("content-type") == "text/event-stream");
  CHECK_THAT(reply.body, Catch::Contains("retry: ") && Catch::Contains("id: "));
  auto messages = reply.messages();
  REQUIRE(messages.size() >= 4);
  CHECK(messages.front()["method"] == "notifications/progress");
  CHECK(messages.front()["params"]["progressToken"] == 9);
  CHECK(messages.back()["id"] == 2);
  CHECK(messages.back()["result"]["content"][0]["text"] == "slept 100 ms");
}

TEST_CASE("sse_responses: every request is answered with an SSE stream, errors and notifications are not", "[http]") {
  HttpFixture fixture(with([](HttpOptions& o) { o.sse_responses = true; }));
  HttpReply init = http_post(fixture.port, initialize_request(1));
  REQUIRE(init.status == 200);
  CHECK(init.header("content-type") == "text/event-stream");
  std::string session = init.header("mcp-session-id");
  CHECK(session.size() >= 32);
  // The priming event comes first: an id and retry, no message.
  CHECK(init.body.rfind("id: ", 0) == 0);
  CHECK_THAT(init.body, Catch::Contains("retry: "));
  REQUIRE(init.messages().size() == 1);
  CHECK(init.messages()[0]["result"]["protocolVersion"] == "2025-11-25");

  CHECK(http_post(fixture.port, notification("notifications/initialized"), session).status == 202);
  HttpReply tools = http_post(fixture.port, request(2, "tools/list"), session);
  REQUIRE(tools.status == 200);
  CHECK(tools.header("content-type") == "text/event-stream");
  REQUIRE(tools.messages().size() == 1);
  CHECK(tools.messages()[0]["id"] == 2);
  CHECK(tools.messages()[0]["result"]["tools"].size() == 2);
  // A message the server cannot take is still a plain 400.
  HttpReply parse_error = http_call(fixture.port, "POST", "{not json", {{"Mcp-Session-Id", session}});
  CHECK(parse_error.status == 400);
  CHECK(parse_error.header("content-type") == "application/json");
}

TEST_CASE_METHOD(HttpFixture, "a slow tool blocks neither pings nor other sessions", "[http]") {
  std::string session = http_open_session(port);
  std::string other = http_open_session(port);
  auto slow = std::async(std::launch::async, [&] {
    return http_post(port, request(2, "tools/call", {{"name", "slow"}, {"arguments", {{"ms", 1500}}}}), session);
  });
  while (!observed->slow_started) std::this_thread::sleep_for(5ms);
  auto started = std::chrono::steady_clock::now();
  CHECK(http_post(port, request(3, "ping"), session).status == 200);
  CHECK(http_post(port, request(4, "tools/list"), other).status == 200);
  CHECK(std::chrono::steady_clock::now() - started < 500ms);
  CHECK(slow.get().messages().at(0)["result"]["content"][0]["text"] == "slept 1500 ms");
}

TEST_CASE_METHOD(HttpFixture, "a cancelled call stops and its stream ends without a response", "[http]") {
  std::string session = http_open_session(port);
  auto slow = std::async(std::launch::async, [&] {
    return http_post(port, request(7, "tools/call", {{"name", "slow"}, {"arguments", {{"ms", 5000}}}}), session);
  });
  while (!observed->slow_started) std::this_thread::sleep_for(5ms);
  CHECK(http_post(port, notification("notifications/cancelled", {{"requestId", 7}}), session).status == 202);
  REQUIRE(slow.wait_for(2s) == std::future_status::ready);
  HttpReply reply = slow.get();
  CHECK(observed->slow_saw_cancel);
  CHECK(reply.status == 200);
  CHECK(reply.messages().empty());
}

TEST_CASE_METHOD(HttpFixture, "GET opens the session's SSE stream; one at a time", "[http]") {
  std::string session = http_open_session(port);
  CHECK(http_call(port, "GET", "", {{"Accept", "text/event-stream"}}).status == 400);  // no session
  // The stream stays open: read only its header, on a raw connection.
  auto open = std::async(std::launch::async, [&] {
    return http_call(port, "GET", "", {{"Accept", "text/event-stream"}, {"Mcp-Session-Id", session}});
  });
  std::this_thread::sleep_for(200ms);
  CHECK(http_call(port, "GET", "", {{"Accept", "text/event-stream"}, {"Mcp-Session-Id", session}}).status == 409);
  // Ending the session ends the stream, with the messages sent to it.
  http_post(port, request(2, "resources/subscribe", {{"uri", "test://a"}}), session);
  server.notify_resource_updated("test://a");
  std::this_thread::sleep_for(100ms);
  CHECK(http_call(port, "DELETE", "", {{"Mcp-Session-Id", session}}).status == 200);
  REQUIRE(open.wait_for(2s) == std::future_status::ready);
  HttpReply stream = open.get();
  CHECK(stream.header("content-type") == "text/event-stream");
  CHECK(stream.messages().at(0)["method"] == "notifications/resources/updated");
}

TEST_CASE_METHOD(HttpFixture, "a 200 KB initialize nested 100,000 levels deep, without a session: 400 and -32700",
                 "[http]") {
  // It overflowed the connection thread's stack and took the whole server down.
  std::string deep = std::string(100'000, '[') + std::string(100'000, ']');
  std::string body = R"({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",)"
                     R"("capabilities":{},"clientInfo":{"name":)" + deep + R"(,"version":"1"}}})";
  HttpReply reply = http_call(port, "POST", body);
  CHECK(reply.status == 400);
  CHECK(reply.messages().at(0)["error"]["code"] == -32700);
  CHECK(reply.header("mcp-session-id").empty());
  CHECK(http_post(port, initialize_request(1)).status == 200);
}

TEST_CASE_METHOD(HttpFixture, "connections closed by their clients do not count against max_connections", "[http]") {
  // Their threads were joined once a second, so 256 quick requests in a row got 503.
  std::string session = http_open_session(port);
  for (int i = 0; i < 600; ++i) REQUIRE(http_post(port, request(i + 2, "ping"), session).status == 200);
}

TEST_CASE_METHOD(HttpFixture, "the GET stream: messages wait for it, none is sent twice, a client that left frees it",
                 "[http]") {
  std::string session = http_open_session(port);
  for (const char* uri : {"test://a", "test://item/1"})
    REQUIRE(http_post(port, request(2, "resources/subscribe", {{"uri", uri}}), session).status == 200);
  // No GET stream open: the notification waits for one.
  server.notify_resource_updated("test://a");
  std::this_thread::sleep_for(100ms);
  auto stream = std::make_unique<SseReader>(port, session);
  REQUIRE(stream->status() == 200);
  auto message = stream->next(2s);
  REQUIRE(message);
  CHECK((*message)["params"]["uri"] == "test://a");
  CHECK_FALSE(stream->next(200ms));
  // The client goes away; the server frees the stream at once (it waited for a
  // write to fail, up to sse_keepalive, answering 409 to the client's new GET meanwhile).
  stream.reset();
  server.notify_resource_updated("test://item/1");
  auto left = std::chrono::steady_clock::now();
  for (;;) {
    stream = std::make_unique<SseReader>(port, session);
    if (stream->status() != 409 || std::chrono::steady_clock::now() - left > 5s) break;
    std::this_thread::sleep_for(20ms);
  }
  REQUIRE(stream->status() == 200);
  CHECK(std::chrono::steady_clock::now() - left < 2s);
  // A new GET gets what came since the last one, not what that one was sent.
  message = stream->next(2s);
  REQUIRE(message);
  CHECK((*message)["params"]["uri"] == "test://item/1");
  CHECK_FALSE(stream->next(300ms));
}
