#include "live/trace_manager.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "common/untrusted_text.h"
#include "store/store.h"
#include "tracer/recorder.h"

namespace vs::live {

using Clock = std::chrono::steady_clock;

struct TraceManager::Trace {
  TraceRequest request;
  std::unique_ptr<store::TraceWriter> writer;
  std::unique_ptr<tracer::Recording> recording;
  std::thread thread;
  std::mutex join_mutex;  // one joiner at a time
  std::atomic<bool> stop_requested{false};
  Clock::time_point t0 = Clock::now();

  mutable std::mutex mu;  // guards the fields below
  std::condition_variable changed;
  TraceState state;
  std::string stop_reason;  // what asked it to stop

  TraceState snapshot() const {
    std::lock_guard l(mu);
    return state;
  }
  bool active() const {
    std::lock_guard l(mu);
    return state.state == "attaching" || state.state == "recording" || state.state == "finishing";
  }
  void request_stop(const std::string& reason) {
    std::lock_guard l(mu);
    if (stop_reason.empty()) stop_reason = reason;
    stop_requested = true;
  }
  void set(const std::function<void(TraceState&)>& change) {
    {
      std::lock_guard l(mu);
      change(state);
      state.elapsed_s = std::chrono::duration<double>(Clock::now() - t0).count();
    }
    changed.notify_all();
  }
  void join() {
    std::lock_guard l(join_mutex);
    if (thread.joinable()) thread.join();
  }
};

TraceManager::TraceManager(TraceDir dir, TraceLimits limits, TraceEvents events)
    : dir_(std::move(dir)), limits_(limits), events_(std::move(events)) {}

TraceManager::~TraceManager() {
  std::vector<std::shared_ptr<Trace>> all;
  {
    std::lock_guard l(mutex_);
    for (auto& [id, t] : traces_) all.push_back(t);
  }
  for (auto& t : all) t->request_stop("server_stopping");
  for (auto& t : all) t->join();
}

std::int64_t TraceManager::next_session_id() const {
  std::int64_t last = 0;
  for (const auto& e : dir_.sessions()) last = std::max(last, e.id);
  std::lock_guard l(mutex_);
  if (!traces_.empty()) last = std::max(last, traces_.rbegin()->first);
  return last + 1;
}

Result<TraceState> TraceManager::start(const TraceRequest& request,
                                       const std::function<void(const std::string&)>& progress,
                                       const std::function<bool()>& cancelled) {
  if (request.all == !request.pids.empty())
    return Error{"give either pid (one or several processes to attach to) or all: true, not both"};
  if (request.duration <= std::chrono::milliseconds(0) || request.duration > limits_.max_duration)
    return Error{"duration_s must be more than 0 and at most " + std::to_string(limits_.max_duration.count()) +
                 " s (the server's --max-trace-seconds)"};
  for (auto pid : request.pids) {
    if (pid == static_cast<std::uint32_t>(getpid())) return Error{"pid " + std::to_string(pid) + " is this server"};
    if (kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)
      return Error{"pid " + std::to_string(pid) + ": no such process (gpu_processes lists those using a GPU)"};
  }
  std::lock_guard start_lock(start_mutex_);
  {
    std::lock_guard l(mutex_);
    std::size_t active = 0;
    for (const auto& [id, t] : traces_) {
      if (!t->active()) continue;
      ++active;
      const TraceState s = t->snapshot();
      if (request.all || s.all)
        return Error{"session " + std::to_string(id) + " is recording " +
                     (s.all ? std::string("every process") : std::string("some processes")) +
                     ": a trace of every process cannot run beside another trace; trace_stop it first"};
      for (auto pid : request.pids)
        if (std::find(s.pids.begin(), s.pids.end(), pid) != s.pids.end())
          return Error{"pid " + std::to_string(pid) + " is already traced by session " + std::to_string(id) +
                       " (trace_status " + std::to_string(id) + "); one trace per process"};
    }
    if (active >= limits_.max_traces)
      return Error{std::to_string(active) + " traces are recording, the most this server runs at once; trace_stop "
                   "one first"};
  }

  auto trace = std::make_shared<Trace>();
  trace->request = request;
  const std::int64_t session_id = next_session_id();
  const std::string file = dir_.file_for_new_session();
  if (progress) progress("opening the trace file");
  auto writer = store::TraceWriter::open(file);
  if (!writer) return Error{writer.error().message};
  trace->writer = std::move(*writer);

  tracer::RecordingOptions options;
  options.mode = request.all ? "all" : "pid";
  options.pids = request.pids;
  options.tracer.launches = request.launches;
  options.tracer.sched_events = request.sched_events;
  options.session_id = session_id;
  options.options_json = nlohmann::json{{"launches", request.launches},
                                        {"sched_events", request.sched_events},
                                        {"pids", request.pids},
                                        {"duration_ms", request.duration.count()},
                                        {"started_by", "mcp trace_start"}}
                             .dump();
  if (progress) progress("loading the BPF programs");
  auto recording = tracer::Recording::open(*trace->writer, options);
  if (!recording) return Error{recording.error().message};
  trace->recording = std::move(*recording);
  trace->state.session_id = session_id;
  trace->state.file = file;
  trace->state.state = "attaching";
  trace->state.pids = request.pids;
  trace->state.all = request.all;
  trace->state.owner = request.owner;
  trace->state.duration_s = std::chrono::duration<double>(request.duration).count();
  {
    std::lock_guard l(mutex_);
    traces_[session_id] = trace;
  }
  if (progress) progress("attaching to the CUDA libraries");
  trace->thread = std::thread([this, trace] { run(trace); });
  if (events_.sessions_changed) events_.sessions_changed();

  std::unique_lock l(trace->mu);
  while (trace->state.state == "attaching") {
    trace->changed.wait_for(l, std::chrono::milliseconds(100));
    if (cancelled && cancelled() && trace->stop_reason.empty()) {
      trace->stop_reason = "cancelled";
      trace->stop_requested = true;
    }
  }
  if (trace->state.state == "failed") return Error{trace->state.error.value_or("the trace failed")};
  // Cancelled during the attach or since: the client will never see this session's id, so it must not go on.
  if (cancelled && cancelled()) {
    l.unlock();
    (void)stop(session_id, "cancelled");
    return Error{"trace_start was cancelled; session " + std::to_string(session_id) + " was stopped"};
  }
  return trace->state;
}

void TraceManager::run(const std::shared_ptr<Trace>& trace) {
  auto& rec = *trace->recording;
  auto& writer = *trace->writer;
  const std::int64_t id = trace->state.session_id;
  Status attached = rec.attach_libraries();
  if (!attached) {
    // attach_libraries ended the session 'interrupted'.
    trace->set([&](TraceState& s) {
      s.state = "failed";
      s.stop_reason = "error";
      s.error = attached.message();
    });
    rec.finish_detach();
    trace->recording.reset();
    trace->writer.reset();
    if (events_.sessions_changed) events_.sessions_changed();
    return;
  }
  trace->set([&](TraceState& s) {
    s.state = "recording";
    s.libraries_attached = rec.counts().libraries_attached;
  });
  spdlog::info("session {}: recording into {}", id, escape_untrusted(trace->state.file, 400));

  std::string reason;
  std::optional<std::string> error;
  auto rate_t0 = Clock::now();
  std::uint64_t rate_calls = 0, notified_calls = 0;
  double calls_per_s = 0;
  for (;;) {
    if (trace->stop_requested) {
      std::lock_guard l(trace->mu);
      reason = trace->stop_reason;
      break;
    }
    if (Status s = rec.poll(100); !s) {
      reason = "error";
      error = s.message();
      break;
    }
    if (Status h = writer.health(); !h) {
      reason = "write_failed";
      error = h.message();
      break;
    }
    const auto now = Clock::now();
    const auto counts = rec.counts();
    if (now - rate_t0 >= std::chrono::seconds(1)) {
      calls_per_s = static_cast<double>(counts.calls - rate_calls) / std::chrono::duration<double>(now - rate_t0).count();
      rate_t0 = now;
      rate_calls = counts.calls;
    }
    const auto live = rec.live_pids();
    trace->set([&](TraceState& s) {
      s.calls = counts.calls;
      s.calls_per_s = calls_per_s;
      s.records_lost = counts.records_lost;
      s.libraries_attached = counts.libraries_attached;
      s.live_processes = counts.live_processes;
      auto stats = writer.stats();
      s.outstanding = stats.outstanding;
      s.outstanding_by_pid = std::move(stats.outstanding_by_pid);
      if (!trace->request.all)  // the requested processes and those they forked
        for (auto pid : live)
          if (std::find(s.pids.begin(), s.pids.end(), pid) == s.pids.end()) s.pids.push_back(pid);
    });
    if (counts.calls != notified_calls && events_.updated) {
      notified_calls = counts.calls;
      events_.updated(id);
    }
    if (now - trace->t0 >= trace->request.duration) {
      reason = "duration";
      break;
    }
    if (!trace->request.all && counts.live_processes == 0) {
      reason = "processes_exited";
      break;
    }
  }
  trace->set([&](TraceState& s) {
    s.state = "finishing";
    s.stop_reason = reason;
    s.error = error;
  });
  if (events_.updated) events_.updated(id);
  SessionEnd end = rec.stop();
  // The agent's stop, the duration and the processes' end are the trace's normal ends.
  end.status = reason == "stopped" || reason == "duration" || reason == "processes_exited" ? "complete" : "interrupted";
  Status written = writer.health();
  if (written) written = writer.end_session(end);
  rec.finish_detach();
  const auto totals = writer.stats();
  trace->recording.reset();
  trace->writer.reset();  // releases the file: readers now open it as finished
  trace->set([&](TraceState& s) {
    s.state = written ? "finished" : "failed";
    s.outstanding = totals.outstanding;
    s.outstanding_by_pid = totals.outstanding_by_pid;
    if (!written && !s.error) s.error = written.message();
  });
  spdlog::info("session {}: {} ({})", id, written ? "finished" : "failed", reason);
  if (events_.sessions_changed) events_.sessions_changed();
  if (events_.updated) events_.updated(id);
}

Result<TraceState> TraceManager::status(std::int64_t session_id) const {
  std::lock_guard l(mutex_);
  auto it = traces_.find(session_id);
  if (it == traces_.end()) {
    std::string ids;
    for (const auto& [id, t] : traces_) ids += (ids.empty() ? "" : ", ") + std::to_string(id);
    return Error{"session " + std::to_string(session_id) + " was not recorded by this server" +
                 (ids.empty() ? std::string(" (it has recorded none yet: trace_start)")
                              : " (it recorded sessions " + ids + ")") +
                 "; the analysis tools read any session of the trace directory"};
  }
  return it->second->snapshot();
}

Result<TraceState> TraceManager::stop(std::int64_t session_id, const std::string& reason) {
  std::shared_ptr<Trace> trace;
  {
    std::lock_guard l(mutex_);
    auto it = traces_.find(session_id);
    if (it != traces_.end()) trace = it->second;
  }
  if (!trace) return status(session_id);
  trace->request_stop(reason);
  trace->join();
  return trace->snapshot();
}

std::vector<TraceState> TraceManager::list() const {
  std::lock_guard l(mutex_);
  std::vector<TraceState> out;
  for (const auto& [id, t] : traces_) out.push_back(t->snapshot());
  return out;
}

std::vector<std::uint32_t> TraceManager::traced_pids() const {
  std::set<std::uint32_t> pids;
  std::lock_guard l(mutex_);
  for (const auto& [id, t] : traces_)
    if (t->active())
      for (auto pid : t->snapshot().pids) pids.insert(pid);
  return {pids.begin(), pids.end()};
}

bool TraceManager::recording_all() const {
  std::lock_guard l(mutex_);
  for (const auto& [id, t] : traces_)
    if (t->active() && t->snapshot().all) return true;
  return false;
}

void TraceManager::owner_gone(const std::string& owner) {
  if (limits_.keep_tracing) return;
  std::lock_guard l(mutex_);
  for (const auto& [id, t] : traces_)
    if (t->active() && t->request.owner == owner) {
      spdlog::info("session {}: its client went away: stopping it (--keep-tracing keeps such traces)", id);
      t->request_stop("client_gone");
    }
}

}  // namespace vs::live
