// What an app serving live data needs from the MCP layer (issue 13 items 4
// and 5): resources listed at run time (a ResourceLister) with
// notifications/resources/list_changed, subscriptions whose
// notifications/resources/updated are coalesced per session and URI, both
// reaching stdio clients and HTTP clients on their GET stream, and the
// session hooks: RequestContext::session_key() and
// ServerOptions::on_session_closed, called once however a session ends.
// Real pipes and a real socket.
#include <catch2/catch.hpp>

#include <future>

#include "server/http.h"
#include "tests/mcp/mcp_test_support.h"

using namespace vs::mcp;
using namespace vs::mcp::test;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

// The resources the app has now, as its lister returns them.
struct Live {
  std::mutex mutex;
  std::vector<Resource> resources;
  std::atomic<int> lister_calls{0};
  void set(std::vector<Resource> now) {
    std::lock_guard lock(mutex);
    resources = std::move(now);
  }
};

Resource live_resource(const std::string& uri, const std::string& text) {
  return Resource{uri, "live " + uri, "", "", "text/plain",
                  [text](const std::string& read_uri, RequestContext&) -> vs::Result<json> {
                    return json::array({{{"uri", read_uri}, {"text", text}}});
                  }};
}

// test_registry() plus the tool `whoami` (its session key) and, with `live`,
// a resource lister.
Registry live_registry(std::shared_ptr<Live> live) {
  Registry registry = test_registry(std::make_shared<Observed>());
  REQUIRE(registry.add(Tool{"whoami", "", "The session's key", {{"type", "object"}}, nullptr, nullptr,
                            [](const json&, RequestContext& context) -> vs::Result<json> {
                              json result = text_result(std::to_string(context.session_key()));
                              result["structuredContent"] = {{"key", context.session_key()}};
                              return result;
                            }}));
  if (live)
    REQUIRE(registry.set_resource_lister([live] {
      ++live->lister_calls;
      std::lock_guard lock(live->mutex);
      return live->resources;
    }));
  return registry;
}

ServerOptions options_with(std::chrono::milliseconds interval) {
  ServerOptions options = test_options();
  options.notification_interval = interval;
  return options;
}

// The session ends on_session_closed saw; the callback calls back into the
// server as an app would (a trace stopped: the list changed).
struct Closed {
  std::mutex mutex;
  std::condition_variable changed;
  std::map<SessionKey, int> calls;
  std::atomic<Server*> server{nullptr};

  std::function<void(SessionKey)> callback() {
    return [this](SessionKey key) {
      if (Server* s = server.load()) {
        s->notify_resource_list_changed();
        s->notify_resource_updated("test://a");
      }
      std::lock_guard lock(mutex);
      ++calls[key];
      changed.notify_all();
    };
  }
  int count(SessionKey key) {
    std::lock_guard lock(mutex);
    return calls.count(key) ? calls[key] : 0;
  }
  bool wait_for(SessionKey key, std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, timeout, [&] { return calls.count(key) > 0; });
  }
  size_t total() {
    std::lock_guard lock(mutex);
    size_t sum = 0;
    for (auto& [key, n] : calls) sum += n;
    return sum;
  }
};

// A stdio session: every message the server sends, notifications included.
struct StdioSession {
  StdioPeer peer;
  std::vector<json> notifications;  // taken from the stream while waiting for responses
  explicit StdioSession(Server& server) : peer(server) {}

  json call(int id, const std::string& method, json params = json::object()) {
    peer.send(request(id, method, std::move(params)));
    for (;;) {
      auto message = peer.next();
      REQUIRE(message);
      if (message->contains("method")) notifications.push_back(*message);
      else if ((*message)["id"] == id) return *message;
    }
  }
  json initialize() {
    json response = call(1, "initialize", initialize_request(1)["params"]);
    peer.send(notification("notifications/initialized"));
    return response;
  }
  SessionKey key(int id) { return call(id, "tools/call", {{"name", "whoami"}})["result"]["structuredContent"]["key"]; }
  // The notifications that come within `window` (besides those already taken).
  std::vector<json> collect(std::chrono::milliseconds window) {
    auto deadline = Clock::now() + window;
    std::vector<json> out = std::move(notifications);
    notifications.clear();
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) break;
      if (auto message = peer.next(left)) out.push_back(*message);
    }
    return out;
  }
};

size_t count_method(const std::vector<json>& messages, const std::string& method, const std::string& uri = "") {
  return std::count_if(messages.begin(), messages.end(), [&](const json& m) {
    return m.value("method", "") == method && (uri.empty() || m["params"].value("uri", "") == uri);
  });
}

int error_code_of(const json& response) { return response.at("error").at("code").get<int>(); }

SessionKey http_key(uint16_t port, const std::string& session, int id) {
  HttpReply reply = http_post(port, request(id, "tools/call", {{"name", "whoami"}}), session);
  REQUIRE(reply.status == 200);
  return reply.messages().at(0)["result"]["structuredContent"]["key"];
}

template <class Predicate>
bool eventually(Predicate done, std::chrono::milliseconds timeout = 5s) {
  auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

}  // namespace

TEST_CASE("resources.listChanged is advertised only with a resource lister", "[live]") {
  SECTION("without one: false, and notify_resource_list_changed sends nothing") {
    Server server({"s", "", "1", ""}, live_registry(nullptr), test_options());
    StdioSession client(server);
    json capabilities = client.initialize()["result"]["capabilities"];
    CHECK(capabilities["resources"]["listChanged"] == false);
    CHECK(capabilities["resources"]["subscribe"] == true);
    server.notify_resource_list_changed();
    CHECK(client.collect(300ms).empty());
  }
  SECTION("with one: true") {
    Server server({"s", "", "1", ""}, live_registry(std::make_shared<Live>()), test_options());
    StdioSession client(server);
    json capabilities = client.initialize()["result"]["capabilities"];
    CHECK(capabilities["resources"]["listChanged"] == true);
    CHECK(capabilities["tools"]["listChanged"] == false);
    CHECK(capabilities["prompts"]["listChanged"] == false);
  }
  SECTION("a lister is set once, and is not empty") {
    Registry registry;
    CHECK_FALSE(registry.set_resource_lister(nullptr));
    CHECK(registry.set_resource_lister([] { return std::vector<Resource>{}; }));
    CHECK_FALSE(registry.set_resource_lister([] { return std::vector<Resource>{}; }));
  }
}

TEST_CASE("listed resources follow the static ones in the lister's order, page, and read and subscribe like them",
          "[live]") {
  auto live = std::make_shared<Live>();
  Resource no_reader = live_resource("test://item/7", "");
  no_reader.reader = nullptr;  // read by the template test://item/{id}
  Resource orphan = live_resource("test://orphan", "");
  orphan.reader = nullptr;  // nothing reads it: left out
  live->set({live_resource("test://live/1", "live one"), no_reader, orphan,
             live_resource("test://a", "a duplicate of the static one"), live_resource("test://live/1", "again"),
             live_resource("test://live/2", "live two")});
  Server server({"s", "", "1", ""}, live_registry(live), test_options());  // 2 per page
  StdioSession client(server);
  client.initialize();

  std::vector<std::string> uris;
  json params = json::object();
  std::optional<json> second_page_cursor;
  for (int id = 2; id < 10; ++id) {
    json result = client.call(id, "resources/list", params)["result"];
    for (const json& resource : result["resources"]) uris.push_back(resource["uri"]);
    if (!result.contains("nextCursor")) break;
    params = {{"cursor", result["nextCursor"]}};
    if (!second_page_cursor) second_page_cursor = result["nextCursor"];
  }
  CHECK(uris == std::vector<std::string>{"test://a", "test://live/1", "test://item/7", "test://live/2"});

  CHECK(client.call(20, "resources/read", {{"uri", "test://live/1"}})["result"]["contents"][0]["text"] == "live one");
  CHECK(client.call(21, "resources/read", {{"uri", "test://item/7"}})["result"]["contents"][0]["text"] == "item 7");
  CHECK(client.call(22, "resources/read", {{"uri", "test://a"}})["result"]["contents"][0]["text"] == "content of a");
  json orphan_read = client.call(23, "resources/read", {{"uri", "test://orphan"}});
  CHECK(error_code_of(orphan_read) == -32002);
  CHECK(orphan_read["error"]["data"]["uri"] == "test://orphan");

  CHECK(client.call(30, "resources/subscribe", {{"uri", "test://live/2"}})["result"] == json::object());
  CHECK(error_code_of(client.call(31, "resources/subscribe", {{"uri", "test://orphan"}})) == -32002);

  // The list shrank since the cursor was made: an empty last page, not an error.
  REQUIRE(second_page_cursor);
  live->set({});
  json after_shrink = client.call(40, "resources/list", {{"cursor", *second_page_cursor}});
  REQUIRE(after_shrink.contains("result"));
  CHECK(after_shrink["result"]["resources"].empty());
  CHECK_FALSE(after_shrink["result"].contains("nextCursor"));
  // Gone: no longer readable through its own reader.
  CHECK(error_code_of(client.call(41, "resources/read", {{"uri", "test://live/1"}})) == -32002);
  CHECK(error_code_of(client.call(42, "resources/subscribe", {{"uri", "test://live/1"}})) == -32002);
}

TEST_CASE("resources/subscribe: an unknown URI is refused with -32002, a template's is accepted; a limit per session",
          "[live]") {
  ServerOptions options = test_options();
  options.max_subscriptions_per_session = 2;
  Server server({"s", "", "1", ""}, live_registry(nullptr), options);
  StdioSession client(server);
  client.initialize();
  json unknown = client.call(2, "resources/subscribe", {{"uri", "test://nope"}});
  CHECK(error_code_of(unknown) == -32002);
  CHECK(unknown["error"]["data"]["uri"] == "test://nope");
  CHECK_THAT(unknown["error"]["message"].get<std::string>(), Catch::Contains("test://nope"));
  server.notify_resource_updated("test://nope");
  CHECK(client.collect(200ms).empty());

  CHECK(client.call(3, "resources/subscribe", {{"uri", "test://item/5"}})["result"] == json::object());
  CHECK(client.call(4, "resources/subscribe", {{"uri", "test://a"}})["result"] == json::object());
  CHECK(client.call(5, "resources/subscribe", {{"uri", "test://a"}})["result"] == json::object());  // again: no new one
  json over = client.call(6, "resources/subscribe", {{"uri", "test://item/6"}});
  CHECK(error_code_of(over) == -32000);
  CHECK_THAT(over["error"]["message"].get<std::string>(), Catch::Contains("at most 2"));
  CHECK(client.call(7, "resources/unsubscribe", {{"uri", "test://a"}})["result"] == json::object());
  CHECK(client.call(8, "resources/subscribe", {{"uri", "test://item/6"}})["result"] == json::object());
  server.notify_resource_updated("test://item/5");
  auto updated = client.collect(500ms);
  REQUIRE(updated.size() == 1);
  CHECK(updated[0] == json({{"jsonrpc", "2.0"},
                            {"method", "notifications/resources/updated"},
                            {"params", {{"uri", "test://item/5"}}}}));
}

TEST_CASE("notifications/resources/list_changed reaches a stdio client", "[live][stdio]") {
  auto live = std::make_shared<Live>();
  Server server({"s", "", "1", ""}, live_registry(live), test_options());
  StdioSession client(server);
  StdioSession uninitialized(server);
  client.initialize();
  CHECK(client.call(2, "resources/list")["result"]["resources"].size() == 1);
  live->set({live_resource("test://live/1", "one")});
  server.notify_resource_list_changed();
  auto messages = client.collect(500ms);
  REQUIRE(messages.size() == 1);
  CHECK(messages[0] == json({{"jsonrpc", "2.0"}, {"method", "notifications/resources/list_changed"}, {"params", json::object()}}));
  CHECK(client.call(3, "resources/list")["result"]["resources"][1]["uri"] == "test://live/1");
  CHECK(uninitialized.collect(100ms).empty());  // only initialized sessions are told
}

TEST_CASE("over HTTP, list_changed and updated reach the session's GET stream, or wait for one", "[live][http]") {
  auto live = std::make_shared<Live>();
  Server server({"s", "", "1", ""}, live_registry(live), options_with(300ms));
  HttpOptions http_options;
  http_options.sse_keepalive = std::chrono::seconds(1);
  HttpServer http(server, http_options);
  uint16_t port = http.start().value();
  std::string with_stream = http_open_session(port);
  std::string without_stream = http_open_session(port);
  REQUIRE(http_post(port, request(2, "resources/subscribe", {{"uri", "test://a"}}), with_stream).status == 200);

  SseReader stream(port, with_stream);
  REQUIRE(stream.status() == 200);
  server.notify_resource_list_changed();
  auto message = stream.next(2s);
  REQUIRE(message);
  CHECK((*message)["method"] == "notifications/resources/list_changed");
  server.notify_resource_updated("test://a");
  message = stream.next(2s);
  REQUIRE(message);
  CHECK((*message)["method"] == "notifications/resources/updated");
  CHECK((*message)["params"]["uri"] == "test://a");
  CHECK_FALSE(stream.next(200ms));  // nothing else: the other session subscribed to nothing

  // The session without a GET stream gets what was sent meanwhile when it opens one...
  {
    SseReader later(port, without_stream);
    REQUIRE(later.status() == 200);
    message = later.next(2s);
    REQUIRE(message);
    CHECK((*message)["method"] == "notifications/resources/list_changed");
    CHECK_FALSE(later.next(200ms));
  }  // the client goes away
  // ...and a new GET (no Last-Event-ID) is not sent it again, only what is new.
  std::this_thread::sleep_for(350ms);  // past the interval: sent at once
  server.notify_resource_list_changed();
  std::unique_ptr<SseReader> again;
  // The server notices the closed stream within a fraction of a second (until then: 409).
  REQUIRE(eventually([&] {
    again = std::make_unique<SseReader>(port, without_stream);
    return again->status() == 200;
  }));
  message = again->next(2s);
  REQUIRE(message);
  CHECK((*message)["method"] == "notifications/resources/list_changed");
  CHECK_FALSE(again->next(300ms));
}

TEST_CASE("resources/updated is coalesced per session and URI: one per interval, the last change never lost",
          "[live][stdio]") {
  Server server({"s", "", "1", ""}, live_registry(nullptr), test_options());  // the default interval: 1 s
  REQUIRE(server.options().notification_interval == 1s);
  StdioSession client(server);
  StdioSession other(server);
  client.initialize();
  other.initialize();
  client.call(2, "resources/subscribe", {{"uri", "test://a"}});
  client.call(3, "resources/subscribe", {{"uri", "test://item/5"}});
  other.call(2, "resources/subscribe", {{"uri", "test://a"}});

  // 100 changes in 200 ms.
  auto start = Clock::now();
  server.notify_resource_updated("test://item/5");
  for (int i = 0; i < 100; ++i) {
    server.notify_resource_updated("test://a");
    std::this_thread::sleep_for(2ms);
  }
  auto last_call = Clock::now();
  REQUIRE(last_call - start < 900ms);  // else the machine is too slow for the test to mean anything
  std::vector<std::pair<Clock::time_point, json>> received;
  auto deadline = start + 1800ms;
  while (Clock::now() < deadline)
    if (auto message = client.peer.next(
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()) + 1ms))
      received.emplace_back(Clock::now(), *message);
  std::vector<Clock::time_point> for_a;
  size_t for_item = 0;
  for (auto& [at, message] : received) {
    REQUIRE(message["method"] == "notifications/resources/updated");
    if (message["params"]["uri"] == "test://a") for_a.push_back(at);
    else if (message["params"]["uri"] == "test://item/5") ++for_item;
  }
  CHECK(for_item == 1);
  // The first at once, the last change at the interval's end.
  REQUIRE(for_a.size() == 2);
  CHECK(for_a[0] - start < 500ms);
  CHECK(for_a[1] > last_call);
  CHECK(for_a[1] - for_a[0] >= 500ms);
  // Every session is coalesced on its own.
  CHECK(count_method(other.collect(200ms), "notifications/resources/updated", "test://a") == 2);

  // A change long after the last notification is sent at once.
  auto later = Clock::now();
  server.notify_resource_updated("test://a");
  auto message = client.peer.next(1s);
  REQUIRE(message);
  CHECK((*message)["params"]["uri"] == "test://a");
  CHECK(Clock::now() - later < 500ms);
}

TEST_CASE("unsubscribe stops resources/updated, one still due included", "[live][stdio]") {
  Server server({"s", "", "1", ""}, live_registry(nullptr), options_with(500ms));
  StdioSession client(server);
  client.initialize();
  client.call(2, "resources/subscribe", {{"uri", "test://a"}});
  server.notify_resource_updated("test://a");
  auto first = client.peer.next(1s);
  REQUIRE(first);
  CHECK((*first)["method"] == "notifications/resources/updated");
  server.notify_resource_updated("test://a");  // due at the interval's end
  client.call(3, "resources/unsubscribe", {{"uri", "test://a"}});
  server.notify_resource_updated("test://a");
  CHECK(count_method(client.collect(900ms), "notifications/resources/updated") == 0);
}

TEST_CASE("session_key: the same for every request of a session, different for every session", "[live]") {
  Server server({"s", "", "1", ""}, live_registry(nullptr), test_options());
  StdioSession a(server);
  StdioSession b(server);
  a.initialize();
  b.initialize();
  SessionKey key_a = a.key(2);
  CHECK(a.key(3) == key_a);
  SessionKey key_b = b.key(2);
  CHECK(key_b != key_a);

  HttpServer http(server, HttpOptions{});
  uint16_t port = http.start().value();
  std::string c = http_open_session(port);
  std::string d = http_open_session(port);
  SessionKey key_c = http_key(port, c, 2);
  CHECK(http_key(port, c, 3) == key_c);
  SessionKey key_d = http_key(port, d, 2);
  CHECK(std::set<SessionKey>{key_a, key_b, key_c, key_d}.size() == 4);
}

TEST_CASE("on_session_closed is called once per session, however it ends, and may call back into the server",
          "[live]") {
  Closed closed;
  auto live = std::make_shared<Live>();
  ServerOptions options = test_options();
  options.on_session_closed = closed.callback();
  auto server = std::make_unique<Server>(ServerInfo{"s", "", "1", ""}, live_registry(live), options);
  closed.server = server.get();
  std::vector<SessionKey> keys;

  SECTION("stdio: end of input") {
    auto client = std::make_unique<StdioSession>(*server);
    client->initialize();
    client->call(2, "resources/subscribe", {{"uri", "test://a"}});
    keys.push_back(client->key(3));
    CHECK(closed.count(keys[0]) == 0);
    client->peer.close_input();
    REQUIRE(client->peer.finished(5s));
    CHECK(closed.count(keys[0]) == 1);
    client.reset();
  }
  SECTION("stdio: end of input while a call runs") {
    auto client = std::make_unique<StdioSession>(*server);
    client->initialize();
    keys.push_back(client->key(2));
    client->peer.send(request(3, "tools/call", {{"name", "slow"}, {"arguments", {{"ms", 300}}}}));
    client->peer.close_input();
    REQUIRE(closed.wait_for(keys[0]));
    REQUIRE(client->peer.finished(5s));
    client.reset();
  }

  SECTION("HTTP") {
    HttpOptions http_options;
    std::string how;
    SECTION("DELETE") { how = "delete"; }
    SECTION("idle expiry") {
      how = "expiry";
      http_options.session_idle_timeout = 300ms;
    }
    SECTION("eviction at max_sessions") {
      how = "eviction";
      http_options.max_sessions = 1;
      http_options.session_reclaim_after = 0ms;
    }
    SECTION("HttpServer::stop") { how = "stop"; }
    SECTION("destroying the HttpServer, then the Server") { how = "destroy"; }
    auto http = std::make_unique<HttpServer>(*server, http_options);
    uint16_t port = http->start().value();
    std::string session = http_open_session(port);
    REQUIRE(http_post(port, request(2, "resources/subscribe", {{"uri", "test://a"}}), session).status == 200);
    keys.push_back(http_key(port, session, 3));
    if (how == "delete") {
      CHECK(http_call(port, "DELETE", "", {{"Mcp-Session-Id", session}}).status == 200);
      CHECK(closed.count(keys[0]) == 1);
    } else if (how == "expiry") {
      REQUIRE(closed.wait_for(keys[0], 5s));
      CHECK(http_post(port, request(4, "ping"), session).status == 404);
    } else if (how == "eviction") {
      std::this_thread::sleep_for(50ms);  // the whoami POST is answered: the session is idle
      std::string newer = http_open_session(port);
      CHECK(closed.count(keys[0]) == 1);
      keys.push_back(http_key(port, newer, 2));
    } else if (how == "stop") {
      http->stop();
      CHECK(closed.count(keys[0]) == 1);
    }
    // An initialize that fails opens a session that ends at once.
    if (how != "eviction" && how != "stop") {
      size_t before = closed.total();
      HttpReply refused = http_post(port, request(1, "initialize", {{"protocolVersion", 5}}));
      CHECK(refused.messages().at(0)["error"]["code"] == -32602);
      CHECK(closed.total() == before + 1);
    }
    http.reset();
  }

  SECTION("Server destruction ends the sessions still open, closed or dropped by their transport or not") {
    auto kept = server->open_session(nullptr);
    auto closed_twice = server->open_session(nullptr);
    keys = {kept->key(), closed_twice->key(), server->open_session(nullptr)->key()};  // the third is dropped at once
    server->close_session(*closed_twice);
    server->close_session(*closed_twice);
    CHECK(closed.count(keys[1]) == 1);
    CHECK(closed.count(keys[0]) == 0);
  }

  server.reset();  // sessions still open end now
  for (SessionKey key : keys) CHECK(closed.count(key) == 1);
  std::lock_guard lock(closed.mutex);
  for (auto& [key, calls] : closed.calls) CHECK(calls == 1);
}
