// The growth verdict (tools/growth_model.h) on call sequences built here: each
// verdict and its boundaries, and that no verdict depends on the time between calls.
#include <catch2/catch.hpp>
#include <random>

#include "tools/growth_model.h"

namespace vs::tools {
namespace {

constexpr std::int64_t kMiB = 1 << 20;
using Kind = ActivityCall::Kind;
using R = GrowthRules;

// A process's calls, one after the other, and its outstanding bytes.
struct Sequence {
  std::vector<ActivityCall> calls;
  StepFunction level;
  std::int64_t bytes = 0;

  void call(Kind kind, std::int64_t delta = 0) {
    const std::int64_t ts = (static_cast<std::int64_t>(calls.size()) + 1) * 1000;
    calls.push_back({ts, kind});
    if (delta != 0) {
      bytes += delta;
      level.steps.push_back({ts, bytes});
    }
  }
  void alloc(std::int64_t b) { call(Kind::Work, b); }
  void free(std::int64_t b) { call(Kind::Release, -b); }
  void heartbeat() {  // a result copied back and waited for, as .item() does
    call(Kind::Work);
    call(Kind::Other);
  }
  void load(int tensors, std::int64_t each) {
    for (int i = 0; i < tensors; ++i) alloc(each);
  }
  void leaking_requests(int n, std::int64_t each) {
    for (int i = 0; i < n; ++i) {
      alloc(each);
      heartbeat();
    }
  }
  void flat_requests(int n) {
    for (int i = 0; i < n; ++i) heartbeat();
  }
  GrowthVerdict judge(std::int64_t min_growth = 64 * kMiB) const {
    StepFunction f = level;
    f.from_ns = 0;
    f.to_ns = calls.empty() ? 0 : calls.back().ts_ns;
    return judge_growth(f, calls, 0, f.to_ns, min_growth);
  }
};

TEST_CASE("growth: a leak after a long load is growing", "[growth]") {
  Sequence s;
  s.load(100, 20 * kMiB);
  s.leaking_requests(40, 100 * kMiB);
  auto v = s.judge();
  INFO(v.reason);
  CHECK(v.verdict == "growing");
  // The first request's allocation follows the load's directly: one episode with it.
  CHECK(v.episodes == 40);
  CHECK(v.longest_recent_wait_calls == 3);
  CHECK(v.calls_since_last_high == 2);
  CHECK(v.repeated_growth_bytes() == 39 * 100 * kMiB);
}

TEST_CASE("growth: growth that stops and the process works on is a plateau", "[growth]") {
  Sequence s;
  s.load(10, 20 * kMiB);
  s.leaking_requests(20, 50 * kMiB);
  s.flat_requests(50);
  auto v = s.judge();
  INFO(v.reason);
  CHECK(v.verdict == "plateau");
  CHECK(v.calls_since_last_high == 2 + 100);
}

TEST_CASE("growth: between growing and plateau it is undecided, with the calls that would decide", "[growth]") {
  // While growing, a new high every 3 calls: up to 2 x 3 flat calls is still the rhythm, 4 x 3 (and at least
  // kMinFlatCalls) is a plateau.
  for (int flat_requests : {2, 3, 9, 10}) {
    Sequence s;
    s.leaking_requests(20, 50 * kMiB);
    s.flat_requests(flat_requests);
    auto v = s.judge();
    INFO(flat_requests << " flat requests: " << v.reason);
    const std::int64_t flat = 2 + 2 * flat_requests;
    CHECK(v.calls_since_last_high == flat);
    if (flat <= R::kGrowingFactor * 3) CHECK(v.verdict == "growing");
    else if (flat >= R::kMinFlatCalls) CHECK(v.verdict == "plateau");
    else {
      CHECK(v.verdict == "undecided");
      CHECK(v.calls_to_decide == R::kMinFlatCalls - flat);
    }
  }
}

TEST_CASE("growth: allocations freed every request are steady", "[growth]") {
  Sequence s;
  s.load(5, 100 * kMiB);
  for (int i = 0; i < 50; ++i) {
    s.alloc(300 * kMiB);
    s.heartbeat();
    s.free(300 * kMiB);
  }
  auto v = s.judge();
  INFO(v.reason);
  // The first request's 300 MiB is a new high (in the load's episode), every later one only returns to it.
  CHECK(v.verdict == "plateau");
  CHECK(v.episodes == 1);
  Sequence small;
  for (int i = 0; i < 50; ++i) {
    small.alloc(10 * kMiB);
    small.heartbeat();
    small.free(10 * kMiB);
  }
  CHECK(small.judge().verdict == "steady");
}

TEST_CASE("growth: the release burst of a shutdown does not cancel the growth", "[growth]") {
  Sequence s;
  s.load(10, 20 * kMiB);
  s.leaking_requests(30, 100 * kMiB);
  for (int i = 0; i < 40; ++i) s.free(100 * kMiB);
  s.call(Kind::Other);  // a final synchronize
  auto v = s.judge();
  INFO(v.reason);
  CHECK(v.verdict == "growing");
  CHECK(v.teardown_calls == 41);
  // Frees in the middle of the work are work, not teardown: most returned, then work goes on.
  Sequence returned;
  returned.leaking_requests(30, 100 * kMiB);
  for (int i = 0; i < 30; ++i) returned.free(100 * kMiB);
  returned.flat_requests(5);
  CHECK(returned.judge().verdict == "steady");
}

TEST_CASE("growth: a load followed at once by the exit is too short to tell", "[growth]") {
  Sequence s;
  s.load(3, 128 * kMiB);
  s.call(Kind::Other);
  s.call(Kind::Other);
  auto v = s.judge();
  INFO(v.reason);
  CHECK(v.verdict == "undecided");
  CHECK(v.episodes == 1);
  CHECK(v.calls_to_decide == R::kMinFlatCalls - 2);
}

TEST_CASE("growth: a step then flat is a plateau, not a leak", "[growth]") {
  Sequence s;
  s.load(10, 100 * kMiB);
  s.flat_requests(30);
  s.alloc(500 * kMiB);  // a new largest input, once
  s.flat_requests(30);
  auto v = s.judge();
  INFO(v.reason);
  CHECK(v.verdict == "plateau");
  CHECK(v.episodes == 2);
}

TEST_CASE("growth: small new highs after a large load are not a leak", "[growth]") {
  Sequence s;
  s.load(50, 200 * kMiB);
  s.leaking_requests(30, kMiB);  // 30 MiB in all, under the 64 MiB threshold
  s.flat_requests(20);
  auto v = s.judge();
  INFO(v.reason);
  CHECK(v.verdict == "plateau");
  CHECK(v.repeated_growth_bytes() == 29 * kMiB);  // the first request's MiB is in the load's episode
}

TEST_CASE("growth: a late small new high after a plateau does not make it a leak", "[growth]") {
  Sequence s;
  s.leaking_requests(30, 100 * kMiB);
  s.flat_requests(60);
  s.alloc(2 * kMiB);  // one more segment, fragmentation
  s.flat_requests(1);
  auto v = s.judge();
  INFO(v.reason);
  CHECK(v.verdict == "plateau");
}

TEST_CASE("growth: no verdict depends on the time between calls", "[growth]") {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> factor(0.01, 100);
  std::vector<Sequence> cases(4);
  cases[0].load(100, 20 * kMiB), cases[0].leaking_requests(40, 100 * kMiB);
  cases[1].leaking_requests(20, 50 * kMiB), cases[1].flat_requests(50);
  cases[2].leaking_requests(20, 50 * kMiB), cases[2].flat_requests(5);
  cases[3].load(3, 128 * kMiB), cases[3].flat_requests(1);
  for (const Sequence& original : cases) {
    const auto before = original.judge();
    for (int round = 0; round < 20; ++round) {
      // Every gap between calls scaled by its own factor: a monotone warp of the timestamps.
      Sequence warped = original;
      std::map<std::int64_t, std::int64_t> warp;
      std::int64_t t = 0, previous = 0;
      for (auto& c : warped.calls) {
        t += std::max<std::int64_t>(1, static_cast<std::int64_t>(static_cast<double>(c.ts_ns - previous) * factor(rng)));
        previous = c.ts_ns;
        warp[c.ts_ns] = t;
        c.ts_ns = t;
      }
      for (auto& step : warped.level.steps) step.first = warp.at(step.first);
      const auto after = warped.judge();
      CHECK(after.verdict == before.verdict);
      CHECK(after.reason == before.reason);
      CHECK(after.calls_to_decide == before.calls_to_decide);
    }
  }
}

}  // namespace
}  // namespace vs::tools
