#include "server/protocol.h"

#include <algorithm>
#include <charconv>

namespace vs::mcp {

bool is_supported_protocol_version(std::string_view version) {
  return std::find(supported_protocol_versions.begin(), supported_protocol_versions.end(), version) !=
         supported_protocol_versions.end();
}

json make_result(const json& id, json result) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(result)}};
}

json make_error(const json& id, int code, std::string message, json data) {
  json error = {{"code", code}, {"message", std::move(message)}};
  if (!data.is_null()) error["data"] = std::move(data);
  return {{"jsonrpc", "2.0"}, {"id", id}, {"error", std::move(error)}};
}

json make_notification(std::string method, json params) {
  return {{"jsonrpc", "2.0"}, {"method", std::move(method)}, {"params", std::move(params)}};
}

RefusedMessage oversized_message(const MessageLimits& limits) {
  return {error_code::invalid_request, "invalid request: the message is larger than " +
                                           std::to_string(limits.max_message_bytes) +
                                           " bytes, the most one message may be"};
}

std::variant<json, RefusedMessage> parse_message(std::string_view text, const MessageLimits& limits) {
  if (text.size() > limits.max_message_bytes) return oversized_message(limits);
  bool too_deep = false;
  // `depth` is the number of arrays and objects around the one starting. Once
  // too deep, every value is dropped: the rest is scanned, never stored.
  json::parser_callback_t limit_depth = [&](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        static_cast<size_t>(depth) >= limits.max_depth)
      too_deep = true;
    return !too_deep;
  };
  json message = json::parse(text, limit_depth, /*allow_exceptions=*/false);
  if (too_deep)
    return RefusedMessage{error_code::parse_error, "parse error: the message nests arrays and objects more than " +
                                                       std::to_string(limits.max_depth) + " levels deep"};
  if (message.is_discarded()) return RefusedMessage{error_code::parse_error, "parse error: the message is not valid JSON"};
  return message;
}

std::optional<uint64_t> parse_decimal(std::string_view digits) {
  uint64_t value = 0;
  auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (digits.empty() || error != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return value;
}

std::string to_wire(const json& message) { return message.dump(-1, ' ', false, json::error_handler_t::replace); }

namespace {
constexpr std::string_view base64_alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string base64_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t chunk = static_cast<uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) chunk |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) chunk |= static_cast<uint8_t>(bytes[i + 2]);
    out += base64_alphabet[(chunk >> 18) & 63];
    out += base64_alphabet[(chunk >> 12) & 63];
    out += i + 1 < bytes.size() ? base64_alphabet[(chunk >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? base64_alphabet[chunk & 63] : '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  uint32_t chunk = 0;
  int bits = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '=') {
      // Padding only in the last two places of the last quantum.
      if (i + 2 < text.size() || (i + 1 < text.size() && text[i + 1] != '=')) return std::nullopt;
      break;
    }
    auto pos = base64_alphabet.find(c);
    if (pos == std::string_view::npos) return std::nullopt;
    chunk = (chunk << 6) | static_cast<uint32_t>(pos);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((chunk >> bits) & 0xff);
    }
  }
  return out;
}

}  // namespace vs::mcp
