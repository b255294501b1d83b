// Seeded random mutations of valid messages (issue 11), over stdio and over
// HTTP: fields swapped for values of other types or removed, nesting 65 to
// 100,000 levels deep, strings up to 300 KB (URIs of 50,000 digits), numbers
// out of every range, truncated text and invalid UTF-8. The server must
// answer every request (a response, or an error with its id or, when it could
// not read one, a null id), never with -32603, and answer a ping after each
// message: it never dies or stops. The same seed gives the same messages.
#include <catch2/catch.hpp>

#include <random>

#include "tests/mcp/mcp_test_support.h"
#include "tests/test_sample.h"

using namespace vs::mcp;
using namespace vs::mcp::test;
using namespace std::chrono_literals;

namespace {

constexpr uint64_t kSeed = 11;
// Every one of them, or every Nth under VRAMSCOPE_TEST_SAMPLE=N (the sanitized run, where the
// libFuzzer harnesses fuzz_mcp_stdio and fuzz_http go much further).
int messages_per_transport() { return 2000 / vs::test::test_sample_every(); }

// One valid message of every kind the server takes; "id" is set per message.
std::vector<json> valid_messages() {
  auto with_id = [](const std::string& method, json params) { return request(0, method, std::move(params)); };
  return {
      initialize_request(0),
      with_id("ping", json::object()),
      with_id("tools/list", {{"cursor", base64_encode("offset:2")}}),
      with_id("tools/call", {{"name", "echo"}, {"arguments", {{"text", "hi"}, {"n", 3}, {"list", {1, 2}}}}}),
      with_id("tools/call", {{"name", "logs"}, {"arguments", json::object()}, {"_meta", {{"progressToken", "t"}}}}),
      with_id("tools/call", {{"name", "tool_1"}}),
      with_id("prompts/list", json::object()),
      with_id("prompts/get", {{"name", "greet"}, {"arguments", {{"name", "bob"}}}}),
      with_id("resources/list", json::object()),
      with_id("resources/templates/list", json::object()),
      with_id("resources/read", {{"uri", "test://a"}}),
      with_id("resources/read", {{"uri", "test://item/12"}}),
      with_id("resources/subscribe", {{"uri", "test://a"}}),
      with_id("resources/unsubscribe", {{"uri", "test://a"}}),
      with_id("completion/complete", {{"ref", {{"type", "ref/prompt"}, {"name", "greet"}}},
                                      {"argument", {{"name", "name"}, {"value", "al"}}},
                                      {"context", {{"arguments", {{"name", "x"}}}}}}),
      with_id("completion/complete",
              {{"ref", {{"type", "ref/resource"}, {"uri", "test://item/{id}"}}}, {"argument", {{"name", "id"}, {"value", "1"}}}}),
      with_id("logging/setLevel", {{"level", "debug"}}),
      notification("notifications/initialized"),
      notification("notifications/cancelled", {{"requestId", 1}, {"reason", "gave up"}}),
      {{"jsonrpc", "2.0"}, {"id", "vs-1"}, {"result", {{"roots", json::array()}}}},
  };
}

// Every place in a message, as JSON pointers ("" is the message itself).
void collect_pointers(const json& value, const json::json_pointer& at, std::vector<json::json_pointer>& out) {
  out.push_back(at);
  if (value.is_object())
    for (const auto& [key, member] : value.items()) collect_pointers(member, at / key, out);
  else if (value.is_array())
    for (size_t i = 0; i < value.size(); ++i) collect_pointers(value[i], at / i, out);
}

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : random_(seed) {}

  struct Mutated {
    std::string text;
    json structure;  // before the text-level changes: what the sender meant
  };

  // 1 to 3 mutations of `message`.
  Mutated mutate(json message) {
    std::vector<std::string> splices;  // raw JSON text, put in place of markers after dump
    for (int n = 1 + pick(3); n > 0; --n) {
      std::vector<json::json_pointer> places;
      collect_pointers(message, json::json_pointer(), places);
      const json::json_pointer place = places[pick(places.size())];
      switch (pick(10)) {
        case 0: case 1: case 2: set(message, place, other_type(message[place])); break;
        case 3: case 4: remove(message, place); break;
        case 5: set(message, place, huge_string(message[place])); break;
        case 6: case 7:
          set(message, place, marker(splices.size()));
          splices.push_back(pick(2) ? deep_nesting() : out_of_range_number());
          break;
        case 8: set(message, place, marker(splices.size())); splices.push_back("\"\xff\xfe not UTF-8\""); break;
        case 9: set(message, place, json::array({message[place], message[place]})); break;
      }
    }
    std::string text = to_wire(message);
    for (size_t i = 0; i < splices.size(); ++i) {
      std::string quoted = "\"" + marker(i).get<std::string>() + "\"";
      if (auto at = text.find(quoted); at != std::string::npos) text.replace(at, quoted.size(), splices[i]);
    }
    if (pick(40) == 0) text.resize(pick(text.size()));  // cut short
    return {std::move(text), std::move(message)};
  }

 private:
  size_t pick(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(random_); }

  static json marker(size_t i) { return "@@fuzz-splice-" + std::to_string(i) + "@@"; }
  static void set(json& message, const json::json_pointer& place, json value) {
    if (place.empty()) message = std::move(value);
    else message[place] = std::move(value);
  }
  void remove(json& message, const json::json_pointer& place) {
    if (place.empty()) return;
    json& parent = message[place.parent_pointer()];
    if (parent.is_object()) parent.erase(place.back());
    else parent.erase(std::stoul(place.back()));
  }

  json other_type(const json& current) {
    static const std::vector<json> values = {
        nullptr, true, false, 0, -1, std::numeric_limits<int64_t>::min(), std::numeric_limits<uint64_t>::max(),
        1.5, -1e308, "", "2.0", "x", json::array(), json::array({1, "a", nullptr}), json::object(), {{"a", {{"b", 1}}}}};
    for (;;) {
      const json& candidate = values[pick(values.size())];
      if (candidate.type() != current.type()) return candidate;
    }
  }
  // Long text after what was there: a URI becomes one of 50,000 digits.
  json huge_string(const json& current) {
    // At most ~300 KB, so that no mutated message passes the 4 MiB limit (refused
    // before it is read; tested in test_malformed.cpp).
    static const std::vector<size_t> sizes = {1'000, 50'000, 300'000};
    static const std::vector<char> fill = {'7', 'a', '/', '{'};
    std::string prefix = current.is_string() ? current.get<std::string>() : "";
    return prefix + std::string(sizes[pick(sizes.size())], fill[pick(fill.size())]);
  }
  std::string deep_nesting() {
    static const std::vector<size_t> levels = {65, 1'000, 100'000};
    size_t n = levels[pick(levels.size())];
    if (pick(2)) return std::string(n, '[') + std::string(n, ']');
    std::string text;
    for (size_t i = 0; i < n; ++i) text += "{\"a\":";
    return text + "0" + std::string(n, '}');
  }
  std::string out_of_range_number() {
    static const std::vector<std::string> numbers = {"1e400", "-1e400", "1e-400", "-0", "18446744073709551616",
                                                     "-9223372036854775809", std::string(50'000, '9'), "0.1e99999"};
    return numbers[pick(numbers.size())];
  }

  std::mt19937_64 random_;
};

// The id of a message the server must answer: a request whose id is known
// (not replaced by raw text) and whose text is not cut to nothing (stdio skips
// blank lines).
std::optional<json> request_id(const Mutator::Mutated& mutated) {
  const json& message = mutated.structure;
  if (!message.is_object() || !message.contains("id") || !message.contains("method")) return std::nullopt;
  if (mutated.text.find_first_not_of(" \t\r\n") == std::string::npos) return std::nullopt;
  const json& id = message["id"];
  if (id.is_string() && id.get<std::string>().rfind("@@fuzz-splice-", 0) == 0) return std::nullopt;
  if (!id.is_string() && !id.is_number_integer()) return std::nullopt;
  return id;
}

void fuzz(const std::string& transport) {
  auto observed = std::make_shared<Observed>();
  Server server{{"test-server", "", "1", ""}, test_registry(observed), test_options()};
  auto client = connect(transport, server);
  client->initialize();
  const std::vector<json> seeds = valid_messages();
  Mutator mutator(kSeed);
  int requests = 0;
  const int messages = messages_per_transport();
  for (int i = 0; i < messages; ++i) {
    json seed = seeds[i % seeds.size()];
    if (seed.contains("id") && seed["id"] == 0) seed["id"] = 1000 + i;
    Mutator::Mutated mutated = mutator.mutate(std::move(seed));
    INFO(transport << ", seed " << kSeed << ", message " << i << ": " << mutated.text.substr(0, 400));
    client->send_text(mutated.text);
    if (auto id = request_id(mutated)) {
      ++requests;
      REQUIRE(client->answer_to_any({*id, nullptr}, 10s));
    }
    REQUIRE(client->alive());
    client->settle();
  }
  CHECK(requests > messages / 4);
  CHECK(client->transport_failures().empty());
  std::vector<int> codes = client->error_codes();
  CHECK(std::count(codes.begin(), codes.end(), -32603) == 0);
  CHECK(codes.size() > static_cast<size_t>(messages) / 4);
}

}  // namespace

TEST_CASE("fuzz: every mutated request is answered and the server never dies, over stdio", "[fuzz]") {
  fuzz("stdio");
}

TEST_CASE("fuzz: every mutated request is answered and the server never dies, over HTTP", "[fuzz]") {
  fuzz("http");
}
