/* Off-CPU attribution, in the kernel, while a CUDA call is in flight: on
 * switch-out note when and whether the thread was still runnable; on wakeup
 * note when it became runnable; on switch-in add the interval to every call
 * on the thread's stack and keep the longest interval's preemptor. Threads
 * without a call in flight cost one hash lookup per switch. */
#include "state.bpf.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 cfg_sched_events = 0; /* --sched-events: also store raw switches */

static __always_inline void emit_switch(struct task_struct *prev, struct task_struct *next, __u32 prev_state,
                                        __u32 in_call, __u64 now) {
  struct vs_sched_event *ev = bpf_ringbuf_reserve(&sched_rb, sizeof(*ev), 0);
  if (!ev) {
    vs_count(VS_STAT_SCHED_DROPS);
    return;
  }
  ev->ts_ns = now;
  ev->prev_tid = BPF_CORE_READ(prev, pid);
  ev->prev_pid = BPF_CORE_READ(prev, tgid);
  ev->next_tid = BPF_CORE_READ(next, pid);
  ev->next_pid = BPF_CORE_READ(next, tgid);
  ev->prev_state = prev_state;
  ev->in_call = in_call;
  BPF_CORE_READ_STR_INTO(&ev->prev_comm, prev, comm);
  BPF_CORE_READ_STR_INTO(&ev->next_comm, next, comm);
  bpf_ringbuf_submit(ev, 0);
}

SEC("raw_tp/sched_switch")
int BPF_PROG(vs_sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
             unsigned int prev_state) {
  __u64 now = bpf_ktime_get_ns();
  __u32 prev_tid = BPF_CORE_READ(prev, pid);
  __u32 next_tid = BPF_CORE_READ(next, pid);
  __u32 in_call = 0;

  struct vs_thread_state *out = bpf_map_lookup_elem(&inflight, &prev_tid);
  if (out && out->depth > 0) {
    out->off_pending = 1;
    out->off_since_ns = now;
    /* Preempted, or yielded while still TASK_RUNNING: it waits for a CPU from now. */
    out->runnable_since_ns = (preempt || prev_state == 0) ? now : 0;
    out->out_next_pid = BPF_CORE_READ(next, tgid);
    BPF_CORE_READ_STR_INTO(&out->out_next_comm, next, comm);
    in_call = 1;
  }

  struct vs_thread_state *in = bpf_map_lookup_elem(&inflight, &next_tid);
  if (in && in->off_pending) {
    __u64 off = now - in->off_since_ns;
    __u64 runq = in->runnable_since_ns ? now - in->runnable_since_ns : 0;
    __u32 depth = in->depth;
    for (__u32 i = 0; i < VS_MAX_DEPTH; i++) {
      if (i >= depth) break;
      struct vs_frame *f = &in->frames[i];
      f->off_cpu_ns += off;
      f->runq_ns += runq;
      f->switches += 1;
      if (off > f->longest_off_ns) {
        f->longest_off_ns = off;
        f->preemptor_pid = in->out_next_pid;
        __builtin_memcpy(f->preemptor_comm, in->out_next_comm, VS_COMM_LEN);
      }
    }
    in->off_pending = 0;
    in_call = 1;
  }

  if (cfg_sched_events) {
    __u32 prev_tgid = BPF_CORE_READ(prev, tgid);
    __u32 next_tgid = BPF_CORE_READ(next, tgid);
    if (in_call || bpf_map_lookup_elem(&traced, &prev_tgid) || bpf_map_lookup_elem(&traced, &next_tgid))
      emit_switch(prev, next, prev_state, in_call, now);
  }
  return 0;
}

SEC("raw_tp/sched_wakeup")
int BPF_PROG(vs_sched_wakeup, struct task_struct *p) {
  __u32 tid = BPF_CORE_READ(p, pid);
  struct vs_thread_state *st = bpf_map_lookup_elem(&inflight, &tid);
  if (st && st->off_pending && st->runnable_since_ns == 0) st->runnable_since_ns = bpf_ktime_get_ns();
  return 0;
}
