// mcp_roundtrip: request/response rates of the real `vramscope mcp` over its
// two transports, as a client sees them: one request in flight at a time
// (what an agent does), over stdio pipes and over one keep-alive HTTP
// connection to /mcp on 127.0.0.1.
//
//     mcp_roundtrip --vramscope build/vramscope --db examples/traces/empty_cache/trace.db [--seconds S]
//                   [--tool NAME] [--args JSON]
//
// For each transport: initialize + notifications/initialized, then `ping`
// for S seconds, then tools/call of NAME (default trace_overview) for S
// seconds; prints round trips per second and the p50/p99/max latency. A small
// trace keeps the tool's own work out of the protocol figures (tool_bench
// measures the tools). Not a test: it never fails on a figure.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
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
  std::string vramscope, db;
  double seconds = 3;
  std::string tool = "trace_overview";
  json tool_args = json::object();
};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "mcp_roundtrip: %s\n", what.c_str());
  std::exit(1);
}

// A child process running `vramscope mcp ...`, with its stdin and stdout as pipes.
struct Child {
  pid_t pid = -1;
  int to_child = -1, from_child = -1;

  static Child spawn(const std::vector<std::string>& argv) {
    int in[2], out[2];
    if (pipe(in) != 0 || pipe(out) != 0) die("pipe failed");
    Child c;
    c.pid = fork();
    if (c.pid < 0) die("fork failed");
    if (c.pid == 0) {
      dup2(in[0], STDIN_FILENO);
      dup2(out[1], STDOUT_FILENO);
      if (int null = ::open("/dev/null", O_WRONLY); null >= 0) dup2(null, STDERR_FILENO);  // its logs are not measured
      close(in[1]);
      close(out[0]);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    c.to_child = in[1];
    c.from_child = out[0];
    return c;
  }
  // Closes stdin (the server exits on EOF) and waits; kills it if it does not.
  void finish() {
    if (to_child >= 0) close(to_child);
    for (int i = 0; i < 50; ++i) {
      if (waitpid(pid, nullptr, WNOHANG) == pid) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    kill(pid, SIGTERM);
    waitpid(pid, nullptr, 0);
  }
};

void write_all(int fd, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n <= 0) die("write failed: " + std::string(std::strerror(errno)));
    done += static_cast<std::size_t>(n);
  }
}

// Buffered reads from a pipe or socket.
class Reader {
 public:
  explicit Reader(int fd) : fd_(fd) {}
  std::string line() {  // up to '\n', without it
    for (;;) {
      if (auto nl = buf_.find('\n'); nl != std::string::npos) {
        std::string l = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return l;
      }
      fill();
    }
  }
  std::string exactly(std::size_t n) {
    while (buf_.size() < n) fill();
    std::string s = buf_.substr(0, n);
    buf_.erase(0, n);
    return s;
  }

 private:
  void fill() {
    char tmp[65536];
    ssize_t n = ::read(fd_, tmp, sizeof tmp);
    if (n <= 0) die("the server closed the connection");
    buf_.append(tmp, static_cast<std::size_t>(n));
  }
  int fd_;
  std::string buf_;
};

// One transport: sends a JSON-RPC message and, for a request, returns its response.
using Exchange = std::function<std::optional<json>(const json& message)>;

json request(std::int64_t id, const std::string& method, json params = json::object()) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", std::move(params)}};
}

void initialize(const Exchange& ex) {
  auto r = ex(request(0, "initialize",
                      {{"protocolVersion", "2025-11-25"},
                       {"capabilities", json::object()},
                       {"clientInfo", {{"name", "mcp_roundtrip"}, {"version", "1"}}}}));
  if (!r || !r->contains("result")) die("initialize failed: " + (r ? r->dump() : std::string("no answer")));
  ex({{"jsonrpc", "2.0"}, {"method", "notifications/initialized"}});
}

struct Rate {
  std::size_t n = 0;
  double per_s = 0, p50_us = 0, p99_us = 0, max_us = 0;
};

// Sequential round trips of `make(id)` for `seconds`.
Rate measure(const Exchange& ex, double seconds, const std::function<json(std::int64_t)>& make) {
  std::vector<double> us;
  std::int64_t id = 1;
  const auto start = Clock::now();
  while (std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
    const json msg = make(id);
    const auto t0 = Clock::now();
    auto r = ex(msg);
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    if (!r || r->value("id", json()) != id || !r->contains("result") ||
        r->at("result").value("isError", false))
      die("unexpected answer: " + (r ? r->dump().substr(0, 300) : std::string("none")));
    ++id;
  }
  const double total = std::chrono::duration<double>(Clock::now() - start).count();
  std::sort(us.begin(), us.end());
  Rate rate;
  rate.n = us.size();
  rate.per_s = static_cast<double>(us.size()) / total;
  rate.p50_us = us[us.size() / 2];
  rate.p99_us = us[std::min(us.size() - 1, us.size() * 99 / 100)];
  rate.max_us = us.back();
  return rate;
}

void report(const char* transport, const char* what, const Rate& r) {
  std::printf("%-6s %-34s %8zu %12.0f %10.1f %10.1f %10.1f\n", transport, what, r.n, r.per_s, r.p50_us, r.p99_us,
              r.max_us);
}

void run_both(const char* transport, const Exchange& ex, const Options& o) {
  initialize(ex);
  report(transport, "ping", measure(ex, o.seconds, [](std::int64_t id) { return request(id, "ping"); }));
  const std::string label = "tools/call " + o.tool;
  report(transport, label.c_str(), measure(ex, o.seconds, [&](std::int64_t id) {
           return request(id, "tools/call", {{"name", o.tool}, {"arguments", o.tool_args}});
         }));
}

void stdio_rates(const Options& o) {
  Child child = Child::spawn({o.vramscope, "mcp", "--db", o.db});
  Reader in(child.from_child);
  Exchange ex = [&](const json& msg) -> std::optional<json> {
    write_all(child.to_child, msg.dump() + "\n");
    if (!msg.contains("id")) return std::nullopt;
    for (;;) {  // skip notifications (logging) until the response
      json r = json::parse(in.line(), nullptr, false);
      if (r.is_object() && r.contains("id")) return r;
    }
  };
  run_both("stdio", ex, o);
  child.finish();
}

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

int connect_retrying(std::uint16_t port) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      int one = 1;
      setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      return s;
    }
    close(s);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  die("the HTTP server did not start listening");
}

void http_rates(const Options& o) {
  const std::uint16_t port = free_port();
  const std::string host = "127.0.0.1:" + std::to_string(port);
  Child child = Child::spawn({o.vramscope, "mcp", "--db", o.db, "--http", host});
  const int sock = connect_retrying(port);
  Reader in(sock);
  std::string session_id;
  Exchange ex = [&](const json& msg) -> std::optional<json> {
    const std::string body = msg.dump();
    std::string req = "POST /mcp HTTP/1.1\r\nHost: " + host +
                      "\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
                      "MCP-Protocol-Version: 2025-11-25\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
    if (!session_id.empty()) req += "Mcp-Session-Id: " + session_id + "\r\n";
    write_all(sock, req + "\r\n" + body);
    const std::string status = in.line();
    std::size_t length = 0;
    for (std::string h = in.line(); h != "\r" && !h.empty(); h = in.line()) {
      std::string lower = h;
      std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return std::tolower(ch); });
      if (lower.starts_with("content-length:")) length = std::stoul(h.substr(15));
      if (lower.starts_with("mcp-session-id:")) session_id = h.substr(h.find(':') + 2, h.size() - h.find(':') - 3);
      if (lower.starts_with("content-type: text/event-stream")) die("got an SSE answer; this client reads JSON ones");
    }
    const std::string payload = in.exactly(length);
    if (status.find(" 202 ") != std::string::npos) return std::nullopt;
    if (status.find(" 200 ") == std::string::npos) die("HTTP " + status + ": " + payload.substr(0, 300));
    return json::parse(payload);
  };
  run_both("http", ex, o);
  close(sock);
  kill(child.pid, SIGTERM);
  waitpid(child.pid, nullptr, 0);
  close(child.to_child);
  close(child.from_child);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string args_text = "{}";
  CLI::App app{"mcp_roundtrip: ping and tools/call round trips per second of `vramscope mcp` over stdio and HTTP"};
  app.add_option("--vramscope", o.vramscope, "The vramscope binary (runs `vramscope mcp`)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--db", o.db, "The trace it serves (a small one: this measures the protocol, not the tool)")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--seconds", o.seconds, "Seconds per measurement")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--tool", o.tool, "The tool called")->capture_default_str();
  app.add_option("--args", args_text, "The tool's arguments, a JSON object")
      ->capture_default_str()
      ->check([](const std::string& text) {
        json parsed = json::parse(text, nullptr, false);
        return parsed.is_object() ? std::string() : "not a JSON object: " + text;
      });
  CLI11_PARSE(app, argc, argv);
  o.tool_args = json::parse(args_text);
  signal(SIGPIPE, SIG_IGN);
  std::printf("mcp_roundtrip: %s mcp --db %s; one request in flight; %.1f s per row\n", o.vramscope.c_str(),
              o.db.c_str(), o.seconds);
  std::printf("%-6s %-34s %8s %12s %10s %10s %10s\n", "via", "request", "n", "round trips/s", "p50 us", "p99 us",
              "max us");
  stdio_rates(o);
  http_rates(o);
  return 0;
}
