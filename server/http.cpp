#include "server/http.h"

#include <poll.h>
#include <sys/socket.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <future>
#include <list>
#include <random>
#include <set>

#include "common/untrusted_text.h"

namespace vs::mcp {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

// A connected socket whose writes give up at a deadline (Asio's blocking
// calls have none): arm() before each response or SSE event; a client that
// takes one byte now and then does not extend it. Satisfies Beast's
// SyncWriteStream. Requests are read by the I/O thread, never here.
class TimedSocket {
 public:
  explicit TimedSocket(tcp::socket& socket) : socket_(socket) {}

  void arm(std::chrono::milliseconds timeout) { deadline_ = std::chrono::steady_clock::now() + timeout; }

  template <class Buffers>
  size_t write_some(const Buffers& buffers, beast::error_code& ec) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - std::chrono::steady_clock::now());
    pollfd fd{socket_.native_handle(), POLLOUT, 0};
    int n = left.count() > 0 ? ::poll(&fd, 1, static_cast<int>(left.count())) : 0;
    if (n == 0) ec = beast::error::timeout;
    if (n < 0) ec = beast::error_code(errno, boost::system::system_category());
    if (n <= 0) return 0;
    return socket_.write_some(buffers, ec);
  }
  // Whether the client closed (or reset) the connection: an SSE stream's
  // client sends nothing, so this is how one that left is noticed before a
  // write fails.
  bool peer_closed() const {
    pollfd fd{socket_.native_handle(), POLLRDHUP, 0};
    return ::poll(&fd, 1, 0) > 0 && (fd.revents & (POLLRDHUP | POLLHUP | POLLERR));
  }

  template <class Buffers>
  size_t write_some(const Buffers& buffers) {
    beast::error_code ec;
    size_t n = write_some(buffers, ec);
    if (ec) throw beast::system_error(ec);
    return n;
  }

 private:
  tcp::socket& socket_;
  std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::now();
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

  // The standalone stream (0): the last event written to a connection, where
  // a new GET without Last-Event-ID starts (what was sent is not sent again;
  // what came while no GET was open is).
  void mark_written(uint64_t seq) {
    std::lock_guard lock(mutex_);
    written_ = std::max(written_, seq);
  }
  uint64_t written() const {
    std::lock_guard lock(mutex_);
    return written_;
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
  uint64_t written_ = 0;
};

// The session's messages that belong to no request go to its stream 0. With
// no GET stream open they wait there (at most max_events_per_stream, the
// oldest dropped) for the next GET.
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

// One client connection. While it waits for or sends a request it belongs to
// the I/O thread (async reads, its timer); a complete request hands it to a
// thread of its own, which hands it back (net::post) for the next request.
struct Conn {
  explicit Conn(tcp::socket s) : socket(std::move(s)), timer(socket.get_executor()) {}
  tcp::socket socket;
  net::steady_timer timer;
  uint64_t timer_generation = 0;
  beast::flat_buffer buffer;
  std::optional<http::request_parser<http::string_body>> parser;
  std::string address;          // the client's IP address
  bool authenticated = false;   // presented the bearer token (kept for the connection's life)
  bool closed = false;
  bool pending = false;         // in State::pending
  std::list<std::shared_ptr<Conn>>::iterator pending_at;
  size_t body_bytes = 0;        // counted in State::pending_body_bytes
  std::chrono::steady_clock::time_point ready_at;  // when its request was read
};

}  // namespace

struct HttpServer::State {
  Server& server;
  HttpOptions options;
  net::io_context io;
  tcp::acceptor acceptor{io};
  net::steady_timer accept_retry{io};
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  uint16_t port = 0;
  bool loopback = true;
  std::vector<std::string> allowed_hosts;    // lowercase
  std::vector<std::string> allowed_origins;  // lowercase
  std::atomic<bool> stopping{false};

  std::mutex sessions_mutex;
  std::map<std::string, std::shared_ptr<HttpSession>> sessions;

  // Connections waiting for or sending a request, oldest first; the I/O thread's alone.
  std::list<std::shared_ptr<Conn>> pending;
  std::map<std::string, size_t> pending_per_address;  // those without the token
  size_t pending_body_bytes = 0;

  // Requests being served, each on its thread.
  struct Active {
    std::thread thread;
    std::shared_ptr<Conn> conn;
    std::shared_ptr<std::atomic<bool>> done;
  };
  mutable std::mutex connections_mutex;
  std::list<Active> active;
  std::thread io_thread;
  std::thread janitor_thread;
  std::mutex janitor_mutex;
  std::condition_variable janitor_wake;

  mutable std::mutex counters_mutex;
  HttpCounters counters;
  void count(uint64_t HttpCounters::*field) {
    std::lock_guard lock(counters_mutex);
    ++(counters.*field);
  }

  State(Server& s, HttpOptions o) : server(s), options(std::move(o)) {}

  // ---- the I/O thread ----
  void accept_next();
  void admit(const std::shared_ptr<Conn>& conn);
  bool evict_oldest(const std::string* address, const Conn* spare);
  void leave_pending(Conn& conn);
  void close(const std::shared_ptr<Conn>& conn);
  void arm(const std::shared_ptr<Conn>& conn, std::chrono::milliseconds timeout, uint64_t HttpCounters::*counter);
  void wait_request(const std::shared_ptr<Conn>& conn, bool fresh);
  void read_header(const std::shared_ptr<Conn>& conn);
  void on_header(const std::shared_ptr<Conn>& conn, beast::error_code ec);
  void read_body(const std::shared_ptr<Conn>& conn);
  void set_body_bytes(Conn& conn, size_t bytes);
  void dispatch(const std::shared_ptr<Conn>& conn);
  void refuse_oversized(const std::shared_ptr<Conn>& conn);
  // Answers a request the I/O thread refuses, then closes (lingering: what the
  // client still sends is read and dropped for a moment, so the answer is not
  // lost to a reset).
  void refuse(const std::shared_ptr<Conn>& conn, Response response);
  void linger(const std::shared_ptr<Conn>& conn, std::shared_ptr<std::array<char, 4096>> scratch);

  // ---- request threads ----
  void serve(const std::shared_ptr<Conn>& conn);
  void janitor_loop();
  // Joins the threads of served requests, which count against max_connections until then.
  void reap_connections();
  // Returns false when the connection must close.
  bool handle(TimedSocket& stream, Request& request);
  bool handle_post(TimedSocket& stream, Request& request, std::shared_ptr<HttpSession> session);
  bool handle_get(TimedSocket& stream, Request& request, std::shared_ptr<HttpSession> session);
  bool serve_sse(TimedSocket& stream, const Request& request, HttpSession& session, Stream& sse, uint64_t after,
                 bool prime);
  std::shared_ptr<HttpSession> find_session(const std::string& id);
  void end_session(const std::string& id);
  void finish_ending(HttpSession& session);
  // Endpoint, Host/Origin, token and method: what is checked on the header
  // alone, by the I/O thread. A response when the request is refused.
  std::optional<Response> precheck(const Request& request, bool token_ok) const;
  bool token_presented(const Request& request) const;
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
  Response error_reply(const Request& request, http::status status, const std::string& message) const {
    spdlog::debug("mcp http: {} -> {}: {}", escape_untrusted(header(request, http::field::host), 80),
                  static_cast<int>(status), escape_untrusted(message, 200));
    return reply(request, status, error_body(transport_error, message));
  }
  bool send(TimedSocket& stream, Response&& response) {
    beast::error_code ec;
    stream.arm(options.write_timeout);
    http::write(stream, response, ec);
    return !ec && response.keep_alive();
  }
  bool fail(TimedSocket& stream, const Request& request, http::status status, const std::string& message) {
    return send(stream, error_reply(request, status, message));
  }
};

std::optional<std::string> weak_token_reason(std::string_view token, size_t min_length) {
  for (unsigned char c : token)
    if (c < 0x21 || c > 0x7e)
      return "the bearer token has a character that is not visible ASCII (a space or control character?)";
  std::set<char> distinct(token.begin(), token.end());
  if (token.size() < min_length || distinct.size() < 5)
    return "the bearer token is too weak (" + std::to_string(token.size()) + " characters, " +
           std::to_string(distinct.size()) + " distinct): use at least " + std::to_string(min_length) +
           " random characters, e.g. `openssl rand -hex 32`";
  return std::nullopt;
}

HttpServer::HttpServer(Server& server, HttpOptions options)
    : state_(std::make_unique<State>(server, std::move(options))) {}

HttpServer::~HttpServer() { stop(); }

uint16_t HttpServer::port() const { return state_->port; }

HttpCounters HttpServer::counters() const {
  State& s = *state_;
  HttpCounters out;
  {
    std::lock_guard lock(s.counters_mutex);
    out = s.counters;
  }
  {
    std::lock_guard lock(s.connections_mutex);
    out.active = s.active.size();
  }
  {
    std::lock_guard lock(s.sessions_mutex);
    out.sessions = s.sessions.size();
  }
  return out;
}

Result<uint16_t> HttpServer::start() {
  State& s = *state_;
  s.loopback = is_loopback(s.options.host);
  if (!s.loopback && s.options.bearer_token.empty())
    return Error{"mcp http: binding " + s.options.host +
                 " (not loopback) needs a bearer token; set one or bind 127.0.0.1"};
  if (!s.options.bearer_token.empty())
    if (auto weak = weak_token_reason(s.options.bearer_token, s.options.min_token_length))
      return Error{"mcp http: " + *weak};
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

  // A page of this server's own origin (a local browser) is welcome on any
  // address; other Hosts are checked on loopback or when some are listed.
  std::string port = std::to_string(s.port);
  for (const char* name : {"localhost", "127.0.0.1", "[::1]"}) {
    s.allowed_hosts.push_back(std::string(name) + ":" + port);
    s.allowed_origins.push_back(std::string("http://") + name + ":" + port);
  }
  for (const auto& host : s.options.allowed_hosts) s.allowed_hosts.push_back(lowercase(host));
  for (const auto& origin : s.options.allowed_origins) s.allowed_origins.push_back(lowercase(origin));

  s.work.emplace(s.io.get_executor());
  s.accept_next();
  s.io_thread = std::thread([&s] { s.io.run(); });
  s.janitor_thread = std::thread([&s] { s.janitor_loop(); });
  spdlog::info("mcp http: serving http://{}:{}{}", s.options.host, s.port, s.options.endpoint);
  return s.port;
}

void HttpServer::stop() {
  State& s = *state_;
  if (!s.io_thread.joinable() || s.stopping.exchange(true)) return;
  // The I/O thread stops taking connections and closes those waiting.
  std::promise<void> closed;
  net::post(s.io, [&s, &closed] {
    beast::error_code ec;
    s.acceptor.close(ec);
    s.accept_retry.cancel();
    auto waiting = s.pending;
    for (auto& conn : waiting) s.close(conn);
    closed.set_value();
  });
  closed.get_future().wait();
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
  std::list<State::Active> active;
  {
    std::lock_guard lock(s.connections_mutex);
    active.swap(s.active);
  }
  for (auto& request : active) ::shutdown(request.conn->socket.native_handle(), SHUT_RDWR);
  for (auto& request : active) request.thread.join();
  s.work.reset();
  s.io.stop();
  s.io_thread.join();
  s.pending.clear();
}

// ---- the I/O thread: accepting and reading requests ----

void HttpServer::State::accept_next() {
  acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (stopping || !acceptor.is_open()) return;
    if (ec) {
      // Out of file descriptors (EMFILE) and the like: try again shortly
      // rather than spinning; connections wait in the listen backlog.
      spdlog::warn("mcp http: accept: {}", ec.message());
      accept_retry.expires_after(std::chrono::milliseconds(100));
      accept_retry.async_wait([this](beast::error_code wait_ec) {
        if (!wait_ec && !stopping) accept_next();
      });
      return;
    }
    auto conn = std::make_shared<Conn>(std::move(socket));
    beast::error_code address_ec;
    conn->address = conn->socket.remote_endpoint(address_ec).address().to_string();
    count(&HttpCounters::accepted);
    admit(conn);
    if (!conn->closed) wait_request(conn, true);
    accept_next();
  });
}

// A connection joins the pending ones; over a limit, the oldest one without
// the token makes room, so a new connection (a token holder's among them) is
// never locked out by connections that hold on.
void HttpServer::State::admit(const std::shared_ptr<Conn>& conn) {
  if (!conn->authenticated && pending_per_address[conn->address] >= options.max_pending_per_address)
    evict_oldest(&conn->address, conn.get());
  if (pending.size() >= options.max_pending_connections && !evict_oldest(nullptr, conn.get())) {
    // Every pending connection presented the token: this one waits its turn outside.
    spdlog::warn("mcp http: {} pending connections, all authenticated: a new one is closed",
                 options.max_pending_connections);
    conn->closed = true;
    beast::error_code ec;
    conn->socket.close(ec);
    return;
  }
  conn->pending_at = pending.insert(pending.end(), conn);
  conn->pending = true;
  if (!conn->authenticated) ++pending_per_address[conn->address];
  std::lock_guard lock(counters_mutex);
  counters.pending = pending.size();
}

bool HttpServer::State::evict_oldest(const std::string* address, const Conn* spare) {
  for (auto it = pending.begin(); it != pending.end(); ++it) {
    const Conn& candidate = **it;
    if (candidate.authenticated || &candidate == spare || (address && candidate.address != *address)) continue;
    spdlog::debug("mcp http: cutting the oldest pending connection of {} to admit a new one", candidate.address);
    count(&HttpCounters::evicted);
    auto victim = *it;  // close() erases it from `pending`
    close(victim);
    return true;
  }
  return false;
}

void HttpServer::State::leave_pending(Conn& conn) {
  if (!conn.pending) return;
  conn.pending = false;
  set_body_bytes(conn, 0);
  if (!conn.authenticated) {
    auto it = pending_per_address.find(conn.address);
    if (it != pending_per_address.end() && --it->second == 0) pending_per_address.erase(it);
  }
  pending.erase(conn.pending_at);
  std::lock_guard lock(counters_mutex);
  counters.pending = pending.size();
}

void HttpServer::State::close(const std::shared_ptr<Conn>& conn) {
  if (conn->closed) return;
  conn->closed = true;
  leave_pending(*conn);
  conn->timer.cancel();
  beast::error_code ec;
  conn->socket.shutdown(tcp::socket::shutdown_both, ec);
  conn->socket.close(ec);
}

void HttpServer::State::arm(const std::shared_ptr<Conn>& conn, std::chrono::milliseconds timeout,
                            uint64_t HttpCounters::*counter) {
  conn->timer.expires_after(timeout);
  conn->timer.async_wait([this, conn, generation = ++conn->timer_generation, counter](beast::error_code ec) {
    if (ec || conn->closed || generation != conn->timer_generation) return;
    if (counter) count(counter);
    close(conn);
  });
}

void HttpServer::State::wait_request(const std::shared_ptr<Conn>& conn, bool fresh) {
  conn->parser.emplace();
  conn->parser->header_limit(static_cast<uint32_t>(options.max_header_bytes));
  conn->parser->body_limit(server.options().limits.max_message_bytes);
  if (fresh || conn->buffer.size() > 0) return read_header(conn);
  // A kept-alive connection: the header's deadline starts with its first byte.
  arm(conn, options.keepalive_timeout, nullptr);
  conn->socket.async_wait(tcp::socket::wait_read, [this, conn](beast::error_code ec) {
    if (conn->closed) return;
    if (ec) return close(conn);
    read_header(conn);
  });
}

void HttpServer::State::read_header(const std::shared_ptr<Conn>& conn) {
  arm(conn, options.header_timeout, &HttpCounters::header_timeouts);
  http::async_read_header(conn->socket, conn->buffer, *conn->parser,
                          [this, conn](beast::error_code ec, size_t) { on_header(conn, ec); });
}

bool HttpServer::State::token_presented(const Request& request) const {
  std::string authorization = header(request, http::field::authorization);
  return authorization.size() > 7 && lowercase(authorization.substr(0, 7)) == "bearer " &&
         constant_time_equal(authorization.substr(7), options.bearer_token);
}

void HttpServer::State::on_header(const std::shared_ptr<Conn>& conn, beast::error_code ec) {
  if (conn->closed) return;
  if (ec == http::error::header_limit) {
    Request request = conn->parser->get();
    return refuse(conn, error_reply(request, http::status::request_header_fields_too_large,
                                    "request header larger than " + std::to_string(options.max_header_bytes) +
                                        " bytes"));
  }
  if (ec == http::error::body_limit) return refuse_oversized(conn);  // Content-Length over the limit
  if (ec) return close(conn);  // closed, cut, or not HTTP
  const Request& request = conn->parser->get();
  // Checked on every request; a connection that presented the token once
  // counts against no address's share from then on and is never cut to make room.
  const bool token_ok = !options.bearer_token.empty() && token_presented(request);
  if (token_ok && !conn->authenticated) {
    auto it = pending_per_address.find(conn->address);
    if (it != pending_per_address.end() && --it->second == 0) pending_per_address.erase(it);
    conn->authenticated = true;
  }
  if (auto refused = precheck(request, token_ok)) return refuse(conn, std::move(*refused));
  if (conn->parser->is_done()) return dispatch(conn);
  arm(conn, options.body_timeout, &HttpCounters::body_timeouts);
  if (beast::iequals(header(request, http::field::expect), "100-continue")) {
    static const std::string continue_line = "HTTP/1.1 100 Continue\r\n\r\n";
    return net::async_write(conn->socket, net::buffer(continue_line), [this, conn](beast::error_code write_ec, size_t) {
      if (conn->closed) return;
      if (write_ec) return close(conn);
      read_body(conn);
    });
  }
  read_body(conn);
}

void HttpServer::State::set_body_bytes(Conn& conn, size_t bytes) {
  pending_body_bytes = pending_body_bytes - conn.body_bytes + bytes;
  conn.body_bytes = bytes;
}

void HttpServer::State::read_body(const std::shared_ptr<Conn>& conn) {
  http::async_read_some(conn->socket, conn->buffer, *conn->parser, [this, conn](beast::error_code ec, size_t) {
    if (conn->closed) return;
    if (ec == http::error::body_limit) return refuse_oversized(conn);
    if (ec) return close(conn);
    if (conn->parser->is_done()) return dispatch(conn);
    set_body_bytes(*conn, conn->parser->get().body().size());
    // Slow bodies together hold at most max_pending_body_bytes: the oldest cut first.
    while (pending_body_bytes > options.max_pending_body_bytes) {
      auto oldest = std::find_if(pending.begin(), pending.end(), [](const std::shared_ptr<Conn>& c) {
        return !c->authenticated && c->body_bytes > 0;
      });
      if (oldest == pending.end()) break;
      count(&HttpCounters::evicted);
      auto victim = *oldest;  // close() erases it from `pending`
      close(victim);
    }
    if (!conn->closed) read_body(conn);
  });
}

// The same refusal as stdio's for a line over the limit.
void HttpServer::State::refuse_oversized(const std::shared_ptr<Conn>& conn) {
  Request request = conn->parser->get();
  request.body().clear();
  refuse(conn, reply(request, http::status::payload_too_large,
                     to_wire(oversized_message(server.options().limits).response())));
}

void HttpServer::State::dispatch(const std::shared_ptr<Conn>& conn) {
  conn->timer_generation++;
  conn->timer.cancel();
  leave_pending(*conn);
  reap_connections();
  std::lock_guard lock(connections_mutex);
  if (active.size() >= options.max_connections) {
    count(&HttpCounters::refused_busy);
    Response response = error_reply(conn->parser->get(), http::status::service_unavailable,
                                     "too many requests in progress (limit " + std::to_string(options.max_connections) +
                                         "); retry shortly");
    response.set(http::field::retry_after, "1");
    return refuse(conn, std::move(response));
  }
  auto done = std::make_shared<std::atomic<bool>>(false);
  active.push_back({std::thread([this, conn, done] {
                      serve(conn);
                      done->store(true);
                    }),
                    conn, done});
}

void HttpServer::State::refuse(const std::shared_ptr<Conn>& conn, Response response) {
  response.keep_alive(false);
  auto message = std::make_shared<Response>(std::move(response));
  arm(conn, options.write_timeout, nullptr);
  http::async_write(conn->socket, *message, [this, conn, message](beast::error_code ec, size_t) {
    if (conn->closed) return;
    if (ec) return close(conn);
    beast::error_code shutdown_ec;
    conn->socket.shutdown(tcp::socket::shutdown_send, shutdown_ec);
    arm(conn, std::chrono::milliseconds(1000), nullptr);
    linger(conn, std::make_shared<std::array<char, 4096>>());
  });
}

void HttpServer::State::linger(const std::shared_ptr<Conn>& conn, std::shared_ptr<std::array<char, 4096>> scratch) {
  conn->socket.async_read_some(net::buffer(*scratch), [this, conn, scratch](beast::error_code ec, size_t) {
    if (conn->closed) return;
    if (ec) return close(conn);
    linger(conn, scratch);
  });
}

// ---- request threads ----

void HttpServer::State::serve(const std::shared_ptr<Conn>& conn) {
  Request request = conn->parser->release();
  TimedSocket stream(conn->socket);
  bool keep_open = false;
  try {
    keep_open = handle(stream, request);
  } catch (const std::exception& e) {
    spdlog::error("mcp http: a {} request failed: {}", static_cast<int>(request.method()), e.what());
  }
  if (keep_open && !stopping) {
    // Back to the I/O thread for the next request.
    net::post(io, [this, conn] {
      if (stopping) return close(conn);
      admit(conn);
      if (!conn->closed) wait_request(conn, false);
    });
    return;
  }
  beast::error_code ec;
  conn->socket.shutdown(tcp::socket::shutdown_both, ec);
  conn->socket.close(ec);
}

void HttpServer::State::janitor_loop() {
  std::unique_lock lock(janitor_mutex);
  while (!stopping) {
    janitor_wake.wait_for(lock, std::chrono::milliseconds(std::clamp<long>(
                                    options.session_idle_timeout.count() / 4, 10, 1000)));
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
      spdlog::info("mcp http: session {} idle for {} s: ended", id, options.session_idle_timeout.count() / 1000.0);
      count(&HttpCounters::sessions_expired);
      end_session(id);
    }
  }
}

void HttpServer::State::reap_connections() {
  std::list<Active> finished;
  {
    std::lock_guard lock(connections_mutex);
    for (auto it = active.begin(); it != active.end();)
      if (it->done->load()) finished.splice(finished.end(), active, it++);
      else ++it;
  }
  for (auto& request : finished) request.thread.join();
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
  finish_ending(*session);
}

void HttpServer::State::finish_ending(HttpSession& session) {
  server.close_session(*session.mcp);
  session.standalone->end();
  std::lock_guard lock(session.mutex);
  for (auto& [stream_id, stream] : session.streams) stream->end();
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

std::optional<Response> HttpServer::State::precheck(const Request& request, bool token_ok) const {
  std::string target(request.target().data(), request.target().size());
  target = target.substr(0, target.find('?'));
  if (target != options.endpoint)
    return error_reply(request, http::status::not_found, "no such endpoint; MCP is served at " + options.endpoint);
  if (auto denied = check_access(request)) return error_reply(request, http::status::forbidden, *denied);
  if (!options.bearer_token.empty() && !token_ok) {
    std::string authorization = header(request, http::field::authorization);
    bool presented = authorization.size() > 7 && lowercase(authorization.substr(0, 7)) == "bearer ";
    Response response = reply(request, http::status::unauthorized,
                              error_body(transport_error, presented ? "invalid bearer token" : "bearer token required"));
    response.set(http::field::www_authenticate,
                 presented ? R"(Bearer realm="mcp", error="invalid_token")" : R"(Bearer realm="mcp")");
    return response;
  }
  if (request.method() != http::verb::post && request.method() != http::verb::get &&
      request.method() != http::verb::delete_) {
    Response response = reply(request, http::status::method_not_allowed,
                              error_body(transport_error, "method not allowed; use POST, GET or DELETE"));
    response.set(http::field::allow, "GET, POST, DELETE");
    return response;
  }
  return std::nullopt;
}

// After precheck (the I/O thread's), with the whole request.
bool HttpServer::State::handle(TimedSocket& stream, Request& request) {
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
    std::shared_ptr<HttpSession> reclaimed;
    std::optional<long> retry_after;  // seconds, when refused
    {
      std::lock_guard lock(sessions_mutex);
      if (sessions.size() >= options.max_sessions) {
        // Full: the least recently used session that nothing is using makes
        // room once it has been idle for session_reclaim_after.
        auto now = std::chrono::steady_clock::now().time_since_epoch();
        std::optional<std::chrono::steady_clock::duration> longest_idle;
        std::string lru;
        for (auto& [id, candidate] : sessions) {
          if (candidate->connections > 0 || candidate->mcp->in_flight() > 0) continue;
          auto idle = now - std::chrono::steady_clock::duration(candidate->last_used.load());
          if (!longest_idle || idle > *longest_idle) longest_idle = idle, lru = id;
        }
        if (longest_idle && *longest_idle >= options.session_reclaim_after) {
          reclaimed = sessions[lru];
          sessions.erase(lru);
        } else {
          auto wait = options.session_reclaim_after - (longest_idle ? *longest_idle : std::chrono::steady_clock::duration{});
          retry_after = std::max<long>(1, std::chrono::ceil<std::chrono::seconds>(wait).count());
        }
      }
    }
    if (retry_after) {
      count(&HttpCounters::sessions_refused);
      Response response = error_reply(
          request, http::status::service_unavailable,
          "too many sessions (limit " + std::to_string(options.max_sessions) + "), all in use in the last " +
              fmt::format("{:g}", options.session_reclaim_after.count() / 1000.0) + " s; retry after " + std::to_string(*retry_after) + " s, or end a session of yours with DELETE");
      response.set(http::field::retry_after, std::to_string(*retry_after));
      return send(stream, std::move(response));
    }
    if (reclaimed) {
      spdlog::info("mcp http: session {} ended to make room for a new one (the least recently used, idle)",
                   reclaimed->id);
      count(&HttpCounters::sessions_reclaimed);
      finish_ending(*reclaimed);
    }
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
      {
        std::lock_guard lock(sessions_mutex);
        sessions[session->id] = session;
      }
      spdlog::info("mcp http: session {} started", session->id);
      // stop() may have ended the sessions it found before this one joined them.
      if (stopping) end_session(session->id);
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
  bool resume = request.count("Last-Event-ID") > 0;
  uint64_t after = resume ? 0 : sse->written();
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
  stream.arm(options.write_timeout);
  http::write_header(stream, serializer, ec);
  auto write = [&](const std::string& text) {
    stream.arm(options.write_timeout);
    if (!ec) net::write(stream, http::make_chunk(net::buffer(text)), ec);
    return !ec;
  };
  // The priming event: an id to resume from and how soon to retry (SEP-1699).
  if (prime) write("id: " + sse.event_id(0) + "\nretry: " + std::to_string(options.sse_retry.count()) + "\ndata: \n\n");
  uint64_t delivered = after;
  // Waits in short slices to notice a client that left: until the stream is
  // released, a reconnecting client would get 409.
  const auto slice = std::min<std::chrono::milliseconds>(options.sse_keepalive, std::chrono::milliseconds(200));
  auto last_write = std::chrono::steady_clock::now();
  bool client_left = false;
  for (bool finished = false; !finished && !ec && !stopping;) {
    Stream::Batch batch = sse.next(delivered, slice);
    // Checked before writing too: an event written into a connection its
    // client already closed would count as sent, and a new GET skips it.
    if ((client_left = stream.peer_closed())) break;
    if (batch.events.empty() && !batch.finished) {
      if (std::chrono::steady_clock::now() - last_write >= options.sse_keepalive) {
        write(": keepalive\n\n");
        last_write = std::chrono::steady_clock::now();
      }
      session.touch();
      continue;
    }
    last_write = std::chrono::steady_clock::now();
    for (const auto& event : batch.events) {
      if (!write("id: " + sse.event_id(event.seq) + "\nevent: message\ndata: " + event.data + "\n\n")) break;
      delivered = event.seq;
      if (sse.id() == 0) sse.mark_written(delivered);
    }
    finished = batch.finished;
    session.touch();
  }
  stream.arm(options.write_timeout);
  if (!ec && !client_left) net::write(stream, http::make_chunk_last(), ec);
  sse.release();
  if (sse.id() != 0 && sse.done_and_delivered(delivered)) session.forget_stream(sse.id());
  return !ec && !client_left && response.keep_alive() && !stopping;
}

}  // namespace vs::mcp
