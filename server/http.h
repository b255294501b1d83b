// The Streamable HTTP transport (MCP 2025-11-25) on one endpoint:
//   POST    a JSON-RPC message; answered with application/json, or with an
//           SSE stream when the server sends something before the result
//           (progress, log, sampling) or `sse_responses` is set; 202 for
//           notifications and responses.
//   GET     an SSE stream of the session's messages unrelated to a request,
//           or, with Last-Event-ID, the rest of a stream that was cut.
//   DELETE  ends the session.
// Sessions (Mcp-Session-Id) start at initialize. Host and Origin are checked
// against DNS rebinding; a bearer token is required off loopback. One I/O
// thread reads every request (header and body, under total deadlines) for all
// connections; a complete request then gets a thread of its own until it is
// answered, and handlers run on the server's workers, so neither a slow client
// nor a slow tool holds up another request or session.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
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
  // Sessions open at once. At the limit an initialize ends the least recently
  // used session that has nothing running and no stream open and was idle for
  // `session_reclaim_after`; when there is none, 503 with Retry-After.
  size_t max_sessions = 64;
  std::chrono::milliseconds session_idle_timeout{std::chrono::minutes(5)};  // a session without requests or streams ends
  std::chrono::milliseconds session_reclaim_after{std::chrono::minutes(1)};
  // Requests being served at once, each on a thread of its own: a POST until
  // it is answered, an open SSE stream. 503 with Retry-After above. A
  // connection waiting for (or sending) its request holds none: the I/O
  // thread reads every request header and body before a thread is taken.
  size_t max_connections = 256;
  // Connections waiting for (or sending) a request. A new connection is always
  // taken: over either limit, the oldest one that has not presented the bearer
  // token (from the same address, for the second) is cut to make room.
  size_t max_pending_connections = 512;
  size_t max_pending_per_address = 64;
  // Deadlines that a trickle does not reset: the whole header must arrive
  // within `header_timeout` of the connection's start (on a kept-alive
  // connection, of its next request's first byte), the whole body within
  // `body_timeout` of the header; a kept-alive connection may wait
  // `keepalive_timeout` for its next request; each response (each SSE event)
  // must be taken by the client within `write_timeout`.
  std::chrono::milliseconds header_timeout{std::chrono::seconds(10)};
  std::chrono::milliseconds body_timeout{std::chrono::seconds(30)};
  std::chrono::milliseconds keepalive_timeout{std::chrono::seconds(60)};
  std::chrono::milliseconds write_timeout{std::chrono::seconds(30)};
  // Bodies held by connections still sending them, all together; above it the
  // oldest such connection without the token is cut (memory for slow bodies).
  size_t max_pending_body_bytes = 64 << 20;
  // start() refuses a bearer token shorter than this (or of fewer than 5
  // distinct characters, or with characters other than visible ASCII).
  size_t min_token_length = 16;
  // Answer every POST that carries a request with an SSE stream (priming
  // event, then the messages), as the TypeScript SDK's server does, instead
  // of plain JSON when nothing comes before the result. Both are valid
  // Streamable HTTP; JSON is simpler for curl and cheaper.
  bool sse_responses = false;
  std::chrono::milliseconds sse_retry{1000};       // SSE `retry`: how soon a cut stream is resumed
  std::chrono::seconds sse_keepalive{15};          // comment lines on quiet streams
  size_t max_events_per_stream = 1000;             // kept for resumption; older ones are dropped
};

// Why `token` is too weak to guard the server (nullopt: strong enough).
std::optional<std::string> weak_token_reason(std::string_view token, size_t min_length = 16);

// What the transport did to protect itself, for tests and benchmarks.
struct HttpCounters {
  uint64_t accepted = 0;          // connections
  uint64_t evicted = 0;           // pending connections cut to admit a new one
  uint64_t header_timeouts = 0;   // cut at header_timeout (or keepalive_timeout)
  uint64_t body_timeouts = 0;     // cut at body_timeout
  uint64_t refused_busy = 0;      // 503: max_connections
  uint64_t sessions_reclaimed = 0;
  uint64_t sessions_refused = 0;  // 503: max_sessions, none reclaimable
  uint64_t sessions_expired = 0;  // session_idle_timeout
  size_t pending = 0;             // now
  size_t active = 0;              // now
  size_t sessions = 0;            // now
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
  HttpCounters counters() const;
  // Ends every session and connection and joins their threads.
  void stop();

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace vs::mcp
