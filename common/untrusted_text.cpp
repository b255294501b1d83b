#include "common/untrusted_text.h"

#include <cstdio>

namespace vs {

bool untrusted_code_point_escaped(char32_t c) {
  if (c < 0x20 || c == 0x7f) return true;                // C0, DEL
  if (c >= 0x80 && c <= 0x9f) return true;               // C1 (0x9b is a CSI on its own)
  switch (c) {
    case 0x00ab:  // «
    case 0x00bb:  // »
    case 0x00ad:  // soft hyphen (invisible)
    case 0x061c:  // Arabic letter mark (bidi)
    case 0x115f:  // Hangul fillers: blank, used to pass as empty
    case 0x1160:
    case 0x17b4:  // Khmer inherent vowels (invisible)
    case 0x17b5:
    case 0x3164:
    case 0xffa0:
    case 0xfeff:  // zero-width no-break space / BOM
      return true;
    default:
      break;
  }
  if (c >= 0x180b && c <= 0x180f) return true;           // Mongolian variation selectors, vowel separator
  if (c >= 0x200b && c <= 0x200f) return true;           // zero-width space/joiners, LRM, RLM
  if (c >= 0x2028 && c <= 0x202e) return true;           // line/paragraph separators, bidi embeddings/overrides
  if (c >= 0x2060 && c <= 0x206f) return true;           // word joiner, invisible operators, bidi isolates, deprecated formats
  if (c >= 0xfe00 && c <= 0xfe0f) return true;           // variation selectors
  if (c >= 0xfff9 && c <= 0xfffb) return true;           // interlinear annotation
  if (c >= 0xe0000 && c <= 0xe007f) return true;         // tag characters (invisible ASCII)
  if (c >= 0xe0100 && c <= 0xe01ef) return true;         // variation selectors supplement
  return false;
}

namespace {

// The next code point of `s` at `i` if it is valid UTF-8 (no overlong form,
// surrogate or value past U+10FFFF): its length, else 0.
std::size_t utf8_length(std::string_view s, std::size_t i, char32_t& out) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    out = b0;
    return 1;
  }
  const std::size_t len = b0 >= 0xc2 && b0 < 0xe0 ? 2 : b0 >= 0xe0 && b0 < 0xf0 ? 3 : b0 >= 0xf0 && b0 < 0xf5 ? 4 : 0;
  if (len == 0 || i + len > s.size()) return 0;
  char32_t c = b0 & (len == 2 ? 0x1f : len == 3 ? 0x0f : 0x07);
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xc0) != 0x80) return 0;
    c = (c << 6) | (b & 0x3f);
  }
  if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10ffff)) || (c >= 0xd800 && c <= 0xdfff))
    return 0;
  out = c;
  return len;
}

// The visible form of one escaped unit, and how many code points it shows.
std::string escaped_form(char32_t c, bool invalid_byte) {
  char buf[16];
  if (invalid_byte || c < 0x80) std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(c));
  else if (c <= 0xffff) std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
  else std::snprintf(buf, sizeof buf, "\\U%08x", static_cast<unsigned>(c));
  return buf;
}

}  // namespace

std::string escape_untrusted(std::string_view s, std::size_t max_chars) {
  static constexpr std::string_view kCut = "…";
  std::string out;
  out.reserve(s.size() < 256 ? s.size() + 8 : 256);
  std::size_t chars = 0;  // code points in `out`; every escape is ASCII, one code point per byte
  auto fits = [&](std::size_t more, std::size_t consumed_to) {
    // Room for `more` code points, keeping one for the cut mark unless nothing follows.
    if (max_chars == kNoTextLimit) return true;
    const bool last = consumed_to >= s.size();
    return chars + more + (last ? 0 : 1) <= max_chars;
  };
  for (std::size_t i = 0; i < s.size();) {
    char32_t c = 0;
    const std::size_t len = utf8_length(s, i, c);
    std::string piece;
    std::size_t piece_chars = 1;
    if (len == 0) {
      piece = escaped_form(static_cast<unsigned char>(s[i]), true);
      piece_chars = piece.size();
    } else if (untrusted_code_point_escaped(c)) {
      piece = escaped_form(c, false);
      piece_chars = piece.size();
    } else {
      piece.assign(s.substr(i, len));
    }
    const std::size_t next = i + (len == 0 ? 1 : len);
    if (!fits(piece_chars, next)) {
      if (max_chars > 0) out += kCut;
      return out;
    }
    out += piece;
    chars += piece_chars;
    i = next;
  }
  return out;
}

std::string quote_untrusted(std::string_view s, std::size_t max_chars) {
  return "«" + escape_untrusted(s, max_chars) + "»";
}

}  // namespace vs
