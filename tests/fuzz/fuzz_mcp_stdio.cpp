// libFuzzer harness: the MCP server over its stdio transport, in process.
// Each input is what a client writes to `vramscope mcp`'s stdin (newline-
// framed JSON-RPC messages, or anything else), read by the real run_stdio
// into the real vs::mcp::Server serving vramscope's tools, prompts and
// resources over examples/traces/leak/trace.db. Unless the input initializes
// the session itself, an initialize exchange comes first, so the fuzzer
// starts past the lifecycle. Afterwards a new stdio session must still get
// its ping answered; every line the server wrote must be one JSON-RPC message.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>

#include "server/protocol.h"
#include "server/server.h"
#include "server/stdio.h"
#include "tests/fuzz/fuzz_support.h"

using namespace vs;
using json = nlohmann::json;

namespace {

constexpr const char* kInitialize =
    R"({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"fuzz","version":"1"}}})"
    "\n"
    R"({"jsonrpc":"2.0","method":"notifications/initialized"})"
    "\n";

mcp::Server& server() {
  static mcp::Server* s = [] {
    fuzz::quiet_logs();
    const std::string db = std::string(VS_EXAMPLES_DIR) + "/traces/leak/trace.db";
    return new mcp::Server({.name = "vramscope", .title = "vramscope", .version = "fuzz"},
                           fuzz::vramscope_registry(db), mcp::ServerOptions{.worker_threads = 4});
  }();
  return *s;
}

// Every line on stdout is one JSON-RPC message (nothing else is ever written there).
std::vector<json> messages_of(const std::string& out) {
  std::vector<json> messages;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    json m = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (m.is_discarded()) fuzz::fail("the server wrote a line that is not JSON:", line.substr(0, 200));
    if (!m.is_object() && !m.is_array()) fuzz::fail("the server wrote a line that is not a message:", line.substr(0, 200));
    messages.push_back(std::move(m));
  }
  return messages;
}

std::string run(const std::string& input) {
  std::istringstream in(input);
  std::ostringstream out;
  Status status = mcp::run_stdio(server(), in, out);
  if (!status) fuzz::fail("run_stdio failed:", status.message());
  return out.str();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string input(reinterpret_cast<const char*>(data), size);
  const bool initializes = input.find("\"initialize\"") != std::string::npos;
  std::string out = run((initializes ? std::string() : std::string(kInitialize)) + input + "\n");
  messages_of(out);

  // The server goes on: a new session is served.
  std::string check = run(std::string(kInitialize) + R"({"jsonrpc":"2.0","id":"alive","method":"ping"})" "\n");
  bool answered = false;
  for (const json& m : messages_of(check))
    if (m.is_object() && m.value("id", json()) == "alive" && m.contains("result")) answered = true;
  if (!answered) fuzz::fail("the ping after the input got no result; the server wrote:", check.substr(0, 2000));
  return 0;
}
