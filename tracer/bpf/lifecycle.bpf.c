/* Process lifecycle of traced processes: fork (children are traced too),
 * exec, exit. A thread that exits inside a CUDA call has that call recorded
 * as incomplete, so nothing in flight vanishes. */
#include "state.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* Processes the mmap watch stopped (SIGSTOP) and user space has not continued
 * yet. vramscope's guardian process holds this map too, and continues every
 * process left in it if vramscope dies first (tracer/helper_process.h). */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 4096);
  __type(key, __u32);
  __type(value, __u8);
} stopped SEC(".maps");

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

  /* The exiting thread is the current task (do_exit). */
  struct task_struct *task = bpf_get_current_task_btf();
  struct vs_thread_state *st = bpf_task_storage_get(&thread_state, task, 0, 0);
  if (st) {
    vs_settle_off_cpu(st, tid);
    __u64 now = bpf_ktime_get_ns();
    __u32 depth = st->depth;
    for (__u32 i = 0; i < VS_MAX_DEPTH; i++) {
      if (i >= depth) break;
      struct vs_frame *f = &st->frames[i & (VS_MAX_DEPTH - 1)];
      struct vs_call_event *ev = vs_reserve_call(f);
      if (!ev) {
        vs_count(VS_STAT_CALL_DROPS);
        continue;
      }
      __u32 api = f->api;
      vs_fill_call(ev, st, i, bpf_map_lookup_elem(&api_plans, &api), now, tgid, tid);
      ev->flags = VS_CALL_INCOMPLETE;
      bpf_ringbuf_submit(ev, 0);
    }
    bpf_task_storage_delete(&thread_state, task);
  }

  /* signal->live has already been decremented: 0 means this was the last thread. */
  if (BPF_CORE_READ(p, signal, live.counter) != 0) return 0;
  bpf_map_delete_elem(&stopped, &tgid); /* killed while stopped: nothing to continue (its pid may be reused) */
  if (!bpf_map_lookup_elem(&traced, &tgid)) return 0;
  vs_emit_lifecycle(VS_LC_EXIT, p, BPF_CORE_READ(p, exit_code));
  bpf_map_delete_elem(&traced, &tgid);
  return 0;
}

const volatile __u32 cfg_watch_all = 0; /* all-process mode: any process may load CUDA */

#define VS_NR_MMAP 9 /* x86-64 */
#define VS_SIGSTOP 19
#define VS_PROT_EXEC 4

/* Files mapped executable by traced processes and already reported. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 16384);
  __type(key, struct vs_file_key);
  __type(value, __u8);
} exec_files_seen SEC(".maps");

/* A traced process mapping a CUDA library that is not probed yet (a private
 * venv, a container) is stopped right there, before it can run a line of
 * that library, and user space attaches and continues it: no call is missed.
 * Any other file mapped executable for the first time is reported without a
 * stop, for user space to look for a CUDA runtime bundled in it (stopping
 * every library load would also show as a stopped job to a shell). */
static __always_inline void vs_on_mmap(int fd, unsigned long prot) {
  if (fd < 0) return;
  __u32 tgid = bpf_get_current_pid_tgid() >> 32;
  if (!cfg_watch_all && !bpf_map_lookup_elem(&traced, &tgid)) return;

  struct task_struct *task = bpf_get_current_task_btf();
  struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
  if ((unsigned int)fd >= BPF_CORE_READ(fdt, max_fds)) return;
  struct file **fds = BPF_CORE_READ(fdt, fd);
  struct file *file = 0;
  if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file) return;

  struct vs_file_key key = {};
  key.ino = BPF_CORE_READ(file, f_inode, i_ino);
  key.dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
  if (bpf_map_lookup_elem(&known_files, &key)) return;

  char name[8] = {};
  bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(file, f_path.dentry, d_name.name));
  /* "libcuda" starts both libcuda.so* and libcudart.so*. */
  __u32 kind = name[0] == 'l' && name[1] == 'i' && name[2] == 'b' && name[3] == 'c' && name[4] == 'u' &&
                       name[5] == 'd' && name[6] == 'a'
                   ? VS_LC_CUDA_MMAP
                   : VS_LC_EXEC_MMAP;
  if (kind == VS_LC_EXEC_MMAP) {
    if (!(prot & VS_PROT_EXEC)) return;
    __u8 one = 1;
    if (bpf_map_update_elem(&exec_files_seen, &key, &one, BPF_NOEXIST) != 0) return;
  }

  struct vs_lifecycle_event *ev = vs_lifecycle_record(kind, (struct task_struct *)task, 0);
  if (!ev) return; /* no record, no stop: a stopped process nobody would continue */
  ev->fd = fd;
  ev->file_dev = key.dev;
  ev->file_ino = key.ino;
  bpf_probe_read_kernel_str(ev->file_name, sizeof(ev->file_name), BPF_CORE_READ(file, f_path.dentry, d_name.name));
  if (kind == VS_LC_CUDA_MMAP) {
    /* Not in `stopped`, not stopped: the guardian must know every process to continue. */
    __u8 one = 1;
    if (bpf_map_update_elem(&stopped, &tgid, &one, BPF_ANY) != 0) {
      bpf_ringbuf_discard(ev, 0);
      return;
    }
  }
  bpf_ringbuf_submit(ev, 0);
  if (kind == VS_LC_CUDA_MMAP) bpf_send_signal(VS_SIGSTOP);
}

/* The watch is the mmap syscall's own tracepoint, so it runs on mmap calls
 * only. raw_tp/sys_enter needs no tracefs but runs on every syscall of the
 * machine, among them the uretprobe syscall (Linux >= 6.11) that ends every
 * traced call: ~30 ns more per CUDA call. It is the fallback. */
SEC("tracepoint/syscalls/sys_enter_mmap")
int vs_mmap_enter(struct trace_event_raw_sys_enter *ctx) {
  vs_on_mmap((int)ctx->args[4], ctx->args[2]); /* mmap(addr, len, prot, flags, fd, off) */
  return 0;
}

SEC("raw_tp/sys_enter")
int BPF_PROG(vs_sys_enter, struct pt_regs *regs, long id) {
  if (id != VS_NR_MMAP) return 0;
  vs_on_mmap((int)BPF_CORE_READ(regs, r8), BPF_CORE_READ(regs, dx));
  return 0;
}
