/* Off-CPU attribution, in the kernel, while a CUDA call is in flight: on
 * switch-out note when, who took the CPU, and whether the thread was still
 * runnable; on wakeup note when it became runnable; every switch-in notes its
 * time per CPU, and the thread's next probe (or switch-out) adds the interval
 * to every call on its stack (vs_settle_off_cpu). Other switches cost one
 * task-storage lookup. */
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

  struct vs_thread_state *out = vs_current_state(); /* prev is still the current task here */
  if (out) {
    vs_settle_off_cpu(out, prev_tid); /* switched in and out again without a probe in between */
    if (out->depth > 0) {
      out->off_pending = 1;
      out->off_since_ns = now;
      /* Preempted, or yielded while still TASK_RUNNING: it waits for a CPU from now. */
      __u64 runnable_since = (preempt || prev_state == 0) ? now : 0;
      bpf_map_update_elem(&woken, &prev_tid, &runnable_since, BPF_ANY);
      out->out_next_pid = BPF_CORE_READ(next, tgid);
      BPF_CORE_READ_STR_INTO(&out->out_next_comm, next, comm);
      in_call = 1;
    }
  }

  __u32 zero = 0;
  struct vs_switch_in *in = bpf_map_lookup_elem(&switch_in, &zero);
  if (in) {
    in->tid = next_tid;
    in->ts_ns = now;
  }

  if (cfg_sched_events) {
    __u32 prev_tgid = BPF_CORE_READ(prev, tgid);
    __u32 next_tgid = BPF_CORE_READ(next, tgid);
    if (!in_call && bpf_map_lookup_elem(&woken, &next_tid)) in_call = 1; /* back into a call */
    if (in_call || bpf_map_lookup_elem(&traced, &prev_tgid) || bpf_map_lookup_elem(&traced, &next_tgid))
      emit_switch(prev, next, prev_state, in_call, now);
  }
  return 0;
}

SEC("raw_tp/sched_wakeup")
int BPF_PROG(vs_sched_wakeup, struct task_struct *p) {
  __u32 tid = BPF_CORE_READ(p, pid);
  __u64 *since = bpf_map_lookup_elem(&woken, &tid);
  if (since && *since == 0) *since = bpf_ktime_get_ns();
  return 0;
}
