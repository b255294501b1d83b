// The HTTP transport under abuse (issue 11, defects 6, 12 and 16): header and
// body deadlines that a trickle does not reset, slow connections that neither
// hold threads nor lock clients out (with and without a token), idle sessions
// that expire or make room, 503 + Retry-After only when needed, weak tokens
// refused, localhost origins on any bound address. Real sockets, small
// timeouts (1 s at most) so that the suite stays quick.
#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <future>

#include "server/http.h"
#include "tests/mcp/mcp_test_support.h"

using namespace vs::mcp;
using namespace vs::mcp::test;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;
const std::string kToken = "0123456789abcdef0123456789abcdef";

struct Fixture {
  std::shared_ptr<Observed> observed = std::make_shared<Observed>();
  Server server;
  std::unique_ptr<HttpServer> http;
  uint16_t port = 0;

  explicit Fixture(HttpOptions options = {}, ServerOptions server_options = test_options())
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

template <class Predicate>
bool wait_until(Predicate done, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

long ms_since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

int raw_connect(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Whether the server closed `fd` (end of stream or reset) within `timeout`.
bool closed_by_server(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
  char byte;
  ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN) || (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

// Sends `text` one byte every `interval` until the server closes the
// connection or `limit` passes; how long the connection lived.
std::optional<long> trickle(int fd, const std::string& text, std::chrono::milliseconds interval,
                            std::chrono::milliseconds limit) {
  auto start = Clock::now();
  for (size_t i = 0; Clock::now() - start < limit; ++i) {
    if (::send(fd, &text[i % text.size()], 1, MSG_NOSIGNAL) != 1) return ms_since(start);
    if (closed_by_server(fd, interval)) return ms_since(start);
  }
  return std::nullopt;
}

std::string post_header(uint16_t port, size_t content_length) {
  return "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
         "\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(content_length) + "\r\n\r\n";
}

// `count` slow-loris connections: each sends a header one byte at a time
// (every `interval`) and never finishes it; one the server closes is opened
// again at once, as an attacker would.
class SlowLoris {
 public:
  SlowLoris(uint16_t port, size_t count, std::chrono::milliseconds interval) : port_(port) {
    for (size_t i = 0; i < count; ++i) fds_.push_back(open_one());
    thread_ = std::thread([this, interval] {
      auto next_byte = Clock::now() + interval;
      while (!stop_) {
        std::vector<pollfd> polls;
        for (int fd : fds_) polls.push_back({fd, POLLIN | POLLRDHUP, 0});
        ::poll(polls.data(), polls.size(), 20);
        for (size_t i = 0; i < fds_.size(); ++i)
          if (fds_[i] < 0 || (polls[i].revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR))) {
            if (fds_[i] >= 0) ::close(fds_[i]);
            ++reconnects_;
            fds_[i] = open_one();
          }
        if (Clock::now() >= next_byte) {
          for (int fd : fds_)
            if (fd >= 0) ::send(fd, "X", 1, MSG_NOSIGNAL);
          next_byte += interval;
        }
      }
    });
  }
  ~SlowLoris() {
    stop_ = true;
    thread_.join();
    for (int fd : fds_)
      if (fd >= 0) ::close(fd);
  }
  size_t reconnects() const { return reconnects_; }

 private:
  int open_one() {
    int fd = raw_connect(port_);
    if (fd >= 0) ::send(fd, "POST /mcp HTTP/1.1\r\nHo", 22, MSG_NOSIGNAL);
    return fd;
  }
  uint16_t port_;
  std::vector<int> fds_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> reconnects_{0};
  std::thread thread_;
};

void raise_descriptor_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace

TEST_CASE("a header trickled one byte at a time is cut at the header deadline", "[http][abuse]") {
  // Each byte reset the 60 s per-read timeout: such connections lived for as long as they trickled.
  Fixture fixture(with([](HttpOptions& o) { o.header_timeout = 1000ms; }));
  int fd = raw_connect(fixture.port);
  REQUIRE(fd >= 0);
  auto lived = trickle(fd, post_header(fixture.port, 10), 100ms, 4s);
  ::close(fd);
  REQUIRE(lived);
  CHECK(*lived >= 900);
  CHECK(*lived < 1800);
  CHECK(fixture.http->counters().header_timeouts == 1);
  // A connection that sends nothing at all is cut too.
  fd = raw_connect(fixture.port);
  auto start = Clock::now();
  CHECK(closed_by_server(fd, 3s));
  CHECK(ms_since(start) < 1800);
  ::close(fd);
}

TEST_CASE("a body trickled one byte at a time is cut at the body deadline", "[http][abuse]") {
  Fixture fixture(with([](HttpOptions& o) {
    o.header_timeout = 1000ms;
    o.body_timeout = 1000ms;
  }));
  int fd = raw_connect(fixture.port);
  REQUIRE(fd >= 0);
  std::string header = post_header(fixture.port, 500);
  REQUIRE(::send(fd, header.data(), header.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(header.size()));
  auto lived = trickle(fd, " ", 100ms, 4s);
  ::close(fd);
  REQUIRE(lived);
  CHECK(*lived >= 900);
  CHECK(*lived < 1800);
  CHECK(fixture.http->counters().body_timeouts == 1);
}

TEST_CASE("300 slow-loris connections lock out no client, with or without a token", "[http][abuse]") {
  // 300 connections sending their header at 1 byte per 100 ms, reopened as
  // soon as they are closed: every thread (max_connections, 256) was taken and
  // every request, token or not, got 503 for as long as they went on.
  raise_descriptor_limit();
  for (std::string token : {std::string(), kToken}) {
    DYNAMIC_SECTION((token.empty() ? "no token" : "with a token")) {
      Fixture fixture(with([&](HttpOptions& o) {
        o.bearer_token = token;
        o.header_timeout = 1000ms;
      }));
      Headers headers;
      if (!token.empty()) headers["Authorization"] = "Bearer " + token;
      SlowLoris attack(fixture.port, 300, 100ms);
      REQUIRE(wait_until([&] { return fixture.http->counters().accepted >= 300; }, 5s));
      auto start = Clock::now();
      std::string session;
      {
        HttpReply init = http_post(fixture.port, initialize_request(1), "", headers);
        REQUIRE(init.status == 200);
        session = init.header("mcp-session-id");
      }
      long worst = 0;
      for (int i = 0; i < 20; ++i) {
        auto sent = Clock::now();
        HttpReply reply = http_post(fixture.port, request(i + 2, "ping"), session, headers);
        worst = std::max(worst, ms_since(sent));
        REQUIRE(reply.status == 200);
        CHECK(reply.messages().at(0).contains("result"));
      }
      INFO("21 requests in " << ms_since(start) << " ms, the slowest " << worst << " ms; attackers reconnected "
                             << attack.reconnects() << " times");
      CHECK(worst < 500);
      auto counters = fixture.http->counters();
      CHECK(counters.evicted > 0);        // over 64 per address: the oldest made room
      CHECK(counters.pending <= 64 + 1);  // the attackers hold one address's share at most
      CHECK(counters.refused_busy == 0);
    }
  }
}

TEST_CASE("with a token, clients without it get 401 from the I/O thread and never a session", "[http][abuse]") {
  Fixture fixture(with([](HttpOptions& o) {
    o.bearer_token = kToken;
    o.max_sessions = 2;
  }));
  for (int i = 0; i < 20; ++i) CHECK(http_post(fixture.port, initialize_request(1)).status == 401);
  CHECK(fixture.http->counters().sessions == 0);
  Headers token = {{"Authorization", "Bearer " + kToken}};
  CHECK(http_post(fixture.port, initialize_request(1), "", token).status == 200);
  CHECK(http_post(fixture.port, initialize_request(1), "", token).status == 200);
}

TEST_CASE("idle sessions end after session_idle_timeout", "[http][abuse]") {
  // The default was 30 minutes, checked once a second: 64 abandoned sessions locked new clients out that long.
  CHECK(HttpOptions{}.session_idle_timeout <= std::chrono::minutes(5));
  Fixture fixture(with([](HttpOptions& o) { o.session_idle_timeout = 300ms; }));
  auto opened = Clock::now();
  std::string session = http_open_session(fixture.port);
  REQUIRE(wait_until([&] { return fixture.http->counters().sessions_expired == 1; }, 3s));
  CHECK(ms_since(opened) >= 300);
  CHECK(ms_since(opened) < 1500);
  CHECK(http_post(fixture.port, request(2, "ping"), session).status == 404);
}

TEST_CASE("at max_sessions a new client takes an idle session's place; 503 + Retry-After only when all are in use",
          "[http][abuse]") {
  Fixture fixture(with([](HttpOptions& o) {
    o.max_sessions = 2;
    o.session_reclaim_after = 300ms;
  }));
  std::string a = http_open_session(fixture.port);
  std::string b = http_open_session(fixture.port);
  // Both used just now: refused, told when to come back.
  HttpReply refused = http_post(fixture.port, initialize_request(1));
  CHECK(refused.status == 503);
  CHECK(refused.header("retry-after") == "1");
  CHECK_THAT(refused.body, Catch::Contains("too many sessions (limit 2)") && Catch::Contains("retry after 1 s"));
  // A idle for longer than session_reclaim_after, B used: the new client takes A's place.
  std::this_thread::sleep_for(400ms);
  CHECK(http_post(fixture.port, request(2, "ping"), b).status == 200);
  HttpReply admitted = http_post(fixture.port, initialize_request(1));
  CHECK(admitted.status == 200);
  CHECK(http_post(fixture.port, request(3, "ping"), a).status == 404);
  CHECK(http_post(fixture.port, request(4, "ping"), b).status == 200);
  CHECK(fixture.http->counters().sessions_reclaimed == 1);
}

TEST_CASE("a session with a request running is never reclaimed", "[http][abuse]") {
  Fixture fixture(with([](HttpOptions& o) {
    o.max_sessions = 1;
    o.session_reclaim_after = 100ms;
  }));
  std::string busy = http_open_session(fixture.port);
  auto slow = std::async(std::launch::async, [&] {
    return http_post(fixture.port, request(2, "tools/call", {{"name", "slow"}, {"arguments", {{"ms", 10'000}}}}), busy);
  });
  REQUIRE(wait_until([&] { return fixture.observed->slow_running == 1; }, 3s));
  std::this_thread::sleep_for(200ms);  // longer than session_reclaim_after
  HttpReply refused = http_post(fixture.port, initialize_request(1));
  CHECK(refused.status == 503);
  CHECK_FALSE(refused.header("retry-after").empty());
  CHECK(http_post(fixture.port, notification("notifications/cancelled", {{"requestId", 2}}), busy).status == 202);
  REQUIRE(slow.wait_for(3s) == std::future_status::ready);
}

TEST_CASE("over max_connections a request gets 503 with Retry-After", "[http][abuse]") {
  Fixture fixture(with([](HttpOptions& o) { o.max_connections = 2; }));
  std::string session = http_open_session(fixture.port);
  std::vector<std::future<HttpReply>> slow;
  for (int id : {2, 3})
    slow.push_back(std::async(std::launch::async, [&, id] {
      return http_post(fixture.port, request(id, "tools/call", {{"name", "slow"}, {"arguments", {{"ms", 10'000}}}}),
                       session);
    }));
  REQUIRE(wait_until([&] { return fixture.observed->slow_running == 2; }, 3s));
  HttpReply busy = http_post(fixture.port, request(4, "ping"), session);
  CHECK(busy.status == 503);
  CHECK(busy.header("retry-after") == "1");
  CHECK_THAT(busy.body, Catch::Contains("too many requests in progress (limit 2)"));
  fixture.http->stop();  // cancels the slow calls
  for (auto& call : slow) CHECK(call.wait_for(3s) == std::future_status::ready);
}

TEST_CASE("a kept-alive connection serves request after request, and is closed after keepalive_timeout",
          "[http][abuse]") {
  namespace beast = boost::beast;
  namespace http = beast::http;
  Fixture fixture(with([](HttpOptions& o) { o.keepalive_timeout = 300ms; }));
  std::string session = http_open_session(fixture.port);
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket socket(io);
  socket.connect({boost::asio::ip::make_address("127.0.0.1"), fixture.port});
  beast::flat_buffer buffer;
  for (int id = 2; id < 7; ++id) {
    http::request<http::string_body> post{http::verb::post, "/mcp", 11};
    post.set(http::field::host, "127.0.0.1:" + std::to_string(fixture.port));
    post.set(http::field::accept, "application/json, text/event-stream");
    post.set(http::field::content_type, "application/json");
    post.set("Mcp-Session-Id", session);
    post.body() = to_wire(request(id, "ping"));
    post.prepare_payload();
    http::write(socket, post);
    http::response<http::string_body> response;
    http::read(socket, buffer, response);
    CHECK(response.result_int() == 200);
    CHECK(json::parse(response.body())["id"] == id);
  }
  auto idle_since = Clock::now();
  CHECK(closed_by_server(socket.native_handle(), 3s));
  CHECK(ms_since(idle_since) >= 250);
}

TEST_CASE("a weak bearer token is refused at start", "[http][abuse]") {
  // A 1-character token was accepted.
  Server server{{"s", "", "1", ""}, Registry{}, {}};
  for (std::string weak : {"x", "s3cret", "0123456789abcde", "aaaaaaaaaaaaaaaaaaaaaaaa", "abababababababababab",
                           "0123456789abcdef 0123456789"}) {
    HttpServer http(server, with([&](HttpOptions& o) { o.bearer_token = weak; }));
    auto started = http.start();
    REQUIRE_FALSE(started);
    INFO(weak);
    CHECK_THAT(started.error().message, Catch::Contains("bearer token"));
  }
  auto reason = weak_token_reason("x");
  REQUIRE(reason);
  CHECK_THAT(*reason, Catch::Contains("at least 16"));
  HttpServer strong(server, with([](HttpOptions& o) { o.bearer_token = kToken; }));
  CHECK(strong.start());
}

TEST_CASE("on 0.0.0.0, Origin http://localhost:PORT is accepted, as --help says", "[http][abuse]") {
  // It got 403: the localhost origins were allowed on a loopback address only.
  Fixture fixture(with([](HttpOptions& o) {
    o.host = "0.0.0.0";
    o.bearer_token = kToken;
  }));
  std::string body = to_wire(initialize_request(1));
  std::string port = std::to_string(fixture.port);
  Headers token = {{"Authorization", "Bearer " + kToken}};
  for (std::string origin : {"http://localhost:" + port, "http://127.0.0.1:" + port, "http://[::1]:" + port}) {
    Headers headers = token;
    headers["Origin"] = origin;
    INFO(origin);
    CHECK(http_call(fixture.port, "POST", body, headers).status == 200);
  }
  Headers evil = token;
  evil["Origin"] = "http://evil.example.com";
  CHECK(http_call(fixture.port, "POST", body, evil).status == 403);
  evil["Origin"] = "http://localhost:1";  // another port is another origin
  CHECK(http_call(fixture.port, "POST", body, evil).status == 403);
}

TEST_CASE("the token is checked on every request of a kept-alive connection", "[http][abuse]") {
  namespace beast = boost::beast;
  namespace http = beast::http;
  Fixture fixture(with([](HttpOptions& o) { o.bearer_token = kToken; }));
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket socket(io);
  socket.connect({boost::asio::ip::make_address("127.0.0.1"), fixture.port});
  beast::flat_buffer buffer;
  auto post = [&](const std::string& token) {
    http::request<http::string_body> message{http::verb::post, "/mcp", 11};
    message.set(http::field::host, "127.0.0.1:" + std::to_string(fixture.port));
    message.set(http::field::accept, "application/json, text/event-stream");
    message.set(http::field::content_type, "application/json");
    if (!token.empty()) message.set(http::field::authorization, "Bearer " + token);
    message.body() = to_wire(initialize_request(1));
    message.prepare_payload();
    http::write(socket, message);
    http::response<http::string_body> response;
    http::read(socket, buffer, response);
    return response.result_int();
  };
  CHECK(post(kToken) == 200);
  CHECK(post("") == 401);  // refused, and the connection closed
}
