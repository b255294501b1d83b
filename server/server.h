// The MCP dispatcher: lifecycle and version negotiation, the methods of
// tools, prompts, resources, completion and logging, pagination,
// cancellation, progress, and requests from the server to the client. It knows
// nothing of GPUs (the registry brings the tools) and nothing of sockets (a
// transport hands it messages and tells it where answers go).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "common/result.h"
#include "server/protocol.h"
#include "server/registry.h"

namespace vs::mcp {

// Where the server's messages about one incoming message go. A transport
// makes one per message it receives (an HTTP POST, a line of stdin).
class Exchange {
 public:
  virtual ~Exchange() = default;
  // A notification or a server->client request sent while working on a
  // request of this message (progress, log, sampling).
  virtual void send(const json& message) = 0;
  // Called exactly once for each request of the message, last: the response,
  // or nullopt when the client cancelled it (the spec sends no response).
  virtual void finish(const json& id, std::optional<json> response) = 0;
  // Asks the transport to end the stream carrying this exchange while the
  // request keeps running; the client reconnects and receives the rest (HTTP
  // SSE polling, SEP-1699). Transports without streams ignore it.
  virtual void close_stream() {}
};

// Where a session's messages unrelated to any request go (e.g.
// notifications/resources/updated).
class Outbound {
 public:
  virtual ~Outbound() = default;
  virtual void send(const json& message) = 0;
};

enum class LogLevel { debug, info, notice, warning, error, critical, alert, emergency };
std::optional<LogLevel> parse_log_level(std::string_view name);
std::string_view log_level_name(LogLevel level);

class Session;

// Identifies one MCP session (a stdio connection, an HTTP Mcp-Session-Id)
// for the server's lifetime: 1, 2, 3... in the order sessions open, never
// reused. Opaque to clients; the app keys per-session state on it (e.g. the
// traces a session started, stopped in ServerOptions::on_session_closed).
using SessionKey = uint64_t;

// What a handler gets for one call.
class RequestContext {
 public:
  // True once the client sent notifications/cancelled for this request (or
  // the session ended): stop and return anything; it is not sent.
  bool cancelled() const;
  // notifications/progress, sent only when the request carried
  // _meta.progressToken. `total` <= 0 means unknown.
  void progress(double done, double total = 0, const std::string& message = {});
  // notifications/message, sent when `level` is at or above the session's
  // level (logging/setLevel).
  void log(LogLevel level, const json& data, const std::string& logger = {});
  // A request to the client (sampling/createMessage, elicitation/create,
  // roots/list); blocks until it answers. Fails when the client did not
  // declare the capability, answers with an error, the call is cancelled, or
  // `timeout` passes.
  Result<json> request_client(const std::string& method, json params,
                              std::chrono::milliseconds timeout = std::chrono::seconds(120));
  // See Exchange::close_stream.
  void close_stream();
  // The protocol version negotiated for this session.
  const std::string& protocol_version() const;
  // The session that sent the request: the same for every request of one
  // session, different for every session (see SessionKey).
  SessionKey session_key() const;

  RequestContext(std::shared_ptr<Session> session, std::shared_ptr<Exchange> exchange, json id, json progress_token,
                 std::shared_ptr<std::atomic<bool>> cancel_flag);

 private:
  std::shared_ptr<Session> session_;
  std::shared_ptr<Exchange> exchange_;
  json id_;
  json progress_token_;
  std::shared_ptr<std::atomic<bool>> cancel_flag_;
};

struct ServerInfo {
  std::string name;
  std::string title;
  std::string version;
  std::string instructions;  // optional: how to use the server, for the model
};

struct ServerOptions {
  size_t page_size = 50;      // items per page of every */list
  size_t worker_threads = 4;  // handlers run here, never on a transport's thread
  // Requests of one session on the workers at once (tools/call, prompts/get,
  // resources/read, completion/complete); 0: worker_threads - 1, at least 1,
  // so one client never holds every worker. Those above it wait in the
  // session's own queue (first in, first out); a cancelled one leaves it.
  size_t max_running_per_session = 0;
  // Requests a session may have waiting behind its running ones; above it a
  // request is refused with error_code::server_busy, saying both limits.
  size_t max_queued_per_session = 32;
  LogLevel default_log_level = LogLevel::info;
  MessageLimits limits;       // for every transport
  // Server-initiated notifications are coalesced: at most one
  // notifications/resources/updated per (session, URI) and one
  // notifications/resources/list_changed per session in each interval. A
  // change within the interval is sent at its end (trailing), so the last one
  // is never lost. Sent by the server's notifier thread, never by the caller.
  std::chrono::milliseconds notification_interval{std::chrono::seconds(1)};
  // resources/subscribe beyond this many URIs in one session: error_code::server_busy.
  size_t max_subscriptions_per_session = 1000;
  // Called exactly once for every session opened (Server::open_session) when
  // it ends, whatever the reason: stdio end of input, HTTP DELETE, idle
  // expiry, eviction at max_sessions, a failed initialize, HttpServer::stop,
  // Server destruction. Runs on the thread that ends the session (the stdio
  // reader, an HTTP request thread or janitor, the destroying thread) with no
  // server lock held, so it may call back into the server (e.g.
  // notify_resource_list_changed); sessions ending at once call it
  // concurrently. The session's running requests are already cancelled (or,
  // at stdio end of input, finishing). Keep it short: it holds up that thread.
  std::function<void(SessionKey)> on_session_closed;
};

// A fixed set of threads running queued jobs in order.
class WorkerPool {
 public:
  explicit WorkerPool(size_t threads);
  ~WorkerPool();
  void submit(std::function<void()> job);

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

class Server;

// One client connection's protocol state. Made by Server::open_session.
class Session : public std::enable_shared_from_this<Session> {
 public:
  SessionKey key() const { return key_; }
  bool initialized() const;
  std::string protocol_version() const;
  // Requests of this session that are running or queued, or whose response
  // is being sent.
  size_t in_flight() const;
  // Blocks until every request of this session is answered.
  void wait_idle();
  // Of in_flight(): those on a worker (at most the per-session limit) and
  // those waiting in the session's queue.
  size_t running() const;
  size_t queued() const;
  // Sends to the session's Outbound (messages unrelated to a request).
  void notify(const json& message);

  Session(Server& server, std::shared_ptr<Outbound> outbound, SessionKey key);

 private:
  friend class Server;
  friend class RequestContext;

  Server& server_;
  std::shared_ptr<Outbound> outbound_;
  const SessionKey key_;
  mutable std::mutex mutex_;
  std::condition_variable idle_;
  bool initialize_answered_ = false;
  bool closed_ = false;
  std::string protocol_version_{latest_protocol_version};
  json client_capabilities_ = json::object();
  LogLevel log_level_;
  std::set<std::string> subscriptions_;
  // Coalescing of server-initiated notifications (ServerOptions::
  // notification_interval), by throttle key: "u" + URI for
  // resources/updated, "l" for resources/list_changed.
  struct Throttle {
    std::chrono::steady_clock::time_point last_sent{};  // epoch: never sent
    bool pending = false;  // a notification is due (scheduled on the notifier)
  };
  std::map<std::string, Throttle> throttles_;
  // The ids in use (id_key -> cancelled). An id is released just before its
  // response is sent, so the client may reuse it as soon as it reads the
  // response; `unanswered_` counts the requests until their response is out.
  std::map<std::string, std::shared_ptr<std::atomic<bool>>> in_flight_;
  size_t unanswered_ = 0;
  // The per-session concurrency cap: requests handed to the workers, and
  // those waiting for one of them to end (id_key, job), oldest first.
  size_t running_ = 0;
  std::deque<std::pair<std::string, std::function<void()>>> queued_;
  struct PendingClientRequest {
    bool answered = false;
    json response;
  };
  std::map<std::string, std::shared_ptr<PendingClientRequest>> client_requests_;
  std::condition_variable client_answered_;
  uint64_t next_client_request_ = 1;
};

class Server {
 public:
  Server(ServerInfo info, Registry registry, ServerOptions options = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  std::shared_ptr<Session> open_session(std::shared_ptr<Outbound> outbound);
  // Ends a session: new requests are refused and requests waiting on the
  // client give up. Running requests are cancelled, or with
  // RunningRequests::finish left to complete and answer (stdio at end of
  // input: what was asked before the client closed its side is answered).
  enum class RunningRequests { cancel, finish };
  void close_session(Session& session, RunningRequests running = RunningRequests::cancel);

  struct Received {
    size_t requests = 0;  // Exchange::finish calls to expect (0: notifications/responses only)
    bool invalid = false;  // unparsable or not JSON-RPC (transports answer HTTP 400)
    bool batch = false;    // a JSON array: the responses go back as one array
  };
  // One message (or, for 2025-03-26 sessions, a batch) as text from the wire,
  // parsed within options().limits.
  Received receive_text(const std::shared_ptr<Session>& session, std::string_view text,
                        const std::shared_ptr<Exchange>& exchange);
  // Answers a message the transport or parse_message would not read.
  static Received refuse(const RefusedMessage& refused, const std::shared_ptr<Exchange>& exchange);
  Received receive(const std::shared_ptr<Session>& session, const json& message,
                   const std::shared_ptr<Exchange>& exchange);

  // notifications/resources/updated to every session subscribed to `uri`,
  // at most once per ServerOptions::notification_interval per session and
  // URI: a call within the interval is sent at its end. Returns at once (the
  // notifier thread sends), so it may be called from any thread, as often as
  // the resource changes.
  void notify_resource_updated(const std::string& uri);
  // notifications/resources/list_changed to every initialized session,
  // coalesced the same way. Does nothing unless the registry has a resource
  // lister (Registry::set_resource_lister), the only way the list changes;
  // the resources.listChanged capability is true exactly then.
  void notify_resource_list_changed();

  // What a method answers: a result, or a JSON-RPC error.
  struct RpcError {
    int code;
    std::string message;
    json data = nullptr;
  };
  using Reply = std::variant<json, RpcError>;

  const ServerInfo& info() const { return info_; }
  const Registry& registry() const { return registry_; }
  const ServerOptions& options() const { return options_; }
  // ServerOptions::max_running_per_session with its default resolved.
  size_t max_running_per_session() const;

 private:
  using Handler = Reply (Server::*)(Session&, const json& params, RequestContext&);
  struct Method {
    Handler handler;
    bool on_worker;     // runs handlers from the registry, which may take long
    json params_schema;  // the MCP schema's type of its params, checked before the handler runs
  };
  static std::map<std::string, Method, std::less<>> method_table(const MessageLimits& limits);

  void receive_one(const std::shared_ptr<Session>& session, const json& message,
                   const std::shared_ptr<Exchange>& exchange, Received& received);
  void handle_notification(Session& session, const std::string& method, const json& params);
  void handle_client_response(Session& session, const json& id, const json& message);
  void run_request(const std::shared_ptr<Session>& session, const std::shared_ptr<Exchange>& exchange,
                   const Method& method, json id, json params, std::shared_ptr<std::atomic<bool>> cancel_flag);
  // Runs `job` (a request of `session` that holds one of its slots) on a
  // worker; when it ends, the slot goes to the session's next queued request.
  void submit_to_worker(const std::shared_ptr<Session>& session, std::function<void()> job);

  Reply initialize(Session&, const json& params, RequestContext&);
  Reply ping(Session&, const json& params, RequestContext&);
  Reply list_tools(Session&, const json& params, RequestContext&);
  Reply call_tool(Session&, const json& params, RequestContext&);
  Reply list_prompts(Session&, const json& params, RequestContext&);
  Reply get_prompt(Session&, const json& params, RequestContext&);
  Reply list_resources(Session&, const json& params, RequestContext&);
  Reply list_resource_templates(Session&, const json& params, RequestContext&);
  Reply read_resource(Session&, const json& params, RequestContext&);
  Reply subscribe(Session&, const json& params, RequestContext&);
  Reply unsubscribe(Session&, const json& params, RequestContext&);
  Reply complete(Session&, const json& params, RequestContext&);
  Reply set_log_level(Session&, const json& params, RequestContext&);

  // `shrinks`: the list may have lost items since the cursor was made (the
  // resource lister's): a cursor past its end gives an empty last page.
  Reply paginate(const json& params, json items, const char* key, bool shrinks = false) const;

  // The resources the lister offers now: each readable (its own reader or a
  // template), none with the URI of a static resource or of an earlier one.
  std::vector<Resource> dynamic_resources() const;
  // A resource with `uri` exists, statically, from the lister or by template.
  bool resource_exists(const std::string& uri) const;

  // Schedules the notification of `throttle_key` (see Session::throttles_)
  // for `session`: now, or at the end of its interval.
  void schedule_notification(const std::shared_ptr<Session>& session, const std::string& throttle_key);
  void notifier_loop();
  void send_due(const std::weak_ptr<Session>& weak, const std::string& throttle_key);
  void stop_notifier();
  // ServerOptions::on_session_closed, with no lock held; an exception is logged.
  void report_closed(SessionKey key);

  ServerInfo info_;
  Registry registry_;
  ServerOptions options_;
  std::map<std::string, Method, std::less<>> methods_;
  std::mutex sessions_mutex_;
  // Open sessions (a session leaves at close_session), by key.
  std::map<SessionKey, std::weak_ptr<Session>> sessions_;
  SessionKey next_session_key_ = 1;  // under sessions_mutex_

  // The notifier: one thread sends every coalesced notification when due.
  // Lock order: a session's mutex, then notifier_mutex_.
  std::mutex notifier_mutex_;
  std::condition_variable notifier_wake_;
  std::multimap<std::chrono::steady_clock::time_point, std::pair<std::weak_ptr<Session>, std::string>> due_;
  bool notifier_stopping_ = false;
  std::thread notifier_;

  WorkerPool workers_;  // last: its threads stop before the rest goes away
};

}  // namespace vs::mcp
