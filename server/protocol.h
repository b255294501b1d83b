// JSON-RPC 2.0 and MCP vocabulary shared by the dispatcher and the
// transports: error codes, protocol versions, message builders. Nothing here
// knows about sessions or sockets.
#pragma once

#include <nlohmann/json.hpp>
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace vs::mcp {

using json = nlohmann::json;

namespace error_code {
inline constexpr int parse_error = -32700;
inline constexpr int invalid_request = -32600;
inline constexpr int method_not_found = -32601;
inline constexpr int invalid_params = -32602;
inline constexpr int internal_error = -32603;
// MCP: resources/read or resources/subscribe of a URI the server does not have.
inline constexpr int resource_not_found = -32002;
// A session has as many requests running and queued as it may
// (ServerOptions::max_running_per_session, max_queued_per_session).
inline constexpr int server_busy = -32000;
}  // namespace error_code

// Newest first. A client asking for another version gets the newest.
inline constexpr std::array<std::string_view, 3> supported_protocol_versions = {"2025-11-25", "2025-06-18",
                                                                                "2025-03-26"};
inline constexpr std::string_view latest_protocol_version = supported_protocol_versions[0];
bool is_supported_protocol_version(std::string_view version);

// 2025-03-26 has no titles, outputSchema or structuredContent, and allows batches.
inline bool is_legacy_2025_03_26(std::string_view version) { return version == "2025-03-26"; }

// What the server reads from a client is bounded, so that no message can
// exhaust its memory or its stack; docs/reliability.md ("Limits") lists them.
struct MessageLimits {
  size_t max_message_bytes = 4 << 20;  // one message: a stdio line, an HTTP body (-32600; HTTP 413)
  size_t max_depth = 64;               // arrays and objects nested in one message (-32700)
  size_t max_uri_bytes = 2048;         // a resource URI in resources/*, completion refs (-32602)
};

json make_result(const json& id, json result);
json make_error(const json& id, int code, std::string message, json data = nullptr);
json make_notification(std::string method, json params);

// A message the server will not read (too large, too deep, not JSON): it is
// answered with this error and a null id, the id being unknown.
struct RefusedMessage {
  int code;
  std::string message;
  json response() const { return make_error(nullptr, code, message); }
};
RefusedMessage oversized_message(const MessageLimits& limits);

// Parses one message (or batch) from the wire within `limits`. The depth is
// counted while parsing, so a deeper message never becomes a json value, whose
// copies, comparisons and dumps recurse once per level.
std::variant<json, RefusedMessage> parse_message(std::string_view text, const MessageLimits& limits);

// Digits only, in range: "18446744073709551616", "", "-1" and "1e3" give nullopt.
std::optional<uint64_t> parse_decimal(std::string_view digits);

// Serialises a message for the wire. Strings from tools may hold invalid
// UTF-8 (paths, comms of traced processes): they are replaced, never thrown on.
std::string to_wire(const json& message);

std::string base64_encode(std::string_view bytes);
std::optional<std::string> base64_decode(std::string_view text);

// The text of a JSON-RPC id for use as a map key ("7" and "\"7\"" differ).
inline std::string id_key(const json& id) { return id.dump(); }

}  // namespace vs::mcp
