// The findings registry (tools/findings/registry.h): the kinds its rules
// declare are the kinds the output schema allows, each with a severity and
// the reason for it; every rule reports in `checked`; findings rank by
// severity, then by the registry's order of kinds. And the one definition of
// GPU memory (common/cuda_api.h) that the rules, the tools and pairing share.
#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "common/cuda_api.h"
#include "store/pairing.h"
#include "tests/tools/tool_check.h"
#include "tools/findings/registry.h"
#include "tools/timeline_model.h"

namespace {

using nlohmann::json;
namespace findings = vs::tools::findings;

const char* const kExampleTraces[] = {"attach", "contention", "empty_cache", "exit_holding", "expandable", "leak"};

std::set<std::string> registered_kinds() {
  std::set<std::string> kinds;
  for (const findings::Rule* rule : findings::rules())
    for (const findings::KindSeverity& k : rule->kinds) kinds.insert(std::string(k.kind));
  return kinds;
}

}  // namespace

TEST_CASE("findings registry: the kinds of its rules are the kinds the output schema allows", "[findings]") {
  const json& schema = vs::tools::output_schema("findings");
  REQUIRE(schema.contains("$defs"));
  const json& allowed = schema["$defs"]["finding"]["properties"]["kind"]["enum"];
  REQUIRE(allowed.is_array());
  std::set<std::string> in_schema;
  for (const auto& k : allowed) in_schema.insert(k.get<std::string>());
  CHECK(registered_kinds() == in_schema);
}

TEST_CASE("findings registry: every kind has a severity with its reason, and one place in the ranking", "[findings]") {
  std::set<std::pair<std::string, std::string>> declared;  // (kind, severity): declared once
  for (const findings::Rule* rule : findings::rules()) {
    INFO("rule " << rule->name);
    CHECK_FALSE(rule->name.empty());
    CHECK(rule->run != nullptr);
    REQUIRE_FALSE(rule->kinds.empty());
    for (const findings::KindSeverity& k : rule->kinds) {
      INFO("kind " << k.kind);
      const std::string severity(findings::severity_name(k.severity));
      CHECK((severity == "high" || severity == "medium" || severity == "low" || severity == "info"));
      CHECK(k.reason.size() >= 40);  // a sentence: what the user suffers
      CHECK(declared.insert({std::string(k.kind), severity}).second);
    }
  }
  // The ranking lists each registered kind exactly once.
  std::multiset<std::string> ranked;
  for (auto k : findings::ranked_kinds()) ranked.insert(std::string(k));
  const auto kinds = registered_kinds();
  CHECK(ranked == std::multiset<std::string>(kinds.begin(), kinds.end()));
  for (const auto& k : kinds) CHECK(findings::kind_rank(k) < findings::ranked_kinds().size());
  CHECK(findings::kind_rank("no_such_kind") == findings::ranked_kinds().size());
}

TEST_CASE("findings registry: every rule reports in `checked`, in the registry's order", "[findings]") {
  for (const char* trace : kExampleTraces) {
    INFO(trace);
    auto t = vs::test::open_trace(vs::test::example_trace(trace));
    auto out = vs::test::run_tool_checked(*t.reader, "findings", {{"limit", 50}}).structured;
    std::vector<std::string> checked, registered;
    for (const auto& c : out["checked"]) checked.push_back(c["kind"].get<std::string>());
    for (const findings::Rule* rule : findings::rules()) registered.push_back(std::string(rule->name));
    CHECK(checked == registered);
  }
}

TEST_CASE("findings registry: findings rank by severity, then by the registry's order of kinds", "[findings]") {
  const std::map<std::string, int> severity_rank = {{"high", 0}, {"medium", 1}, {"low", 2}, {"info", 3}};
  std::set<std::pair<std::string, std::string>> declared;
  for (const findings::Rule* rule : findings::rules())
    for (const findings::KindSeverity& k : rule->kinds)
      declared.insert({std::string(k.kind), std::string(findings::severity_name(k.severity))});
  std::size_t compared = 0;
  for (const char* trace : kExampleTraces) {
    INFO(trace);
    auto t = vs::test::open_trace(vs::test::example_trace(trace));
    auto out = vs::test::run_tool_checked(*t.reader, "findings", {{"limit", 50}}).structured;
    const json& list = out["findings"];
    for (std::size_t i = 0; i < list.size(); ++i) {
      const std::string kind = list[i]["kind"], severity = list[i]["severity"];
      INFO(i << ": " << kind << " " << severity);
      CHECK(declared.count({kind, severity}) == 1);  // emitted at a severity its rule declares
      if (i == 0) continue;
      const std::string prev_kind = list[i - 1]["kind"], prev_severity = list[i - 1]["severity"];
      CHECK(severity_rank.at(prev_severity) <= severity_rank.at(severity));
      if (prev_severity == severity) CHECK(findings::kind_rank(prev_kind) <= findings::kind_rank(kind));
      ++compared;
    }
  }
  CHECK(compared >= 10);  // the shipped traces hold enough findings for the order to be tested
}

TEST_CASE("GPU memory kinds: one definition, by enum, by name, in SQL and in pairing's totals", "[findings]") {
  std::set<std::string> gpu;
  vs::store::OutstandingTotals totals;  // 2^index bytes of each kind: the sum says which kinds device_bytes() adds
  for (vs::AllocKind kind : vs::kAllocKinds) totals.bytes_by_kind[static_cast<int>(kind)] = 1u << static_cast<int>(kind);
  CHECK(totals.device_bytes() == (1u << 1) + (1u << 2) + (1u << 3) + (1u << 5));  // device, async, managed, vmm_physical
  for (vs::AllocKind kind : vs::kAllocKinds) {
    const std::string name(vs::alloc_kind_name(kind));
    INFO(name);
    CHECK(vs::alloc_kind_named(name) == kind);
    CHECK(vs::tools::occupies_gpu_memory(name) == vs::occupies_gpu_memory(kind));
    if (vs::occupies_gpu_memory(kind)) gpu.insert(name);
  }
  CHECK(gpu == std::set<std::string>{"device", "async", "managed", "vmm_physical"});
  CHECK_FALSE(vs::tools::occupies_gpu_memory("host"));
  CHECK(vs::gpu_memory_kinds_sql() == "kind IN ('device', 'async', 'managed', 'vmm_physical')");
  CHECK(vs::gpu_memory_kinds_sql("a.kind") == "a.kind IN ('device', 'async', 'managed', 'vmm_physical')");
  std::vector<std::string> names(std::begin(vs::tools::kAllocKinds), std::end(vs::tools::kAllocKinds));
  CHECK(names == std::vector<std::string>{"device", "async", "managed", "host", "vmm_physical", "vmm_reserved",
                                          "vmm_mapped", "ipc_mapped", "host_registered", "vmm_imported"});
  // Another process's allocation mapped here, and pinned program memory: not this process's GPU memory.
  CHECK_FALSE(vs::tools::occupies_gpu_memory("ipc_mapped"));
  CHECK_FALSE(vs::tools::occupies_gpu_memory("host_registered"));
  // Another process's VMM memory imported here (cuMemImportFromShareableHandle): the exporter counts it.
  CHECK_FALSE(vs::tools::occupies_gpu_memory("vmm_imported"));
}
