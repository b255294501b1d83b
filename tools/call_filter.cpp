#include "tools/call_filter.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <set>

namespace vs::tools {

Result<ApiTable> load_apis(const store::TraceReader& db) {
  ApiTable apis;
  Status st = db.query("SELECT id, name, layer, op FROM apis", {}, [&](const store::Row& r) {
    apis[r.i64(0)] = ApiInfo{r.text(1), r.text(2), r.text(3)};
  });
  if (!st) return Error{st.message()};
  return apis;
}

Result<CallSelection> resolve_selection(const store::TraceReader& db, const json& args) {
  auto session = resolve_session(db, args);
  if (!session) return session.error();
  auto window = resolve_window(*session, args);
  if (!window) return window.error();
  auto apis = load_apis(db);
  if (!apis) return apis.error();
  auto filter = build_call_filter(db, *apis, *session, *window, args);
  if (!filter) return filter.error();
  return CallSelection{std::move(*session), *window, std::move(*apis), std::move(*filter)};
}

std::string hex_ptr(std::int64_t ptr) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%" PRIx64, static_cast<std::uint64_t>(ptr));
  return buf;
}

namespace {

// A string-or-list argument as a list (absent: empty).
std::vector<std::string> string_list(const json& args, const char* name) {
  std::vector<std::string> out;
  auto it = args.find(name);
  if (it == args.end()) return out;
  if (it->is_string()) out.push_back(it->get<std::string>());
  else
    for (const auto& v : *it) out.push_back(v.get<std::string>());
  return out;
}

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// The API ids allowed by api (names), op and layer together; nullopt when none was given.
Result<std::optional<std::vector<std::int64_t>>> select_apis(const ApiTable& apis, const json& args, json& applied) {
  auto names = string_list(args, "api");
  auto ops = string_list(args, "op");
  std::string layer = arg_string(args, "layer");
  if (names.empty() && ops.empty() && layer.empty()) return std::optional<std::vector<std::int64_t>>{};
  std::set<std::string> known;
  for (const auto& [id, api] : apis) known.insert(api.name);
  for (const auto& n : names)
    if (!known.count(n))
      return Error{"api: no CUDA function named '" + clean_untrusted(n, 80) +
                   "' is traced; use one of: " + join({known.begin(), known.end()})};
  std::vector<std::int64_t> ids;
  for (const auto& [id, api] : apis) {
    if (!names.empty() && std::find(names.begin(), names.end(), api.name) == names.end()) continue;
    if (!ops.empty() && std::find(ops.begin(), ops.end(), api.op) == ops.end()) continue;
    if (!layer.empty() && api.layer != layer) continue;
    ids.push_back(id);
  }
  if (!names.empty()) applied["api"] = names;
  if (!ops.empty()) applied["op"] = ops;
  if (!layer.empty()) applied["layer"] = layer;
  if (ids.empty()) return Error{"api/op/layer: no traced function is in all of " + applied.dump() + "; drop one of them"};
  return std::optional<std::vector<std::int64_t>>{std::move(ids)};
}

std::string placeholders(std::size_t n) {
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s += i ? ",?" : "?";
  return s;
}

}  // namespace

Result<CallFilter> build_call_filter(const store::TraceReader& db, const ApiTable& apis, const Session& session,
                                     const Window& window, const json& args) {
  CallFilter f;
  f.applied = json::object();
  f.where = "session_id = ?";
  f.params.push_back(session.id);
  if (!window.whole_session) {
    f.where += " AND ts_ns BETWEEN ? AND ?";
    f.params.push_back(window.from_ns);
    f.params.push_back(window.to_ns);
    f.applied["from_ms"] = session.t_ms(window.from_ns);
    f.applied["to_ms"] = session.t_ms(window.to_ns);
  }
  auto api_ids = select_apis(apis, args, f.applied);
  if (!api_ids) return api_ids.error();
  f.api_ids = std::move(*api_ids);
  // A window without an API or process is read through the (api_id, ts_ns)
  // index too, one range per API, instead of scanning the whole table.
  bool window_needs_index = !window.whole_session && !f.api_ids && !args.contains("pid");
  if (f.api_ids || window_needs_index) {
    f.where += " AND api_id IN (" + placeholders(f.api_ids ? f.api_ids->size() : apis.size()) + ")";
    if (f.api_ids)
      for (auto id : *f.api_ids) f.params.push_back(id);
    else
      for (const auto& [id, api] : apis) f.params.push_back(id);
  }
  for (const char* column : {"pid", "tid"}) {
    if (auto v = arg_opt_int(args, column)) {
      f.where += std::string(" AND ") + column + " = ?";
      f.params.push_back(*v);
      f.applied[column] = *v;
    }
  }
  if (args.contains("min_dur_us")) {
    f.where += " AND dur_ns >= ?";
    f.params.push_back(static_cast<std::int64_t>(args["min_dur_us"].get<double>() * 1e3));
    f.applied["min_dur_us"] = args["min_dur_us"];
  }
  if (args.contains("max_dur_us")) {
    f.where += " AND dur_ns <= ?";
    f.params.push_back(static_cast<std::int64_t>(args["max_dur_us"].get<double>() * 1e3));
    f.applied["max_dur_us"] = args["max_dur_us"];
  }
  if (args.contains("ptr")) {
    // The schema admits "0x<hex>" or decimal; stored pointers are the same 64 bits, signed.
    std::string text = args["ptr"].get<std::string>();
    std::uint64_t ptr = std::stoull(text, nullptr, text.starts_with("0x") ? 16 : 10);
    f.where += " AND ptr = ?";
    f.params.push_back(static_cast<std::int64_t>(ptr));
    f.applied["ptr"] = hex_ptr(static_cast<std::int64_t>(ptr));
  }
  if (args.value("errors_only", false)) {
    f.where += " AND ret != 0";
    f.applied["errors_only"] = true;
  }
  std::string caller = arg_string(args, "caller");
  if (!caller.empty()) {
    std::vector<std::int64_t> ids;
    std::set<std::string> all;
    Status st = db.query("SELECT id, path, instr(path, ?) > 0 FROM objects", {caller}, [&](const store::Row& r) {
      if (r.i64(2)) ids.push_back(r.i64(0));
      all.insert(short_path(r.text(1)));
    });
    if (!st) return Error{st.message()};
    if (ids.empty()) {
      std::string known;
      for (const auto& s : all) known += (known.empty() ? "" : ", ") + quote_untrusted(s, 80);
      return Error{"caller: no calling library's path contains '" + clean_untrusted(caller, 80) +
                   "'; the callers in this trace are: " + (known.empty() ? "(none recorded)" : known)};
    }
    f.where += " AND caller_id IN (" + placeholders(ids.size()) + ")";
    for (auto id : ids) f.params.push_back(id);
    f.applied["caller"] = clean_untrusted(caller, 160);
  }
  return f;
}

}  // namespace vs::tools
