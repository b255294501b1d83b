// Text from the traced system -- process names (comm), command lines, library
// and mapped-file paths, NVML and loader error strings, anything a traced
// program can choose -- reaches people (a terminal) and models (MCP results).
// Every view shows it through escape_untrusted, the one implementation, so it
// looks the same everywhere and can neither drive a terminal nor hide text:
//
//   what                                          shown as
//   C0 controls U+0000-U+001F, DEL U+007F          \x00 .. \x1f, \x7f  (a newline is \x0a,
//                                                  an ANSI/CSI sequence starts with a visible \x1b)
//   C1 controls U+0080-U+009F (CSI U+009B)         \u0080 .. \u009f
//   bidi overrides/embeddings/isolates/marks      \u202a .. \u202e, \u2066 .. \u2069, \u200e, \u200f, \u061c
//   other invisible or line-breaking format        \u00ad, \u115f, \u1160, \u17b4, \u17b5, \u180b-\u180f,
//   characters (zero-width, word joiner, BOM,      \u200b-\u200d, \u2028, \u2029, \u2060-\u206f, \u3164,
//   variation selectors, tags, fillers)            \ufe00-\ufe0f, \ufeff, \ufff9-\ufffb, \uffa0,
//                                                  \U000e0000-\U000e007f, \U000e0100-\U000e01ef
//   « and » (the quotes of quote_untrusted)       \u00ab, \u00bb
//   a byte that is not part of valid UTF-8         \xHH (HH >= 80: a code point below 80 is never \x-escaped
//                                                  unless it is a control, so the two never collide)
//   anything else                                  itself
//
// Properties (tests/unit/test_untrusted_text.cpp): the result is valid UTF-8,
// holds none of the characters above, has at most max_chars code points
// (a cut ends in "…"), and escaping it again changes nothing (idempotent:
// a backslash is not doubled, so text escaped twice by two layers still
// reads once-escaped). A literal backslash sequence in the input ("\x1b"
// typed as four characters) is shown as it is: visible, harmless.
#pragma once

#include <cstddef>
#include <limits>
#include <string>
#include <string_view>

namespace vs {

inline constexpr std::size_t kNoTextLimit = std::numeric_limits<std::size_t>::max();

// `s` made safe to show (see above), cut to at most max_chars code points: the
// cut falls between two escapes, never inside one, and ends in "…".
std::string escape_untrusted(std::string_view s, std::size_t max_chars = kNoTextLimit);

// escape_untrusted wrapped in «»: reads as data and cannot close its own quote.
// At most max_chars + 2 code points.
std::string quote_untrusted(std::string_view s, std::size_t max_chars = kNoTextLimit);

// True when escape_untrusted would show `code_point` escaped (controls, bidi,
// hiding format characters, « and »). For tests and for callers that check.
bool untrusted_code_point_escaped(char32_t code_point);

}  // namespace vs
