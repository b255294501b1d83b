#include "server/http.h"

#include <poll.h>
#include <sys/socket.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <list>
#include <random>

namespace vs::mcp {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

// A connected socket whose reads and writes give up after a timeout (Asio's
// blocking calls have none). Satisfies Beast's SyncReadStream/SyncWriteStream.
class TimedSocket {
 public:
  TimedSocket(tcp::socket& socket, std::chrono::milliseconds read_timeout, std::chrono::milliseconds write_timeout)
      : socket_(socket), read_timeout_(read_timeout), write_timeout_(write_timeout) {}

  template <class Buffers>
  size_t read_some(const Buffers& buffers, beast::error_code& ec) {
    if (!ready(POLLIN, read_timeout_, ec)) return 0;
    return socket_.read_some(buffers, ec);
  }
  template <class Buffers>
  size_t read_some(const Buffers& buffers) {
    beast::error_code ec;
    size_t n = read_some(buffers, ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }
  template <class Buffers>
  size_t write_some(const Buffers& buffers, beast::error_code& ec) {
    if (!ready(POLLOUT, write_timeout_, ec)) return 0;
    return socket_.write_some(buffers, ec);
  }
  template <class Buffers>
  size_t write_some(const Buffers& buffers) {
    beast::error_code ec;
    size_t n = write_some(buffers, ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }

 private:
  bool ready(short events, std::chrono::milliseconds timeout, beast::error_code& ec) {
    pollfd fd{socket_.native_handle(), events, 0};
    int n = ::poll(&fd, 1, static_cast<int>(timeout.count()));
    if (n == 0) ec = beast::error::timeout;
    if (n < 0) ec = beast::error_code(errno, boost::system::system_category());
    return n > 0;
  }
  tcp::socket& socket_;
  std::chrono::milliseconds read_timeout_;
  std::chrono::milliseconds write_timeout_;
};

std::string lowercase(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

bool is_loopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1" || host == "[::1]";
}

// Whether an Accept header admits `type` ("application/json"), counting
// "application/*" and "*/*".
bool accepts(std::string_view header, std::string_view type) {
  std::string wildcard = std::string(type.substr(0, type.find('/'))) + "/*";
  size_t pos = 0;
  while (pos <= header.size()) {
    size_t comma = header.find(',', pos);
    std::string_view item = header.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    item = item.substr(0, item.find(';'));
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    std::string media = lowercase(item);
    if (media == type || media == wildcard || media == "*/*") return true;
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return false;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() != b.size();
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i % std::max<size_t>(b.size(), 1)];
  return diff == 0;
}

std::string random_session_id() {
  std::random_device random;
  std::string id;
  for (int i = 0; i < 4; ++i) {
    char part[9];
    std::snprintf(part, sizeof part, "%08x", random());
    id += part;
  }
  return id;
}

// A transport-level error body: a JSON-RPC error without an id.
std::string error_body(int code, const std::string& message) { return to_wire(make_error(nullptr, code, message)); }
constexpr int transport_error = -32000;

// The messages of one POST (or, stream 0, those of the session that belong
// to no request), numbered so a client that lost the connection resumes
// with Last-Event-ID "<stream>-<seq>".
class Stream : public Exchange {
 public:
  Stream(uint64_t id, size_t max_events) : id_(id), max_events_(max_events) {}

  struct Event {
    uint64_t seq;
    std::string data;
    bool response;
  };

  uint64_t id() const { return id_; }
  std::string event_id(uint64_t seq) const { return std::to_string(id_) + "-" + std::to_string(seq); }

  void send(const json& message) override { push(to_wire(message), false); }
  void finish(const json&, std::optional<json> response) override {
    std::lock_guard lock(mutex_);
    ++finished_;
    if (response) push_locked(to_wire(*response), true);
    changed_.notify_all();
  }
  void close_stream() override {
    std::lock_guard lock(mutex_);
    cut_requested_ = true;
    changed_.notify_all();
  }
  void expect(const Server::Received& received) {
    std::lock_guard lock(mutex_);
    received_ = received;
    changed_.notify_all();
  }
  void end() {
    std::lock_guard lock(mutex_);
    ended_ = true;
    changed_.notify_all();
  }

  // Whether a connection may serve it (one at a time); release() when done.
  bool attach() {
    std::lock_guard lock(mutex_);
    if (attached_) return false;
    attached_ = true;
    return true;
  }
  void release() {
    std::lock_guard lock(mutex_);
    attached_ = false;
  }
  bool attached() const {
    std::lock_guard lock(mutex_);
    return attached_;
  }

  // For a POST: waits until the answer can go as plain JSON (every request
  // finished, nothing else sent) or must be a stream. Returns the JSON text,
  // or nullopt for a stream.
  std::optional<std::string> json_answer() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return complete_locked() || streamed_ || cut_requested_ || ended_; });
    if (streamed_ || cut_requested_ || ended_ || events_.empty()) return std::nullopt;
    if (!received_->batch) return events_.front().data;
    std::string array = "[";
    for (const Event& event : events_) array += (array.size() > 1 ? "," : "") + event.data;
    return array + "]";
  }

  struct Batch {
    std::vector<Event> events;
    bool finished;  // nothing more will come on this connection
  };
  // The events after `after` (waiting up to `wait` for one), and whether the
  // connection should end the stream: the requests are answered and all sent,
  // a cut was asked for (SSE polling), or the session ended.
  Batch next(uint64_t after, std::chrono::milliseconds wait) {
    std::unique_lock lock(mutex_);
    auto has_news = [&] {
      return (!events_.empty() && events_.back().seq > after) || complete_locked() || cut_requested_ || ended_;
    };
    changed_.wait_for(lock, wait, has_news);
    Batch batch{{}, false};
    for (const Event& event : events_)
      if (event.seq > after) batch.events.push_back(event);
    uint64_t last = batch.events.empty() ? after : batch.events.back().seq;
    bool all_sent = events_.empty() || last >= events_.back().seq;
    batch.finished = ended_ || cut_requested_ || (complete_locked() && all_sent);
    cut_requested_ = false;  // a cut ends this connection's stream only
    return batch;
  }

  bool done_and_delivered(uint64_t delivered) const {
    std::lock_guard lock(mutex_);
    return complete_locked() && (events_.empty() || delivered >= events_.back().seq);
  }

 private:
  void push(std::string data, bool response) {
    std::lock_guard lock(mutex_);
    push_locked(std::move(data), response);
    changed_.notify_all();
  }
  void push_locked(std::string data, bool response) {
    if (!response) streamed_ = true;
    events_.push_back({next_seq_++, std::move(data), response});
    if (events_.size() > max_events_) events_.pop_front();
  }
  bool complete_locked() const { return received_ && finished_ >= received_->requests; }

  const uint64_t id_;
  const size_t max_events_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Event> events_;
  uint64_t next_seq_ = 1;  // 0 is the priming event, which carries no message
  std::optional<Server::Received> received_;
  size_t finished_ = 0;
  bool streamed_ = false;  // something other than a response was sent: the answer is a stream
  bool cut_requested_ = false;
  bool ended_ = false;
  bool attached_ = false;
};

// The session's messages that belong to no request go to its stream 0.
class StreamOutbound : public Outbound {
 public:
  explicit StreamOutbound(std::shared_ptr<Stream> stream) : stream_(std::move(stream)) {}
  void send(const json& message) override { stream_->send(message); }

 private:
  std::shared_ptr<Stream> stream_;
};

struct HttpSession {
  std::string id;
  std::shared_ptr<Session> mcp;
  std::shared_ptr<Stream> standalone;
  std::mutex mutex;
  std::map<uint64_t, std::shared_ptr<Stream>> streams;  // POST streams kept for resumption
  uint64_t next_stream = 1;
  std::atomic<std::chrono::steady_clock::rep> last_used{0};
  std::atomic<int> connections{0};  // connections serving this session right now

  void touch() { last_used = std::chrono::steady_clock::now().time_since_epoch().count(); }
  std::shared_ptr<Stream> find_stream(uint64_t stream_id) {
    if (stream_id == 0) return standalone;
    std::lock_guard lock(mutex);
    auto it = streams.find(stream_id);
    return it == streams.end() ? nullptr : it->second;
  }
  void forget_stream(uint64_t stream_id) {
    std::lock_guard lock(mutex);
    streams.erase(stream_id);
  }
};

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

// A header's value ("" when absent). Boost 1.74's string_view is not std's.
template <class Key>
std::string header(const Request& request, Key key) {
  auto value = request[key];
  return std::string(value.data(), value.size());
}

}  // namespace

struct HttpServer::State {
  Server& server;
  HttpOptions options;
  net::io_context io;
  tcp::acceptor acceptor{io};
  uint16_t port = 0;
  bool loopback = true;
  std::vector<std::string> allowed_hosts;    // lowercase
  std::vector<std::string> allowed_origins;  // lowercase
  std::atomic<bool> stopping{false};

  std::mutex sessions_mutex;
  std::map<std::string, std::shared_ptr<HttpSession>> sessions;

  struct Connection {
    std::thread thread;
    std::shared_ptr<tcp::socket> socket;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::mutex connections_mutex;
  std::list<Connection> connections;
  std::thread accept_thread;
  std::thread janitor_thread;
  std::mutex janitor_mutex;
  std::condition_variable janitor_wake;

  State(Server& s, HttpOptions o) : server(s), options(std::move(o)) {}

  void accept_loop();
  void janitor_loop();
  // Joins the threads of closed connections, which count against max_connections until then.
  void reap_connections();
  void serve_connection(tcp::socket& socket);
  // Returns false when the connection must close.
  bool handle(TimedSocket& stream, Request& request);
  bool handle_post(TimedSocket& stream, Request& request, std::shared_ptr<HttpSession> session);
  bool handle_get(TimedSocket& stream, Request& request, std::shared_ptr<HttpSession> session);
  bool serve_sse(TimedSocket& stream, const Request& request, HttpSession& session, Stream& sse, uint64_t after,
                 bool prime);
  std::shared_ptr<HttpSession> find_session(const std::string& id);
  void end_session(const std::string& id);
  std::optional<std::string> check_access(const Request& request) const;

  Response reply(const Request& request, http::status status, std::string body,
                 std::string content_type = "application/json") const {
    Response response{status, request.version()};
    response.set(http::field::server, "vramscope-mcp");
    response.set(http::field::content_type, content_type);
    response.keep_alive(request.keep_alive());
    response.body() = std::move(body);
    response.prepare_payload();
    return response;
  }
  bool send(TimedSocket& stream, Response&& response) {
    beast::error_code ec;
    http::write(stream, response, ec);
    return !ec && response.keep_alive();
  }
  bool fail(TimedSocket& stream, const Request& request, http::status status, const std::string& message) {
    spdlog::debug("mcp http: {} -> {}: {}", header(request, http::field::host),
                  static_cast<int>(status), message);
    return send(stream, reply(request, status, error_body(transport_error, message)));
  }
};

HttpServer::HttpServer(Server& server, HttpOptions options)
    : state_(std::make_unique<State>(server, std::move(options))) {}

HttpServer::~HttpServer() { stop(); }

uint16_t HttpServer::port() const { return state_->port; }

Result<uint16_t> HttpServer::start() {
  State& s = *state_;
  s.loopback = is_loopback(s.options.host);
  if (!s.loopback && s.options.bearer_token.empty())
    return Error{"mcp http: binding " + s.options.host +
                 " (not loopback) needs a bearer token; set one or bind 127.0.0.1"};
  beast::error_code ec;
  std::string bind_host = s.options.host == "localhost" ? "127.0.0.1" : s.options.host;
  if (bind_host.size() > 2 && bind_host.front() == '[') bind_host = bind_host.substr(1, bind_host.size() - 2);
  auto address = net::ip::make_address(bind_host, ec);
  if (ec) return Error{"mcp http: '" + s.options.host + "' is not an IP address: " + ec.message()};
  tcp::endpoint endpoint(address, s.options.port);
  if (s.acceptor.open(endpoint.protocol(), ec); ec) return Error{"mcp http: socket: " + ec.message()};
  s.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (s.acceptor.bind(endpoint, ec); ec)
    return Error{"mcp http: cannot bind " + s.options.host + ":" + std::to_string(s.options.port) + ": " + ec.message()};
  if (s.acceptor.listen(net::socket_base::max_listen_connections, ec); ec)
    return Error{"mcp http: listen: " + ec.message()};
  s.port = s.acceptor.local_endpoint().port();

  std::string port = std::to_string(s.port);
  if (s.loopback)
    for (const char* name : {"localhost", "127.0.0.1", "[::1]"}) {
      s.allowed_hosts.push_back(std::string(name) + ":" + port);
      s.allowed_origins.push_back(std::string("http://") + name + ":" + port);
    }
  for (const auto& host : s.options.allowed_hosts) s.allowed_hosts.push_back(lowercase(host));
  for (const auto& origin : s.options.allowed_origins) s.allowed_origins.push_back(lowercase(origin));

  s.accept_thread = std::thread([&s] { s.accept_loop(); });
  s.janitor_thread = std::thread([&s] { s.janitor_loop(); });
  spdlog::info("mcp http: serving http://{}:{}{}", s.options.host, s.port, s.options.endpoint);
  return s.port;
}

void HttpServer::stop() {
  State& s = *state_;
  if (!s.accept_thread.joinable() || s.stopping.exchange(true)) return;
  // Wake the blocking accept with a connection of our own.
  {
    beast::error_code ec;
    tcp::socket wake(s.io);
    auto local = s.acceptor.local_endpoint(ec);
    if (local.address().is_unspecified())
      local.address(local.address().is_v6() ? net::ip::address(net::ip::address_v6::loopback())
                                            : net::ip::address(net::ip::address_v4::loopback()));
    wake.connect(local, ec);
  }
  s.accept_thread.join();
  {
    std::lock_guard lock(s.janitor_mutex);
    s.janitor_wake.notify_all();
  }
  s.janitor_thread.join();
  std::vector<std::string> ids;
  {
    std::lock_guard lock(s.sessions_mutex);
    for (auto& [id, session] : s.sessions) ids.push_back(id);
  }
  for (auto& id : ids) s.end_session(id);
  std::list<State::Connection> connections;
  {
    std::lock_guard lock(s.connections_mutex);
    connections.swap(s.connections);
  }
  for (auto& connection : connections) ::shutdown(connection.socket->native_handle(), SHUT_RDWR);
  for (auto& connection : connections) connection.thread.join();
  beast::error_code ec;
  s.acceptor.close(ec);
}

void HttpServer::State::accept_loop() {
  for (;;) {
    auto socket = std::make_shared<tcp::socket>(io);
    beast::error_code ec;
    acceptor.accept(*socket, ec);
    if (stopping) return;
    if (ec) {
      spdlog::warn("mcp http: accept: {}", ec.message());
      continue;
    }
    reap_connections();
    std::lock_guard lock(connections_mutex);
    if (connections.size() >= options.max_connections) {
      TimedSocket stream(*socket, options.read_timeout, options.write_timeout);
      Request request;
      request.version(11);
      request.keep_alive(false);
      fail(stream, request, http::status::service_unavailable,
           "too many connections (limit " + std::to_string(options.max_connections) + "); retry later");
      continue;
    }
    auto done = std::make_shared<std::atomic<bool>>(false);
    connections.push_back({std::thread([this, socket, done] {
                             serve_connection(*socket);
                             done->store(true);
                           }),
                           socket, done});
  }
}

void HttpServer::State::janitor_loop() {
  std::unique_lock lock(janitor_mutex);
  while (!stopping) {
    janitor_wake.wait_for(lock, std::chrono::seconds(1));
    reap_connections();
    // End sessions nobody used for a while.
    auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    auto limit = std::chrono::duration_cast<std::chrono::steady_clock::duration>(options.session_idle_timeout).count();
    std::vector<std::string> idle;
    {
      std::lock_guard sessions_lock(sessions_mutex);
      for (auto& [id, session] : sessions)
        if (session->connections == 0 && session->mcp->in_flight() == 0 && now - session->last_used > limit)
          idle.push_back(id);
    }
    for (auto& id : idle) {
      spdlog::info("mcp http: session {} idle for {} s: ended", id, options.session_idle_timeout.count());
      end_session(id);
    }
  }
}

void HttpServer::State::reap_connections() {
  std::list<Connection> finished;
  {
    std::lock_guard lock(connections_mutex);
    for (auto it = connections.begin(); it != connections.end();)
      if (it->done->load()) finished.splice(finished.end(), connections, it++);
      else ++it;
  }
  for (auto& connection : finished) connection.thread.join();
}

std::shared_ptr<HttpSession> HttpServer::State::find_session(const std::string& id) {
  std::lock_guard lock(sessions_mutex);
  auto it = sessions.find(id);
  return it == sessions.end() ? nullptr : it->second;
}

void HttpServer::State::end_session(const std::string& id) {
  std::shared_ptr<HttpSession> session;
  {
    std::lock_guard lock(sessions_mutex);
    auto it = sessions.find(id);
    if (it == sessions.end()) return;
    session = it->second;
    sessions.erase(it);
  }
  server.close_session(*session->mcp);
  session->standalone->end();
  std::lock_guard lock(session->mutex);
  for (auto& [stream_id, stream] : session->streams) stream->end();
}

void HttpServer::State::serve_connection(tcp::socket& socket) {
  TimedSocket stream(socket, options.read_timeout, options.write_timeout);
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<uint32_t>(options.max_header_bytes));
    parser.body_limit(server.options().limits.max_message_bytes);
    beast::error_code ec;
    http::read(stream, buffer, parser, ec);
    if (ec == http::error::body_limit) {
      // The same refusal as stdio's for a line over the limit.
      Request request = parser.get();
      request.keep_alive(false);
      send(stream, reply(request, http::status::payload_too_large,
                         to_wire(oversized_message(server.options().limits).response())));
      break;
    }
    if (ec == http::error::header_limit) {
      Request request = parser.get();
      request.keep_alive(false);
      fail(stream, request, http::status::request_header_fields_too_large,
           "request header larger than " + std::to_string(options.max_header_bytes) + " bytes");
      break;
    }
    if (ec) break;  // closed, timed out, or not HTTP
    Request request = parser.release();
    bool keep_open = false;
    try {
      keep_open = handle(stream, request);
    } catch (const std::exception& e) {
      spdlog::error("mcp http: a {} request failed: {}", static_cast<int>(request.method()), e.what());
    }
    if (!keep_open || stopping) break;
  }
  beast::error_code ec;
  socket.shutdown(tcp::socket::shutdown_both, ec);
  socket.close(ec);
}

std::optional<std::string> HttpServer::State::check_access(const Request& request) const {
  if (loopback || !options.allowed_hosts.empty()) {
    std::string host = lowercase(header(request, http::field::host));
    if (std::find(allowed_hosts.begin(), allowed_hosts.end(), host) == allowed_hosts.end())
      return "Host '" + host + "' is not allowed (DNS rebinding protection)";
  }
  if (request.count(http::field::origin)) {
    std::string origin = lowercase(header(request, http::field::origin));
    if (std::find(allowed_origins.begin(), allowed_origins.end(), origin) == allowed_origins.end())
      return "Origin '" + origin + "' is not allowed (DNS rebinding protection)";
  }
  return std::nullopt;
}

bool HttpServer::State::handle(TimedSocket& stream, Request& request) {
  std::string target(request.target().data(), request.target().size());
  target = target.substr(0, target.find('?'));
  if (target != options.endpoint)
    return fail(stream, request, http::status::not_found, "no such endpoint; MCP is served at " + options.endpoint);
  if (auto denied = check_access(request)) return fail(stream, request, http::status::forbidden, *denied);
  if (!options.bearer_token.empty()) {
    std::string authorization = header(request, http::field::authorization);
    bool presented = authorization.size() > 7 && lowercase(authorization.substr(0, 7)) == "bearer ";
    if (!presented || !constant_time_equal(authorization.substr(7), options.bearer_token)) {
      Response response = reply(request, http::status::unauthorized,
                                error_body(transport_error, presented ? "invalid bearer token" : "bearer token required"));
      response.set(http::field::www_authenticate,
                   presented ? R"(Bearer realm="mcp", error="invalid_token")" : R"(Bearer realm="mcp")");
      return send(stream, std::move(response));
    }
  }
  if (request.method() != http::verb::post && request.method() != http::verb::get &&
      request.method() != http::verb::delete_) {
    Response response = reply(request, http::status::method_not_allowed,
                              error_body(transport_error, "method not allowed; use POST, GET or DELETE"));
    response.set(http::field::allow, "GET, POST, DELETE");
    return send(stream, std::move(response));
  }
  if (request.count("MCP-Protocol-Version")) {
    std::string version = header(request, "MCP-Protocol-Version");
    if (!is_supported_protocol_version(version))
      return fail(stream, request, http::status::bad_request,
                  "unsupported MCP-Protocol-Version '" + version + "'; supported: 2025-11-25, 2025-06-18, 2025-03-26");
  }

  std::string session_id = header(request, "Mcp-Session-Id");
  std::shared_ptr<HttpSession> session;
  if (!session_id.empty()) {
    session = find_session(session_id);
    if (!session) return fail(stream, request, http::status::not_found, "unknown or ended session; initialize again");
    session->touch();
  }
  if (request.method() == http::verb::post) return handle_post(stream, request, std::move(session));
  if (!session) return fail(stream, request, http::status::bad_request, "Mcp-Session-Id header required");
  if (request.method() == http::verb::get) return handle_get(stream, request, std::move(session));
  end_session(session_id);
  spdlog::info("mcp http: session {} ended by the client", session_id);
  return send(stream, reply(request, http::status::ok, ""));
}

bool HttpServer::State::handle_post(TimedSocket& stream, Request& request, std::shared_ptr<HttpSession> session) {
  std::string accept = header(request, http::field::accept);
  if (!accepts(accept, "application/json") || !accepts(accept, "text/event-stream"))
    return fail(stream, request, http::status::not_acceptable,
                "Accept must list application/json and text/event-stream");
  std::string content_type = header(request, http::field::content_type);
  if (lowercase(content_type.substr(0, content_type.find(';'))) != "application/json")
    return fail(stream, request, http::status::unsupported_media_type, "Content-Type must be application/json");

  auto parsed = parse_message(request.body(), server.options().limits);
  if (auto* refused = std::get_if<RefusedMessage>(&parsed))
    return send(stream, reply(request, http::status::bad_request, to_wire(refused->response())));
  const json& message = std::get<json>(parsed);
  bool initialize = message.is_object() && message.value("method", json()) == "initialize";
  bool created = false;
  if (initialize && session)
    return fail(stream, request, http::status::bad_request, "initialize opens a session; send it without Mcp-Session-Id");
  if (!initialize && !session)
    return fail(stream, request, http::status::bad_request, "Mcp-Session-Id header required (initialize first)");
  if (initialize) {
    std::lock_guard lock(sessions_mutex);
    if (sessions.size() >= options.max_sessions)
      return fail(stream, request, http::status::service_unavailable,
                  "too many sessions (limit " + std::to_string(options.max_sessions) +
                      "); end one with DELETE or wait for idle ones to expire");
    session = std::make_shared<HttpSession>();
    session->id = random_session_id();
    session->standalone = std::make_shared<Stream>(0, options.max_events_per_stream);
    session->mcp = server.open_session(std::make_shared<StreamOutbound>(session->standalone));
    session->touch();
    created = true;
  }
  std::shared_ptr<Session> mcp_session = session->mcp;

  std::shared_ptr<Stream> sse;
  {
    std::lock_guard lock(session->mutex);
    uint64_t stream_id = session->next_stream++;
    sse = std::make_shared<Stream>(stream_id, options.max_events_per_stream);
    session->streams[stream_id] = sse;
  }
  Server::Received received = server.receive(mcp_session, message, sse);
  sse->expect(received);
  if (created) {
    if (mcp_session->initialized()) {
      std::lock_guard lock(sessions_mutex);
      sessions[session->id] = session;
      spdlog::info("mcp http: session {} started", session->id);
    } else {
      server.close_session(*mcp_session);  // initialize failed: no session
    }
  }
  if (received.requests == 0) {
    session->forget_stream(sse->id());
    Response response = reply(request, http::status::accepted, "");
    response.erase(http::field::content_type);
    return send(stream, std::move(response));
  }
  // A stream needs a session to resume in; a rejected message is answered with JSON and a 400.
  bool stream_answer = options.sse_responses && !received.invalid && mcp_session->initialized();
  auto answer = stream_answer ? std::nullopt : sse->json_answer();
  if (answer) {
    session->forget_stream(sse->id());
    Response response = reply(request, received.invalid ? http::status::bad_request : http::status::ok, *answer);
    if (created && mcp_session->initialized()) response.set("Mcp-Session-Id", session->id);
    return send(stream, std::move(response));
  }
  sse->attach();
  session->connections++;
  bool keep_open = serve_sse(stream, request, *session, *sse, 0, true);
  session->connections--;
  return keep_open;
}

bool HttpServer::State::handle_get(TimedSocket& stream, Request& request, std::shared_ptr<HttpSession> session) {
  if (!accepts(header(request, http::field::accept), "text/event-stream"))
    return fail(stream, request, http::status::not_acceptable, "Accept must list text/event-stream");
  std::shared_ptr<Stream> sse = session->standalone;
  uint64_t after = 0;
  bool resume = request.count("Last-Event-ID") > 0;
  if (resume) {
    std::string last = header(request, "Last-Event-ID");
    auto dash = last.find('-');
    std::shared_ptr<Stream> found;
    if (dash != std::string::npos) {
      auto stream_id = parse_decimal(std::string_view(last).substr(0, dash));
      auto seq = parse_decimal(std::string_view(last).substr(dash + 1));
      if (stream_id && seq) {
        found = session->find_stream(*stream_id);
        after = *seq;
      }
    }
    if (!found)
      return fail(stream, request, http::status::not_found, "Last-Event-ID '" + last + "' names no stream of this session");
    sse = found;
  }
  if (!sse->attach())
    return fail(stream, request, http::status::conflict, "this stream is already open on another connection");
  session->connections++;
  bool keep_open = serve_sse(stream, request, *session, *sse, after, !resume);
  session->connections--;
  return keep_open;
}

bool HttpServer::State::serve_sse(TimedSocket& stream, const Request& request, HttpSession& session, Stream& sse,
                                  uint64_t after, bool prime) {
  http::response<http::empty_body> response{http::status::ok, request.version()};
  response.set(http::field::server, "vramscope-mcp");
  response.set(http::field::content_type, "text/event-stream");
  response.set(http::field::cache_control, "no-cache");
  response.set("Mcp-Session-Id", session.id);
  response.keep_alive(request.keep_alive());
  response.chunked(true);
  http::response_serializer<http::empty_body> serializer{response};
  beast::error_code ec;
  http::write_header(stream, serializer, ec);
  auto write = [&](const std::string& text) {
    if (!ec) net::write(stream, http::make_chunk(net::buffer(text)), ec);
    return !ec;
  };
  // The priming event: an id to resume from and how soon to retry (SEP-1699).
  if (prime) write("id: " + sse.event_id(0) + "\nretry: " + std::to_string(options.sse_retry.count()) + "\ndata: \n\n");
  uint64_t delivered = after;
  for (bool finished = false; !finished && !ec && !stopping;) {
    Stream::Batch batch = sse.next(delivered, options.sse_keepalive);
    if (batch.events.empty() && !batch.finished) write(": keepalive\n\n");
    for (const auto& event : batch.events) {
      if (!write("id: " + sse.event_id(event.seq) + "\nevent: message\ndata: " + event.data + "\n\n")) break;
      delivered = event.seq;
    }
    finished = batch.finished;
    session.touch();
  }
  if (!ec) net::write(stream, http::make_chunk_last(), ec);
  sse.release();
  if (sse.id() != 0 && sse.done_and_delivered(delivered)) session.forget_stream(sse.id());
  return !ec && response.keep_alive() && !stopping;
}

}  // namespace vs::mcp
