// Clients for the protocol tests: a peer on real pipes running run_stdio, and
// a blocking HTTP/1.1 client on a real socket. Plus the small registry both
// test files serve.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "server/server.h"

namespace vs::mcp::test {

// What the tools of test_registry() observed, for assertions.
struct Observed {
  std::atomic<bool> slow_saw_cancel{false};
  std::atomic<bool> slow_started{false};
};

// Tools: echo (returns its arguments as structuredContent), slow (runs up to
// `ms` milliseconds, progress every 20 ms, stops when cancelled), logs (logs
// at info and error), tool_0..tool_4 (for pagination). Prompt: greet (name
// required, completed from a list). Resources: test://a, template
// test://item/{id} (only ids of digits exist).
Registry test_registry(std::shared_ptr<Observed> observed);
ServerOptions test_options();  // page size 2

json request(int id, const std::string& method, json params = json::object());
json notification(const std::string& method, json params = json::object());
json initialize_request(int id, const std::string& version = "2025-11-25");

// run_stdio on a pair of pipes, in a thread.
class StdioPeer {
 public:
  explicit StdioPeer(Server& server);
  ~StdioPeer();  // closes stdin (EOF) and joins
  void send(const json& message) { send_line(to_wire(message)); }
  void send_line(const std::string& line);
  // The next line from the server, parsed; nullopt after `timeout`.
  std::optional<json> next(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Reads until the response with `id` (other messages are kept in skipped()).
  std::optional<json> response_to(const json& id, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  const std::vector<json>& skipped() const { return skipped_; }
  void close_input();
  // Waits until run_stdio returned; its status.
  bool finished(std::chrono::milliseconds timeout);

 private:
  int to_server_[2];
  int from_server_[2];
  std::string pending_;
  std::vector<json> skipped_;
  std::thread thread_;
  std::atomic<bool> done_{false};
};

struct HttpReply {
  int status = 0;
  std::map<std::string, std::string> headers;  // lowercase names
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
  // The JSON-RPC messages of the body: the body itself, or each SSE `data:`.
  std::vector<json> messages() const;
};

using Headers = std::map<std::string, std::string>;
// One request on a new connection. Host and (for POST) Accept/Content-Type
// default to what a well-behaved local client sends; override or erase (value "").
HttpReply http_call(uint16_t port, const std::string& method, const std::string& body, Headers headers = {},
                    const std::string& target = "/mcp");
// POST of a JSON-RPC message on session `session`.
HttpReply http_post(uint16_t port, const json& message, const std::string& session = "", Headers headers = {});
// initialize + notifications/initialized; the session id.
std::string http_open_session(uint16_t port, const std::string& version = "2025-11-25");

}  // namespace vs::mcp::test
