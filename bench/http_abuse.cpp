// http_abuse: the real `vramscope mcp --http` under load and under attack
// (issue 11 item 5), as clients see it.
//
//     http_abuse --vramscope build/vramscope --db examples/traces/leak/trace.db
//                [--scenario load|slowloris|sessions|all] [--clients 64] [--calls 1000] [--tool trace_overview]
//                [--attackers 300] [--seconds 30] [--sessions 64]
//
//   load       C clients at once, each on its own keep-alive connection:
//              initialize + N tool calls. Throughput, p50/p99/max latency,
//              errors, the server's RSS before and after (and its peak).
//   slowloris  A attacker connections sending a header at 1 byte/s, each
//              opened again as soon as the server closes it, for S seconds,
//              while one legitimate client sends requests (each on a new
//              connection: it must be admitted every time), once against a
//              server without a token and once with one (the attackers have
//              none). The client's success rate and latency.
//   sessions   K sessions opened and never closed (idle), then a new client:
//              its answer (503 + Retry-After) and how long until it gets a
//              session by following Retry-After; then K sessions kept busy
//              (a ping each per second) for S seconds: the new client's
//              answers meanwhile.
// Not a test: it never fails on a figure.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string vramscope, db, scenario = "all";
  int clients = 64, calls = 1000, attackers = 300, sessions = 64;
  double seconds = 30;
  std::string tool = "trace_overview";
};

const std::string kToken = "http-abuse-bench-token-0123456789abcdef";

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "http_abuse: %s\n", what.c_str());
  std::exit(1);
}

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

std::uint16_t free_port() {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || getsockname(s, reinterpret_cast<sockaddr*>(&a), &len))
    die("cannot find a free port");
  close(s);
  return ntohs(a.sin_port);
}

int connect_to(std::uint16_t port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(s);
    return -1;
  }
  int one = 1;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return s;
}

// `vramscope mcp --http` in the background; its logs go to /dev/null.
struct Server {
  pid_t pid = -1;
  std::uint16_t port = 0;

  static Server start(const Options& o, bool token) {
    Server s;
    s.port = free_port();
    std::vector<std::string> argv = {o.vramscope, "mcp", "--db", o.db, "--http", "127.0.0.1:" + std::to_string(s.port)};
    s.pid = fork();
    if (s.pid < 0) die("fork failed");
    if (s.pid == 0) {
      if (token) setenv("VRAMSCOPE_MCP_TOKEN", kToken.c_str(), 1);
      else unsetenv("VRAMSCOPE_MCP_TOKEN");
      if (int null = ::open("/dev/null", O_WRONLY); null >= 0) dup2(null, STDERR_FILENO), dup2(null, STDOUT_FILENO);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    for (int i = 0; i < 100; ++i) {
      if (int fd = connect_to(s.port); fd >= 0) {
        close(fd);
        return s;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    die("the server did not start listening");
  }
  // VmRSS or VmHWM in MiB.
  double memory(const char* field) const {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(status, line);)
      if (line.rfind(field, 0) == 0) return std::atof(line.c_str() + std::strlen(field) + 1) / 1024.0;
    return 0;
  }
  void stop() {
    kill(pid, SIGTERM);
    waitpid(pid, nullptr, 0);
  }
};

struct Reply {
  int status = 0;  // 0: the connection failed
  std::string session, retry_after, body;
  bool keep_alive = true;
};

// A blocking HTTP/1.1 client on one connection, reconnecting when the server closed it.
class Client {
 public:
  Client(std::uint16_t port, std::string token) : port_(port), token_(std::move(token)) {}
  ~Client() { drop(); }
  Reply post(const json& message, const std::string& session = "") {
    std::string body = message.dump();
    std::string request = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port_) +
                          "\r\nAccept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
                          "Content-Length: " + std::to_string(body.size()) + "\r\n";
    if (!session.empty()) request += "Mcp-Session-Id: " + session + "\r\n";
    if (!token_.empty()) request += "Authorization: Bearer " + token_ + "\r\n";
    if (!keep_alive_) request += "Connection: close\r\n";
    request += "\r\n" + body;
    if (fd_ < 0 && (fd_ = connect_to(port_)) < 0) return {};
    Reply reply = exchange(request);
    if (!reply.keep_alive || reply.status == 0) drop();
    return reply;
  }
  void new_connection_each_time() { keep_alive_ = false; }
  void drop() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    buffer_.clear();
  }

 private:
  Reply exchange(const std::string& request) {
    for (size_t sent = 0; sent < request.size();) {
      ssize_t n = ::send(fd_, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return {};
      sent += static_cast<size_t>(n);
    }
    Reply reply;
    size_t end;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos)
      if (!fill()) return {};
    std::string head = buffer_.substr(0, end + 2);
    buffer_.erase(0, end + 4);
    if (head.size() < 12) return {};
    reply.status = std::atoi(head.c_str() + 9);
    std::string lower = head;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    auto field = [&](const std::string& name) -> std::string {
      auto at = lower.find("\r\n" + name + ":");
      if (at == std::string::npos) return "";
      at += name.size() + 3;
      auto stop = head.find("\r\n", at);
      std::string value = head.substr(at, stop - at);
      value.erase(0, value.find_first_not_of(' '));
      return value;
    };
    reply.session = field("mcp-session-id");
    reply.retry_after = field("retry-after");
    reply.keep_alive = field("connection") != "close";
    if (field("transfer-encoding") == "chunked") {  // an SSE answer: read to the last chunk
      for (;;) {
        size_t line_end;
        while ((line_end = buffer_.find("\r\n")) == std::string::npos)
          if (!fill()) return {};
        size_t size = std::strtoul(buffer_.c_str(), nullptr, 16);
        while (buffer_.size() < line_end + 2 + size + 2)
          if (!fill()) return {};
        reply.body += buffer_.substr(line_end + 2, size);
        buffer_.erase(0, line_end + 2 + size + 2);
        if (size == 0) break;
      }
      // The last `data:` line is the response.
      auto at = reply.body.rfind("data: {");
      reply.body = at == std::string::npos ? "" : reply.body.substr(at + 6, reply.body.find('\n', at) - at - 6);
    } else {
      size_t length = std::strtoul(field("content-length").c_str(), nullptr, 10);
      while (buffer_.size() < length)
        if (!fill()) return {};
      reply.body = buffer_.substr(0, length);
      buffer_.erase(0, length);
    }
    return reply;
  }
  bool fill() {
    char tmp[65536];
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buffer_.append(tmp, static_cast<size_t>(n));
    return true;
  }
  std::uint16_t port_;
  std::string token_;
  int fd_ = -1;
  bool keep_alive_ = true;
  std::string buffer_;
};

json request(std::int64_t id, const std::string& method, json params = json::object()) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", std::move(params)}};
}
json initialize_request() {
  return request(0, "initialize",
                 {{"protocolVersion", "2025-11-25"},
                  {"capabilities", json::object()},
                  {"clientInfo", {{"name", "http_abuse"}, {"version", "1"}}}});
}

// A session id, or "" (and the reply) when initialize was refused.
std::string open_session(Client& client, Reply* refused = nullptr) {
  Reply reply = client.post(initialize_request());
  if (reply.status != 200 || reply.session.empty()) {
    if (refused) *refused = reply;
    return "";
  }
  client.post({{"jsonrpc", "2.0"}, {"method", "notifications/initialized"}}, reply.session);
  return reply.session;
}

bool is_success(const Reply& reply, std::int64_t id) {
  if (reply.status != 200) return false;
  json answer = json::parse(reply.body, nullptr, false);
  return answer.is_object() && answer.value("id", json()) == id && answer.contains("result") &&
         !answer["result"].value("isError", false);
}

struct Latencies {
  std::vector<double> ms;
  std::string summary() {
    if (ms.empty()) return "no requests";
    std::sort(ms.begin(), ms.end());
    char text[160];
    std::snprintf(text, sizeof text, "p50 %.1f ms, p99 %.1f ms, max %.1f ms", ms[ms.size() / 2],
                  ms[std::min(ms.size() - 1, ms.size() * 99 / 100)], ms.back());
    return text;
  }
};

void load(const Options& o) {
  Server server = Server::start(o, false);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  double rss_before = server.memory("VmRSS:");
  std::mutex mutex;
  Latencies all;
  std::atomic<long> errors{0}, refused_sessions{0};
  std::string first_error;
  auto start = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < o.clients; ++c)
    clients.emplace_back([&] {
      Client client(server.port, "");
      std::string session = open_session(client);
      if (session.empty()) {
        ++refused_sessions;
        return;
      }
      std::vector<double> mine;
      for (int i = 1; i <= o.calls; ++i) {
        auto t0 = Clock::now();
        Reply reply = client.post(request(i, "tools/call", {{"name", o.tool}, {"arguments", json::object()}}), session);
        mine.push_back(ms_since(t0));
        if (!is_success(reply, i)) {
          std::lock_guard lock(mutex);
          if (errors++ == 0) first_error = std::to_string(reply.status) + " " + reply.body.substr(0, 300);
        }
      }
      std::lock_guard lock(mutex);
      all.ms.insert(all.ms.end(), mine.begin(), mine.end());
    });
  for (auto& t : clients) t.join();
  double seconds = ms_since(start) / 1000;
  double rss_after = server.memory("VmRSS:"), rss_peak = server.memory("VmHWM:");
  size_t calls = all.ms.size();
  std::printf("load: %d clients x %d tools/call %s (each on its own keep-alive connection)\n", o.clients, o.calls,
              o.tool.c_str());
  std::printf("  %zu calls in %.1f s: %.0f calls/s; %s\n", calls, seconds, calls / seconds, all.summary().c_str());
  std::printf("  errors: %ld%s%s; sessions refused: %ld\n", errors.load(), errors ? ", first: " : "",
              first_error.c_str(), refused_sessions.load());
  std::printf("  server RSS: %.1f MiB before, %.1f MiB after (peak %.1f MiB)\n", rss_before, rss_after, rss_peak);
  server.stop();
}

// Attackers: header bytes at 1 byte/s, a connection opened again whenever the server closes one.
class SlowLoris {
 public:
  SlowLoris(std::uint16_t port, int count) : port_(port), fds_(count, -1) {
    thread_ = std::thread([this] {
      auto next_byte = Clock::now();
      while (!stop_) {
        for (int& fd : fds_)
          if (fd < 0 && (fd = connect_to(port_)) >= 0) ++opened_;
        std::vector<pollfd> polls;
        for (int fd : fds_) polls.push_back({fd, POLLIN | POLLRDHUP, 0});
        ::poll(polls.data(), polls.size(), 50);
        for (size_t i = 0; i < fds_.size(); ++i)
          if (polls[i].revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) {
            ::close(fds_[i]);
            fds_[i] = -1;
            ++closed_;
          }
        if (Clock::now() >= next_byte) {
          static const std::string header = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: ";
          for (int fd : fds_)
            if (fd >= 0) ::send(fd, &header[sent_ % header.size()], 1, MSG_NOSIGNAL);
          ++sent_;
          next_byte += std::chrono::seconds(1);
        }
      }
    });
  }
  ~SlowLoris() {
    stop_ = true;
    thread_.join();
    for (int fd : fds_)
      if (fd >= 0) ::close(fd);
  }
  long opened() const { return opened_; }
  long closed() const { return closed_; }
  long open_now() const { return std::count_if(fds_.begin(), fds_.end(), [](int fd) { return fd >= 0; }); }

 private:
  std::uint16_t port_;
  std::vector<int> fds_;
  std::atomic<bool> stop_{false};
  std::atomic<long> opened_{0}, closed_{0};
  size_t sent_ = 0;
  std::thread thread_;
};

void slowloris(const Options& o) {
  for (bool token : {false, true}) {
    Server server = Server::start(o, token);
    SlowLoris attack(server.port, o.attackers);
    std::this_thread::sleep_for(std::chrono::seconds(2));  // let them all connect
    Client client(server.port, token ? kToken : "");
    client.new_connection_each_time();
    Latencies latency;
    long ok = 0, failed = 0;
    std::map<int, long> statuses;
    std::string session = open_session(client);
    auto start = Clock::now();
    for (std::int64_t id = 1; ms_since(start) < o.seconds * 1000; ++id) {
      auto t0 = Clock::now();
      Reply reply = id % 2 ? client.post(request(id, "ping"), session)
                           : client.post(request(id, "tools/call", {{"name", o.tool}, {"arguments", json::object()}}),
                                         session);
      latency.ms.push_back(ms_since(t0));
      ++statuses[reply.status];
      (is_success(reply, id) ? ok : failed)++;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::printf("slowloris (%s): %d attackers at 1 byte/s for %.0f s; the client (a new connection per request, "
                "ping and %s alternately%s)\n",
                token ? "server with a token" : "no token", o.attackers, o.seconds, o.tool.c_str(),
                token ? ", with the token" : "");
    std::printf("  session: %s; %ld of %ld requests answered (%.1f%%); %s\n", session.empty() ? "REFUSED" : "opened",
                ok, ok + failed, 100.0 * ok / std::max(1L, ok + failed), latency.summary().c_str());
    std::string codes;
    for (auto& [status, n] : statuses) codes += " " + std::to_string(status) + "x" + std::to_string(n);
    std::printf("  HTTP statuses:%s; attackers opened %ld connections, the server closed %ld, %ld open at the end; "
                "server RSS %.1f MiB\n",
                codes.c_str(), attack.opened(), attack.closed(), attack.open_now(), server.memory("VmRSS:"));
    server.stop();
  }
}

void sessions(const Options& o) {
  Server server = Server::start(o, false);
  std::vector<std::unique_ptr<Client>> idle;
  std::vector<std::string> ids;
  for (int i = 0; i < o.sessions; ++i) {
    idle.push_back(std::make_unique<Client>(server.port, ""));
    ids.push_back(open_session(*idle.back()));
  }
  long opened = std::count_if(ids.begin(), ids.end(), [](const std::string& id) { return !id.empty(); });
  Client newcomer(server.port, "");
  Reply refused;
  auto start = Clock::now();
  std::string session = open_session(newcomer, &refused);
  std::printf("sessions: %ld of %d sessions opened and left idle; a new client at once: %s\n", opened, o.sessions,
              session.empty() ? ("HTTP " + std::to_string(refused.status) + ", Retry-After: " + refused.retry_after +
                                 ", " + refused.body.substr(0, 160))
                                    .c_str()
                              : "admitted");
  int attempts = 1;
  while (session.empty() && ms_since(start) < 600'000) {
    std::this_thread::sleep_for(std::chrono::seconds(std::max(1, std::atoi(refused.retry_after.c_str()))));
    ++attempts;
    session = open_session(newcomer, &refused);
  }
  std::printf("  following Retry-After: a session after %.1f s (%d attempts)\n", ms_since(start) / 1000, attempts);

  // The same, with the sessions kept busy (a ping each per second): as long as they are used, none is taken away.
  Server busy_server = Server::start(o, false);
  std::vector<std::unique_ptr<Client>> busy;
  std::vector<std::string> busy_ids;
  for (int i = 0; i < o.sessions; ++i) {
    busy.push_back(std::make_unique<Client>(busy_server.port, ""));
    busy_ids.push_back(open_session(*busy.back()));
  }
  std::atomic<bool> stop{false};
  std::thread keeper([&] {
    for (std::int64_t id = 1; !stop; ++id) {
      for (int i = 0; i < o.sessions; ++i) busy[i]->post(request(id, "ping"), busy_ids[i]);
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  });
  Client late(busy_server.port, "");
  std::map<std::string, long> answers;
  auto busy_start = Clock::now();
  while (ms_since(busy_start) < o.seconds * 1000) {
    Reply reply;
    std::string got = open_session(late, &reply);
    answers[got.empty() ? std::to_string(reply.status) + " Retry-After " + reply.retry_after : "200"]++;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  stop = true;
  keeper.join();
  std::string summary;
  for (auto& [what, n] : answers) summary += " " + what + " x" + std::to_string(n) + ";";
  std::printf("  %d sessions pinged every second for %.0f s, a new client once a second:%s\n", o.sessions, o.seconds,
              summary.c_str());
  server.stop();
  busy_server.stop();
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"vramscope mcp --http under load and abuse (bench/README.md)"};
  app.add_option("--vramscope", o.vramscope, "The vramscope binary")->required();
  app.add_option("--db", o.db, "Trace to serve")->required();
  app.add_option("--scenario", o.scenario, "load, slowloris, sessions or all")->capture_default_str();
  app.add_option("--clients", o.clients, "load: concurrent clients")->capture_default_str();
  app.add_option("--calls", o.calls, "load: tool calls per client")->capture_default_str();
  app.add_option("--tool", o.tool, "The tool called")->capture_default_str();
  app.add_option("--attackers", o.attackers, "slowloris: attacking connections")->capture_default_str();
  app.add_option("--seconds", o.seconds, "slowloris and sessions: how long the attack lasts")->capture_default_str();
  app.add_option("--sessions", o.sessions, "sessions: idle sessions opened first")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  signal(SIGPIPE, SIG_IGN);
  if (rlimit limit{}; getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  if (o.scenario == "load" || o.scenario == "all") load(o);
  if (o.scenario == "slowloris" || o.scenario == "all") slowloris(o);
  if (o.scenario == "sessions" || o.scenario == "all") sessions(o);
  return 0;
}
