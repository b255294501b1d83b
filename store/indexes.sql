-- vramscope trace store: indexes, built by the writer when a session ends
-- (a trace still being recorded, or one whose tracer died, has none yet:
-- queries on it are correct but slower). Costs below: building each on a
-- 10 M-call trace (bench/README.md), CPU seconds on the 2-vCPU dev VM.
CREATE INDEX IF NOT EXISTS call_rows_api_ts ON call_rows(api_id, ts_ns);
CREATE INDEX IF NOT EXISTS call_rows_pid_ts ON call_rows(pid, ts_ns);
-- The longest calls first (slowest_calls, the tail of an API): 8.9 s, 112 MB;
-- slowest_calls over a whole session 1.35 s -> 1 ms. Leads with dur_ns, not
-- session_id: without ANALYZE statistics the planner would take a session_id
-- prefix as selective and walk every call of the session through it.
CREATE INDEX IF NOT EXISTS call_rows_dur ON call_rows(dur_ns);
CREATE INDEX IF NOT EXISTS allocations_pid_ts ON allocations(pid, alloc_ts_ns);
-- The allocation a call made or released (the context of slowest_calls and
-- find_calls rows): 0.2 s each.
CREATE INDEX IF NOT EXISTS allocations_alloc_call ON allocations(alloc_call_id);
CREATE INDEX IF NOT EXISTS allocations_free_call ON allocations(free_call_id);
