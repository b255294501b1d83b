// The call selection that api_latency, offcpu_attribution, slowest_calls and
// find_calls share: one reading of the same arguments (session, window, pid,
// tid, api, op, layer, duration bounds, ptr, caller, errors_only) into SQL over
// `call_rows`, so that "the calls of cudaFree in pid 707 after 2 s" means the
// same set in every tool. Names are resolved to ids here (apis and objects are
// small tables) so that queries filter call_rows by api_id and use its
// (api_id, ts_ns) index instead of joining through the `calls` view.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tools/common.h"

namespace vs::tools {

struct ApiInfo {
  std::string name;   // the CUDA function
  std::string layer;  // 'runtime' | 'driver'
  std::string op;     // 'alloc', 'free', ...
};
using ApiTable = std::map<std::int64_t, ApiInfo>;  // by apis.id
Result<ApiTable> load_apis(const store::TraceReader& db);

struct CallFilter {
  // Conditions over call_rows' own columns, ANDed, for "WHERE <where>";
  // always restricted to the session (and to the window when one is given).
  std::string where;
  std::vector<store::SqlValue> params;
  // The API ids the api/op/layer arguments allow, ascending; nullopt: every API.
  std::optional<std::vector<std::int64_t>> api_ids;
  // The selection as applied (names resolved, window in ms), echoed in results.
  json applied;
};

// Reads the filter arguments a tool's input schema allows (absent ones select
// everything). An Error says which argument matched nothing and what exists.
Result<CallFilter> build_call_filter(const store::TraceReader& db, const ApiTable& apis, const Session& session,
                                     const Window& window, const json& args);

// What a call-level tool works on: its session, window, the API table and the
// filter its arguments describe, resolved in that order (the first Error is returned).
struct CallSelection {
  Session session;
  Window window;
  ApiTable apis;
  CallFilter filter;
};
Result<CallSelection> resolve_selection(const store::TraceReader& db, const json& args);

// "0x7f3a00000000": pointers are stored as signed 64-bit; agents read them as hex.
std::string hex_ptr(std::int64_t ptr);

}  // namespace vs::tools
