/* Process lifecycle of traced processes: fork (children are traced too),
 * exec, exit. A thread that exits inside a CUDA call has that call recorded
 * as incomplete, so nothing in flight vanishes. */
#include "state.bpf.h"

char LICENSE[] SEC("license") = "GPL";

SEC("raw_tp/sched_process_fork")
int BPF_PROG(vs_process_fork, struct task_struct *parent, struct task_struct *child) {
  __u32 ptgid = BPF_CORE_READ(parent, tgid);
  __u32 ctgid = BPF_CORE_READ(child, tgid);
  if (ptgid == ctgid) return 0; /* a new thread, not a new process */
  if (!bpf_map_lookup_elem(&traced, &ptgid)) return 0;
  __u8 one = 1;
  bpf_map_update_elem(&traced, &ctgid, &one, BPF_ANY);
  vs_emit_lifecycle(VS_LC_FORK, child, 0);
  return 0;
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(vs_process_exec, struct task_struct *p) {
  __u32 tgid = BPF_CORE_READ(p, tgid);
  if (bpf_map_lookup_elem(&traced, &tgid)) vs_emit_lifecycle(VS_LC_EXEC, p, 0);
  return 0;
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(vs_process_exit, struct task_struct *p) {
  __u32 tid = BPF_CORE_READ(p, pid);
  __u32 tgid = BPF_CORE_READ(p, tgid);

  struct vs_thread_state *st = bpf_map_lookup_elem(&inflight, &tid);
  if (st) {
    __u64 now = bpf_ktime_get_ns();
    __u32 depth = st->depth;
    for (__u32 i = 0; i < VS_MAX_DEPTH; i++) {
      if (i >= depth) break;
      struct vs_call_event *ev = bpf_ringbuf_reserve(&calls_rb, sizeof(*ev), 0);
      if (!ev) {
        vs_count(VS_STAT_CALL_DROPS);
        continue;
      }
      vs_fill_call(ev, st, i, now, tgid, tid);
      ev->flags = VS_CALL_INCOMPLETE;
      bpf_ringbuf_submit(ev, 0);
    }
    bpf_map_delete_elem(&inflight, &tid);
  }

  if (!bpf_map_lookup_elem(&traced, &tgid)) return 0;
  /* signal->live has already been decremented: 0 means this was the last thread. */
  if (BPF_CORE_READ(p, signal, live.counter) != 0) return 0;
  vs_emit_lifecycle(VS_LC_EXIT, p, BPF_CORE_READ(p, exit_code));
  bpf_map_delete_elem(&traced, &tgid);
  return 0;
}
