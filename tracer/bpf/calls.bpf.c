/* Entry and return probes shared by every traced CUDA function. The API is
 * the attach cookie; what to read at return comes from api_plans, filled by
 * user space from common/cuda_api.cpp. This file knows no CUDA function. */
#include "state.bpf.h"

#if !defined(__TARGET_ARCH_x86)
#error "vramscope reads x86-64 argument registers; other architectures are not supported yet"
#endif

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 cfg_trace_all = 0; /* trace every process that calls CUDA */

__u64 next_seq = 1;

SEC("uprobe")
int vs_call_entry(struct pt_regs *ctx) {
  __u64 pid_tgid = bpf_get_current_pid_tgid();
  __u32 tgid = pid_tgid >> 32;
  __u32 tid = (__u32)pid_tgid;

  if (!bpf_map_lookup_elem(&traced, &tgid)) {
    if (!cfg_trace_all) return 0;
    __u8 one = 1;
    if (bpf_map_update_elem(&traced, &tgid, &one, BPF_NOEXIST) == 0)
      vs_emit_lifecycle(VS_LC_FIRST_CALL, (struct task_struct *)bpf_get_current_task(), 0);
  }

  __u32 api = (__u32)bpf_get_attach_cookie(ctx);
  struct vs_api_plan *plan = bpf_map_lookup_elem(&api_plans, &api);
  if (!plan) return 0;

  struct vs_thread_state *st = bpf_map_lookup_elem(&inflight, &tid);
  if (!st) {
    __u32 zero = 0;
    struct vs_thread_state *init = bpf_map_lookup_elem(&zero_state, &zero);
    if (!init) return 0;
    bpf_map_update_elem(&inflight, &tid, init, BPF_NOEXIST);
    st = bpf_map_lookup_elem(&inflight, &tid);
    if (!st) {
      vs_count(VS_STAT_INFLIGHT_FULL);
      return 0;
    }
  }

  __u32 d = st->depth;
  st->depth = d + 1;
  if (d >= VS_MAX_DEPTH) {
    vs_count(VS_STAT_DEPTH_OVERFLOW);
    return 0;
  }
  struct vs_frame *f = &st->frames[d & (VS_MAX_DEPTH - 1)];
  f->seq = __sync_fetch_and_add(&next_seq, 1);
  f->api = api;
  /* Each argument through its own register read: a computed pt_regs offset
   * is rejected by the verifier. libbpf 1.1.2 has no PT_REGS_PARM6. */
  f->args[0] = PT_REGS_PARM1(ctx);
  f->args[1] = PT_REGS_PARM2(ctx);
  f->args[2] = PT_REGS_PARM3(ctx);
  f->args[3] = PT_REGS_PARM4(ctx);
  f->args[4] = PT_REGS_PARM5(ctx);
  f->args[5] = ctx->r9;
  __u64 sp = PT_REGS_SP(ctx);
  /* At entry the stack holds the return address, then the 7th+ arguments. */
  if (plan->stack_args) {
    if (bpf_probe_read_user(f->stack, sizeof(f->stack), (void *)(sp + 8)))
      __builtin_memset(f->stack, 0, sizeof(f->stack));
  }
  f->off_cpu_ns = 0;
  f->runq_ns = 0;
  f->longest_off_ns = 0;
  f->switches = 0;
  f->preemptor_pid = 0;
  f->preemptor_comm[0] = 0;
  f->start_ns = bpf_ktime_get_ns(); /* last, so our own work is not in the duration */
  return 0;
}

/* Which file is mapped at a return address, per address space: a call site
 * is looked up once with bpf_find_vma, then served from here. The key holds
 * the mm so that an exec (a new mm) never sees the old program's entries. */
struct caller_key {
  __u64 mm;
  __u64 addr;
};
struct caller_info {
  __u64 ino;
  __u64 file_delta; /* file offset = addr + file_delta */
  __u32 dev;
  __u32 found;
  char name[VS_OBJ_NAME_LEN];
};
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, struct caller_key);
  __type(value, struct caller_info);
} caller_cache SEC(".maps");

struct vma_lookup {
  struct caller_info *info;
  __u64 addr;
};

static long vs_caller_vma(struct task_struct *task, struct vm_area_struct *vma, void *data) {
  struct vma_lookup *lk = data;
  struct file *file = vma->vm_file;
  if (!file) return 0;
  lk->info->found = 1;
  lk->info->ino = BPF_CORE_READ(file, f_inode, i_ino);
  lk->info->dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
  lk->info->file_delta = (BPF_CORE_READ(vma, vm_pgoff) << 12) - BPF_CORE_READ(vma, vm_start);
  bpf_probe_read_kernel_str(lk->info->name, sizeof(lk->info->name), BPF_CORE_READ(file, f_path.dentry, d_name.name));
  return 0;
}

static __always_inline void vs_resolve_caller(struct vs_call_event *ev) {
  struct task_struct *task = bpf_get_current_task_btf();
  struct caller_key key = {.mm = (__u64)BPF_CORE_READ(task, mm), .addr = ev->caller};
  struct caller_info *info = bpf_map_lookup_elem(&caller_cache, &key);
  if (!info) {
    struct caller_info fresh = {};
    struct vma_lookup lk = {.info = &fresh, .addr = ev->caller};
    /* Not cached if the lookup could not run (mmap lock contended): tried again next time. */
    if (bpf_find_vma(task, ev->caller, vs_caller_vma, &lk, 0) != 0) return;
    bpf_map_update_elem(&caller_cache, &key, &fresh, BPF_ANY);
    info = bpf_map_lookup_elem(&caller_cache, &key);
    if (!info) return;
  }
  if (!info->found) return; /* anonymous memory: JIT code */
  ev->caller_ino = info->ino;
  ev->caller_dev = info->dev;
  ev->caller_off = ev->caller + info->file_delta;
  __builtin_memcpy(ev->caller_name, info->name, sizeof(ev->caller_name));
}

/* Waking the consumer for every record costs an IPI and a context switch per
 * call; it is woken every VS_WAKEUP_EVERY records and otherwise polls. */
#define VS_WAKEUP_EVERY 512

SEC("uretprobe")
int vs_call_return(struct pt_regs *ctx) {
  __u64 end_ns = bpf_ktime_get_ns();
  __u64 pid_tgid = bpf_get_current_pid_tgid();
  __u32 tgid = pid_tgid >> 32;
  __u32 tid = (__u32)pid_tgid;

  struct vs_thread_state *st = bpf_map_lookup_elem(&inflight, &tid);
  if (!st) return 0; /* untraced process, or its entry was missed */
  __u32 d = st->depth;
  if (d == 0) return 0;
  if (d > VS_MAX_DEPTH) {
    st->depth = d - 1;
    return 0;
  }
  __u32 idx = (d - 1) & (VS_MAX_DEPTH - 1);
  __u32 api = (__u32)bpf_get_attach_cookie(ctx);
  if (st->frames[idx].api != api) {
    vs_count(VS_STAT_RETURN_MISMATCH);
    return 0;
  }

  struct vs_call_event *ev = bpf_ringbuf_reserve(&calls_rb, sizeof(*ev), 0);
  if (!ev) {
    vs_count(VS_STAT_CALL_DROPS);
  } else {
    vs_fill_call(ev, st, idx, end_ns, tgid, tid);
    ev->ret = PT_REGS_RC(ctx);
    struct vs_api_plan *plan = bpf_map_lookup_elem(&api_plans, &api);
    if (plan) {
#pragma unroll
      for (int i = 0; i < VS_NREADS; i++) {
        __s64 arg = plan->read_arg[i];
        __u32 size = plan->read_size[i];
        if (arg < 0 || arg >= VS_NARGS || size == 0 || size > 8) continue;
        __u64 addr = st->frames[idx].args[arg] + plan->read_off[i];
        if (addr && bpf_probe_read_user(&ev->out[i], size, (void *)addr)) ev->out[i] = 0;
      }
    }
    /* The kernel has put the original return address back in ip before uretprobe handlers run. */
    ev->caller = PT_REGS_IP(ctx);
    if (ev->caller) vs_resolve_caller(ev);
    bpf_ringbuf_submit(ev, (ev->seq % VS_WAKEUP_EVERY) == 0 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
  }

  st->depth = d - 1; /* the entry stays until the thread exits: no map churn per call */
  return 0;
}
