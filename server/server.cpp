#include "server/server.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/json_schema.h"
#include "common/untrusted_text.h"

namespace vs::mcp {

namespace {

constexpr std::array<std::string_view, 8> log_level_names = {"debug", "info",     "notice", "warning",
                                                             "error", "critical", "alert",  "emergency"};

bool is_valid_request_id(const json& id) { return id.is_string() || id.is_number_integer(); }

// A title or other field that 2025-03-26 does not know, set only when present.
void set_if(json& object, const char* key, const std::string& value) {
  if (!value.empty()) object[key] = value;
}

}  // namespace

std::optional<LogLevel> parse_log_level(std::string_view name) {
  for (size_t i = 0; i < log_level_names.size(); ++i)
    if (log_level_names[i] == name) return static_cast<LogLevel>(i);
  return std::nullopt;
}

std::string_view log_level_name(LogLevel level) { return log_level_names[static_cast<size_t>(level)]; }

// ---- WorkerPool ----

WorkerPool::WorkerPool(size_t threads) {
  for (size_t i = 0; i < std::max<size_t>(threads, 1); ++i)
    threads_.emplace_back([this] {
      for (;;) {
        std::function<void()> job;
        {
          std::unique_lock lock(mutex_);
          wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
          if (jobs_.empty()) return;  // stopping, and nothing left to run
          job = std::move(jobs_.front());
          jobs_.pop_front();
        }
        job();
      }
    });
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& thread : threads_) thread.join();
}

void WorkerPool::submit(std::function<void()> job) {
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back(std::move(job));
  }
  wake_.notify_one();
}

// ---- Session ----

Session::Session(Server& server, std::shared_ptr<Outbound> outbound, SessionKey key)
    : server_(server), outbound_(std::move(outbound)), key_(key), log_level_(server.options().default_log_level) {}

bool Session::initialized() const {
  std::lock_guard lock(mutex_);
  return initialize_answered_;
}

std::string Session::protocol_version() const {
  std::lock_guard lock(mutex_);
  return protocol_version_;
}

size_t Session::in_flight() const {
  std::lock_guard lock(mutex_);
  return unanswered_;
}

size_t Session::running() const {
  std::lock_guard lock(mutex_);
  return running_;
}

size_t Session::queued() const {
  std::lock_guard lock(mutex_);
  return queued_.size();
}

void Session::wait_idle() {
  std::unique_lock lock(mutex_);
  idle_.wait(lock, [this] { return unanswered_ == 0; });
}

void Session::notify(const json& message) {
  if (outbound_) outbound_->send(message);
}

// ---- RequestContext ----

RequestContext::RequestContext(std::shared_ptr<Session> session, std::shared_ptr<Exchange> exchange, json id,
                               json progress_token, std::shared_ptr<std::atomic<bool>> cancel_flag)
    : session_(std::move(session)),
      exchange_(std::move(exchange)),
      id_(std::move(id)),
      progress_token_(std::move(progress_token)),
      cancel_flag_(std::move(cancel_flag)) {}

bool RequestContext::cancelled() const { return cancel_flag_->load(); }

const std::string& RequestContext::protocol_version() const {
  // Set once by initialize, before any handler runs.
  return session_->protocol_version_;
}

SessionKey RequestContext::session_key() const { return session_->key(); }

void RequestContext::progress(double done, double total, const std::string& message) {
  if (progress_token_.is_null()) return;
  json params = {{"progressToken", progress_token_}, {"progress", done}};
  if (total > 0) params["total"] = total;
  if (!message.empty()) params["message"] = message;
  exchange_->send(make_notification("notifications/progress", std::move(params)));
}

void RequestContext::log(LogLevel level, const json& data, const std::string& logger) {
  {
    std::lock_guard lock(session_->mutex_);
    if (level < session_->log_level_) return;
  }
  json params = {{"level", log_level_name(level)}, {"data", data}};
  if (!logger.empty()) params["logger"] = logger;
  exchange_->send(make_notification("notifications/message", std::move(params)));
}

void RequestContext::close_stream() { exchange_->close_stream(); }

Result<json> RequestContext::request_client(const std::string& method, json params,
                                            std::chrono::milliseconds timeout) {
  static const std::map<std::string, std::string, std::less<>> capability_of = {
      {"sampling/createMessage", "sampling"}, {"elicitation/create", "elicitation"}, {"roots/list", "roots"}};
  Session& session = *session_;
  auto pending = std::make_shared<Session::PendingClientRequest>();
  json id;
  {
    std::lock_guard lock(session.mutex_);
    if (auto it = capability_of.find(method);
        it != capability_of.end() && !session.client_capabilities_.contains(it->second))
      return Error{"the client does not support " + method + " (it declared no '" + it->second + "' capability)"};
    id = "vs-" + std::to_string(session.next_client_request_++);
    session.client_requests_[id_key(id)] = pending;
  }
  json request = {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}};
  if (!params.is_null()) request["params"] = std::move(params);
  exchange_->send(request);

  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock lock(session.mutex_);
  // Woken by the answer or by close_session; cancellation is polled.
  while (!pending->answered && !session.closed_ && !cancelled() && std::chrono::steady_clock::now() < deadline)
    session.client_answered_.wait_for(lock, std::chrono::milliseconds(50));
  session.client_requests_.erase(id_key(id));
  if (!pending->answered) {
    if (cancelled() || session.closed_) return Error{method + " abandoned: the call was cancelled"};
    return Error{"the client did not answer " + method + " within " + std::to_string(timeout.count()) + " ms"};
  }
  if (auto error = pending->response.find("error"); error != pending->response.end()) {
    // The client's error is input like any other: its message is quoted only when it is a string.
    auto message = error->is_object() ? error->find("message") : error->end();
    bool has_text = message != error->end() && message->is_string();
    return Error{"the client answered " + method + " with an error: " +
                 (has_text ? message->get<std::string>() : error->dump())};
  }
  return pending->response.value("result", json::object());
}

// ---- Server ----

// The params schemas follow the MCP schema (2025-11-25); null is also taken
// for an optional cursor or arguments, which some clients send for "none".
std::map<std::string, Server::Method, std::less<>> Server::method_table(const MessageLimits& limits) {
  const json string = {{"type", "string"}};
  const json uri = {{"type", "string"}, {"maxLength", limits.max_uri_bytes}};
  const json string_map = {{"type", "object"}, {"additionalProperties", string}};
  auto params = [](json properties, json required = json::array()) {
    properties["_meta"] = {{"type", "object"},
                           {"properties", {{"progressToken", {{"type", json::array({"string", "number"})}}}}}};
    return json{{"type", "object"}, {"properties", std::move(properties)}, {"required", std::move(required)}};
  };
  const json no_params = params(json::object());
  const json paged = params({{"cursor", {{"type", json::array({"string", "null"})}}}});
  const json by_uri = params({{"uri", uri}}, json::array({"uri"}));
  json level_names = json::array();
  for (std::string_view name : log_level_names) level_names.push_back(name);
  const json client_info = {{"type", "object"},
                            {"required", json::array({"name", "version"})},
                            {"properties", {{"name", string}, {"version", string}, {"title", string}}}};
  const json completion_ref = {
      {"type", "object"},
      {"required", json::array({"type"})},
      {"properties", {{"type", {{"enum", json::array({"ref/prompt", "ref/resource"})}}}, {"name", string}, {"uri", uri}}},
      {"if", {{"properties", {{"type", {{"const", "ref/prompt"}}}}}}},
      {"then", {{"required", json::array({"name"})}}},
      {"else", {{"required", json::array({"uri"})}}}};
  return {
      {"initialize",
       {&Server::initialize, false,
        params({{"protocolVersion", string}, {"capabilities", {{"type", "object"}}}, {"clientInfo", client_info}},
               json::array({"protocolVersion", "capabilities", "clientInfo"}))}},
      {"ping", {&Server::ping, false, no_params}},
      {"tools/list", {&Server::list_tools, false, paged}},
      {"tools/call",
       {&Server::call_tool, true,
        params({{"name", string}, {"arguments", {{"type", json::array({"object", "null"})}}}}, json::array({"name"}))}},
      {"prompts/list", {&Server::list_prompts, false, paged}},
      {"prompts/get",
       {&Server::get_prompt, true,
        params({{"name", string},
                {"arguments", {{"type", json::array({"object", "null"})}, {"additionalProperties", string}}}},
               json::array({"name"}))}},
      {"resources/list", {&Server::list_resources, false, paged}},
      {"resources/templates/list", {&Server::list_resource_templates, false, paged}},
      {"resources/read", {&Server::read_resource, true, by_uri}},
      {"resources/subscribe", {&Server::subscribe, false, by_uri}},
      {"resources/unsubscribe", {&Server::unsubscribe, false, by_uri}},
      {"completion/complete",
       {&Server::complete, true,
        params({{"ref", completion_ref},
                {"argument",
                 {{"type", "object"},
                  {"required", json::array({"name", "value"})},
                  {"properties", {{"name", string}, {"value", string}}}}},
                {"context", {{"type", "object"}, {"properties", {{"arguments", string_map}}}}}},
               json::array({"ref", "argument"}))}},
      {"logging/setLevel",
       {&Server::set_log_level, false, params({{"level", {{"enum", level_names}}}}, json::array({"level"}))}},
  };
}

Server::Server(ServerInfo info, Registry registry, ServerOptions options)
    : info_(std::move(info)),
      registry_(std::move(registry)),
      options_(options),
      methods_(method_table(options.limits)),
      workers_(options.worker_threads) {
  if (options_.page_size == 0) options_.page_size = 1;
  notifier_ = std::thread([this] { notifier_loop(); });
}

size_t Server::max_running_per_session() const {
  if (options_.max_running_per_session > 0) return options_.max_running_per_session;
  return std::max<size_t>(options_.worker_threads, 2) - 1;
}

Server::~Server() {
  // Every session ends (on_session_closed may still call into the server),
  // then the notifier stops.
  for (;;) {
    std::shared_ptr<Session> open;
    std::optional<SessionKey> dropped;
    {
      std::lock_guard lock(sessions_mutex_);
      if (sessions_.empty()) break;
      auto first = sessions_.begin();
      open = first->second.lock();
      if (!open) dropped = first->first;
      sessions_.erase(first);
    }
    if (open) close_session(*open);  // reports it unless it was closed already
    else report_closed(*dropped);
  }
  stop_notifier();
}

void Server::report_closed(SessionKey key) {
  if (!options_.on_session_closed) return;
  try {
    options_.on_session_closed(key);
  } catch (const std::exception& e) {
    spdlog::error("mcp: on_session_closed({}) threw: {}", key, e.what());
  }
}

std::shared_ptr<Session> Server::open_session(std::shared_ptr<Outbound> outbound) {
  std::shared_ptr<Session> session;
  std::vector<SessionKey> dropped;  // sessions their transport let go without closing them
  {
    std::lock_guard lock(sessions_mutex_);
    for (auto it = sessions_.begin(); it != sessions_.end();)
      if (it->second.expired()) {
        dropped.push_back(it->first);
        it = sessions_.erase(it);
      } else {
        ++it;
      }
    session = std::make_shared<Session>(*this, std::move(outbound), next_session_key_++);
    sessions_.emplace(session->key(), session);
  }
  for (SessionKey key : dropped) report_closed(key);
  return session;
}

void Server::close_session(Session& session, RunningRequests running) {
  std::deque<std::pair<std::string, std::function<void()>>> dropped;
  bool first_close = false;
  {
    std::lock_guard lock(session.mutex_);
    first_close = !session.closed_;
    session.closed_ = true;
    if (running == RunningRequests::cancel) {
      for (auto& [id, cancelled] : session.in_flight_) cancelled->store(true);
      dropped.swap(session.queued_);  // never started: they end now, unanswered
    }
    session.client_answered_.notify_all();
  }
  for (auto& [key, job] : dropped) job();  // cancelled: only releases the id and tells the transport
  if (!first_close) return;
  {
    std::lock_guard lock(sessions_mutex_);
    sessions_.erase(session.key());
  }
  report_closed(session.key());
}

// ---- server-initiated notifications ----

namespace {
constexpr char updated_prefix = 'u';
const std::string list_changed_key = "l";
}  // namespace

void Server::notify_resource_updated(const std::string& uri) {
  std::vector<std::shared_ptr<Session>> subscribed;
  {
    std::lock_guard lock(sessions_mutex_);
    for (auto& [key, weak] : sessions_)
      if (auto session = weak.lock()) {
        std::lock_guard session_lock(session->mutex_);
        if (session->subscriptions_.count(uri)) subscribed.push_back(std::move(session));
      }
  }
  const std::string throttle_key = updated_prefix + uri;
  for (auto& session : subscribed) schedule_notification(session, throttle_key);
}

void Server::notify_resource_list_changed() {
  if (!registry_.resource_lister()) return;  // the list never changes: listChanged is false
  std::vector<std::shared_ptr<Session>> initialized;
  {
    std::lock_guard lock(sessions_mutex_);
    for (auto& [key, weak] : sessions_)
      if (auto session = weak.lock(); session && session->initialized()) initialized.push_back(std::move(session));
  }
  for (auto& session : initialized) schedule_notification(session, list_changed_key);
}

void Server::schedule_notification(const std::shared_ptr<Session>& session, const std::string& throttle_key) {
  std::lock_guard lock(session->mutex_);
  if (session->closed_) return;
  Session::Throttle& throttle = session->throttles_[throttle_key];
  if (throttle.pending) return;  // already due: it will tell of this change too
  throttle.pending = true;
  auto now = std::chrono::steady_clock::now();
  auto due = throttle.last_sent == std::chrono::steady_clock::time_point{}
                 ? now
                 : std::max(now, throttle.last_sent + options_.notification_interval);
  {
    std::lock_guard notifier_lock(notifier_mutex_);
    due_.emplace(due, std::make_pair(std::weak_ptr<Session>(session), throttle_key));
  }
  notifier_wake_.notify_one();
}

void Server::notifier_loop() {
  std::unique_lock lock(notifier_mutex_);
  while (!notifier_stopping_) {
    if (due_.empty()) {
      notifier_wake_.wait(lock);
      continue;
    }
    auto now = std::chrono::steady_clock::now();
    if (due_.begin()->first > now) {
      notifier_wake_.wait_until(lock, due_.begin()->first);
      continue;
    }
    std::vector<std::pair<std::weak_ptr<Session>, std::string>> ready;
    while (!due_.empty() && due_.begin()->first <= now) {
      ready.push_back(std::move(due_.begin()->second));
      due_.erase(due_.begin());
    }
    lock.unlock();  // sessions' mutexes come before the notifier's
    for (auto& [weak, throttle_key] : ready) send_due(weak, throttle_key);
    lock.lock();
  }
}

void Server::send_due(const std::weak_ptr<Session>& weak, const std::string& throttle_key) {
  auto session = weak.lock();
  if (!session) return;
  json message;
  {
    std::lock_guard lock(session->mutex_);
    auto throttle = session->throttles_.find(throttle_key);
    if (session->closed_ || throttle == session->throttles_.end() || !throttle->second.pending) return;
    throttle->second.pending = false;
    throttle->second.last_sent = std::chrono::steady_clock::now();
    if (throttle_key == list_changed_key) {
      message = make_notification("notifications/resources/list_changed", json::object());
    } else {
      std::string uri = throttle_key.substr(1);
      if (!session->subscriptions_.count(uri)) return;  // unsubscribed meanwhile
      message = make_notification("notifications/resources/updated", {{"uri", std::move(uri)}});
    }
  }
  session->notify(message);  // no lock held: a stdio write may block
}

void Server::stop_notifier() {
  {
    std::lock_guard lock(notifier_mutex_);
    notifier_stopping_ = true;
  }
  notifier_wake_.notify_all();
  if (notifier_.joinable()) notifier_.join();
}

Server::Received Server::receive_text(const std::shared_ptr<Session>& session, std::string_view text,
                                      const std::shared_ptr<Exchange>& exchange) {
  auto parsed = parse_message(text, options_.limits);
  if (auto* refused = std::get_if<RefusedMessage>(&parsed)) return refuse(*refused, exchange);
  return receive(session, std::get<json>(parsed), exchange);
}

Server::Received Server::refuse(const RefusedMessage& refused, const std::shared_ptr<Exchange>& exchange) {
  exchange->finish(nullptr, refused.response());
  return {1, true, false};
}

Server::Received Server::receive(const std::shared_ptr<Session>& session, const json& message,
                                 const std::shared_ptr<Exchange>& exchange) {
  Received received;
  if (!message.is_array()) {
    receive_one(session, message, exchange, received);
    return received;
  }
  // Batches exist in 2025-03-26 only; later versions removed them.
  std::string version = session->protocol_version();
  if (!session->initialized() || !is_legacy_2025_03_26(version) || message.empty()) {
    std::string why = message.empty() ? "an empty batch"
                                      : "JSON-RPC batches are not supported in protocol version " + version;
    exchange->finish(nullptr, make_error(nullptr, error_code::invalid_request, "invalid request: " + why));
    return {1, true, false};
  }
  received.batch = true;
  for (const json& element : message) receive_one(session, element, exchange, received);
  return received;
}

void Server::receive_one(const std::shared_ptr<Session>& session, const json& message,
                         const std::shared_ptr<Exchange>& exchange, Received& received) {
  auto reject = [&](const json& id, int code, std::string text) {
    ++received.requests;
    exchange->finish(id, make_error(id, code, std::move(text)));
  };
  auto invalid = [&](const json& id, const std::string& why) {
    received.invalid = true;
    reject(id, error_code::invalid_request, "invalid request: " + why);
  };
  if (!message.is_object()) return invalid(nullptr, "a JSON-RPC message is a JSON object");
  // Every field is type-checked before it is used; each error carries the
  // message's id when it has a usable one.
  const auto id_field = message.find("id");
  const bool has_id = id_field != message.end();
  const json id = has_id && is_valid_request_id(*id_field) ? *id_field : json();
  if (auto jsonrpc = message.find("jsonrpc"); jsonrpc == message.end() || *jsonrpc != "2.0")
    return invalid(id, "not a JSON-RPC 2.0 message (\"jsonrpc\": \"2.0\")");
  const auto method_field = message.find("method");
  if (method_field == message.end()) {
    if (has_id && (message.contains("result") || message.contains("error")))
      return handle_client_response(*session, *id_field, message);
    return invalid(id, "neither a request, a notification nor a response");
  }
  if (!method_field->is_string()) return invalid(id, "\"method\" must be a string");
  const std::string& method = method_field->get_ref<const std::string&>();
  const auto params_field = message.find("params");
  json params = params_field == message.end() ? json::object() : *params_field;
  if (!has_id) {
    if (params.is_object()) handle_notification(*session, method, params);
    return;
  }
  if (id.is_null()) return invalid(nullptr, "\"id\" must be a string or an integer");
  if (!params.is_object()) return reject(id, error_code::invalid_params, "invalid params: \"params\" must be an object");

  auto found = methods_.find(method);
  if (found == methods_.end()) return reject(id, error_code::method_not_found, "method not found: " + method);
  if (auto violation = json_schema::validate(found->second.params_schema, params))
    return reject(id, error_code::invalid_params, "invalid params of " + method + ": " + *violation);
  auto cancel_flag = std::make_shared<std::atomic<bool>>(false);
  const bool on_worker = found->second.on_worker;
  // A request for the workers: those of a session beyond its share wait in
  // the session's own queue, so other sessions' requests still find a worker.
  std::function<void()> job;
  if (on_worker)
    job = [this, session, exchange, method = found->second, id, params, cancel_flag] {
      run_request(session, exchange, method, id, params, cancel_flag);
    };
  bool queued = false;
  {
    std::lock_guard lock(session->mutex_);
    if (session->closed_) return reject(id, error_code::invalid_request, "invalid request: the session is closed");
    if (method == "initialize" && session->initialize_answered_)
      return reject(id, error_code::invalid_request, "invalid request: the session is already initialized");
    if (method != "initialize" && method != "ping" && !session->initialize_answered_)
      return reject(id, error_code::invalid_request, "invalid request: the server is not initialized; send initialize first");
    const std::string key = id_key(id);
    if (session->in_flight_.count(key))
      return reject(id, error_code::invalid_request, "invalid request: request id " + id.dump() + " is already in use");
    const size_t max_running = max_running_per_session();
    if (on_worker && session->running_ >= max_running) {
      if (session->queued_.size() >= options_.max_queued_per_session)
        return reject(id, error_code::server_busy,
                      "server busy: this session already has " + std::to_string(session->running_) +
                          " requests running (at most " + std::to_string(max_running) + " per session) and " +
                          std::to_string(session->queued_.size()) + " waiting (at most " +
                          std::to_string(options_.max_queued_per_session) +
                          "); wait for an answer or cancel a request (notifications/cancelled), then send it again");
      session->queued_.emplace_back(key, std::move(job));
      queued = true;
    } else if (on_worker) {
      ++session->running_;
    }
    session->in_flight_.emplace(key, cancel_flag);
    ++session->unanswered_;
  }
  ++received.requests;
  if (queued) return;  // started when one of the session's running requests ends
  if (on_worker) return submit_to_worker(session, std::move(job));
  run_request(session, exchange, found->second, id, std::move(params), std::move(cancel_flag));
}

void Server::submit_to_worker(const std::shared_ptr<Session>& session, std::function<void()> job) {
  workers_.submit([this, session, job = std::move(job)] {
    job();
    std::function<void()> next;
    {
      std::lock_guard lock(session->mutex_);
      if (session->queued_.empty()) {
        --session->running_;
        return;
      }
      next = std::move(session->queued_.front().second);  // takes over this slot
      session->queued_.pop_front();
    }
    submit_to_worker(session, std::move(next));
  });
}

void Server::run_request(const std::shared_ptr<Session>& session, const std::shared_ptr<Exchange>& exchange,
                         const Method& method, json id, json params, std::shared_ptr<std::atomic<bool>> cancel_flag) {
  std::optional<json> response;
  if (!cancel_flag->load()) {
    json progress_token = params.contains("_meta") ? params["_meta"].value("progressToken", json()) : json();
    RequestContext context(session, exchange, id, std::move(progress_token), cancel_flag);
    Reply reply;
    try {
      reply = (this->*method.handler)(*session, params, context);
    } catch (const std::exception& e) {
      spdlog::error("mcp: request {} failed: {}", escape_untrusted(id.dump(), 80), escape_untrusted(e.what()));
      reply = RpcError{error_code::internal_error, std::string("internal error: ") + e.what()};
    }
    if (auto* result = std::get_if<json>(&reply))
      response = make_result(id, std::move(*result));
    else {
      auto& error = std::get<RpcError>(reply);
      response = make_error(id, error.code, std::move(error.message), std::move(error.data));
    }
  }
  if (cancel_flag->load()) response.reset();  // a cancelled request gets no response
  {
    // Released first: a client reading the response may reuse the id at once.
    std::lock_guard lock(session->mutex_);
    session->in_flight_.erase(id_key(id));
  }
  exchange->finish(id, std::move(response));
  std::lock_guard lock(session->mutex_);
  if (--session->unanswered_ == 0) session->idle_.notify_all();
}

void Server::handle_notification(Session& session, const std::string& method, const json& params) {
  if (method == "notifications/cancelled") {
    // A notification cannot be answered: one without a usable requestId is
    // ignored (as the spec says), a reason that is not a string only goes unlogged.
    const auto id = params.find("requestId");
    if (id == params.end() || !is_valid_request_id(*id)) {
      spdlog::debug("mcp: ignoring notifications/cancelled without a string or integer requestId");
      return;
    }
    const auto reason = params.find("reason");
    const std::string why = reason != params.end() && reason->is_string() ? reason->get<std::string>() : "no reason given";
    std::function<void()> dequeued;
    {
      std::lock_guard lock(session.mutex_);
      const std::string key = id_key(*id);
      if (auto it = session.in_flight_.find(key); it != session.in_flight_.end()) {
        spdlog::debug("mcp: request {} cancelled: {}", escape_untrusted(id->dump(), 80), escape_untrusted(why, 200));
        it->second->store(true);
        session.client_answered_.notify_all();  // a handler waiting on the client gives up
        // One still waiting for a worker leaves the queue now.
        auto queued = std::find_if(session.queued_.begin(), session.queued_.end(),
                                   [&](const auto& entry) { return entry.first == key; });
        if (queued != session.queued_.end()) {
          dequeued = std::move(queued->second);
          session.queued_.erase(queued);
        }
      }
    }
    if (dequeued) dequeued();  // cancelled: ends at once without a response
  } else if (method != "notifications/initialized") {
    spdlog::debug("mcp: ignoring notification {}", escape_untrusted(method, 80));
  }
}

void Server::handle_client_response(Session& session, const json& id, const json& message) {
  std::lock_guard lock(session.mutex_);
  auto it = session.client_requests_.find(id_key(id));
  if (it == session.client_requests_.end()) {
    spdlog::debug("mcp: ignoring a response to unknown request {}", escape_untrusted(id.dump(), 80));
    return;
  }
  it->second->answered = true;
  it->second->response = message;
  session.client_answered_.notify_all();
}

// ---- methods ----

// The handlers below read params that method_table's schemas have checked.

Server::Reply Server::initialize(Session& session, const json& params, RequestContext&) {
  const std::string& requested = params["protocolVersion"].get_ref<const std::string&>();
  std::string version = is_supported_protocol_version(requested) ? requested : std::string(latest_protocol_version);
  bool legacy = is_legacy_2025_03_26(version);
  {
    std::lock_guard lock(session.mutex_);
    session.protocol_version_ = version;
    session.client_capabilities_ = params["capabilities"];
    session.initialize_answered_ = true;
  }
  const json& client = params["clientInfo"];
  // What the client sends is untrusted text, as the traced system's is: escaped before it reaches a terminal.
  spdlog::info("mcp: session initialized by {} {} (protocol {})",
               escape_untrusted(client["name"].get_ref<const std::string&>(), 80),
               escape_untrusted(client["version"].get_ref<const std::string&>(), 40), escape_untrusted(version, 40));
  json server_info = {{"name", info_.name}, {"version", info_.version}};
  if (!legacy) set_if(server_info, "title", info_.title);
  json result = {
      {"protocolVersion", version},
      {"capabilities",
       {{"tools", {{"listChanged", false}}},
        {"prompts", {{"listChanged", false}}},
        {"resources", {{"subscribe", true}, {"listChanged", static_cast<bool>(registry_.resource_lister())}}},
        {"logging", json::object()},
        {"completions", json::object()}}},
      {"serverInfo", std::move(server_info)},
  };
  set_if(result, "instructions", info_.instructions);
  return result;
}

Server::Reply Server::ping(Session&, const json&, RequestContext&) { return json::object(); }

Server::Reply Server::paginate(const json& params, json items, const char* key, bool shrinks) const {
  size_t offset = 0;
  if (auto cursor = params.find("cursor"); cursor != params.end() && cursor->is_string()) {
    // Ours ("offset:N" in base64), but it comes back from the client: checked like any input.
    std::optional<std::string> decoded = base64_decode(cursor->get_ref<const std::string&>());
    std::optional<uint64_t> parsed;
    if (decoded && decoded->starts_with("offset:")) parsed = parse_decimal(std::string_view(*decoded).substr(7));
    if (parsed && shrinks) parsed = std::min<uint64_t>(*parsed, items.size());
    if (!parsed || *parsed > items.size())
      return RpcError{error_code::invalid_params, "invalid params: unknown cursor; use the nextCursor of the previous page"};
    offset = *parsed;
  }
  size_t end = std::min(items.size(), offset + options_.page_size);
  json page = json::array();
  for (size_t i = offset; i < end; ++i) page.push_back(std::move(items[i]));
  json result = {{key, std::move(page)}};
  if (end < items.size()) result["nextCursor"] = base64_encode("offset:" + std::to_string(end));
  return result;
}

Server::Reply Server::list_tools(Session& session, const json& params, RequestContext&) {
  bool legacy = is_legacy_2025_03_26(session.protocol_version());
  json items = json::array();
  for (const Tool& tool : registry_.tools()) {
    json item = {{"name", tool.name}, {"description", tool.description}, {"inputSchema", tool.input_schema}};
    if (!legacy) {
      set_if(item, "title", tool.title);
      if (!tool.output_schema.is_null()) item["outputSchema"] = tool.output_schema;
    }
    if (!tool.annotations.is_null()) item["annotations"] = tool.annotations;
    items.push_back(std::move(item));
  }
  return paginate(params, std::move(items), "tools");
}

Server::Reply Server::call_tool(Session& session, const json& params, RequestContext& context) {
  const std::string& name = params["name"].get_ref<const std::string&>();
  const Tool* tool = registry_.find_tool(name);
  if (!tool) return RpcError{error_code::invalid_params, "invalid params: unknown tool '" + name + "'; see tools/list"};
  json arguments = params.value("arguments", json::object());
  if (arguments.is_null()) arguments = json::object();
  json result;
  try {
    Result<json> outcome = tool->handler(arguments, context);
    result = outcome ? std::move(outcome.value()) : tool_error_result(outcome.error().message);
  } catch (const std::exception& e) {
    spdlog::error("mcp: tool {} threw: {}", escape_untrusted(name, 80), escape_untrusted(e.what()));
    result = tool_error_result("tool '" + name + "' failed: " + e.what());
  }
  if (!result.is_object() || !result.contains("content") || !result["content"].is_array())
    return RpcError{error_code::internal_error, "internal error: tool '" + name + "' returned no content array"};
  if (is_legacy_2025_03_26(session.protocol_version())) result.erase("structuredContent");
  return result;
}

Server::Reply Server::list_prompts(Session& session, const json& params, RequestContext&) {
  bool legacy = is_legacy_2025_03_26(session.protocol_version());
  json items = json::array();
  for (const Prompt& prompt : registry_.prompts()) {
    json item = {{"name", prompt.name}, {"description", prompt.description}};
    if (!legacy) set_if(item, "title", prompt.title);
    json arguments = json::array();
    for (const PromptArgument& argument : prompt.arguments) {
      json entry = {{"name", argument.name}, {"required", argument.required}};
      set_if(entry, "description", argument.description);
      if (!legacy) set_if(entry, "title", argument.title);
      arguments.push_back(std::move(entry));
    }
    if (!arguments.empty()) item["arguments"] = std::move(arguments);
    items.push_back(std::move(item));
  }
  return paginate(params, std::move(items), "prompts");
}

Server::Reply Server::get_prompt(Session&, const json& params, RequestContext& context) {
  const std::string& name = params["name"].get_ref<const std::string&>();
  const Prompt* prompt = registry_.find_prompt(name);
  if (!prompt) return RpcError{error_code::invalid_params, "invalid params: unknown prompt '" + name + "'; see prompts/list"};
  json arguments = params.value("arguments", json::object());
  if (arguments.is_null()) arguments = json::object();
  for (const PromptArgument& argument : prompt->arguments)
    if (argument.required && !arguments.contains(argument.name))
      return RpcError{error_code::invalid_params,
                      "invalid params: prompt '" + name + "' needs argument '" + argument.name + "'"};
  Result<json> result = prompt->handler(arguments, context);
  if (!result) return RpcError{error_code::invalid_params, "invalid params: " + result.error().message};
  return std::move(result.value());
}

std::vector<Resource> Server::dynamic_resources() const {
  std::vector<Resource> out;
  if (!registry_.resource_lister()) return out;
  std::vector<Resource> listed;
  try {
    listed = registry_.resource_lister()();
  } catch (const std::exception& e) {
    spdlog::error("mcp: the resource lister threw: {}", escape_untrusted(e.what()));
    return out;
  }
  std::set<std::string> seen;
  for (Resource& resource : listed) {
    if (resource.uri.empty() || resource.name.empty() || registry_.find_resource(resource.uri) ||
        !seen.insert(resource.uri).second || (!resource.reader && !registry_.match_template(resource.uri))) {
      spdlog::debug("mcp: listed resource '{}' left out: no name, a duplicate, or nothing reads it",
                    escape_untrusted(resource.uri, 200));
      continue;
    }
    out.push_back(std::move(resource));
  }
  return out;
}

bool Server::resource_exists(const std::string& uri) const {
  if (registry_.find_resource(uri) || registry_.match_template(uri)) return true;
  auto listed = dynamic_resources();
  return std::any_of(listed.begin(), listed.end(), [&](const Resource& r) { return r.uri == uri; });
}

Server::Reply Server::list_resources(Session& session, const json& params, RequestContext&) {
  bool legacy = is_legacy_2025_03_26(session.protocol_version());
  json items = json::array();
  auto add = [&](const Resource& resource) {
    json item = {{"uri", resource.uri}, {"name", resource.name}};
    if (!legacy) set_if(item, "title", resource.title);
    set_if(item, "description", resource.description);
    set_if(item, "mimeType", resource.mime_type);
    items.push_back(std::move(item));
  };
  for (const Resource& resource : registry_.resources()) add(resource);
  for (const Resource& resource : dynamic_resources()) add(resource);
  return paginate(params, std::move(items), "resources", static_cast<bool>(registry_.resource_lister()));
}

Server::Reply Server::list_resource_templates(Session& session, const json& params, RequestContext&) {
  bool legacy = is_legacy_2025_03_26(session.protocol_version());
  json items = json::array();
  for (const ResourceTemplate& resource_template : registry_.resource_templates()) {
    json item = {{"uriTemplate", resource_template.uri_template}, {"name", resource_template.name}};
    if (!legacy) set_if(item, "title", resource_template.title);
    set_if(item, "description", resource_template.description);
    set_if(item, "mimeType", resource_template.mime_type);
    items.push_back(std::move(item));
  }
  return paginate(params, std::move(items), "resourceTemplates");
}

namespace {
Server::Reply resource_not_found(const std::string& uri, const std::string& why) {
  return Server::RpcError{error_code::resource_not_found, "resource not found: " + why, {{"uri", uri}}};
}
}  // namespace

Server::Reply Server::read_resource(Session&, const json& params, RequestContext& context) {
  const std::string& uri = params["uri"].get_ref<const std::string&>();
  Result<json> contents = Error{""};
  // A listed resource's own reader comes before the templates.
  ResourceReader listed_reader;
  if (!registry_.find_resource(uri))
    for (Resource& resource : dynamic_resources())
      if (resource.uri == uri) listed_reader = std::move(resource.reader);
  if (const Resource* resource = registry_.find_resource(uri))
    contents = resource->reader(uri, context);
  else if (listed_reader)
    contents = listed_reader(uri, context);
  else if (auto match = registry_.match_template(uri))
    contents = match->resource_template->reader(uri, match->variables, context);
  else
    return resource_not_found(uri, "no resource or template matches " + uri + "; see resources/list");
  if (!contents) return resource_not_found(uri, contents.error().message);
  if (!contents->is_array())
    return RpcError{error_code::internal_error, "internal error: the reader of " + uri + " returned no contents array"};
  return json{{"contents", std::move(contents.value())}};
}

Server::Reply Server::subscribe(Session& session, const json& params, RequestContext&) {
  const std::string& uri = params["uri"].get_ref<const std::string&>();
  if (!resource_exists(uri))
    return resource_not_found(uri, "no resource or template matches " + uri + "; see resources/list");
  std::lock_guard lock(session.mutex_);
  if (!session.subscriptions_.count(uri) && session.subscriptions_.size() >= options_.max_subscriptions_per_session)
    return RpcError{error_code::server_busy,
                    "server busy: this session is subscribed to " + std::to_string(session.subscriptions_.size()) +
                        " resources (at most " + std::to_string(options_.max_subscriptions_per_session) +
                        "); unsubscribe from one first"};
  session.subscriptions_.insert(uri);
  return json::object();
}

Server::Reply Server::unsubscribe(Session& session, const json& params, RequestContext&) {
  const std::string& uri = params["uri"].get_ref<const std::string&>();
  std::lock_guard lock(session.mutex_);
  session.subscriptions_.erase(uri);
  session.throttles_.erase(updated_prefix + uri);  // a notification still due is not sent
  return json::object();
}

Server::Reply Server::complete(Session&, const json& params, RequestContext&) {
  const json& ref = params["ref"];
  const std::string& argument_name = params["argument"]["name"].get_ref<const std::string&>();
  const std::string& typed = params["argument"]["value"].get_ref<const std::string&>();
  const Completer* completer = nullptr;
  if (ref["type"] == "ref/prompt") {
    const std::string& name = ref["name"].get_ref<const std::string&>();
    const Prompt* prompt = registry_.find_prompt(name);
    if (!prompt) return RpcError{error_code::invalid_params, "invalid params: unknown prompt '" + name + "'"};
    auto it = std::find_if(prompt->arguments.begin(), prompt->arguments.end(),
                           [&](const PromptArgument& a) { return a.name == argument_name; });
    if (it == prompt->arguments.end())
      return RpcError{error_code::invalid_params,
                      "invalid params: prompt '" + name + "' has no argument '" + argument_name + "'"};
    if (it->complete) completer = &it->complete;
  } else {  // ref/resource
    const std::string& uri = ref["uri"].get_ref<const std::string&>();
    const ResourceTemplate* resource_template = registry_.find_template(uri);
    if (!resource_template)
      return RpcError{error_code::invalid_params, "invalid params: unknown resource template '" + uri + "'"};
    if (auto it = resource_template->complete.find(argument_name); it != resource_template->complete.end())
      completer = &it->second;
  }
  std::vector<std::string> matching;
  if (completer) {
    json context_arguments = params.contains("context") ? params["context"].value("arguments", json::object())
                                                        : json::object();
    for (std::string& value : (*completer)(context_arguments))
      if (value.rfind(typed, 0) == 0) matching.push_back(std::move(value));
  }
  constexpr size_t max_values = 100;  // the spec's limit per response
  json values = json::array();
  for (size_t i = 0; i < std::min(matching.size(), max_values); ++i) values.push_back(matching[i]);
  return json{{"completion", {{"values", std::move(values)}, {"total", matching.size()}, {"hasMore", matching.size() > max_values}}}};
}

Server::Reply Server::set_log_level(Session& session, const json& params, RequestContext&) {
  std::optional<LogLevel> level = parse_log_level(params["level"].get_ref<const std::string&>());  // one of the enum
  std::lock_guard lock(session.mutex_);
  session.log_level_ = level.value();
  return json::object();
}

}  // namespace vs::mcp
