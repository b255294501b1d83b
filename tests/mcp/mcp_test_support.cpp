#include "tests/mcp/mcp_test_support.h"

#include <arpa/inet.h>
#include <ext/stdio_filebuf.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <future>
#include <list>
#include <stdexcept>

#include "server/http.h"
#include "server/stdio.h"

namespace vs::mcp::test {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

Registry test_registry(std::shared_ptr<Observed> observed) {
  Registry registry;
  auto must = [](Status status) {
    if (!status) throw std::runtime_error(status.message());
  };
  must(registry.add(Tool{"echo", "Echo", "Returns its arguments", {{"type", "object"}},
                         {{"type", "object"}}, {{"readOnlyHint", true}},
                         [](const json& args, RequestContext&) -> Result<json> {
                           json result = text_result(args.dump());
                           result["structuredContent"] = args;
                           return result;
                         }}));
  json slow_schema = {{"type", "object"}, {"properties", {{"ms", {{"type", "integer"}, {"minimum", 0}}}}}};
  must(registry.add(Tool{"slow", "", "Runs for `ms` milliseconds", slow_schema, nullptr, nullptr,
                         [observed, slow_schema](const json& args, RequestContext& context) -> Result<json> {
                           if (auto invalid = check_arguments(slow_schema, args)) return *invalid;
                           observed->slow_started = true;
                           ++observed->slow_runs;
                           ++observed->slow_running;
                           struct Leave {
                             std::atomic<int>& running;
                             ~Leave() { --running; }
                           } leave{observed->slow_running};
                           int ms = args.value("ms", 1000);
                           for (int waited = 0; waited < ms; waited += 20) {
                             if (context.cancelled()) {
                               observed->slow_saw_cancel = true;
                               return text_result("cancelled");
                             }
                             context.progress(waited, ms, "waiting");
                             std::this_thread::sleep_for(std::chrono::milliseconds(20));
                           }
                           return text_result("slept " + std::to_string(ms) + " ms");
                         }}));
  must(registry.add(Tool{"logs", "", "Logs at info and at error", {{"type", "object"}}, nullptr, nullptr,
                         [](const json&, RequestContext& context) -> Result<json> {
                           context.log(LogLevel::info, "an info line");
                           context.log(LogLevel::error, "an error line", "test");
                           return text_result("logged");
                         }}));
  for (int i = 0; i < 5; ++i)
    must(registry.add(Tool{"tool_" + std::to_string(i), "", "For pagination", {{"type", "object"}}, nullptr, nullptr,
                           [](const json&, RequestContext&) -> Result<json> { return text_result("ok"); }}));
  must(registry.add(Prompt{"greet", "Greet", "Greets someone",
                           {{"name", "", "Who", true, [](const json&) { return std::vector<std::string>{"alice", "albert", "bob"}; }}},
                           [](const json& args, RequestContext&) -> Result<json> {
                             return json{{"messages",
                                          {{{"role", "user"}, {"content", {{"type", "text"}, {"text", "Hello " + args.value("name", "")}}}}}}};
                           }}));
  must(registry.add(Resource{"test://a", "a", "A", "Resource a", "text/plain",
                             [](const std::string& uri, RequestContext&) -> Result<json> {
                               return json::array({{{"uri", uri}, {"mimeType", "text/plain"}, {"text", "content of a"}}});
                             }}));
  must(registry.add(ResourceTemplate{"test://item/{id}", "item", "Item", "Items by id", "text/plain",
                                     [](const std::string& uri, const std::map<std::string, std::string>& vars,
                                        RequestContext&) -> Result<json> {
                                       const std::string& id = vars.at("id");
                                       if (id.find_first_not_of("0123456789") != std::string::npos)
                                         return Error{"item ids are numbers, got '" + id + "'"};
                                       return json::array({{{"uri", uri}, {"text", "item " + id}}});
                                     },
                                     {{"id", [](const json&) { return std::vector<std::string>{"1", "12", "2"}; }}}}));
  return registry;
}

ServerOptions test_options() {
  ServerOptions options;
  options.page_size = 2;
  return options;
}

json request(int id, const std::string& method, json params) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", std::move(params)}};
}

json notification(const std::string& method, json params) {
  return {{"jsonrpc", "2.0"}, {"method", method}, {"params", std::move(params)}};
}

json initialize_request(int id, const std::string& version) {
  return request(id, "initialize",
                 {{"protocolVersion", version},
                  {"capabilities", json::object()},
                  {"clientInfo", {{"name", "mcp_protocol_tests"}, {"version", "1"}}}});
}

// ---- StdioPeer ----

StdioPeer::StdioPeer(Server& server) {
  if (::pipe(to_server_) != 0 || ::pipe(from_server_) != 0) throw std::runtime_error("pipe failed");
  input_ = std::make_unique<StoppableInput>(to_server_[0]);
  thread_ = std::thread([this, &server] {
    __gnu_cxx::stdio_filebuf<char> out_buffer(from_server_[1], std::ios::out);  // closes it
    std::istream in(input_.get());
    std::ostream out(&out_buffer);
    (void)run_stdio(server, in, out);
    out.flush();
    ::close(to_server_[0]);
    done_ = true;
  });
}

StdioPeer::~StdioPeer() {
  close_input();
  thread_.join();
  ::close(from_server_[0]);
}

void StdioPeer::close_input() {
  if (to_server_[1] >= 0) ::close(to_server_[1]);
  to_server_[1] = -1;
}

bool StdioPeer::finished(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done_ && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return done_;
}

void StdioPeer::send_line(const std::string& line) {
  std::string data = line + "\n";
  if (::write(to_server_[1], data.data(), data.size()) != static_cast<ssize_t>(data.size()))
    throw std::runtime_error("write to the server's stdin failed");
}

std::optional<json> StdioPeer::next(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (auto newline = pending_.find('\n'); newline != std::string::npos) {
      std::string line = pending_.substr(0, newline);
      pending_.erase(0, newline + 1);
      return json::parse(line);  // anything else on stdout fails the test
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd fd{from_server_[0], POLLIN, 0};
    if (::poll(&fd, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
    char buffer[4096];
    ssize_t n = ::read(from_server_[0], buffer, sizeof buffer);
    if (n <= 0) return std::nullopt;
    pending_.append(buffer, n);
  }
}

std::optional<json> StdioPeer::response_to(const json& id, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (auto message = next(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()))) {
    if (message->is_object() && message->value("id", json()) == id && !message->contains("method")) return message;
    skipped_.push_back(*message);
  }
  return std::nullopt;
}

// ---- HTTP ----

std::vector<json> HttpReply::messages() const {
  std::vector<json> out;
  if (header("content-type").rfind("application/json", 0) == 0) {
    json body_json = json::parse(body);
    if (body_json.is_array())
      for (auto& item : body_json) out.push_back(item);
    else
      out.push_back(body_json);
    return out;
  }
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    size_t end = body.find('\n', pos);
    std::string data = body.substr(pos + 6, end - pos - 6);
    if (!data.empty()) out.push_back(json::parse(data));
    pos = end;
  }
  return out;
}

HttpReply http_call(uint16_t port, const std::string& method, const std::string& body, Headers headers,
                    const std::string& target) {
  net::io_context io;
  tcp::socket socket(io);
  socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  http::request<http::string_body> request{http::string_to_verb(method), target, 11};
  Headers defaults = {{"Host", "127.0.0.1:" + std::to_string(port)}};
  if (method == "POST") {
    defaults["Accept"] = "application/json, text/event-stream";
    defaults["Content-Type"] = "application/json";
  }
  for (auto& [name, value] : headers) defaults[name] = value;
  for (auto& [name, value] : defaults)
    if (!value.empty()) request.set(name, value);
  request.body() = body;
  request.prepare_payload();
  http::write(socket, request);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  beast::error_code ec;
  http::read(socket, buffer, parser, ec);
  if (ec && ec != http::error::end_of_stream && ec != net::error::eof) throw beast::system_error(ec);
  HttpReply reply;
  auto& response = parser.get();
  reply.status = response.result_int();
  for (auto& field : response) {
    std::string name(field.name_string().data(), field.name_string().size());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    reply.headers[name] = std::string(field.value().data(), field.value().size());
  }
  reply.body = response.body();
  return reply;
}

HttpReply http_post(uint16_t port, const json& message, const std::string& session, Headers headers) {
  if (!session.empty()) headers["Mcp-Session-Id"] = session;
  return http_call(port, "POST", to_wire(message), std::move(headers));
}

std::string http_open_session(uint16_t port, const std::string& version) {
  HttpReply reply = http_post(port, initialize_request(1, version));
  if (reply.status != 200) throw std::runtime_error("initialize failed: " + std::to_string(reply.status) + " " + reply.body);
  std::string session = reply.header("mcp-session-id");
  http_post(port, notification("notifications/initialized"), session, {{"MCP-Protocol-Version", version}});
  return session;
}

// ---- SseReader ----

SseReader::SseReader(uint16_t port, const std::string& session, Headers headers) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
    throw std::runtime_error("SseReader: connect failed");
  Headers all = {{"Host", "127.0.0.1:" + std::to_string(port)}, {"Accept", "text/event-stream"}};
  if (!session.empty()) all["Mcp-Session-Id"] = session;
  for (auto& [name, value] : headers) all[name] = value;
  std::string text = "GET /mcp HTTP/1.1\r\n";
  for (auto& [name, value] : all)
    if (!value.empty()) text += name + ": " + value + "\r\n";
  text += "\r\n";
  if (::send(fd_, text.data(), text.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(text.size()))
    throw std::runtime_error("SseReader: send failed");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (buffer_.find("\r\n\r\n") == std::string::npos)
    if (!fill(deadline)) return;
  if (buffer_.rfind("HTTP/1.1 ", 0) == 0) status_ = std::stoi(buffer_.substr(9, 3));
  parsed_ = buffer_.find("\r\n\r\n") + 4;
}

SseReader::~SseReader() { close(); }

void SseReader::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool SseReader::fill(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  if (fd_ < 0 || left.count() <= 0) return false;
  pollfd fd{fd_, POLLIN, 0};
  if (::poll(&fd, 1, static_cast<int>(left.count())) <= 0) return false;
  char data[4096];
  ssize_t n = ::read(fd_, data, sizeof data);
  if (n <= 0) return false;
  buffer_.append(data, n);
  return true;
}

std::optional<json> SseReader::next(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  // Each event is one chunk of the chunked body, so a "data: " line is never
  // split by a chunk header; the priming event's data is empty.
  for (;;) {
    size_t start = buffer_.find("data: ", parsed_);
    size_t end = start == std::string::npos ? start : buffer_.find('\n', start);
    if (end != std::string::npos) {
      std::string data = buffer_.substr(start + 6, end - start - 6);
      parsed_ = end + 1;
      if (data.empty()) continue;
      return json::parse(data);
    }
    if (!fill(deadline)) return std::nullopt;
  }
}

// ---- Client ----

namespace {

// A response or an error, not a notification or a request from the server.
bool is_answer(const json& message) {
  return message.is_object() && message.contains("id") && !message.contains("method");
}

class StdioClient : public Client {
 public:
  explicit StdioClient(Server& server) : Client("stdio"), peer_(server), reader_([this] { read(); }) {}
  ~StdioClient() override {
    // What is still running is answered after end of input: keep reading
    // until run_stdio returns, so that no answer blocks on a full pipe.
    peer_.close_input();
    peer_.finished(std::chrono::seconds(10));
    stop_ = true;
    reader_.join();
  }
  void send_text(const std::string& text) override { peer_.send_line(text); }

 private:
  void read() {
    while (!stop_)
      if (auto message = peer_.next(std::chrono::milliseconds(20))) deliver(std::move(*message));
  }
  StdioPeer peer_;
  std::atomic<bool> stop_{false};
  std::thread reader_;
};

class HttpClient : public Client {
 public:
  explicit HttpClient(Server& server) : Client("http"), http_(server, HttpOptions{}) {
    auto started = http_.start();
    if (!started) throw std::runtime_error(started.error().message);
    port_ = *started;
  }
  ~HttpClient() override { wait_sent(); }
  void send_text(const std::string& text) override {
    posts_.remove_if([](const std::future<void>& post) {
      return post.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
    });
    posts_.push_back(std::async(std::launch::async, [this, text] { post(text); }));
  }

 private:
  void wait_sent() override {
    for (auto& post : posts_) post.wait();
  }
  void post(const std::string& text) {
    Headers headers;
    {
      std::lock_guard lock(session_mutex_);
      if (!session_.empty()) headers["Mcp-Session-Id"] = session_;
    }
    try {
      HttpReply reply = http_call(port_, "POST", text, headers);
      if (std::string session = reply.header("mcp-session-id"); !session.empty()) {
        std::lock_guard lock(session_mutex_);
        session_ = session;
      }
      if (reply.status >= 500) report_failure("HTTP " + std::to_string(reply.status) + ": " + reply.body);
      for (json& message : reply.messages()) deliver(std::move(message));
    } catch (const std::exception& e) {
      report_failure(std::string("POST failed: ") + e.what());
    }
  }
  HttpServer http_;
  uint16_t port_ = 0;
  std::mutex session_mutex_;
  std::string session_;
  std::list<std::future<void>> posts_;
};

}  // namespace

void Client::deliver(json message) {
  if (!is_answer(message)) return;
  std::lock_guard lock(mutex_);
  if (message.contains("error")) error_codes_.push_back(message["error"].value("code", 0));
  inbox_.push_back(std::move(message));
  delivered_.notify_all();
}

void Client::report_failure(std::string what) {
  std::lock_guard lock(mutex_);
  failures_.push_back(std::move(what));
}

std::optional<json> Client::answer(const json& id, std::chrono::milliseconds timeout) {
  return answer_to_any({id}, timeout);
}

std::optional<json> Client::answer_to_any(const std::vector<json>& ids, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  std::optional<json> found;
  delivered_.wait_for(lock, timeout, [&] {
    auto it = std::find_if(inbox_.begin(), inbox_.end(), [&](const json& message) {
      return std::find(ids.begin(), ids.end(), message["id"]) != ids.end();
    });
    if (it == inbox_.end()) return false;
    found = std::move(*it);
    inbox_.erase(it);
    return true;
  });
  return found;
}

std::optional<json> Client::call(const json& message, std::chrono::milliseconds timeout) {
  send(message);
  return answer(message.at("id"), timeout);
}

void Client::settle() {
  wait_sent();
  std::lock_guard lock(mutex_);
  inbox_.clear();
}

void Client::initialize() {
  auto response = call(initialize_request(1));
  if (!response || !response->contains("result"))
    throw std::runtime_error(transport_ + ": initialize failed: " + (response ? response->dump() : "no answer"));
  send(notification("notifications/initialized"));
}

bool Client::alive() {
  json id;
  {
    std::lock_guard lock(mutex_);
    id = "probe-" + std::to_string(next_probe_++);
  }
  auto response = call({{"jsonrpc", "2.0"}, {"id", id}, {"method", "ping"}});
  return response && response->contains("result");
}

std::vector<int> Client::error_codes() const {
  std::lock_guard lock(mutex_);
  return error_codes_;
}

std::vector<std::string> Client::transport_failures() const {
  std::lock_guard lock(mutex_);
  return failures_;
}

std::unique_ptr<Client> connect(const std::string& transport, Server& server) {
  if (transport == "stdio") return std::make_unique<StdioClient>(server);
  if (transport == "http") return std::make_unique<HttpClient>(server);
  throw std::invalid_argument("no transport '" + transport + "' (stdio or http)");
}

}  // namespace vs::mcp::test
