/* The one contract between the BPF programs and user space: record layouts
 * and the per-API read plan. Plain C with fixed-width types so that clang
 * -target bpf and g++ lay the structs out identically. */
#ifndef VRAMSCOPE_TRACER_EVENTS_H
#define VRAMSCOPE_TRACER_EVENTS_H

#ifdef __VMLINUX_H__
typedef __u8 vs_u8;
typedef __u16 vs_u16;
typedef __u32 vs_u32;
typedef __u64 vs_u64;
typedef __s64 vs_s64;
typedef __s32 vs_s32;
#else
#include <stdint.h>
typedef uint8_t vs_u8;
typedef uint16_t vs_u16;
typedef uint32_t vs_u32;
typedef uint64_t vs_u64;
typedef int64_t vs_s64;
typedef int32_t vs_s32;
#endif

#define VS_MAX_APIS 128
#define VS_MAX_DEPTH 4 /* runtime call -> driver call -> more; a power of two for the verifier */
#define VS_NARGS 6
#define VS_NSTACK 3
#define VS_NREADS 2
#define VS_CALL_WORDS 3 /* argument words a call record carries: the most any API needs */
#define VS_COMM_LEN 16
#define VS_OBJ_NAME_LEN 48

/* A CUDA IPC handle (cudaIpcMemHandle_t, CUipcMemHandle) is 64 opaque bytes, and
 * their first 8 are the same in every handle one process exports (H200, driver
 * 580: only bytes 18-19, 25, 40 and 52 differed). So the probes keep a 64-bit
 * digest of all 64 bytes, the same at the exporter's return (read through the
 * handle pointer) and at the importer's entry (the handle passed by value, in
 * memory on the stack), relying on no layout: FNV-1a over the 8 little-endian
 * 64-bit words, h = VS_FOLD_BASIS, then for each word w: h = (h ^ w) * VS_FOLD_PRIME.
 * common/cuda_api.h (handle_digest) is the user-side reference. */
#define VS_FOLD_BYTES 64
#define VS_FOLD_BASIS 0xcbf29ce484222325ULL /* FNV-1a 64-bit offset basis */
#define VS_FOLD_PRIME 0x100000001b3ULL      /* FNV-1a 64-bit prime */

/* What the probes keep of one API's arguments. Argument words are numbered
 * 0..VS_NARGS-1 for the registers, then the stack words (7th argument on). */
struct vs_api_plan {
  vs_s64 read_arg[VS_NREADS]; /* return probe: read user memory at this argument (+ read_off), or -1 */
  vs_u32 read_size[VS_NREADS]; /* 1..8 bytes, or VS_FOLD_BYTES: 64 bytes folded into their digest */
  vs_u32 read_off[VS_NREADS];
  vs_u32 stack_args; /* 7th+ argument words copied at entry */
  vs_u32 stack_fold; /* 1: the first stack word is the digest of the VS_FOLD_BYTES bytes from it (a 64-byte
                        argument passed by value, in memory), not their first 8; needs stack_args >= 1 */
  vs_s32 word[VS_CALL_WORDS]; /* the argument words the call record carries, or -1 */
};

/* Counters kept per CPU, summed by user space; indexes into the `stats` map. */
enum vs_stat {
  VS_STAT_CALL_DROPS = 0,     /* call records lost: ring buffer full */
  VS_STAT_LIFECYCLE_DROPS,    /* lifecycle records lost, and caller-file (vs_object_event) records */
  VS_STAT_SCHED_DROPS,        /* raw switch records lost (--sched-events) */
  VS_STAT_DEPTH_OVERFLOW,     /* calls nested deeper than VS_MAX_DEPTH: not recorded */
  VS_STAT_RETURN_MISMATCH,    /* return without a matching entry (longjmp, probe attached mid-call) */
  VS_STAT_NO_THREAD_STATE,    /* a thread's state could not be allocated: call not recorded */
  VS_STAT_COUNT
};

#define VS_CALL_INCOMPLETE 1 /* the thread exited before the call returned */

/* The call ring carries three kinds of record, told apart by their first field. */
enum vs_record_type {
  VS_REC_CALL = 1,       /* struct vs_call_event */
  VS_REC_OBJECT = 2,     /* struct vs_object_event */
  VS_REC_CALL_SCHED = 3, /* struct vs_call_sched_event: a call that was switched out */
};

/* Record sizes plus the ring's 8-byte header are multiples of the 64-byte
 * cache line: writing a record is the return probe's main cost, and a call
 * record then fills exactly two lines. */
#ifdef __cplusplus
#define VS_RING_FIT(type) static_assert((sizeof(type) + 8) % 64 == 0, #type " breaks the ring's line alignment")
#else
#define VS_RING_FIT(type) _Static_assert((sizeof(type) + 8) % 64 == 0, #type " breaks the ring's line alignment")
#endif

struct vs_call_event {
  vs_u32 type;       /* VS_REC_CALL, or VS_REC_CALL_SCHED as the head of a vs_call_sched_event */
  vs_u32 flags;      /* VS_CALL_INCOMPLETE */
  vs_u64 seq;        /* unique per session: becomes calls.id */
  vs_u64 parent_seq; /* enclosing traced call on this thread, or 0 */
  vs_u64 start_ns;   /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
  vs_u64 end_ns;
  vs_u64 words[VS_CALL_WORDS]; /* the argument words named by the API's plan (vs_api_plan.word) */
  vs_u64 out[VS_NREADS];       /* what the return probe read (vs_api_plan.read_*) */
  vs_u64 caller_ino;           /* the file mapped at the return address (0: anonymous / unknown) */
  vs_u32 caller_dev;
  vs_s32 ret;                  /* cudaError_t and CUresult are 32-bit */
  vs_u32 pid;                  /* tgid */
  vs_u32 tid;
  vs_u16 api;
  vs_u16 parent_api;
  vs_u32 pad[3];
};
VS_RING_FIT(struct vs_call_event);

/* Where the thread was while the call ran, when it was switched out at least once. */
struct vs_call_sched {
  vs_u64 off_cpu_ns;
  vs_u64 runq_ns;
  vs_u64 longest_off_ns;
  vs_u32 switches;
  vs_u32 preemptor_pid; /* task switched in for the longest off-CPU interval */
  char preemptor_comm[VS_COMM_LEN];
  vs_u64 pad[2];
};

struct vs_call_sched_event {
  struct vs_call_event call;
  struct vs_call_sched sched;
};
VS_RING_FIT(struct vs_call_sched_event);

#define VS_PATH_DEPTH 24     /* directories + the file itself */
#define VS_PATH_COMPONENT 64 /* bytes per name, NUL included */
#define VS_OBJECT_TRUNCATED 1

/* The file behind a call site, sent once per file (dev, ino) ahead of the
 * call records that name it, so that its path is known even when the process
 * is gone by the time user space reads them. The path is read from the
 * dentries, file first, up to the process's root (mounts crossed). */
struct vs_object_event {
  vs_u32 type; /* VS_REC_OBJECT */
  vs_u32 flags; /* VS_OBJECT_TRUNCATED: deeper than VS_PATH_DEPTH, or a name too long: not usable */
  vs_u64 ino;
  vs_u32 dev;
  vs_u32 pid;
  vs_u32 ncomponents;
  vs_u32 pad[7];
  char components[VS_PATH_DEPTH][VS_PATH_COMPONENT];
};
VS_RING_FIT(struct vs_object_event);

enum vs_lifecycle_kind {
  VS_LC_FORK = 1,  /* a traced process forked a new process */
  VS_LC_EXEC = 2,
  VS_LC_EXIT = 3,  /* the last thread of a traced process exited */
  VS_LC_FIRST_CALL = 4, /* all-process mode: first CUDA call of an untraced process */
  VS_LC_CUDA_MMAP = 5,  /* a traced process maps a CUDA library not probed yet: it is stopped (SIGSTOP)
                           until user space has attached to the file and sent SIGCONT */
  VS_LC_EXEC_MMAP = 6,  /* a traced process maps another file executable for the first time: user space
                           reads its symbols (a runtime bundled in it?); the process is not stopped */
};

struct vs_lifecycle_event {
  vs_u64 ts_ns;
  vs_u64 start_ns; /* task start time: with pid, identifies the process */
  vs_u32 kind;
  vs_u32 pid;
  vs_u32 ppid;
  vs_s32 exit_code; /* VS_LC_EXIT: the wait status of the group leader */
  char comm[VS_COMM_LEN];
  /* VS_LC_CUDA_MMAP, VS_LC_EXEC_MMAP: the file being mapped */
  vs_s32 fd;
  vs_u32 file_dev; /* the kernel's dev_t encoding */
  vs_u64 file_ino;
  char file_name[VS_OBJ_NAME_LEN];
};

/* Key of the known_files map: a file vramscope already probes. */
struct vs_file_key {
  vs_u64 ino;
  vs_u32 dev;
  vs_u32 pad;
};

/* --sched-events: one raw context switch of a traced thread. */
struct vs_sched_event {
  vs_u64 ts_ns;
  vs_u32 prev_tid;
  vs_u32 prev_pid;
  vs_u32 next_tid;
  vs_u32 next_pid;
  vs_u32 prev_state; /* 0: still runnable (preempted) */
  vs_u32 in_call;    /* the traced thread involved had a CUDA call in flight */
  char prev_comm[VS_COMM_LEN];
  char next_comm[VS_COMM_LEN];
};

#endif
