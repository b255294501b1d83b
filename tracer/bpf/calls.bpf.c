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

/* Set by user space when tracing stops and the probes cannot be detached at
 * once (perf-event links take ~0.1 s each to close): they record nothing more. */
volatile __u32 probes_off = 0;

/* The digest of the VS_FOLD_BYTES bytes of user memory at addr (events.h: a
 * CUDA IPC handle), or 0 if they cannot be read. The one fold of both sides:
 * the exporter's handle read at return, the importer's at entry. */
static __always_inline __u64 vs_fold_user(__u64 addr) {
  __u64 buf[VS_FOLD_BYTES / 8];
  if (bpf_probe_read_user(buf, sizeof(buf), (void *)addr)) return 0;
  __u64 h = VS_FOLD_BASIS;
#pragma unroll
  for (int i = 0; i < VS_FOLD_BYTES / 8; i++) h = (h ^ buf[i]) * VS_FOLD_PRIME;
  return h;
}

SEC("uprobe")
int vs_call_entry(struct pt_regs *ctx) {
  if (probes_off) return 0;
  __u64 pid_tgid = bpf_get_current_pid_tgid();
  __u32 tgid = pid_tgid >> 32;
  __u32 tid = (__u32)pid_tgid;

  __u32 api = (__u32)bpf_get_attach_cookie(ctx);
  struct vs_api_plan *plan = bpf_map_lookup_elem(&api_plans, &api);
  if (!plan) return 0;

  /* A thread with state belongs to a traced process (the state is made
   * below, after the check), so the process lookup is only paid on a
   * thread's first call. */
  struct task_struct *task = bpf_get_current_task_btf();
  struct vs_thread_state *st = bpf_task_storage_get(&thread_state, task, 0, 0);
  if (!st) {
    if (!bpf_map_lookup_elem(&traced, &tgid)) {
      if (!cfg_trace_all) return 0;
      __u8 one = 1;
      if (bpf_map_update_elem(&traced, &tgid, &one, BPF_NOEXIST) == 0)
        vs_emit_lifecycle(VS_LC_FIRST_CALL, task, 0);
    }
    st = bpf_task_storage_get(&thread_state, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!st) {
      vs_count(VS_STAT_NO_THREAD_STATE);
      return 0;
    }
  }
  vs_settle_off_cpu(st, tid);

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
  f->words[0] = PT_REGS_PARM1(ctx);
  f->words[1] = PT_REGS_PARM2(ctx);
  f->words[2] = PT_REGS_PARM3(ctx);
  f->words[3] = PT_REGS_PARM4(ctx);
  f->words[4] = PT_REGS_PARM5(ctx);
  f->words[5] = ctx->r9;
  /* At entry the stack holds the return address, then the 7th+ arguments. */
  if (plan->stack_args) {
    __u64 sp = PT_REGS_SP(ctx);
    if (bpf_probe_read_user(&f->words[VS_NARGS], VS_NSTACK * sizeof(__u64), (void *)(sp + 8)))
      __builtin_memset(&f->words[VS_NARGS], 0, VS_NSTACK * sizeof(__u64));
    /* A 64-byte handle passed by value: its digest replaces its first word. */
    if (plan->stack_fold) f->words[VS_NARGS] = vs_fold_user(sp + 8);
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
  __u32 dev;
  __u32 found;
};
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 16384);
  __type(key, struct caller_key);
  __type(value, struct caller_info);
} caller_cache SEC(".maps");

/* Files whose path was sent (vs_object_event), so each is sent once. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 8192);
  __type(key, struct vs_file_key);
  __type(value, __u8);
} objects_sent SEC(".maps");

/* The object record being built (1.5 KB: too big for the stack). */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct vs_object_event);
} object_scratch SEC(".maps");

struct path_walk {
  __u64 dentry; /* struct dentry *, read with BPF_CORE_READ only */
  __u64 mnt;    /* struct mount * */
  struct vs_object_event *ob;
};

/* One step of the walk from a file to the root: reads one name, or climbs
 * out of one mount to its mount point. Returns 1 to stop. */
static long vs_path_step(__u32 step, void *data) {
  struct path_walk *w = data;
  struct vs_object_event *ob = w->ob;
  struct dentry *d = (struct dentry *)w->dentry;
  struct mount *mnt = (struct mount *)w->mnt;
  if (d == BPF_CORE_READ(mnt, mnt.mnt_root)) {
    struct mount *up = BPF_CORE_READ(mnt, mnt_parent);
    if (up == mnt) { /* the namespace's root: the path is complete */
      ob->flags = 0;
      return 1;
    }
    w->dentry = (__u64)BPF_CORE_READ(mnt, mnt_mountpoint);
    w->mnt = (__u64)up;
    return 0;
  }
  struct dentry *parent = BPF_CORE_READ(d, d_parent);
  __u32 n = ob->ncomponents;
  /* Cut off from its mount, too deep, or a name too long: no usable path. */
  if (d == parent || n >= VS_PATH_DEPTH || BPF_CORE_READ(d, d_name.len) >= VS_PATH_COMPONENT) return 1;
  bpf_probe_read_kernel_str(ob->components[n], VS_PATH_COMPONENT, BPF_CORE_READ(d, d_name.name));
  ob->ncomponents = n + 1;
  w->dentry = (__u64)parent;
  return 0;
}

/* Sends the path of a calling file the first time it is seen. Called with the
 * vma (and so the file) pinned by bpf_find_vma, and before the caller_cache
 * entry exists, so that any call record naming the file, on this CPU or
 * another, comes after it in the ring. */
static void vs_send_object(struct file *file, __u32 dev, __u64 ino) {
  struct vs_file_key key = {.ino = ino, .dev = dev};
  __u8 one = 1;
  if (bpf_map_update_elem(&objects_sent, &key, &one, BPF_NOEXIST) != 0) return;
  __u32 zero = 0;
  struct vs_object_event *ob = bpf_map_lookup_elem(&object_scratch, &zero);
  if (!ob) return;
  ob->type = VS_REC_OBJECT;
  ob->flags = VS_OBJECT_TRUNCATED; /* until the root is reached */
  ob->ino = ino;
  ob->dev = dev;
  ob->pid = bpf_get_current_pid_tgid() >> 32;
  ob->ncomponents = 0;
  __builtin_memset(ob->pad, 0, sizeof(ob->pad));
  struct path_walk w = {
      .dentry = (__u64)BPF_CORE_READ(file, f_path.dentry),
      .mnt = (__u64)container_of(BPF_CORE_READ(file, f_path.mnt), struct mount, mnt),
      .ob = ob,
  };
  bpf_loop(VS_PATH_DEPTH + 8, vs_path_step, &w, 0); /* + 8 mount crossings */
  if (bpf_ringbuf_output(&calls_rb, ob, sizeof(*ob), 0) != 0) {
    vs_count(VS_STAT_LIFECYCLE_DROPS);
    bpf_map_delete_elem(&objects_sent, &key); /* sent with a later call */
  }
}

static long vs_caller_vma(struct task_struct *task, struct vm_area_struct *vma, void *data) {
  struct caller_info *info = data;
  struct file *file = vma->vm_file;
  if (!file) return 0;
  info->found = 1;
  info->ino = BPF_CORE_READ(file, f_inode, i_ino);
  info->dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
  vs_send_object(file, info->dev, info->ino);
  return 0;
}

/* The file mapped at a return address, or 0 (anonymous memory such as JIT
 * code, or the lookup could not run because the mmap lock was contended:
 * tried again next time). */
static __always_inline struct caller_info *vs_caller_file(__u64 addr) {
  struct task_struct *task = bpf_get_current_task_btf();
  struct caller_key key = {.mm = (__u64)task->mm, .addr = addr}; /* a trusted pointer: a plain load */
  struct caller_info *info = bpf_map_lookup_elem(&caller_cache, &key);
  if (!info) {
    struct caller_info fresh = {};
    if (bpf_find_vma(task, addr, vs_caller_vma, &fresh, 0) != 0) return 0;
    bpf_map_update_elem(&caller_cache, &key, &fresh, BPF_ANY);
    info = bpf_map_lookup_elem(&caller_cache, &key);
  }
  return info && info->found ? info : 0;
}

/* Waking the consumer for every record costs an IPI and a context switch per
 * call, and a consumer draining while calls are made pulls the ring's
 * positions back and forth between CPUs (~25 ns a call measured at one wakeup
 * per 512 records). So it is woken once a 64th of the ring has filled (mask
 * set by user space) and otherwise polls every 50 ms. */
const volatile __u64 cfg_wakeup_mask = 8191;

SEC("uretprobe")
int vs_call_return(struct pt_regs *ctx) {
  if (probes_off) return 0;
  __u64 end_ns = bpf_ktime_get_ns();
  __u64 pid_tgid = bpf_get_current_pid_tgid();
  __u32 tgid = pid_tgid >> 32;
  __u32 tid = (__u32)pid_tgid;

  struct vs_thread_state *st = vs_current_state();
  if (!st) return 0; /* untraced process, or its entry was missed */
  vs_settle_off_cpu(st, tid);
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

  /* The kernel has put the original return address back in ip before uretprobe
   * handlers run. Resolved before the record is reserved: see vs_send_object. */
  __u64 caller = PT_REGS_IP(ctx);
  struct caller_info *file = caller ? vs_caller_file(caller) : 0;

  struct vs_frame *f = &st->frames[idx];
  struct vs_api_plan *plan = bpf_map_lookup_elem(&api_plans, &api);
  struct vs_call_event *ev = vs_reserve_call(f);
  if (!ev) {
    vs_count(VS_STAT_CALL_DROPS);
  } else {
    vs_fill_call(ev, st, idx, plan, end_ns, tgid, tid);
    ev->ret = (__s32)PT_REGS_RC(ctx);
    if (plan) {
#pragma unroll
      for (int i = 0; i < VS_NREADS; i++) {
        __s64 arg = plan->read_arg[i];
        __u32 size = plan->read_size[i];
        if (arg < 0 || arg >= VS_NARGS || size == 0) continue;
        __u64 addr = f->words[arg] + plan->read_off[i];
        if (!addr) continue;
        if (size == VS_FOLD_BYTES) ev->out[i] = vs_fold_user(addr); /* a 64-byte handle: its digest */
        else if (size <= 8 && bpf_probe_read_user(&ev->out[i], size, (void *)addr)) ev->out[i] = 0;
      }
    }
    if (file) {
      ev->caller_ino = file->ino;
      ev->caller_dev = file->dev;
    }
    bpf_ringbuf_submit(ev, (ev->seq & cfg_wakeup_mask) == 0 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
  }

  st->depth = d - 1; /* the entry stays until the thread exits: no map churn per call */
  return 0;
}
