#!/usr/bin/env python3
"""Workloads of frameworks other than PyTorch, each recording its framework's own
memory accounting at checkpoints, stamped with CLOCK_MONOTONIC (the clock of the
trace), for compare_frameworks.py:

    frameworks.py WORKLOAD --out STATS.json

  cupy_pool        CuPy: arrays of mixed sizes through the default MemoryPool, some
                   deleted, then free_all_blocks()
  cupy_leak        CuPy: every step keeps a 4 MiB array (a list that grows)
  jax_grow         JAX with XLA_PYTHON_CLIENT_PREALLOCATE=false (set by the caller):
                   the pool grows region by region, arrays deleted
  jax_leak         the same, every step keeps a 4 MiB array (256 steps: 1 GiB)
  jax_leak_short   the same leak over 40 steps (160 MiB)
  jax_prealloc     JAX with its default preallocation (75% of the GPU)
  numba            Numba CUDA device arrays (no pool: one cuMemAlloc each), some
                   deleted and the deferred deallocations flushed

Checkpoint fields, by framework:
  cupy:  pool_used_bytes, pool_total_bytes (MemoryPool.used_bytes()/total_bytes())
  jax:   bytes_in_use, peak_bytes_in_use, pool_bytes, peak_pool_bytes (memory_stats())
  numba: live_bytes (the live device arrays' nbytes, after flushing deallocations), pending_deallocations,
         device_free_bytes (cuMemGetInfo's free bytes: whether memory came back)
"""
import argparse
import json
import os
import sys
import time

MiB = 1 << 20


class Checkpoints:
    def __init__(self, path, workload, framework, version):
        self.path = path
        self.doc = {"workload": workload, "framework": framework, "version": version, "pid": os.getpid(),
                    "env": {k: v for k, v in os.environ.items() if k.startswith(("XLA_", "CUPY_", "NUMBA_"))},
                    "checkpoints": []}

    def mark(self, label, **numbers):
        cp = {"label": label, "t_ns": time.monotonic_ns()}
        cp.update({k: int(v) for k, v in numbers.items()})
        self.doc["checkpoints"].append(cp)
        print(f"[{label}] " + ", ".join(f"{k} {v / MiB:.1f} MiB" for k, v in numbers.items()), flush=True)
        with open(self.path, "w") as f:
            json.dump(self.doc, f, indent=1)


# ---- CuPy ----

def cupy_checkpoints(out, workload):
    import cupy
    cp = Checkpoints(out, workload, "cupy", cupy.__version__)
    pool = cupy.get_default_memory_pool()

    def mark(label):
        cupy.cuda.Device().synchronize()
        cp.mark(label, pool_used_bytes=pool.used_bytes(), pool_total_bytes=pool.total_bytes())
    return cupy, pool, mark, cp


def cupy_pool(out):
    cupy, pool, mark, cp = cupy_checkpoints(out, "cupy_pool")
    mark("start")
    arrays = [cupy.ones(n, dtype=cupy.float32) for n in (1 << 10, 3 << 18, 1 << 22, 5 << 22, 1 << 24, 7 << 20)]
    mark("allocated")
    for i in range(20):  # transient work served from the pool
        y = arrays[3] * 2 + arrays[2].sum()
        del y
    mark("worked")
    del arrays[1:4]
    mark("deleted")
    pool.free_all_blocks()
    mark("free_all_blocks")
    del arrays
    pool.free_all_blocks()
    mark("end")


def cupy_leak(out, steps=40):
    cupy, pool, mark, cp = cupy_checkpoints(out, "cupy_leak")
    mark("start")
    kept = []
    for step in range(steps):
        x = cupy.random.random((1 << 20,), dtype=cupy.float32)  # 4 MiB
        kept.append(x * 2)  # kept: a leak
        del x
        float(kept[-1][0])  # a device-to-host copy each step, as real work has
        if step % 10 == 9:
            mark(f"step{step + 1}")
    mark("end")


# ---- JAX ----

def jax_checkpoints(out, workload):
    import jax
    import jax.numpy as jnp
    cp = Checkpoints(out, workload, "jax", jax.__version__)
    dev = jax.devices()[0]

    def mark(label):
        for a in jax.live_arrays():
            a.block_until_ready()
        s = dev.memory_stats()
        cp.mark(label, **{k: s.get(k, 0) for k in ("bytes_in_use", "peak_bytes_in_use", "pool_bytes",
                                                    "peak_pool_bytes")})
    return jax, jnp, mark, cp


def jax_grow(out):
    jax, jnp, mark, cp = jax_checkpoints(out, "jax_grow")
    mark("start")
    arrays = [jnp.ones((n,), dtype=jnp.float32) for n in (1 << 10, 1 << 20, 1 << 22, 1 << 24, 3 << 24)]
    mark("allocated")
    f = jax.jit(lambda a, b: (a * 2).sum() + b.mean())
    for _ in range(10):
        f(arrays[3], arrays[4]).block_until_ready()
    mark("worked")
    del arrays[2:]
    mark("deleted")


def jax_leak(out, steps=256):
    jax, jnp, mark, cp = jax_checkpoints(out, "jax_leak" if steps == 256 else "jax_leak_short")
    mark("start")
    key = jax.random.PRNGKey(0)
    kept = []
    for step in range(steps):
        key, sub = jax.random.split(key)
        kept.append(jax.random.uniform(sub, (1 << 20,)) * 2)  # 4 MiB kept: a leak
        float(kept[-1][0])
        if step % 64 == 63 or step == steps - 1:
            mark(f"step{step + 1}")
    mark("end")


def jax_leak_short(out):
    jax_leak(out, steps=40)


def jax_prealloc(out):
    jax, jnp, mark, cp = jax_checkpoints(out, "jax_prealloc")
    mark("start")
    x = jnp.ones((1 << 24,), dtype=jnp.float32)
    float(x.sum())
    mark("worked")


# ---- Numba ----

def numba(out):
    import numpy as np
    from numba import cuda
    import numba as nb
    cp = Checkpoints(out, "numba", "numba", nb.__version__)
    arrays = []
    ctx = cuda.current_context()

    def mark(label):
        cuda.synchronize()
        pending = len(ctx.deallocations._cons)
        ctx.deallocations.clear()  # Numba defers frees; flush them so the count is exact
        cuda.synchronize()
        free, total = ctx.get_memory_info()
        cp.mark(label, live_bytes=sum(a.nbytes for a in arrays), pending_deallocations=pending,
                device_free_bytes=free)
        time.sleep(0.3)  # NVML samples every 100 ms: let it see this state
    mark("start")
    for n in (1 << 10, 1 << 20, 3 << 20, 1 << 24, 5 << 22):
        arrays.append(cuda.to_device(np.ones(n, dtype=np.float32)))
    arrays.append(cuda.device_array(1 << 22, dtype=np.float64))
    mark("allocated")
    del arrays[1:3]
    mark("deleted")
    arrays.clear()
    mark("end")


WORKLOADS = {"cupy_pool": cupy_pool, "cupy_leak": cupy_leak, "jax_grow": jax_grow, "jax_leak": jax_leak, "jax_leak_short": jax_leak_short,
             "jax_prealloc": jax_prealloc, "numba": numba}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload", choices=sorted(WORKLOADS))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    WORKLOADS[args.workload](args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
