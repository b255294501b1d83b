// Clients for the protocol tests: a peer on real pipes running run_stdio, and
// a blocking HTTP/1.1 client on a real socket. Plus the small registry both
// test files serve.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "server/server.h"
#include "server/stdio.h"

namespace vs::mcp::test {

// What the tools of test_registry() observed, for assertions.
struct Observed {
  std::atomic<bool> slow_saw_cancel{false};
  std::atomic<bool> slow_started{false};
  std::atomic<int> slow_runs{0};     // calls of `slow` that started
  std::atomic<int> slow_running{0};  // calls of `slow` running now
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
  // What a stop signal does to `vramscope mcp` on stdio: the input ends, its pipe still open.
  void stop_input() { input_->stop(); }
  // Waits until run_stdio returned; its status.
  bool finished(std::chrono::milliseconds timeout);

 private:
  int to_server_[2];
  std::unique_ptr<StoppableInput> input_;  // the server's end of to_server_, read as `vramscope mcp` reads stdin
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

// A GET stream of an HTTP session (its standalone stream, or with
// Last-Event-ID one being resumed), read message by message as it comes, on
// a raw socket.
class SseReader {
 public:
  SseReader(uint16_t port, const std::string& session, Headers headers = {});
  ~SseReader();
  SseReader(const SseReader&) = delete;
  SseReader& operator=(const SseReader&) = delete;
  int status() const { return status_; }  // of the response; 0 when none came
  // The next message on the stream; nullopt after `timeout` or at its end.
  std::optional<json> next(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Closes the connection (the client goes away).
  void close();

 private:
  bool fill(std::chrono::steady_clock::time_point deadline);
  int fd_ = -1;
  std::string buffer_;
  size_t parsed_ = 0;
  int status_ = 0;
};

// One client session over stdio or over HTTP, for the properties that must
// hold on both transports. Messages go as raw text (they may be malformed on
// purpose) without waiting; every answer the server sends is collected and
// taken by id. Over HTTP each message is its own POST on the session.
class Client {
 public:
  virtual ~Client() = default;
  const std::string& transport() const { return transport_; }
  // Returns at once.
  virtual void send_text(const std::string& text) = 0;
  void send(const json& message) { send_text(to_wire(message)); }
  // Takes the next answer (response or error) whose id is `id`; nullopt after
  // `timeout`. An error the server sent before it could read an id (parse
  // error, message too large; over HTTP a 4xx with a JSON-RPC error) has id null.
  std::optional<json> answer(const json& id, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // The same for the first answer whose id is any of `ids`.
  std::optional<json> answer_to_any(const std::vector<json>& ids,
                                    std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // send + answer.
  std::optional<json> call(const json& message, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Waits until every message sent so far was taken by the server (HTTP:
  // each POST answered; stdio writes are taken at once), then drops the
  // answers nobody took, so that a stale one never answers a later question.
  void settle();
  // initialize + notifications/initialized.
  void initialize();
  // Whether the server still answers a ping.
  bool alive();
  // Every error code the server answered with, in order, and what went wrong
  // below JSON-RPC (a connection that failed, an HTTP status other than 200,
  // 202 or 400).
  std::vector<int> error_codes() const;
  std::vector<std::string> transport_failures() const;

 protected:
  explicit Client(std::string transport) : transport_(std::move(transport)) {}
  virtual void wait_sent() {}
  void deliver(json message);
  void report_failure(std::string what);

 private:
  std::string transport_;
  mutable std::mutex mutex_;
  std::condition_variable delivered_;
  std::deque<json> inbox_;
  std::vector<int> error_codes_;
  std::vector<std::string> failures_;
  int next_probe_ = 1;
};

// A new, uninitialized client session of `server` over "stdio" or "http"
// (an HttpServer of its own on a free port).
std::unique_ptr<Client> connect(const std::string& transport, Server& server);

}  // namespace vs::mcp::test
