// pipeline_bench: the user-space half of `vramscope trace`, without eBPF.
//
// Synthesizes the call records the BPF return probe would submit for a
// cudaMalloc/cudaFree workload (each runtime call with its nested driver call:
// cudaMalloc -> cuMemAlloc_v2, cudaFree -> cuMemFree_v2, children first, as
// they return first) and pushes them through the same code path as `vramscope
// trace`: tracer::Recorder::on_call (tracer/recorder.h), with no Tracer:
//     tracer::CallDecoder::decode -> store::TraceWriter::add_call -> SQLite
// into a fresh trace file.
//
// 1. Sustained throughput: N events as fast as possible, end to end
//    (including the final end_session flush), with a stage breakdown.
// 2. Paced: a feeder thread offers events at a fixed rate into a model of the
//    BPF call ring (same capacity in records as --ring-mib; a full ring drops,
//    as bpf_ringbuf_reserve does), and a consumer thread drains it as the
//    tracer's poll loop does. Reports drops, ring fill and writer queue depth:
//    whether user space keeps up at that rate.
//
// Plain std::chrono; prints tables. Not a test: it never fails on a figure.
#include <CLI/CLI.hpp>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/cuda_api.h"
#include "store/reader.h"
#include "store/store.h"
#include "tracer/bpf/events.h"
#include "tracer/decoder.h"
#include "tracer/recorder.h"

namespace {

using Clock = std::chrono::steady_clock;

double secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::int64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

double thread_cpu_s(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

double process_cpu_s() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

std::string si(double v) {
  char buf[32];
  if (v >= 1e6) std::snprintf(buf, sizeof buf, "%.2f M", v / 1e6);
  else if (v >= 1e3) std::snprintf(buf, sizeof buf, "%.1f k", v / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

struct Options {
  std::vector<std::uint64_t> counts{2000000, 5000000};
  std::vector<std::uint64_t> rates{100000, 300000, 1000000, 2000000};
  double seconds = 5.0;
  std::uint32_t ring_mib = 64;  // vramscope trace's default --ring-mib
  std::string dir;
  bool with_caller = true;
  std::uint32_t pids = 2, threads_per_pid = 2;
  std::uint32_t window = 64;  // allocations a thread holds before it frees the oldest
  std::uint32_t launches = 0;  // kernel launches (runtime + driver record) per malloc/free iteration
  bool keep = false;
};

// ---- the synthetic BPF records ----

constexpr std::uint32_t kFirstPid = 1000001;  // above any real pid here: the decoder never scans /proc
constexpr std::uint32_t kDev = (8u << 20) | 1u;  // kernel dev_t encoding, as BPF reads s_dev
constexpr std::uint64_t kInoWorkload = 1311001, kInoCudart = 1311002;
constexpr const char* kPathWorkload = "/opt/app/bin/workload";
constexpr const char* kPathCudart = "/opt/app/lib/libcudart.so.13";

std::uint16_t api_id(const char* name) {
  const vs::ApiInfo* a = vs::find_api(name);
  if (!a) {
    std::fprintf(stderr, "pipeline_bench: %s is not in the API catalog\n", name);
    std::exit(1);
  }
  return a->id;
}

// One event at a time, in the order the return probes would submit them.
class Synth {
 public:
  explicit Synth(const Options& o) : o_(o) {
    a_malloc_ = api_id("cudaMalloc");
    a_memalloc_ = api_id("cuMemAlloc_v2");
    a_free_ = api_id("cudaFree");
    a_memfree_ = api_id("cuMemFree_v2");
    a_launch_ = api_id("cudaLaunchKernel");
    a_culaunch_ = api_id("cuLaunchKernel");
    for (std::uint32_t p = 0; p < o.pids; ++p)
      for (std::uint32_t t = 0; t < o.threads_per_pid; ++t) {
        Thread th;
        th.pid = kFirstPid + p;
        th.tid = th.pid + t;  // the main thread's tid is the pid
        th.pidx = p;
        threads_.push_back(th);
      }
    next_ptr_.assign(o.pids, 0x200000000ull);
    buf_.reserve(2 * o.launches + 4);  // references into it stay valid while an iteration is built
    ts_ = static_cast<std::uint64_t>(mono_ns());
  }

  void register_objects(vs::tracer::CallDecoder& dec) const {
    dec.objects().add(kDev, kInoWorkload, kPathWorkload);
    dec.objects().add(kDev, kInoCudart, kPathCudart);
  }
  std::vector<std::uint32_t> pids() const {
    std::vector<std::uint32_t> v;
    for (std::uint32_t p = 0; p < o_.pids; ++p) v.push_back(kFirstPid + p);
    return v;
  }

  void next(vs_call_event& ev) {
    if (done_ == buf_.size()) refill();
    ev = buf_[done_++];
  }

 private:
  struct Thread {
    std::uint32_t pid = 0, tid = 0, pidx = 0;
    std::deque<std::pair<std::uint64_t, std::uint64_t>> live;  // (ptr, bytes)
  };

  void fill_common(vs_call_event& ev, const Thread& th, std::uint16_t api, std::uint64_t seq, std::uint64_t start,
                   std::uint64_t dur, bool runtime) {
    std::memset(&ev, 0, sizeof ev);
    ev.type = VS_REC_CALL;
    ev.seq = seq;
    ev.start_ns = start;
    ev.end_ns = start + dur;
    ev.pid = th.pid;
    ev.tid = th.tid;
    ev.api = api;
    if (o_.with_caller) {
      // A runtime call is made by the application; its driver call by libcudart.
      ev.caller_ino = runtime ? kInoWorkload : kInoCudart;
      ev.caller_dev = kDev;
    }
  }

  // Argument `arg` of the call, in the record's word that carries it (vs_api_plan.word).
  static void put_arg(vs_call_event& ev, int arg, std::uint64_t value) {
    const vs::ApiInfo* api = vs::find_api(ev.api);
    for (int i = 0; i < vs::kCallWords; ++i)
      if (api->words[i] == arg) ev.words[i] = value;
  }

  // One iteration of one thread: `launches` kernel launches (cudaLaunchKernel
  // + its cuLaunchKernel, as with --launches), cudaMalloc (+ cuMemAlloc_v2),
  // and once the thread holds `window` allocations, cudaFree of its oldest
  // (+ cuMemFree_v2).
  void refill() {
    buf_.clear();
    done_ = 0;
    Thread& th = threads_[rr_++ % threads_.size()];
    static constexpr std::uint64_t kSizes[] = {4096, 1 << 20, (2 << 20) + 512, 256, 64 << 20, 8192, 12345, 512};
    const std::uint64_t bytes = kSizes[iter_++ % (sizeof kSizes / sizeof kSizes[0])];
    std::uint64_t& bump = next_ptr_[th.pidx];
    const std::uint64_t ptr = bump;
    bump += (bytes + 511) & ~511ull;

    for (std::uint32_t i = 0; i < o_.launches; ++i) {
      const std::uint64_t l = seq_;
      seq_ += 2;
      const std::uint64_t tl = ts_;
      ts_ += 3000;
      // cuLaunchKernel(f, grid, block, shmem, stream, ...) inside cudaLaunchKernel: returns first.
      vs_call_event& child = buf_.emplace_back();
      fill_common(child, th, a_culaunch_, l + 1, tl + 600, 1500, false);
      child.parent_seq = l;
      child.parent_api = a_launch_;
      put_arg(child, 0, 0x7f3a00001000ull + 64 * i);
      vs_call_event& parent = buf_.emplace_back();
      fill_common(parent, th, a_launch_, l, tl, 2400, true);
      put_arg(parent, 0, 0x401000ull + 64 * i);
    }
    const std::uint64_t s = seq_;
    seq_ += 2;
    const std::uint64_t t0 = ts_;
    // cuMemAlloc_v2(CUdeviceptr* dptr, size_t bytes), inside cudaMalloc: returns first.
    vs_call_event& child = buf_.emplace_back();
    fill_common(child, th, a_memalloc_, s + 1, t0 + 400, 900, false);
    child.parent_seq = s;
    child.parent_api = a_malloc_;
    put_arg(child, 1, bytes);
    child.out[0] = ptr;
    // cudaMalloc(void** devPtr, size_t size)
    vs_call_event& parent = buf_.emplace_back();
    fill_common(parent, th, a_malloc_, s, t0, 1800, true);
    put_arg(parent, 1, bytes);
    parent.out[0] = ptr;
    th.live.emplace_back(ptr, bytes);

    if (th.live.size() > o_.window) {
      const std::uint64_t victim = th.live.front().first;
      th.live.pop_front();
      const std::uint64_t f = seq_;
      seq_ += 2;
      const std::uint64_t t1 = t0 + 2500;
      vs_call_event& fchild = buf_.emplace_back();
      fill_common(fchild, th, a_memfree_, f + 1, t1 + 300, 700, false);
      fchild.parent_seq = f;
      fchild.parent_api = a_free_;
      put_arg(fchild, 0, victim);
      vs_call_event& fparent = buf_.emplace_back();
      fill_common(fparent, th, a_free_, f, t1, 1400, true);
      put_arg(fparent, 0, victim);
    }
    ts_ += 5000;
  }

  const Options& o_;
  std::uint16_t a_malloc_ = 0, a_memalloc_ = 0, a_free_ = 0, a_memfree_ = 0, a_launch_ = 0, a_culaunch_ = 0;
  std::vector<Thread> threads_;
  std::vector<std::uint64_t> next_ptr_;
  std::uint64_t seq_ = 1, ts_ = 0, rr_ = 0, iter_ = 0;
  std::vector<vs_call_event> buf_;
  std::size_t done_ = 0;
};

// A fresh trace file with an open session.
struct Trace {
  std::string path;
  std::unique_ptr<vs::store::TraceWriter> writer;
  std::int64_t session = 0;
  bool keep = false;

  Trace(const std::string& dir, const std::string& name, bool keep_file) : keep(keep_file) {
    path = dir + "/" + name + ".db";
    remove_files();
    auto w = vs::store::TraceWriter::open(path);
    if (!w) {
      std::fprintf(stderr, "pipeline_bench: %s\n", w.error().message.c_str());
      std::exit(1);
    }
    writer = std::move(*w);
    vs::SessionInfo info;
    info.host = "bench";
    info.kernel = "-";
    info.mode = "pid";
    info.version = "bench";
    info.options_json = "{}";
    info.start_ts_ns = mono_ns();
    session = writer->begin_session(info);
  }
  ~Trace() {
    writer.reset();
    if (!keep) remove_files();
  }
  void remove_files() {
    for (const char* sfx : {"", "-wal", "-shm"}) std::filesystem::remove(path + sfx);
  }
  std::uintmax_t bytes() const {
    std::uintmax_t n = 0;
    for (const char* sfx : {"", "-wal"}) {
      std::error_code ec;
      auto s = std::filesystem::file_size(path + sfx, ec);
      if (!ec) n += s;
    }
    return n;
  }
  vs::Status end(std::int64_t call_drops = 0) {
    vs::SessionEnd e;
    e.end_ts_ns = mono_ns();
    e.call_drops = call_drops;
    return writer->end_session(e);
  }
  // (calls_recorded, rows in calls, allocations) from the file.
  std::array<std::int64_t, 3> check() const {
    std::array<std::int64_t, 3> r{-1, -1, -1};
    auto reader = vs::store::TraceReader::open(path);
    if (!reader) return r;
    (void)(*reader)->query("SELECT calls_recorded, (SELECT COUNT(*) FROM call_rows WHERE session_id = s.id), "
                           "(SELECT COUNT(*) FROM allocations WHERE session_id = s.id) FROM sessions s WHERE id = ?",
                           {session}, [&](const vs::store::Row& row) {
                             r = {row.i64(0), row.i64(1), row.i64(2)};
                           });
    return r;
  }
};

// ---- 1. sustained throughput ----

void throughput(const Options& o) {
  std::printf("\n== 1. Sustained throughput: events pushed as fast as possible (1 producer thread + the writer thread)\n");
  std::printf("%-9s %-44s %8s %11s %9s\n", "events", "stage", "seconds", "events/s", "ns/event");
  auto row = [](std::uint64_t n, const char* stage, double s) {
    std::printf("%-9llu %-44s %8.3f %11s %9.0f\n", static_cast<unsigned long long>(n), stage, s,
                si(static_cast<double>(n) / s).c_str(), s * 1e9 / static_cast<double>(n));
  };
  for (std::uint64_t n : o.counts) {
    vs_call_event ev;
    {
      Synth synth(o);
      std::uint64_t sink = 0;
      auto t0 = Clock::now();
      for (std::uint64_t i = 0; i < n; ++i) {
        synth.next(ev);
        sink += ev.seq;
      }
      row(n, "synthesize records (the feeder alone)", secs(Clock::now() - t0));
      if (sink == 42) std::puts("");
    }
    {
      Synth synth(o);
      vs::tracer::CallDecoder dec(1);
      synth.register_objects(dec);
      std::uint64_t sink = 0;
      auto t0 = Clock::now();
      for (std::uint64_t i = 0; i < n; ++i) {
        synth.next(ev);
        auto c = dec.decode(ev);
        sink += static_cast<std::uint64_t>(c.id) + (c.caller ? c.caller->size() : 0);
      }
      row(n, "+ CallDecoder::decode", secs(Clock::now() - t0));
      if (sink == 42) std::puts("");
    }
    {
      Trace trace(o.dir, "pipeline_bench_throughput", o.keep);
      Synth synth(o);
      vs::tracer::Recorder rec(*trace.writer, nullptr, trace.writer->next_call_id(), true);
      synth.register_objects(rec.decoder());
      const double cpu0 = process_cpu_s();
      auto t0 = Clock::now();
      for (std::uint64_t i = 0; i < n; ++i) {
        synth.next(ev);
        rec.on_call(ev, nullptr);
      }
      auto t1 = Clock::now();
      vs::Status st = trace.end();
      auto t2 = Clock::now();
      const double cpu = process_cpu_s() - cpu0;
      if (!st) std::fprintf(stderr, "pipeline_bench: %s\n", st.message().c_str());
      row(n, "+ TraceWriter::add_call (enqueue only)", secs(t1 - t0));
      row(n, "END TO END: + SQLite commit, incl. final flush", secs(t2 - t0));
      auto ws = trace.writer->stats();
      auto chk = trace.check();
      std::printf("%-9s   flush after the last add_call %.0f ms; %lld transactions; %.0f MB file; CPU %.2f s "
                  "(%.0f%% of one core);\n%-9s   file check: calls_recorded %lld, call rows %lld, allocations %lld "
                  "(expected %llu calls)%s\n",
                  "", secs(t2 - t1) * 1e3, static_cast<long long>(ws.transactions),
                  static_cast<double>(trace.bytes()) / 1e6, cpu, 100 * cpu / secs(t2 - t0), "",
                  static_cast<long long>(chk[0]), static_cast<long long>(chk[1]), static_cast<long long>(chk[2]),
                  static_cast<unsigned long long>(n),
                  chk[0] == static_cast<std::int64_t>(n) && chk[1] == chk[0] ? "  OK" : "  MISMATCH");
    }
  }
}

// ---- 2. paced: a model of the BPF call ring between a feeder and the consumer ----

// Single producer, single consumer; a full ring refuses the record (a drop), as
// bpf_ringbuf_reserve does. Capacity in records: a BPF ring of ring_mib holds
// records of sizeof(vs_call_event) + an 8-byte header, 8-byte aligned.
class RingModel {
 public:
  explicit RingModel(std::size_t capacity) : cap_(capacity), slots_(capacity) {}
  std::size_t capacity() const { return cap_; }
  vs_call_event* reserve() {
    const std::uint64_t h = head_.load(std::memory_order_relaxed);
    if (h - tail_.load(std::memory_order_acquire) >= cap_) return nullptr;
    return &slots_[h % cap_];
  }
  void submit() { head_.store(head_.load(std::memory_order_relaxed) + 1, std::memory_order_release); }
  // Consumer: hands every available record to fn; returns how many.
  template <class Fn>
  std::size_t drain(Fn&& fn) {
    std::uint64_t t = tail_.load(std::memory_order_relaxed);
    const std::uint64_t h = head_.load(std::memory_order_acquire);
    for (std::uint64_t i = t; i < h; ++i) {
      fn(slots_[i % cap_]);
      tail_.store(i + 1, std::memory_order_release);  // free the slot at once, as ring_buffer__consume does
    }
    return static_cast<std::size_t>(h - t);
  }
  std::size_t fill() const {
    return static_cast<std::size_t>(head_.load(std::memory_order_acquire) - tail_.load(std::memory_order_acquire));
  }

 private:
  std::size_t cap_;
  std::vector<vs_call_event> slots_;
  alignas(64) std::atomic<std::uint64_t> head_{0};
  alignas(64) std::atomic<std::uint64_t> tail_{0};
};

struct PacedResult {
  std::uint64_t offered = 0, dropped = 0, consumed_in_window = 0, consumed = 0;
  double window_s = 0, total_s = 0, drain_ms = 0, flush_ms = 0;
  std::size_t max_fill = 0, end_fill = 0;
  std::int64_t max_queue = 0, end_queue = 0;
  double cpu_feeder = 0, cpu_consumer = 0, cpu_total = 0;
  std::array<std::int64_t, 3> check{};
};

PacedResult paced(const Options& o, std::uint64_t rate, std::size_t ring_records) {
  PacedResult r;
  Trace trace(o.dir, "pipeline_bench_paced_" + std::to_string(rate), o.keep);
  RingModel ring(ring_records);
  vs::tracer::Recorder rec(*trace.writer, nullptr, trace.writer->next_call_id(), true);
  Synth synth(o);
  synth.register_objects(rec.decoder());

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> consumed{0};
  std::atomic<bool> consumer_ready{false};
  double consumer_cpu = 0;  // written by the consumer before it exits

  const double cpu0 = process_cpu_s();
  // The consumer: the tracer's poll loop (ring_buffer__poll -> Recorder::on_call).
  std::thread consumer([&] {
    clockid_t clock{};
    pthread_getcpuclockid(pthread_self(), &clock);
    const double c0 = thread_cpu_s(clock);
    consumer_ready.store(true);
    for (;;) {
      std::size_t n = ring.drain([&](const vs_call_event& ev) {
        rec.on_call(ev, nullptr);
        consumed.fetch_add(1, std::memory_order_relaxed);
      });
      if (n == 0) {
        if (stop.load()) {
          consumer_cpu = thread_cpu_s(clock) - c0;
          break;
        }
        // Idle: the real loop sleeps in epoll until the ring's wakeup.
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  });
  while (!consumer_ready.load()) std::this_thread::yield();

  // The feeder (this thread): the traced program's return probes, on an absolute schedule.
  clockid_t feeder_clock{};
  pthread_getcpuclockid(pthread_self(), &feeder_clock);
  const double fcpu0 = thread_cpu_s(feeder_clock);
  const auto t0 = Clock::now();
  const auto window = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  auto next_sample = t0;
  std::uint64_t produced = 0;
  vs_call_event scratch;
  for (;;) {
    const auto now = Clock::now();
    if (now - t0 >= window) break;
    const auto due = static_cast<std::uint64_t>(secs(now - t0) * static_cast<double>(rate));
    while (produced < due) {
      if (vs_call_event* slot = ring.reserve()) {
        synth.next(*slot);
        ring.submit();
      } else {
        synth.next(scratch);  // the entry probe took a sequence number; the record is lost
        ++r.dropped;
      }
      ++produced;
    }
    if (now >= next_sample) {
      r.max_fill = std::max(r.max_fill, ring.fill());
      auto ws = trace.writer->stats();
      r.max_queue = std::max(r.max_queue, ws.calls_queued - ws.calls_written);
      next_sample = now + std::chrono::milliseconds(5);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  const auto t_end = Clock::now();
  r.cpu_feeder = thread_cpu_s(feeder_clock) - fcpu0;
  r.window_s = secs(t_end - t0);
  r.offered = produced;
  r.consumed_in_window = consumed.load();
  r.end_fill = ring.fill();
  {
    auto ws = trace.writer->stats();
    r.end_queue = ws.calls_queued - ws.calls_written;
  }
  r.max_fill = std::max(r.max_fill, r.end_fill);
  r.max_queue = std::max(r.max_queue, r.end_queue);
  while (ring.fill() > 0) std::this_thread::sleep_for(std::chrono::microseconds(100));
  const auto t_drained = Clock::now();
  stop.store(true);
  consumer.join();
  r.cpu_consumer = consumer_cpu;
  r.consumed = consumed.load();
  vs::Status st = trace.end(static_cast<std::int64_t>(r.dropped));
  if (!st) std::fprintf(stderr, "pipeline_bench: %s\n", st.message().c_str());
  const auto t_flushed = Clock::now();
  r.cpu_total = process_cpu_s() - cpu0;
  r.total_s = secs(t_flushed - t0);
  r.drain_ms = secs(t_drained - t_end) * 1e3;
  r.flush_ms = secs(t_flushed - t_drained) * 1e3;
  r.check = trace.check();
  return r;
}

void paced_table(const Options& o) {
  const std::size_t rec_bytes = (sizeof(vs_call_event) + 8 + 7) & ~std::size_t{7};
  const std::size_t ring_records = (static_cast<std::size_t>(o.ring_mib) << 20) / rec_bytes;
  std::printf("\n== 2. Paced: offered rate into a %u MiB ring model (%zu records of %zu B, as --ring-mib %u), "
              "%.1f s per rate\n",
              o.ring_mib, ring_records, rec_bytes, o.ring_mib, o.seconds);
  std::printf("   feeder thread -> ring model -> consumer thread (decode + add_call) -> writer thread (SQLite)\n");
  std::printf("%9s %10s %11s %8s %13s %11s %12s %9s %9s %17s %-8s\n", "offered/s", "offered", "consumed/s", "drops",
              "max ring", "ring@end", "max wqueue", "drain ms", "flush ms", "CPU feed/cons/all", "keeps up");
  for (std::uint64_t rate : o.rates) {
    PacedResult r = paced(o, rate, ring_records);
    const double consumed_rate = static_cast<double>(r.consumed_in_window) / r.window_s;
    const double offered_rate = static_cast<double>(r.offered) / r.window_s;
    // Keeping up: nothing lost, and the backlog when the feeder stops is under
    // 1% of the ring (what remains is the last poll interval's worth).
    const bool keeps_up = r.dropped == 0 && r.end_fill < ring_records / 100 &&
                          consumed_rate >= 0.98 * offered_rate;
    char ring_max[32], cpu[40];
    std::snprintf(ring_max, sizeof ring_max, "%zu (%.1f%%)", r.max_fill,
                  100.0 * static_cast<double>(r.max_fill) / static_cast<double>(ring_records));
    std::snprintf(cpu, sizeof cpu, "%.0f/%.0f/%.0f%%", 100 * r.cpu_feeder / r.window_s,
                  100 * r.cpu_consumer / r.total_s, 100 * r.cpu_total / r.total_s);
    std::printf("%9s %10llu %11s %8llu %13s %11zu %12lld %9.0f %9.0f %17s %-8s\n", si(static_cast<double>(rate)).c_str(),
                static_cast<unsigned long long>(r.offered), si(consumed_rate).c_str(),
                static_cast<unsigned long long>(r.dropped), ring_max, r.end_fill, static_cast<long long>(r.max_queue),
                r.drain_ms, r.flush_ms, cpu, keeps_up ? "yes" : "NO");
    const std::int64_t expect = static_cast<std::int64_t>(r.consumed);
    if (r.check[0] != expect || r.check[1] != expect)
      std::printf("          file check MISMATCH: calls_recorded %lld, call rows %lld, consumed %lld\n",
                  static_cast<long long>(r.check[0]), static_cast<long long>(r.check[1]),
                  static_cast<long long>(expect));
  }
  std::printf("   consumed/s: records decoded and handed to the writer during the window; drops: ring full "
              "(bpf_ringbuf_reserve would fail);\n   max wqueue: writer queue depth (rows accepted, not yet committed); "
              "drain/flush: after the feeder stops, until the ring is empty / everything is committed;\n"
              "   CPU: percent of one core (feeder over the window; consumer and whole process, incl. the SQLite writer, "
              "until flushed).\n");
}

std::vector<std::uint64_t> parse_list(const char* s) {
  std::vector<std::uint64_t> v;
  std::string text(s);
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t comma = text.find(',', pos);
    std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (!item.empty()) {
      double mult = 1;
      char last = item.back();
      if (last == 'k' || last == 'K') mult = 1e3;
      if (last == 'm' || last == 'M') mult = 1e6;
      if (mult != 1) item.pop_back();
      v.push_back(static_cast<std::uint64_t>(std::stod(item) * mult));
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  const char* tmp = std::getenv("TMPDIR");
  o.dir = tmp && *tmp ? tmp : "/tmp";
  std::string events = "2M,5M", rates = "100k,300k,1M,2M";
  CLI::App app{"pipeline_bench: the user-space half of `vramscope trace` (decode, store) on synthetic call records"};
  app.add_option("--events", events, "Throughput runs, e.g. 2M,5M; 0 or '' skips part 1")->capture_default_str();
  app.add_option("--rates", rates, "Paced runs in events/s, e.g. 100k,300k,1M,2M; '' skips part 2")
      ->capture_default_str();
  app.add_option("--seconds", o.seconds, "Length of each paced run")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--ring-mib", o.ring_mib, "Ring model size, as vramscope trace --ring-mib")
      ->capture_default_str()
      ->check(CLI::Range(1u, 4096u));
  app.add_option("--dir", o.dir, "Where the temporary trace files go")->capture_default_str();
  app.add_flag("!--no-caller", o.with_caller, "Records without a calling file (caller_ino 0); default: a fixed, known one");
  app.add_option("--pids", o.pids, "Processes taking turns")->capture_default_str()->check(CLI::Range(1u, 1000u));
  app.add_option("--threads", o.threads_per_pid, "Threads per process")->capture_default_str()->check(CLI::Range(1u, 1000u));
  app.add_option("--launches", o.launches,
                 "Kernel launches (cudaLaunchKernel + cuLaunchKernel records) per malloc/free iteration: 0 is an "
                 "allocation-only stream, the worst case for the store; 16 is launch-dominated, as --launches on PyTorch")
      ->capture_default_str()
      ->check(CLI::Range(0u, 10000u));
  app.add_flag("--keep", o.keep, "Keep the trace files");
  CLI11_PARSE(app, argc, argv);
  o.counts = parse_list(events.c_str());
  o.counts.erase(std::remove(o.counts.begin(), o.counts.end(), 0u), o.counts.end());
  o.rates = parse_list(rates.c_str());

  std::printf("pipeline_bench: vs_call_event (%zu B) -> CallDecoder::decode -> TraceWriter::add_call -> SQLite\n",
              sizeof(vs_call_event));
  std::printf("records: %u x (cudaLaunchKernel+cuLaunchKernel child), cudaMalloc+cuMemAlloc_v2 child, "
              "cudaFree+cuMemFree_v2 child (each thread keeps %u allocations live); %u pids x %u threads; caller %s; "
              "trace files in %s; %u CPUs\n",
              o.launches, o.window, o.pids, o.threads_per_pid, o.with_caller ? "resolved (fixed inode)" : "none (caller_ino 0)",
              o.dir.c_str(), std::thread::hardware_concurrency());
  if (!o.counts.empty()) throughput(o);
  if (!o.rates.empty()) paced_table(o);
  return 0;
}
