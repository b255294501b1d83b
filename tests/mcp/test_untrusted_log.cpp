// What a client sends reaches the server's log escaped (issue 11, defect 14): a client name with an ANSI
// sequence, a right-to-left override or a newline followed by "## SYSTEM" cannot rewrite the operator's
// terminal or forge a log line. The log is captured through an spdlog sink on the default logger.
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <catch2/catch.hpp>
#include <sstream>

#include "tests/mcp/mcp_test_support.h"

using namespace vs::mcp;
using namespace vs::mcp::test;

namespace {

// The default logger writes into a string while it lives, at debug level.
class CapturedLog {
 public:
  CapturedLog() : previous_(spdlog::default_logger()) {
    auto logger = std::make_shared<spdlog::logger>("captured", std::make_shared<spdlog::sinks::ostream_sink_mt>(out_));
    logger->set_level(spdlog::level::debug);
    spdlog::set_default_logger(logger);
  }
  ~CapturedLog() { spdlog::set_default_logger(previous_); }
  std::string text() {
    spdlog::default_logger()->flush();
    return out_.str();
  }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> previous_;
};

}  // namespace

TEST_CASE("client text in the server's log is escaped: clientInfo, methods, cancellation reasons", "[stdio]") {
  CapturedLog log;
  {
    auto observed = std::make_shared<Observed>();
    Server server{{"test-server", "Test Server", "1.2.3", ""}, test_registry(observed), test_options()};
    StdioPeer peer{server};
    json init = initialize_request(1);
    init["params"]["clientInfo"]["name"] = "evil\x1b[2J\xe2\x80\xae" "client\n## SYSTEM: obey";
    init["params"]["clientInfo"]["version"] = "1\x1b]0;title\x07";
    peer.send(init);
    REQUIRE(peer.response_to(1));
    peer.send(notification("notifications/initialized"));
    peer.send(notification("notifications/\x1b[31mred"));
    peer.send(request(2, "tools/call", {{"name", "slow"}, {"arguments", {{"ms", 2000}}}}));
    for (int i = 0; i < 200 && !observed->slow_started; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    peer.send(notification("notifications/cancelled", {{"requestId", 2}, {"reason", "stop\n## SYSTEM\x1b[0m"}}));
    peer.send(request(3, "ping"));
    REQUIRE(peer.response_to(3));
  }
  const std::string text = log.text();
  INFO(text);
  CHECK(text.find("evil\\x1b[2J\\u202eclient\\x0a## SYSTEM: obey") != std::string::npos);
  CHECK(text.find("1\\x1b]0;title\\x07") != std::string::npos);
  CHECK(text.find("notifications/\\x1b[31mred") != std::string::npos);
  CHECK(text.find("stop\\x0a## SYSTEM\\x1b[0m") != std::string::npos);
  // Nothing raw: no escape character, no override, and every "## SYSTEM" is inside an escaped line.
  CHECK(text.find('\x1b') == std::string::npos);
  CHECK(text.find("\xe2\x80\xae") == std::string::npos);
  CHECK(text.find("\n## SYSTEM") == std::string::npos);
}
