// Time warps of a trace file: a copy whose every timestamp went through one
// monotone map of the trace clock that leaves each call as it was (its
// duration, off-CPU and run-queue time: what latency rules judge) and
// stretches or shrinks only the idle gaps between calls. A leak verdict that
// depends on the program, not on its pacing, is the same on the copy.
//
// The map has slope 1 inside the union of the calls' [ts_ns, ts_ns + dur_ns]
// over all processes, and rescales each gap between them (and the idle time
// from the earliest instant the file stores to the first call, and from the
// last call to the latest instant) to a new length that a WarpSpec chooses.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"

namespace vs::test::time_warp {

// An idle stretch of the trace clock: no call of any process in flight in (from_ns, to_ns).
struct Gap {
  std::int64_t from_ns = 0, to_ns = 0;
  std::int64_t length() const { return to_ns - from_ns; }
};

// The times a warp is chosen from.
struct TraceTimes {
  std::vector<Gap> gaps;  // in time order
  // Per pid, its first allocation of GPU memory (tools::occupies_gpu_memory): where its start-up ends.
  std::map<std::int64_t, std::int64_t> first_gpu_allocation_ns;
  // The latest of those: the end of every process's start-up (nullopt: no GPU allocation).
  std::optional<std::int64_t> startup_end_ns() const;
};

// A monotone map of the trace clock: gap i becomes new_lengths[i] long (>= 1 ns when it was), slope 1
// between gaps; instants before the first gap stay where they are.
class Warp {
 public:
  Warp(std::vector<Gap> gaps, std::vector<std::int64_t> new_lengths);
  std::int64_t operator()(std::int64_t t) const;
  const std::vector<Gap>& gaps() const { return gaps_; }
  const std::vector<std::int64_t>& new_lengths() const { return new_lengths_; }

 private:
  std::vector<Gap> gaps_;
  std::vector<std::int64_t> new_lengths_;
  std::vector<std::int64_t> new_from_;  // where each gap starts after the warp
};

// A named way to choose each gap's new length.
struct WarpSpec {
  std::string name;  // what failure messages call it
  std::function<std::vector<std::int64_t>(const TraceTimes&)> new_lengths;
};

// The gaps of the start-up phase (those that end by `until_ns` on the trace clock, by default
// TraceTimes::startup_end_ns()) times `factor`; the others unchanged.
WarpSpec scale_startup(double factor, std::optional<std::int64_t> until_ns = std::nullopt);
// `idle_ns` more idle time in `gaps` gaps drawn at random (seeded; every gap when there are fewer).
WarpSpec insert_idle(int gaps, std::int64_t idle_ns, std::uint64_t seed);
// Every gap times its own factor, drawn log-uniformly in [min_factor, max_factor] (seeded).
WarpSpec scale_randomly(std::uint64_t seed, double min_factor = 0.01, double max_factor = 100);
// The gaps that begin at or after `from_ns` (by default the end of start-up) times `factor`: the pacing
// between iterations.
WarpSpec scale_after(double factor, std::optional<std::int64_t> from_ns = std::nullopt);
// The warps: start-up x100 and x0.01, 10 s idle inserted at 5 random gaps, every gap by a random
// factor in [0.01, 100], the pacing after start-up x100 and x0.01.
std::vector<WarpSpec> standard_warps();

// A timestamp column on the trace clock.
struct TimeColumn {
  const char* table;
  const char* column;
};
// The columns a warp rewrites (those a file lacks, written by an older schema, are skipped).
std::span<const TimeColumn> warped_columns();
// The timestamp columns of the summaries, which are rebuilt from the warped calls instead.
std::span<const TimeColumn> summary_columns();

// The gaps and first GPU allocations of a trace file.
Result<TraceTimes> read_times(const std::string& path);

// Copies the trace at `from` to `to` (which must not exist), maps every timestamp of warped_columns()
// through the warp `spec` chooses for it, and rebuilds the summaries of each session that had them (a
// file without summaries stays without). Returns the warp applied.
Result<Warp> warp_trace(const std::string& from, const std::string& to, const WarpSpec& spec);

}  // namespace vs::test::time_warp
