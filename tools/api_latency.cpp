// api_latency: per CUDA function, how long calls took — exact percentiles
// over every stored call of the selection, not a sample.
#include <cstdio>

#include "common/percentiles.h"
#include "tools/api_stats.h"

namespace vs::tools {
namespace {

json latency_row(const ApiInfo& api, const store::CallStats& s) {
  return {{"api", api.name},
          {"layer", api.layer},
          {"op", api.op},
          {"count", s.calls},
          {"errors", s.failed},
          {"p50_ns", s.p50_ns},
          {"p90_ns", s.p90_ns},
          {"p99_ns", s.p99_ns},
          {"p999_ns", s.p999_ns},
          {"max_ns", s.max_ns},
          {"mean_ns", static_cast<double>(s.total_ns) / static_cast<double>(s.calls)},
          {"tail_ratio", s.p50_ns > 0 ? static_cast<double>(s.p99_ns) / static_cast<double>(s.p50_ns) : 0.0},
          {"total_ns", s.total_ns},
          {"slowest_call_id", s.max_call_id}};
}

std::string render(const json& out) {
  const json& apis = out["apis"];
  std::string text = "api_latency: session " + std::to_string(out["session_id"].get<std::int64_t>()) + ", " +
                     std::to_string(out["calls"].get<std::int64_t>()) + " calls in " +
                     std::to_string(out["apis_total"].get<std::int64_t>()) + " APIs";
  if (!out["filter"].empty()) text += ", filter " + out["filter"].dump();
  text += "; ranked by " + out["sort_by"].get<std::string>() + "; exact nearest-rank percentiles\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-28s %8s %5s %9s %9s %9s %9s %9s %6s %9s %s\n", "api", "calls", "err", "p50", "p90",
                "p99", "p99.9", "max", "p99/50", "total", "slowest call");
  text += line;
  for (const auto& a : apis) {
    std::snprintf(line, sizeof line, "%-28s %8lld %5lld %9s %9s %9s %9s %9s %6.1f %9s id %lld\n",
                  a["api"].get<std::string>().c_str(), static_cast<long long>(a["count"].get<std::int64_t>()),
                  static_cast<long long>(a["errors"].get<std::int64_t>()), fmt_ns(a["p50_ns"]).c_str(),
                  fmt_ns(a["p90_ns"]).c_str(), fmt_ns(a["p99_ns"]).c_str(), fmt_ns(a["p999_ns"]).c_str(),
                  fmt_ns(a["max_ns"]).c_str(), a["tail_ratio"].get<double>(), fmt_ns(a["total_ns"]).c_str(),
                  static_cast<long long>(a["slowest_call_id"].get<std::int64_t>()));
    text += line;
  }
  if (apis.size() < out["apis_total"].get<std::size_t>())
    text += "(" + std::to_string(out["apis_total"].get<std::size_t>() - apis.size()) +
            " more APIs; raise `limit` or filter by api)\n";
  if (apis.empty()) text += "no calls in this selection\n";
  return text;
}

Result<ToolOutput> run(const ToolInput& in) {
  auto selection = resolve_selection(in.db, in.args);
  if (!selection) return selection.error();
  const auto& [session, window, apis, filter] = *selection;

  auto stats = per_api_stats(in.db, session, window, filter);
  if (!stats) return stats.error();
  const std::string sort_by = arg_string(in.args, "sort_by", "total_time");
  const char* key = sort_by == "tail" ? "tail_ratio" : sort_by == "p99" ? "p99_ns" : sort_by == "count" ? "count" : "total_ns";
  auto out = ranked_api_rows(in, *selection, *stats, latency_row, key);
  if (!out) return out.error();
  (*out)["sort_by"] = sort_by;
  (*out)["percentile_method"] = kPercentileMethod;
  auto cov = coverage(in.db, session);
  if (!cov) return cov.error();
  (*out)["coverage"] = *cov;
  std::string text = render(*out);
  return ToolOutput{std::move(*out), bound_text(std::move(text), coverage_line(*cov)), {}};
}

}  // namespace

extern const ToolSpec kApiLatency{
    "api_latency", "Latency per CUDA API",
    "Use to see how long each CUDA memory/copy/sync function took: count, errors, exact p50/p90/p99/p99.9/max, "
    "mean, tail ratio and total time per API, over any window, process, API or layer. Start here when calls are "
    "slow; then offcpu_attribution explains tails and slowest_calls shows the calls themselves.",
    run};

}  // namespace vs::tools
