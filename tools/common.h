// What every tool shares: which session and time window a call is about, the
// coverage block (so "nothing found" is never confused with "not observed"),
// units, and the treatment of strings that come from the traced system.
//
// Conventions every tool follows (an agent sees the same shapes everywhere):
// - Field names carry units: *_ns, *_us, *_ms, *_bytes, *_mib, *_pct.
// - Times in results are `t_ms`, milliseconds since the session's start
//   (sessions.start_ts_ns); never relative to "now" (a trace is read days later).
// - Arguments `session_id` (default: the newest session), `from_ms`/`to_ms`
//   (window, ms since session start), `pid` have the same meaning in every tool.
// - Text renderings stay under kMaxTextChars; lists carry `limit` and say how
//   many were left out.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/untrusted_text.h"
#include "tools/tool.h"

namespace vs::tools {

constexpr std::size_t kMaxTextChars = 20000;

struct Session {
  std::int64_t id = 0;
  std::int64_t start_ns = 0;        // sessions.start_ts_ns
  std::int64_t end_ns = 0;          // sessions.end_ts_ns, or the last recorded event while still recording
  std::int64_t realtime_offset_ns = 0;
  std::string status;               // 'recording' | 'complete' | 'interrupted'
  std::string mode;                 // 'launch' | 'pid' | 'all'
  std::string command;              // launch mode's command line (data from the traced system)

  double t_ms(std::int64_t ts_ns) const { return static_cast<double>(ts_ns - start_ns) / 1e6; }
  // A time from a client may be any number (at_ms 2.2e37, found by fuzz_tools): clamped to +-2^61 ns (73
  // years) from the start before the conversion, which is undefined outside int64's range.
  std::int64_t ts_ns(double t_ms) const {
    constexpr double kLimitNs = 2305843009213693952.0;  // 2^61
    const double ns = std::isnan(t_ms) ? 0.0 : std::clamp(t_ms * 1e6, -kLimitNs, kLimitNs);
    return start_ns + static_cast<std::int64_t>(ns);
  }
};

// args.session_id, or the newest session. An Error names the sessions there are.
Result<Session> resolve_session(const store::TraceReader& db, const json& args);

// [from_ns, to_ns] from args.from_ms/to_ms (default: the whole session).
struct Window {
  std::int64_t from_ns = 0;
  std::int64_t to_ns = 0;
  bool whole_session = true;
};
Result<Window> resolve_window(const Session& session, const json& args);

// The coverage block every result carries as structured["coverage"]:
// {"session_id", "status", "calls_recorded", "call_drops", "lifecycle_drops",
//  "unrecorded_calls", "processes", "libraries_probed", "libraries_failed",
//  "complete": bool (nothing lost and every library found was probed)}.
// Its schema is schemas/common.coverage.json ($defs.coverage in each output schema).
Result<json> coverage(const store::TraceReader& db, const Session& session);
// One line for the text rendering: "coverage: 2 processes, 3 libraries probed, 0 calls lost".
std::string coverage_line(const json& coverage);

// A string from the traced system (comm, cmdline, path, error text): shown
// through common/untrusted_text.h, the one implementation every view uses
// (controls, ANSI escapes, bidi and invisible characters, invalid UTF-8 and
// « » made visible as \x1b, \u202e ...), cut to max_chars code points, wrapped
// in «» so that it reads as data and cannot pass as instructions to the model.
std::string quote_untrusted(std::string_view s, std::size_t max_chars = 160);
// The same without the «» (structuredContent string fields). Idempotent: a
// value escaped here and again by a caller reads the same.
std::string clean_untrusted(std::string_view s, std::size_t max_chars = 160);

// "1.50 GiB", "12.0 MiB", "512 B"; "1.23 ms", "45.6 us", "789 ns".
std::string fmt_bytes(std::int64_t bytes);
std::string fmt_ns(std::int64_t ns);

// A tool's text rendering: `body` cut (saying so) so that it fits in
// kMaxTextChars together with `footer` -- the coverage line(s) -- which is
// always kept whole at the end.
std::string bound_text(std::string body, const std::string& footer);

// Typed argument access with the tool's default (arguments are already
// schema-checked, so a present value has the right type).
std::int64_t arg_int(const json& args, const char* name, std::int64_t fallback);
std::optional<std::int64_t> arg_opt_int(const json& args, const char* name);
std::string arg_string(const json& args, const char* name, const std::string& fallback = "");

// Library short name for a caller path: "/x/y/libc10_cuda.so" -> "libc10_cuda.so".
std::string short_path(std::string_view path);

}  // namespace vs::tools
