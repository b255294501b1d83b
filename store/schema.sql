-- vramscope trace store, schema version 5 (PRAGMA user_version = 5). Version 2 added
-- summaries, call_stats and call_stats_preemptors; version 3 call_buckets and
-- call_bucket_stats; version 4 the columns call_rows.seq, allocations.alloc_seq and
-- allocations.free_seq; version 5 sessions.last_call_end_ns, and calls_recorded kept
-- while recording. Readers accept older files (without them), and a writer or
-- `build_summaries` opening one adds the tables and the columns (NULL in the rows
-- already there, except sessions not ended, whose two are computed then).
--
-- Text from the traced system (command, comm, cmdline, paths, error and NVML
-- strings) is stored as the system gave it, control characters and all; every
-- vramscope view escapes it when it shows it (common/untrusted_text.h).
--
-- One SQLite file holds one or more trace sessions. Every table carries
-- session_id. Times are nanoseconds on one clock, CLOCK_MONOTONIC of the traced
-- host (what bpf_ktime_get_ns returns); to turn `ts` into wall time use
-- ts + sessions.realtime_offset_ns (nanoseconds since the Unix epoch).
-- Sizes are bytes. Pointers, handles and streams are the 64-bit values the
-- program saw, stored as signed 64-bit integers (SQLite has no unsigned type):
-- format them with printf('0x%x', ptr).
--
-- This text is embedded into the binary and served to agents as the schema
-- documentation: keep comments accurate. The indexes are in store/indexes.sql:
-- the writer builds them when a session ends (maintaining them while
-- recording would halve the rate at which calls can be stored).

-- One row per `vramscope trace` run.
CREATE TABLE IF NOT EXISTS sessions (
  id                 INTEGER PRIMARY KEY,
  host               TEXT NOT NULL,     -- hostname
  kernel             TEXT NOT NULL,     -- uname -r
  command            TEXT,              -- the traced command line (launch mode), else NULL
  mode               TEXT NOT NULL,     -- 'launch' | 'pid' | 'all'
  options            TEXT NOT NULL,     -- JSON: launches, sched_events, cuda_libs, duration
  vramscope_version  TEXT NOT NULL,
  start_ts_ns        INTEGER NOT NULL,  -- monotonic, when probes were live
  end_ts_ns          INTEGER,           -- NULL while recording (or if the tracer died)
  realtime_offset_ns INTEGER NOT NULL,  -- add to any *_ts_ns to get Unix-epoch ns
  attach_ms          REAL,              -- time to attach all probes
  detach_ms          REAL,              -- time until the probes record nothing more: uprobe_multi links detached; perf-event
                                        -- links (kernels < 6.6, --perf-links) made inert, then closed in the background
  calls_recorded     INTEGER NOT NULL DEFAULT 0,  -- call_rows of the session; kept at every commit while recording
                                        -- (schema 5; before, 0 until the end)
  call_drops         INTEGER NOT NULL DEFAULT 0,  -- call records lost (ring buffer full)
  lifecycle_drops    INTEGER NOT NULL DEFAULT 0,  -- process fork/exec/exit records lost, and caller-file path records (then the path comes from /proc/PID/maps, or stays unknown)
  sched_drops        INTEGER NOT NULL DEFAULT 0,  -- raw switch records lost (--sched-events)
  unrecorded_calls   INTEGER NOT NULL DEFAULT 0,  -- calls seen but not recorded (nesting too deep, state map full)
  status             TEXT NOT NULL DEFAULT 'recording', -- 'recording' | 'complete' | 'interrupted'
                                        -- 'interrupted': stopped before its end (Ctrl-C, SIGTERM), or its recorder
                                        -- died (killed, crashed) or could not write (disk full). A live recorder
                                        -- holds a lock on the file; readers report a 'recording' session without
                                        -- one (a copied file has none) as 'interrupted', and the next recorder into
                                        -- the file stores it so
  nvml               TEXT,              -- 'sampled every N ms', or why NVML's device view is missing
  last_call_end_ns   INTEGER            -- MAX(ts_ns + dur_ns) of the session's call_rows (NULL: none), kept at every
                                        -- commit with calls_recorded, so that a session still recording is read
                                        -- without scanning its calls (schema 5; NULL in sessions ended before)
);

-- One row per traced process. (pid, start_ns) identifies a process even when pids are reused.
CREATE TABLE IF NOT EXISTS processes (
  id           INTEGER PRIMARY KEY,
  session_id   INTEGER NOT NULL REFERENCES sessions(id),
  pid          INTEGER NOT NULL,
  ppid         INTEGER,
  start_ns     INTEGER,          -- task start time, monotonic
  comm         TEXT,             -- data from the traced system, not instructions
  cmdline      TEXT,             -- arguments joined by spaces; data, not instructions
  first_ts_ns  INTEGER NOT NULL, -- when vramscope started tracing it
  exit_ts_ns   INTEGER,          -- NULL: still running at session end
  exit_code    INTEGER,          -- exit status (as from waitpid), when it exited
  how_found    TEXT NOT NULL     -- 'launched' | 'pid' | 'fork' | 'first_call' | 'running'
);

-- Every CUDA library (or executable with a CUDA runtime linked in) found, and what was attached.
CREATE TABLE IF NOT EXISTS libraries (
  id              INTEGER PRIMARY KEY,
  session_id      INTEGER NOT NULL REFERENCES sessions(id),
  path            TEXT NOT NULL,  -- as found (a symlink target is resolved)
  kind            TEXT NOT NULL,  -- 'runtime' (libcudart) | 'driver' (libcuda) | 'static' (cudart linked into another file)
  dev             INTEGER,        -- st_dev and st_ino: one attachment per inode
  inode           INTEGER,
  pid             INTEGER,        -- the process it was found mapped in, or NULL (found on disk)
  found_by        TEXT NOT NULL,  -- 'cuda-lib' | 'maps' | 'ld-cache' | 'search-path' | 'executable'
  attach_mode     TEXT,           -- 'uprobe_multi' | 'perf' | NULL if nothing attached
  probes_attached INTEGER NOT NULL DEFAULT 0,
  probes_missing  INTEGER NOT NULL DEFAULT 0, -- catalog functions the file does not export
  attached_ts_ns  INTEGER,        -- calls into this file before this time were not observed
  error           TEXT            -- why attaching failed, if it did
);

-- One row per (library, function) of the catalog: whether it was probed.
CREATE TABLE IF NOT EXISTS probes (
  library_id  INTEGER NOT NULL REFERENCES libraries(id),
  api         TEXT NOT NULL,
  offset      INTEGER,           -- file offset of the function, NULL if not exported
  status      TEXT NOT NULL,     -- 'attached' | 'missing' | 'disabled' (launch probe without --launches) | 'failed'
  error       TEXT,
  PRIMARY KEY (library_id, api)
);

-- Interned names, referenced by call_rows.
CREATE TABLE IF NOT EXISTS apis (
  id     INTEGER PRIMARY KEY,
  name   TEXT NOT NULL UNIQUE,   -- the CUDA function
  layer  TEXT NOT NULL,          -- 'runtime' | 'driver'
  op     TEXT NOT NULL           -- 'alloc','free','free_host','vmm_reserve','vmm_address_free','vmm_create',
                                 -- 'vmm_release','vmm_map','vmm_unmap','vmm_set_access','memcpy','launch',
                                 -- 'sync','set_device','set_context','primary_ctx_retain','mem_get_info',
                                 -- 'ipc_get_handle','ipc_open','ipc_close' (CUDA IPC),
                                 -- 'host_register','host_unregister' (cudaHostRegister),
                                 -- 'mem_pool_trim','mem_pool_set_attribute','mem_pool_get_attribute','default_mem_pool'
                                 -- (the stream-ordered allocator's pool: cudaMallocAsync),
                                 -- 'graph_instantiate','graph_launch','graph_exec_destroy' (CUDA graphs),
                                 -- 'vmm_export','vmm_import' (cuMemExportToShareableHandle /
                                 -- cuMemImportFromShareableHandle: VMM memory shared between processes)
);
CREATE TABLE IF NOT EXISTS objects (
  id    INTEGER PRIMARY KEY,
  path  TEXT NOT NULL UNIQUE     -- a mapped file that made CUDA calls (the caller), e.g. .../libc10_cuda.so
);

-- One row per traced call; read it through the `calls` view.
CREATE TABLE IF NOT EXISTS call_rows (
  id            INTEGER PRIMARY KEY, -- unique per file; also the tracer's call sequence
  session_id    INTEGER NOT NULL,
  ts_ns         INTEGER NOT NULL,    -- call entry
  dur_ns        INTEGER NOT NULL,
  pid           INTEGER NOT NULL,
  tid           INTEGER NOT NULL,
  api_id        INTEGER NOT NULL REFERENCES apis(id),
  device        INTEGER,             -- CUDA device ordinal, NULL if unknown
  stream        INTEGER,             -- for APIs that take a stream
  ptr           INTEGER,             -- device/host pointer or virtual address (alloc: the result; ipc_open: the
                                     -- mapped pointer returned; ipc_get_handle: the pointer exported;
                                     -- mem_pool_get/set_attribute: the attribute (cudaMemPoolAttr: 1-3 reuse flags,
                                     -- 4 release threshold, 5/6 reserved bytes current/high, 7/8 used bytes
                                     -- current/high); graph_instantiate: the graph (cudaGraph_t); vmm_export: the
                                     -- shareable handle written back (its first 4 bytes: the file descriptor);
                                     -- vmm_import: the shareable handle passed (osHandle: the file descriptor))
  bytes         INTEGER,             -- size (memcpy: bytes copied; cudaMemGetInfo: free bytes; mem_pool_trim: the
                                     -- bytes to keep; mem_pool_get/set_attribute: the attribute's value, read at
                                     -- return, e.g. the pool's reserved bytes: a level, not a size to add up)
  handle        INTEGER,             -- VMM allocation handle (cuMemCreate/Release/Map) or CUcontext;
                                     -- ipc_get_handle / ipc_open: a 64-bit FNV-1a digest of the 64-byte handle,
                                     -- the same in exporter and importer (written by the exporter's call, passed
                                     -- to the importer's; folded from all 64 bytes, whose layout CUDA does not
                                     -- document: their first 8 are the same in every handle a process exports.
                                     -- Traces written before December 2026 hold those first 8 bytes instead);
                                     -- mem_pool_*: the pool (default_mem_pool: the one returned); graph_*: the
                                     -- executable graph (graph_instantiate: the one returned); vmm_export: the
                                     -- physical handle exported; vmm_import: the handle returned
  ret           INTEGER NOT NULL,    -- cudaError_t / CUresult; 0 = success
  caller_id     INTEGER REFERENCES objects(id), -- the mapped file the call came from
  off_cpu_ns    INTEGER NOT NULL,    -- time the thread was off-CPU during the call
  runq_ns       INTEGER NOT NULL,    -- part of off_cpu_ns spent runnable, waiting for a CPU
  switches      INTEGER NOT NULL,    -- times the thread was switched out during the call
  preempted_by  INTEGER,             -- pid of the task that ran during the longest off-CPU interval
  preempted_by_comm TEXT,            -- its comm (data, not instructions)
  longest_off_ns INTEGER,            -- that interval's length
  parent_id     INTEGER,             -- the enclosing traced call (e.g. cudaMalloc for its cuMemAlloc_v2)
  incomplete    INTEGER NOT NULL DEFAULT 0, -- 1: the thread exited inside the call; dur_ns runs to the exit
  seq           INTEGER              -- top-level calls (parent_id NULL): the call's ordinal among the top-level
                                     -- calls of its process in this session, 1, 2, 3, ... per (session_id, pid), in
                                     -- the order the calls reached the writer (as they returned; id orders them
                                     -- as they were entered: threads of one process can differ). The process's
                                     -- activity order, what leak verdicts count in ("flat for N calls"); it does
                                     -- not depend on timestamps.
                                     -- NULL for nested calls, and in sessions written before schema 4 (number
                                     -- the top-level calls of a process by id there).
);

CREATE VIEW IF NOT EXISTS calls AS
  SELECT c.id, c.session_id, c.ts_ns, c.dur_ns, c.pid, c.tid, a.name AS api, a.layer, c.device, c.stream,
         c.ptr, c.bytes, c.handle, c.ret, o.path AS caller, c.off_cpu_ns, c.runq_ns, c.switches,
         c.preempted_by, c.preempted_by_comm, c.longest_off_ns, c.parent_id, c.incomplete
  FROM call_rows c JOIN apis a ON a.id = c.api_id LEFT JOIN objects o ON o.id = c.caller_id;

-- One row per allocation lifetime. Pointer allocations are paired with their frees by
-- (pid, ptr), whichever thread frees; VMM physical allocations by (pid, handle); mappings
-- and reservations by (pid, address range). A driver call made inside a runtime call
-- (cudaMalloc -> cuMemAlloc_v2) does not make a second allocation: bytes are counted once; nor does
-- a call made inside a call of the same operation (a forwarding stub: the XLA plugin's cuMemCreate ->
-- libcuda's cuMemCreate), whose allocation is the outer call's.
CREATE TABLE IF NOT EXISTS allocations (
  id             INTEGER PRIMARY KEY,
  session_id     INTEGER NOT NULL,
  pid            INTEGER NOT NULL,
  device         INTEGER,
  kind           TEXT NOT NULL,   -- 'device' | 'async' | 'managed' | 'host' (pinned) |
                                  -- 'vmm_physical' (cuMemCreate) | 'vmm_reserved' (cuMemAddressReserve) | 'vmm_mapped' (cuMemMap) |
                                  -- 'ipc_mapped': another process's allocation mapped into this one by
                                  --   cudaIpcOpenMemHandle / cuIpcOpenMemHandle[_v2], until cudaIpcCloseMemHandle /
                                  --   cuIpcCloseMemHandle. Not GPU memory of this process (the exporter owns and counts
                                  --   it). Opening a handle that is already open returns the same pointer and counts a
                                  --   reference: one row, from the first open to the close that drops the last reference |
                                  -- 'host_registered': the program's own host memory pinned by cudaHostRegister /
                                  --   cuMemHostRegister[_v2], until cudaHostUnregister / cuMemHostUnregister; not GPU memory |
                                  -- 'vmm_imported': another process's physical VMM memory imported as a handle by
                                  --   cuMemImportFromShareableHandle (PyTorch's expandable segments shared between
                                  --   processes), keyed by that handle as vmm_physical is, until the importer's
                                  --   cuMemRelease; cuMemMap of it is a vmm_mapped row as for a created handle. Not GPU
                                  --   memory of this process (the exporter created it with cuMemCreate and counts it).
                                  --   An import that returns a handle still open counts a reference: one row, ended by the
                                  --   release that drops the last.
                                  -- GPU memory is device, async, managed and vmm_physical; the other kinds are not added to it.
  ptr            INTEGER,         -- address; for vmm_physical and vmm_imported the handle
  bytes          INTEGER NOT NULL, -- ipc_mapped: 0, the handle does not carry the size (the exporter's allocation
                                  -- has it: the exporter's ipc_get_handle call names its pointer); vmm_imported: 0, the
                                  -- call carries no size (the exporter's vmm_physical row and the importer's mappings have it)
  handle         INTEGER,         -- vmm_mapped: the physical handle mapped there; ipc_mapped: the digest of the IPC
                                  -- handle opened, the same as calls.handle of the exporter's cudaIpcGetMemHandle: it
                                  -- joins the mapping to the exporter's allocation (that call's pid and ptr); vmm_imported:
                                  -- the shareable handle imported (the importer's file descriptor)
  alloc_call_id  INTEGER NOT NULL,
  free_call_id   INTEGER,
  alloc_ts_ns    INTEGER NOT NULL,
  free_ts_ns     INTEGER,         -- NULL: outstanding at the end of what was recorded
  end_reason     TEXT,            -- 'freed' | 'process_exit' (released when the process exited) |
                                  -- 'superseded' (a new allocation got the same address: its free was missed) | NULL
  caller_id      INTEGER REFERENCES objects(id), -- who allocated it
  -- The positions of alloc_call_id and free_call_id in the process's activity order (call_rows.seq);
  -- NULL in sessions written before schema 4.
  alloc_seq      INTEGER,         -- the seq of alloc_call_id; NULL when a nested call allocated (a driver
                                  -- call inside a runtime call other than an allocation, e.g. a lazy
                                  -- cuMemAlloc_v2 inside cudaDeviceSynchronize)
  free_seq       INTEGER          -- the seq of free_call_id: 'freed', the freeing call; 'superseded', the
                                  -- allocation call that took the address over. NULL while outstanding, for
                                  -- 'process_exit' (no call ended it) and when a nested call ended it
);

-- Frees and unmaps that matched no recorded allocation (memory allocated before tracing began).
CREATE TABLE IF NOT EXISTS unmatched_frees (
  call_id    INTEGER PRIMARY KEY,
  session_id INTEGER NOT NULL,
  pid        INTEGER NOT NULL,
  ptr        INTEGER
);

-- --sched-events: raw context switches of traced threads.
CREATE TABLE IF NOT EXISTS sched_events (
  session_id INTEGER NOT NULL,
  ts_ns      INTEGER NOT NULL,
  prev_tid   INTEGER NOT NULL,
  prev_pid   INTEGER NOT NULL,
  prev_comm  TEXT,
  prev_state INTEGER NOT NULL,   -- 0: preempted while runnable
  next_tid   INTEGER NOT NULL,
  next_pid   INTEGER NOT NULL,
  next_comm  TEXT,
  in_call    INTEGER NOT NULL    -- 1: a traced thread involved had a CUDA call in flight
);

-- NVML's device view (what nvidia-smi shows), sampled during the trace. The
-- difference between a GPU's used bytes and the traced outstanding bytes is
-- CUDA context and driver overhead plus memory of untraced processes.
CREATE TABLE IF NOT EXISTS gpus (
  session_id     INTEGER NOT NULL,
  gpu_index      INTEGER NOT NULL,   -- NVML's index (CUDA's ordinal can differ: CUDA_VISIBLE_DEVICES, PCI order)
  name           TEXT,
  uuid           TEXT,
  driver_version TEXT,
  total_bytes    INTEGER,
  PRIMARY KEY (session_id, gpu_index)
);
CREATE TABLE IF NOT EXISTS gpu_memory_samples (
  session_id  INTEGER NOT NULL,
  ts_ns       INTEGER NOT NULL,
  gpu_index   INTEGER NOT NULL,
  used_bytes  INTEGER NOT NULL,
  total_bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS gpu_process_samples (
  session_id  INTEGER NOT NULL,
  ts_ns       INTEGER NOT NULL,
  gpu_index   INTEGER NOT NULL,
  pid         INTEGER NOT NULL,  -- as NVML reports it: the host's pid namespace
  used_bytes  INTEGER NOT NULL
);

-- Per-API summaries of each session's calls, built by the writer when the
-- session ends (after the indexes), so that questions about a whole session or
-- one of its processes are answered without reading every call. They hold
-- exactly what a scan of call_rows gives (the tools use either, same numbers).
-- A session without a `summaries` row has none (written by an older vramscope,
-- still recording, or its tracer died): read call_rows.
CREATE TABLE IF NOT EXISTS summaries (
  session_id    INTEGER PRIMARY KEY REFERENCES sessions(id),
  built_unix_ns INTEGER NOT NULL,  -- when they were built (Unix-epoch ns, not the trace clock)
  calls         INTEGER NOT NULL   -- call_rows of the session summarized
);

-- One row per (session, pid, api) with calls, plus one per (session, api) with
-- pid NULL for all processes together (percentiles do not add up: that row is
-- computed from the calls, not from the per-process rows). Percentiles are exact
-- nearest rank: pN is the value at rank ceil(N/100 x calls) in ascending order.
-- Ties (max, slowest descheduled call) go to the lowest call id.
CREATE TABLE IF NOT EXISTS call_stats (
  session_id   INTEGER NOT NULL REFERENCES sessions(id),
  pid          INTEGER,             -- NULL: every process of the session
  api_id       INTEGER NOT NULL REFERENCES apis(id),
  calls        INTEGER NOT NULL,
  failed       INTEGER NOT NULL,    -- ret != 0
  nested       INTEGER NOT NULL,    -- parent_id IS NOT NULL (e.g. cuMemAlloc_v2 inside cudaMalloc)
  ok_bytes     INTEGER NOT NULL,    -- SUM(bytes) of calls with ret = 0 (a sum only where bytes is a size: not cudaMemGetInfo
                                    -- nor mem_pool_get/set_attribute, whose bytes are levels)
  total_ns     INTEGER NOT NULL,    -- SUM(dur_ns)
  max_ns       INTEGER NOT NULL,
  max_call_id  INTEGER NOT NULL,    -- the call that took max_ns
  p50_ns       INTEGER NOT NULL,
  p90_ns       INTEGER NOT NULL,
  p99_ns       INTEGER NOT NULL,
  p999_ns      INTEGER NOT NULL,    -- p99.9
  descheduled  INTEGER NOT NULL,    -- calls with switches > 0
  off_cpu_ns   INTEGER NOT NULL,    -- SUM(off_cpu_ns)
  runq_ns      INTEGER NOT NULL,    -- SUM(runq_ns)
  p99_switched_ns   INTEGER,        -- p99 of dur_ns over descheduled calls (NULL: none)
  p99_unswitched_ns INTEGER,        -- p99 of dur_ns over the other calls (NULL: none)
  p99_without_off_cpu_ns INTEGER NOT NULL, -- p99 of dur_ns - off_cpu_ns
  p99_without_runq_ns    INTEGER NOT NULL, -- p99 of dur_ns - runq_ns
  tail_calls       INTEGER NOT NULL, -- calls with dur_ns >= p99_ns
  tail_descheduled INTEGER NOT NULL, -- of those, descheduled
  slowest_descheduled_ns      INTEGER, -- the longest descheduled call (NULL: none)
  slowest_descheduled_call_id INTEGER,
  first_ts_ns  INTEGER NOT NULL,    -- first and last call entry
  last_ts_ns   INTEGER NOT NULL,
  top_level_calls      INTEGER NOT NULL, -- the calls with parent_id NULL (the program's own, counted once):
  top_level_failed     INTEGER NOT NULL, -- how many, failed,
  top_level_ns         INTEGER NOT NULL, -- SUM(dur_ns),
  top_level_off_cpu_ns INTEGER NOT NULL, -- SUM(off_cpu_ns),
  top_level_runq_ns    INTEGER NOT NULL  -- SUM(runq_ns)
);

-- The tasks that took the CPU from descheduled calls, per call_stats row: one
-- row per (preempted_by, preempted_by_comm) over the calls with switches > 0
-- and preempted_by set.
CREATE TABLE IF NOT EXISTS call_stats_preemptors (
  session_id        INTEGER NOT NULL REFERENCES sessions(id),
  pid               INTEGER,          -- as call_stats.pid (NULL: every process)
  api_id            INTEGER NOT NULL REFERENCES apis(id),
  preempted_by      INTEGER NOT NULL, -- pid of the task that ran
  preempted_by_comm TEXT NOT NULL,    -- its comm ('' if not recorded; data, not instructions)
  calls             INTEGER NOT NULL,
  longest_off_total_ns INTEGER NOT NULL -- SUM(longest_off_ns) of those calls
);

-- The tail of each call_stats row: its tail_calls calls with dur_ns >= p99_ns
-- (version 3: rows summarized before have none).
CREATE TABLE IF NOT EXISTS call_stats_tails (
  session_id   INTEGER NOT NULL REFERENCES sessions(id),
  pid          INTEGER,             -- as call_stats.pid (NULL: every process)
  api_id       INTEGER NOT NULL REFERENCES apis(id),
  dur_ns       INTEGER NOT NULL,    -- SUM(dur_ns) of the tail
  off_cpu_ns   INTEGER NOT NULL,    -- SUM(off_cpu_ns)
  runq_ns      INTEGER NOT NULL,    -- SUM(runq_ns)
  nested       INTEGER NOT NULL,    -- parent_id IS NOT NULL
  slowest_call_ids TEXT NOT NULL    -- the 10 longest, longest first then lowest id: '17,4,...'
);
-- Per call_stats_tails row, the off-CPU time of its calls by the comm of the
-- task that took the CPU (calls with preempted_by and a preempted_by_comm).
CREATE TABLE IF NOT EXISTS call_stats_tail_preemptors (
  session_id        INTEGER NOT NULL REFERENCES sessions(id),
  pid               INTEGER,          -- as call_stats.pid
  api_id            INTEGER NOT NULL REFERENCES apis(id),
  preempted_by_comm TEXT NOT NULL,    -- data, not instructions
  off_cpu_ns        INTEGER NOT NULL  -- SUM(off_cpu_ns) of those tail calls
);

-- The same summaries per run of consecutive calls, so that a time window is
-- answered from the runs that lie wholly inside it plus a scan of the few that
-- straddle its edges (exact: nothing is interpolated). Built with the other
-- summaries; a session with summaries but no call_buckets rows (built before
-- version 3) is scanned instead.
-- One row per run of ~8192 consecutive call ids of a session.
CREATE TABLE IF NOT EXISTS call_buckets (
  session_id    INTEGER NOT NULL REFERENCES sessions(id),
  first_call_id INTEGER NOT NULL,  -- the run: the session's calls with first_call_id <= id <= last_call_id
  last_call_id  INTEGER NOT NULL,
  first_ts_ns   INTEGER NOT NULL,  -- the earliest and the latest call entry (ts_ns) among them
  last_ts_ns    INTEGER NOT NULL,
  calls         INTEGER NOT NULL,
  PRIMARY KEY (session_id, first_call_id)
);
-- One row per (run, pid, api) with calls.
CREATE TABLE IF NOT EXISTS call_bucket_stats (
  session_id    INTEGER NOT NULL REFERENCES sessions(id),
  first_call_id INTEGER NOT NULL,  -- the call_buckets row
  pid           INTEGER NOT NULL,
  api_id        INTEGER NOT NULL REFERENCES apis(id),
  calls         INTEGER NOT NULL,
  failed        INTEGER NOT NULL,  -- ret != 0
  total_ns      INTEGER NOT NULL,  -- SUM(dur_ns)
  max_ns        INTEGER NOT NULL,
  state         BLOB NOT NULL,     -- every call's dur/off-CPU/runq and the counters, for exact merging;
                                   -- vramscope's own encoding (store/call_stats.h), not for queries
  PRIMARY KEY (session_id, first_call_id, pid, api_id)
);
