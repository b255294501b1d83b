// libFuzzer harness: the Streamable HTTP transport (server/http.h) as a client
// on the network meets it. The real HttpServer, serving vramscope's registry
// over examples/traces/leak/trace.db, listens on 127.0.0.1 (port 0: a free
// one), started once per process. Each input is sent as raw bytes on a new
// loopback connection, the writing side is then closed, and the reply is read
// until the server closes or 1 s passes. In the input, "@PORT@" becomes the
// bound port (so a Host header can pass the DNS-rebinding check) and
// "@SESSION@" the id of a session the harness opened (so requests reach the
// dispatcher). After each input a well-formed POST of a ping on another
// session, which the input cannot name, must get 200 and the ping's result.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "server/http.h"
#include "server/protocol.h"
#include "server/server.h"
#include "tests/fuzz/fuzz_support.h"

using namespace vs;
using json = nlohmann::json;

namespace {

struct Served {
  mcp::Server* server;
  mcp::HttpServer* http;
  uint16_t port;
  std::string fuzz_session;   // "@SESSION@" in inputs
  std::string check_session;  // the liveness check's own
};

// Sends `request` on a new connection, closes the writing side, and returns
// what came back before the server closed or `timeout` passed.
std::string exchange(uint16_t port, const std::string& request, std::chrono::milliseconds timeout) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fuzz::fail("socket:", std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    ::close(fd);
    fuzz::fail("connecting to the server failed:", std::strerror(e));
  }
  timeval tv{.tv_sec = static_cast<time_t>(timeout.count() / 1000),
             .tv_usec = static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  // The server may answer and close before reading everything (413, 431): a failed send is fine.
  for (size_t sent = 0; sent < request.size();) {
    ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  std::string reply;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[16384];
  while (std::chrono::steady_clock::now() < deadline) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;  // closed, reset or timed out
    reply.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return reply;
}

std::string post(uint16_t port, const std::string& body, const std::string& session) {
  std::string request = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                        "\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
                        "Connection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  if (!session.empty()) request += "Mcp-Session-Id: " + session + "\r\n";
  return exchange(port, request + "\r\n" + body, std::chrono::seconds(10));
}

int status_of(const std::string& reply) {
  if (reply.rfind("HTTP/1.1 ", 0) != 0 || reply.size() < 12) return 0;
  return std::atoi(reply.substr(9, 3).c_str());
}

// A new session's id; "" when the server refused it with 503 (its session limit: the
// sessions that inputs opened), a well-formed refusal with Retry-After.
std::string open_session(uint16_t port) {
  std::string reply = post(port,
                           R"({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25",)"
                           R"("capabilities":{},"clientInfo":{"name":"fuzz","version":"1"}}})",
                           "");
  if (status_of(reply) == 503 && reply.find("Retry-After:") != std::string::npos) return "";
  if (status_of(reply) != 200) fuzz::fail("initialize was not answered 200:", reply.substr(0, 2000));
  std::string lower;
  for (char c : reply) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  auto at = lower.find("\r\nmcp-session-id:");
  if (at == std::string::npos) fuzz::fail("initialize gave no Mcp-Session-Id:", reply.substr(0, 2000));
  at += std::strlen("\r\nmcp-session-id:");
  auto end = reply.find("\r\n", at);
  std::string id = reply.substr(at, end - at);
  id.erase(0, id.find_first_not_of(' '));
  if (status_of(post(port, R"({"jsonrpc":"2.0","method":"notifications/initialized"})", id)) != 202)
    fuzz::fail("notifications/initialized was not answered 202");
  return id;
}

Served& served() {
  static Served s = [] {
    fuzz::quiet_logs();
    const std::string db = std::string(VS_EXAMPLES_DIR) + "/traces/leak/trace.db";
    auto* server = new mcp::Server({.name = "vramscope", .title = "vramscope", .version = "fuzz"},
                                   fuzz::vramscope_registry(db), mcp::ServerOptions{.worker_threads = 4});
    // The defaults, except a session idle timeout short enough that the
    // sessions inputs open (64 at most) free their places while fuzzing.
    auto* http = new mcp::HttpServer(*server, mcp::HttpOptions{.session_idle_timeout = std::chrono::seconds(20)});
    auto port = http->start();
    if (!port) fuzz::fail("HttpServer::start:", port.error().message);
    Served served{server, http, *port, open_session(*port), open_session(*port)};
    if (served.fuzz_session.empty() || served.check_session.empty()) fuzz::fail("a fresh server refused a session");
    return served;
  }();
  return s;
}

void replace_all(std::string& text, const std::string& from, const std::string& to) {
  for (size_t at = 0; (at = text.find(from, at)) != std::string::npos; at += to.size()) text.replace(at, from.size(), to);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Served& s = served();
  std::string input(reinterpret_cast<const char*>(data), size);
  replace_all(input, "@PORT@", std::to_string(s.port));
  replace_all(input, "@SESSION@", s.fuzz_session);
  exchange(s.port, input, std::chrono::seconds(1));

  // The server goes on: a well-formed request on the check session is answered.
  std::string reply = post(s.port, R"({"jsonrpc":"2.0","id":"alive","method":"ping"})", s.check_session);
  if (status_of(reply) == 404) {  // idle for longer than the session timeout (a slow input): a new one
    s.check_session = open_session(s.port);
    if (s.check_session.empty()) fuzz::fail("the check session expired and the server refused a new one");
    reply = post(s.port, R"({"jsonrpc":"2.0","id":"alive","method":"ping"})", s.check_session);
  }
  if (status_of(reply) != 200 || reply.find(R"("id":"alive")") == std::string::npos ||
      reply.find(R"("result")") == std::string::npos)
    fuzz::fail("the ping after the input was not answered; the server sent:", reply.substr(0, 2000));
  // An input that ended the fuzz session (DELETE) or outlived it: the next ones get a live one
  // (or keep the old id while the server is full of sessions that inputs opened).
  if (input.find("DELETE") != std::string::npos || status_of(post(s.port, R"({"jsonrpc":"2.0","id":1,"method":"ping"})",
                                                                   s.fuzz_session)) == 404)
    if (std::string id = open_session(s.port); !id.empty()) s.fuzz_session = id;
  return 0;
}
