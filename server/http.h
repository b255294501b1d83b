// The Streamable HTTP transport (MCP 2025-11-25) on one endpoint:
//   POST    a JSON-RPC message; answered with application/json, or with an
//           SSE stream when the server sends something before the result
//           (progress, log, sampling) or `sse_responses` is set; 202 for
//           notifications and responses.
//   GET     an SSE stream of the session's messages unrelated to a request,
//           or, with Last-Event-ID, the rest of a stream that was cut.
//   DELETE  ends the session.
// Sessions (Mcp-Session-Id) start at initialize. Host and Origin are checked
// against DNS rebinding; a bearer token is required off loopback. Every
// connection has its own thread and handlers run on the server's workers, so
// a slow tool never holds up another request or session.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "server/server.h"

namespace vs::mcp {

struct HttpOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  // 0: a free port, see HttpServer::port()
  std::string endpoint = "/mcp";
  // Required (Authorization: Bearer) when `host` is not a loopback address;
  // used when set on loopback too. Callers read it from the environment or a
  // file, never from argv.
  std::string bearer_token;
  // Host header values accepted besides localhost/127.0.0.1/[::1] with the
  // bound port ("name" or "name:port"). On a non-loopback address with none
  // given, Host is not checked (the token guards the server).
  std::vector<std::string> allowed_hosts;
  // Origin header values accepted besides http://localhost|127.0.0.1|[::1]
  // with the bound port, e.g. "https://app.example.com". A request without
  // Origin (not from a browser) passes.
  std::vector<std::string> allowed_origins;
  // A body larger than the server's ServerOptions::limits.max_message_bytes gets 413.
  size_t max_header_bytes = 16 << 10;  // 431 above
  size_t max_sessions = 64;             // 503 at initialize above
  size_t max_connections = 256;         // 503 above
  std::chrono::seconds read_timeout{60};           // an idle or stalled connection is closed
  std::chrono::seconds write_timeout{30};          // a client that stops reading is dropped
  std::chrono::seconds session_idle_timeout{1800};  // a session without requests or streams ends
  // Answer every POST that carries a request with an SSE stream (priming
  // event, then the messages), as the TypeScript SDK's server does, instead
  // of plain JSON when nothing comes before the result. Both are valid
  // Streamable HTTP; JSON is simpler for curl and cheaper.
  bool sse_responses = false;
  std::chrono::milliseconds sse_retry{1000};       // SSE `retry`: how soon a cut stream is resumed
  std::chrono::seconds sse_keepalive{15};          // comment lines on quiet streams
  size_t max_events_per_stream = 1000;             // kept for resumption; older ones are dropped
};

class HttpServer {
 public:
  HttpServer(Server& server, HttpOptions options);
  ~HttpServer();  // stops
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts serving in the background; returns the bound port.
  Result<uint16_t> start();
  uint16_t port() const;
  // Ends every session and connection and joins their threads.
  void stop();

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace vs::mcp
