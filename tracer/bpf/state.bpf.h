/* BPF-side state shared by the programs of vramscope.bpf.o: maps (defined
 * __weak so each .bpf.c can include this and the static linker keeps one
 * copy) and the per-thread stack of calls in flight. Not seen by user space. */
#ifndef VRAMSCOPE_STATE_BPF_H
#define VRAMSCOPE_STATE_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "events.h"

struct vs_frame {
  __u64 seq;
  __u64 start_ns;
  __u64 words[VS_NARGS + VS_NSTACK]; /* the register arguments, then the stack's (vs_api_plan) */
  __u64 off_cpu_ns;
  __u64 runq_ns;
  __u64 longest_off_ns;
  __u32 switches;
  __u32 preemptor_pid;
  __u32 api;
  __u32 pad;
  char preemptor_comm[VS_COMM_LEN];
};

/* One per thread of a traced process that has made a CUDA call, kept until
 * the thread exits (no map churn per call); depth 0 between calls, which is
 * what the scheduler hooks check. */
struct vs_thread_state {
  __u32 depth; /* may exceed VS_MAX_DEPTH: deeper frames are counted, not kept */
  __u32 off_pending; /* switched out inside a call: settled when the thread next runs a probe */
  __u64 off_since_ns;
  __u32 out_next_pid; /* who got the CPU when this thread went out */
  __u32 pad;
  char out_next_comm[VS_COMM_LEN];
  struct vs_frame frames[VS_MAX_DEPTH];
};

/* Task-local storage: the probes find their thread's state through the task
 * itself, without hashing a tid (the state is freed with the task). */
struct {
  __uint(type, BPF_MAP_TYPE_TASK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, struct vs_thread_state);
} thread_state SEC(".maps") __weak;

/* Threads switched out inside a call, by tid: since when each is runnable,
 * waiting for a CPU (preempted: from the switch; blocked: from its wakeup;
 * 0: still blocked). sched_wakeup is about another task than the current
 * one, whose storage a raw tracepoint cannot reach, hence a map. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 65536);
  __type(key, __u32);
  __type(value, __u64);
} woken SEC(".maps") __weak;

/* The thread switched in last on each CPU, and when: the end of its off-CPU
 * interval, read by that thread's next probe (it stays on this CPU until it
 * is switched out again, which settles first). */
struct vs_switch_in {
  __u32 tid;
  __u32 pad;
  __u64 ts_ns;
};
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct vs_switch_in);
} switch_in SEC(".maps") __weak;

static __always_inline struct vs_thread_state *vs_current_state(void) {
  return bpf_task_storage_get(&thread_state, bpf_get_current_task_btf(), 0, 0);
}

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 65536);
  __type(key, __u32); /* tgid */
  __type(value, __u8);
} traced SEC(".maps") __weak;

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, VS_MAX_APIS);
  __type(key, __u32);
  __type(value, struct vs_api_plan);
} api_plans SEC(".maps") __weak;

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, VS_STAT_COUNT);
  __type(key, __u32);
  __type(value, __u64);
} stats SEC(".maps") __weak;

/* CUDA library files already probed (filled by user space): mapping one of
 * these needs no stop. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 4096);
  __type(key, struct vs_file_key);
  __type(value, __u8);
} known_files SEC(".maps") __weak;

/* Sizes are set by user space before load. */
struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 16 << 20);
} calls_rb SEC(".maps") __weak;

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 1 << 20);
} lifecycle_rb SEC(".maps") __weak;

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 4 << 20);
} sched_rb SEC(".maps") __weak;

static __always_inline void vs_count(enum vs_stat which) {
  __u32 key = which;
  __u64 *v = bpf_map_lookup_elem(&stats, &key);
  if (v) *v += 1; /* per-CPU: no atomics needed */
}

/* Reserves and fills the common part of a lifecycle record; the caller submits it. */
static __always_inline struct vs_lifecycle_event *vs_lifecycle_record(__u32 kind, struct task_struct *task,
                                                                      __s32 exit_code) {
  struct vs_lifecycle_event *ev = bpf_ringbuf_reserve(&lifecycle_rb, sizeof(*ev), 0);
  if (!ev) {
    vs_count(VS_STAT_LIFECYCLE_DROPS);
    return 0;
  }
  ev->ts_ns = bpf_ktime_get_ns();
  ev->start_ns = BPF_CORE_READ(task, start_time);
  ev->kind = kind;
  ev->pid = BPF_CORE_READ(task, tgid);
  ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
  ev->exit_code = exit_code;
  BPF_CORE_READ_STR_INTO(&ev->comm, task, comm);
  ev->fd = -1;
  ev->file_dev = 0;
  ev->file_ino = 0;
  ev->file_name[0] = 0;
  return ev;
}

static __always_inline void vs_emit_lifecycle(__u32 kind, struct task_struct *task, __s32 exit_code) {
  struct vs_lifecycle_event *ev = vs_lifecycle_record(kind, task, exit_code);
  if (ev) bpf_ringbuf_submit(ev, 0);
}

/* Adds the off-CPU interval that ended when the current thread was last
 * switched in to every call on its stack. Runs before any probe changes the
 * stack, so an interval counts for exactly the calls in flight during it. */
static __always_inline void vs_settle_off_cpu(struct vs_thread_state *st, __u32 tid) {
  if (!st->off_pending) return;
  st->off_pending = 0;
  __u32 zero = 0;
  struct vs_switch_in *in = bpf_map_lookup_elem(&switch_in, &zero);
  /* A switch-in not seen (cannot happen while attached): end the interval now. */
  __u64 back = in && in->tid == tid ? in->ts_ns : bpf_ktime_get_ns();
  __u64 *since = bpf_map_lookup_elem(&woken, &tid);
  __u64 runnable = since ? *since : 0;
  if (since) bpf_map_delete_elem(&woken, &tid);
  __u64 off = back > st->off_since_ns ? back - st->off_since_ns : 0;
  __u64 runq = runnable && back > runnable ? back - runnable : 0;
  __u32 depth = st->depth;
  for (__u32 i = 0; i < VS_MAX_DEPTH; i++) {
    if (i >= depth) break;
    struct vs_frame *f = &st->frames[i];
    f->off_cpu_ns += off;
    f->runq_ns += runq;
    f->switches += 1;
    if (off > f->longest_off_ns) {
      f->longest_off_ns = off;
      f->preemptor_pid = st->out_next_pid;
      __builtin_memcpy(f->preemptor_comm, st->out_next_comm, VS_COMM_LEN);
    }
  }
}

/* Reserves the record of a call: with its scheduler part when the call was
 * switched out (most are not, and their record stays two cache lines). */
static __always_inline struct vs_call_event *vs_reserve_call(struct vs_frame *f) {
  if (f->switches) {
    struct vs_call_sched_event *ev = bpf_ringbuf_reserve(&calls_rb, sizeof(*ev), 0);
    if (!ev) return 0;
    ev->call.type = VS_REC_CALL_SCHED;
    ev->sched.off_cpu_ns = f->off_cpu_ns;
    ev->sched.runq_ns = f->runq_ns;
    ev->sched.longest_off_ns = f->longest_off_ns;
    ev->sched.switches = f->switches;
    ev->sched.preemptor_pid = f->preemptor_pid;
    __builtin_memcpy(ev->sched.preemptor_comm, f->preemptor_comm, VS_COMM_LEN);
    ev->sched.pad[0] = 0;
    ev->sched.pad[1] = 0;
    return &ev->call;
  }
  struct vs_call_event *ev = bpf_ringbuf_reserve(&calls_rb, sizeof(*ev), 0);
  if (ev) ev->type = VS_REC_CALL;
  return ev;
}

/* Fills a call record from frame `idx` of a thread's stack (and its parent
 * link), the argument words chosen by the API's plan. */
static __always_inline void vs_fill_call(struct vs_call_event *ev, struct vs_thread_state *st, __u32 idx,
                                         const struct vs_api_plan *plan, __u64 end_ns, __u32 tgid, __u32 tid) {
  struct vs_frame *f = &st->frames[idx & (VS_MAX_DEPTH - 1)];
  ev->flags = 0;
  ev->seq = f->seq;
  ev->start_ns = f->start_ns;
  ev->end_ns = end_ns;
#pragma unroll
  for (int i = 0; i < VS_CALL_WORDS; i++) {
    __s32 w = plan ? plan->word[i] : -1;
    ev->words[i] = w >= 0 && w < VS_NARGS + VS_NSTACK ? f->words[w] : 0;
  }
  ev->out[0] = 0;
  ev->out[1] = 0;
  ev->caller_ino = 0; /* set at return */
  ev->caller_dev = 0;
  ev->ret = 0;
  ev->pid = tgid;
  ev->tid = tid;
  ev->api = f->api;
  if (idx > 0) {
    struct vs_frame *parent = &st->frames[(idx - 1) & (VS_MAX_DEPTH - 1)];
    ev->parent_seq = parent->seq;
    ev->parent_api = parent->api;
  } else {
    ev->parent_seq = 0;
    ev->parent_api = 0;
  }
  ev->pad[0] = 0;
  ev->pad[1] = 0;
  ev->pad[2] = 0;
}

#endif
