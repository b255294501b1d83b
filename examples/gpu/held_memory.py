#!/usr/bin/env python3
"""GPU memory held without being allocated, with PyTorch's own accounting (issue 12 item 5).

    held_memory.py main [--replays N]   CUDA IPC to a spawned child, cudaHostRegister, pin_memory(),
                                        a captured CUDA graph (default caching allocator)
    held_memory.py ipc                  the CUDA IPC section alone (run it with PYTORCH_CUDA_ALLOC_CONF=
                                        expandable_segments:True: cuMemExport/ImportFromShareableHandle)
    held_memory.py pinned               pin_memory() only (run it with PYTORCH_CUDA_ALLOC_CONF=
                                        pinned_use_cuda_host_register:True: cudaHostRegister, not cudaHostAlloc)
    held_memory.py async                the cudaMallocAsync pool before and after empty_cache() (run it with
                                        PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync)

Writes JSON lines to stdout, one object a line, each with "event", "pid" and "t_ns"
(time.monotonic_ns(): CLOCK_MONOTONIC, the clock of vramscope's records):

  checkpoint  torch.cuda.synchronize(), then torch.cuda.memory_stats() (and host_memory_stats()
              where pinned memory is compared); t_ns is read right after memory_stats() returns, so
              every call memory_stats() made (on the async backend: cudaDeviceGetDefaultMemPool and
              four cudaMemPoolGetAttribute) comes before it. "role": parent / child / main.
  other events say what the program did and its own numbers: the pointers and sizes it shared,
              registered or pinned (ipc_handles: the whole 64-byte IPC handles, read through ctypes
              from the libcudart PyTorch loaded), the capture window, the snapshot's segments with
              their pools at each graph checkpoint and PyTorch's allocation history of the capture
              (which Python line made each cudaMalloc), the number of graph replays it made.

compare_held.py reads these lines beside the trace. Each section is guarded: an exception is
written as an "error" event and the next section runs.
"""
import argparse
import gc
import json
import os
import sys
import time
import traceback

MiB = 1 << 20
STAT_KEYS = ("num_device_alloc", "num_device_free",
             "reserved_bytes.all.current", "reserved_bytes.all.peak",
             "reserved_bytes.all.allocated", "reserved_bytes.all.freed",
             "allocated_bytes.all.current", "allocated_bytes.all.peak")


def emit(event, **fields):
    rec = {"event": event, "pid": os.getpid(), "t_ns": time.monotonic_ns()}
    rec.update(fields)
    sys.stdout.write(json.dumps(rec) + "\n")
    sys.stdout.flush()


def host_stats(torch):
    f = getattr(torch.cuda, "host_memory_stats", None)
    if f is None:
        return None
    try:
        return {k: (int(v) if isinstance(v, (int, float)) else v) for k, v in f().items()}
    except Exception as e:  # noqa: BLE001
        return {"error": repr(e)}


def mark(torch, label, role, host=False, **extra):
    """A checkpoint: PyTorch's accounting, stamped right after memory_stats() returned."""
    torch.cuda.synchronize()
    s = torch.cuda.memory_stats()
    t = time.monotonic_ns()
    rec = {"event": "checkpoint", "label": label, "role": role, "pid": os.getpid(), "t_ns": t}
    rec.update({k: int(s.get(k, 0)) for k in STAT_KEYS})
    if host:
        rec["host"] = host_stats(torch)
    rec.update(extra)
    sys.stdout.write(json.dumps(rec) + "\n")
    sys.stdout.flush()
    return rec


def guarded(section):
    def wrap(fn):
        def run(*a, **k):
            try:
                return fn(*a, **k)
            except Exception as e:  # noqa: BLE001
                emit("error", section=section, error=repr(e), traceback=traceback.format_exc()[-2000:])
                return None
        return run
    return wrap


def segment_of(torch, ptr):
    """The caching allocator's segment (one cudaMalloc) that holds ptr, from memory_snapshot()."""
    for s in torch.cuda.memory_snapshot():
        if s["address"] <= ptr < s["address"] + s["total_size"]:
            return {"segment_address": s["address"], "segment_size": s["total_size"],
                    "segment_pool_id": list(s.get("segment_pool_id", ()) or ())}
    return {}


def describe(torch, t, with_segment=False):
    st = t.untyped_storage()
    d = {"data_ptr": t.data_ptr(), "storage_ptr": st.data_ptr(), "storage_nbytes": st.nbytes(),
         "nbytes": t.numel() * t.element_size()}
    if with_segment:
        d.update(segment_of(torch, st.data_ptr()))
    return d


# ---- 1. CUDA IPC: a tensor shared with a child process (torch.multiprocessing, spawn) ----

def ipc_child(q_in, q_out):
    """The importer: receives CUDA tensors (cudaIpcOpenMemHandle in libc10_cuda), reads them,
    releases them one by one (cudaIpcCloseMemHandle when the last storage of a handle dies)."""
    import torch
    try:
        got = q_in.get(timeout=120)
        sums = {k: float(v.sum().item()) for k, v in got.items()}  # small allocations of the child's own
        time.sleep(0.3)  # so that NVML (sampled every 100 ms) sees the child holding the mappings
        mark(torch, "child_received", "child", tensors={k: describe(torch, v) for k, v in got.items()}, sums=sums)
        q_out.put("received")
        again = q_in.get(timeout=120)  # a view of a tensor the child already holds: same storage, same handle
        mark(torch, "child_received_again", "child", tensors={k: describe(torch, v) for k, v in again.items()})
        del again
        gc.collect()
        del got["b"]
        gc.collect()
        mark(torch, "child_released_b", "child")
        del got
        gc.collect()
        time.sleep(0.3)  # and again with every mapping closed
        mark(torch, "child_released_all", "child")
    except Exception as e:  # noqa: BLE001
        emit("error", section="ipc_child", error=repr(e), traceback=traceback.format_exc()[-2000:])
    q_out.put("done")


@guarded("ipc_handles")
def ipc_handle_bytes(torch, tensors):
    """The whole 64-byte cudaIpcMemHandle_t of each shared segment, from the libcudart PyTorch loaded
    (through ctypes, so that these calls are told apart from PyTorch's by their caller), to set
    against the 8 bytes the trace keeps."""
    import ctypes
    path = next(line.split()[-1] for line in open("/proc/self/maps") if "/libcudart.so" in line)
    rt = ctypes.CDLL(path)
    out = {}
    for name, t in tensors.items():
        seg = segment_of(torch, t.untyped_storage().data_ptr())["segment_address"]
        buf = ctypes.create_string_buffer(64)
        err = rt.cudaIpcGetMemHandle(buf, ctypes.c_void_p(seg))
        out[name] = {"segment_address": seg, "ret": err, "handle_hex": buf.raw.hex()}
    emit("ipc_handles", libcudart=path, handles=out)


@guarded("ipc")
def ipc(torch):
    import torch.multiprocessing as mp
    ctx = mp.get_context("spawn")
    a = torch.full((64 * MiB // 4,), 1.0, device="cuda")            # 64 MiB: a segment of its own
    b = torch.arange(3 * MiB, device="cuda", dtype=torch.float32)    # 12 MiB: a segment of its own
    c = torch.ones(256, device="cuda")                               # 1 KiB, inside a 2 MiB small-pool segment
    tensors = {"a": a, "b": b, "c": c}
    mark(torch, "parent_before_share", "parent", tensors={k: describe(torch, v, True) for k, v in tensors.items()})
    q_in, q_out = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=ipc_child, args=(q_in, q_out))
    p.start()
    emit("child_started", child_pid=p.pid)
    q_in.put(tensors)
    emit("parent_sent", names=sorted(tensors))
    reply = q_out.get(timeout=180)
    mark(torch, "parent_child_holds", "parent", reply=reply)
    q_in.put({"a_view": a[1024:2048]})
    reply = q_out.get(timeout=180)
    p.join(timeout=120)
    emit("child_exited", child_pid=p.pid, exitcode=p.exitcode, reply=reply)
    mark(torch, "parent_child_exited", "parent")
    ipc_handle_bytes(torch, tensors)
    del tensors, a, b, c
    gc.collect()
    torch.cuda.ipc_collect()
    mark(torch, "parent_released", "parent")


# ---- 3. Host memory: cudaHostRegister through torch.cuda.cudart(), and pin_memory() ----

def host_empty_cache(torch):
    for name in ("_host_emptyCache",):
        f = getattr(torch._C, name, None)
        if f is not None:
            f()
            return "torch._C." + name
    return None


@guarded("host_register")
def host_register(torch, role):
    cudart = torch.cuda.cudart()
    n = 48 * MiB + 3 * 4096
    x = torch.empty(n, dtype=torch.uint8).fill_(7)
    ptr = x.data_ptr()
    mark(torch, "before_host_register", role, host=True)
    err = cudart.cudaHostRegister(ptr, n, 0)
    emit("host_register", ptr=ptr, bytes=n, flags=0, ret=int(getattr(err, "value", err)))
    g = x.to("cuda", non_blocking=True)
    torch.cuda.synchronize()
    mark(torch, "host_registered", role, host=True, ptr=ptr, bytes=n)
    err = cudart.cudaHostUnregister(ptr)
    emit("host_unregister", ptr=ptr, ret=int(getattr(err, "value", err)))
    del g
    mark(torch, "host_unregistered", role, host=True)


@guarded("pin_memory")
def pin_memory(torch, role):
    n = 20 * MiB + 100
    mark(torch, "before_pin", role, host=True)
    p = torch.empty(n, dtype=torch.uint8).pin_memory()
    emit("pinned", ptr=p.data_ptr(), bytes=n, is_pinned=bool(p.is_pinned()),
         alloc_conf=os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""))
    mark(torch, "pinned", role, host=True, ptr=p.data_ptr(), bytes=n)
    del p
    gc.collect()
    mark(torch, "pin_deleted", role, host=True)
    how = host_empty_cache(torch)
    mark(torch, "host_cache_emptied", role, host=True, how=how)


# ---- 4. A captured CUDA graph: capture, replay N times, delete ----

def segments(torch):
    return [{"address": sg["address"], "total_size": sg["total_size"], "allocated_size": sg.get("allocated_size"),
             "segment_pool_id": list(sg.get("segment_pool_id", ()) or ()), "stream": sg.get("stream")}
            for sg in torch.cuda.memory_snapshot()]


def record_history(torch, start):
    """Start PyTorch's allocation history (Python stacks), or stop it and return its segment_alloc
    entries: which Python line made each cudaMalloc of the capture."""
    try:
        if start:
            torch.cuda.memory._record_memory_history(enabled="all", context="alloc", stacks="python", max_entries=100000)
            return True
        snap = torch.cuda.memory._snapshot()
        torch.cuda.memory._record_memory_history(enabled=None)
        out = []
        for e in (snap.get("device_traces") or [[]])[0]:
            if e.get("action") in ("segment_alloc", "segment_free"):
                frames = [f"{os.path.basename(fr.get('filename', ''))}:{fr.get('line')}:{fr.get('name')}"
                          for fr in (e.get("frames") or [])][:8]
                out.append({"action": e["action"], "addr": e.get("addr"), "size": e.get("size"),
                            "stream": e.get("stream"), "frames": frames})
        return out
    except Exception as e:  # noqa: BLE001
        emit("error", section="record_history", error=repr(e))
        return None


@guarded("graph")
def graph(torch, replays):
    torch.manual_seed(0)
    lin1 = torch.nn.Linear(2048, 4096).cuda()
    lin2 = torch.nn.Linear(4096, 2048).cuda()
    x = torch.randn(4096, 2048, device="cuda")

    def f(inp):
        return torch.relu(lin2(torch.relu(lin1(inp))))

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(s):
        for _ in range(3):
            f(x)
    torch.cuda.current_stream().wait_stream(s)
    mark(torch, "graph_warmed", "main", segments=segments(torch))
    g = torch.cuda.CUDAGraph()
    history = record_history(torch, True)
    t0 = time.monotonic_ns()
    with torch.no_grad(), torch.cuda.graph(g):
        y = f(x)
    t1 = time.monotonic_ns()
    pool = list(g.pool())
    allsegs = segments(torch)
    segs = [sg for sg in allsegs if sg["segment_pool_id"] == pool]
    mark(torch, "graph_captured", "main", capture_begin_ns=t0, capture_end_ns=t1, pool=pool, pool_segments=segs,
         pool_bytes=sum(sg["total_size"] for sg in segs), output_ptr=y.data_ptr(), segments=allsegs,
         segment_allocs=history and record_history(torch, False))
    n = 0
    for i in range(replays):
        x.mul_(0.5)  # new input, same address
        g.replay()
        n += 1
    torch.cuda.synchronize()
    mark(torch, "graph_replayed", "main", replays=n, checksum=float(y.float().sum().item()))
    del g
    gc.collect()
    mark(torch, "graph_deleted", "main")
    del y
    gc.collect()
    torch.cuda.empty_cache()
    mark(torch, "graph_pool_emptied", "main", segments=segments(torch))
    # What the private pool still holds: PyTorch's cuBLAS / cuBLASLt workspaces for the capture stream,
    # allocated during the capture; PyTorch keeps them per (handle, stream) until told to clear them.
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        clear()
        torch.cuda.empty_cache()
    mark(torch, "cublas_workspaces_cleared", "main", segments=segments(torch), cleared=clear is not None)


# ---- 2. The cudaMallocAsync backend's pool ----

@guarded("async")
def async_pool(torch):
    backend = torch.cuda.memory.get_allocator_backend()
    emit("backend", backend=backend)

    def am(label, **extra):
        rec = mark(torch, label, "main", **extra)
        free, total = torch.cuda.mem_get_info()
        emit("mem_get_info", label=label, free=free, total=total)
        return rec

    am("start")
    sizes = [256 * MiB, 64 * MiB, 512 * MiB, 3 * MiB + 1000, 128 * MiB, 200 * MiB]
    xs = [torch.empty(n, dtype=torch.uint8, device="cuda") for n in sizes]
    am("allocated", sizes=sizes)
    del xs[0], xs[1]  # 256 MiB and 512 MiB (the list shifts after the first del)
    am("deleted_two")
    torch.cuda.empty_cache()  # cudaMemPoolTrimTo(pool, 0)
    am("emptied")
    torch.cuda.reset_peak_memory_stats()  # cudaMemPoolSetAttribute(ReservedMemHigh / UsedMemHigh, 0)
    am("peaks_reset")
    ys = [torch.empty(96 * MiB, dtype=torch.uint8, device="cuda") for _ in range(3)]
    am("reallocated")
    del xs, ys
    am("all_deleted")
    torch.cuda.empty_cache()
    am("end")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["main", "ipc", "pinned", "async"])
    ap.add_argument("--replays", type=int, default=25)
    args = ap.parse_args()
    import torch
    torch.cuda.init()
    emit("start", mode=args.mode, torch=torch.__version__, cuda=torch.version.cuda,
         device=torch.cuda.get_device_name(0),
         alloc_conf=os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
         backend=torch.cuda.memory.get_allocator_backend())
    if args.mode == "main":
        ipc(torch)
        host_register(torch, "main")
        pin_memory(torch, "main")
        graph(torch, args.replays)
    elif args.mode == "ipc":
        ipc(torch)
    elif args.mode == "pinned":
        pin_memory(torch, "main")
    else:
        async_pool(torch)
    emit("end", mode=args.mode)


if __name__ == "__main__":
    main()
