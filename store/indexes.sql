-- vramscope trace store: indexes, built by the writer when a session ends
-- (a trace still being recorded, or one whose tracer died, has none yet:
-- queries on it are correct but slower).
CREATE INDEX IF NOT EXISTS call_rows_api_ts ON call_rows(api_id, ts_ns);
CREATE INDEX IF NOT EXISTS call_rows_pid_ts ON call_rows(pid, ts_ns);
CREATE INDEX IF NOT EXISTS allocations_pid_ts ON allocations(pid, alloc_ts_ns);
