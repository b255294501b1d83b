#!/usr/bin/env python3
"""Labeled PyTorch workloads for vramscope's diagnosis corpus (examples/corpus/manifest.json).

Each workload is one case users bring (../../../shared/what-users-ask.md, issue 10): leaks under each
allocator and at different speeds, growth that stops, healthy loops, cache held, live tensors held after
empty_cache(), CPU contention, out of memory, several processes, a process attached mid-run, exit while
holding memory. Like examples/gpu/workloads.py, whose Checkpoints helper they use, they record
torch.cuda.memory_stats() at checkpoints stamped with CLOCK_MONOTONIC, so every number a finding cites can
be checked against PyTorch's own accounting (examples/gpu/compare.py).

Plain torch.nn modules (building a transformers model takes ~10 s), torch.manual_seed(0), MiBs to a few
GiB each, a few seconds of work. Every request or step makes at least one probed CUDA call that is not an
allocation (.item(), .cpu(), a synchronize), as real programs do, except in leak_silent.

    python3 workloads.py leak_after_startup --out stats.json [--startup-s 4 --requests 40 --pause-ms 0]
    python3 workloads.py multi_leak --out stats.json      # a launcher without CUDA; its two workers write
                                                         # stats.leak_after_startup.json, stats.healthy_serving.json
    python3 workloads.py attach_leak --out stats.json --go-file /tmp/go   # waits for the file, then works
"""
import argparse
import gc
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MIB = 1 << 20
GIB = 1 << 30

# Imported by main() for the workloads that use the GPU; the multi-process launchers never import it,
# as a job launcher (torchrun, a shell script) does not.
torch = None
nn = None
F = None


def load_torch():
    """torch, and the Checkpoints helper of examples/gpu/workloads.py (loaded by path: it is not a package)."""
    global torch, nn, F
    import torch as torch_module
    torch = torch_module
    nn = torch.nn
    F = torch.nn.functional
    spec = importlib.util.spec_from_file_location("gpu_workloads", HERE.parent / "gpu" / "workloads.py")
    gpu_workloads = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_workloads)
    return gpu_workloads.Checkpoints


# ---- building blocks ----

def block(width):
    return nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))


def mlp(width, depth):
    """Built directly on the GPU (fast): a model that is already loaded."""
    torch.manual_seed(0)
    with torch.device("cuda"):
        return nn.Sequential(*[block(width) for _ in range(depth)])


def cpu_work(seconds):
    """CPU-only work (host matrix products) for `seconds`: no CUDA call at all."""
    end = time.monotonic() + seconds
    a = torch.randn(256, 256)
    while time.monotonic() < end:
        a = torch.tanh(a @ a)


def load_model_slowly(width, depth, startup_s):
    """A server's start-up: the model built block by block on the host and copied to the GPU (loading
    checkpoint shards), then CPU-only work (tokenizer, data, caches) until startup_s after the start. The
    long quiet phase after the first allocations is what made the time-sliced leak rule miss leaks."""
    t0 = time.monotonic()
    torch.manual_seed(0)
    model = nn.Sequential(*[block(width).to("cuda") for _ in range(depth)])
    cpu_work(startup_s - (time.monotonic() - t0))
    return model


def sleep_ms(ms):
    if ms > 0:
        time.sleep(ms / 1000)


def leaking_requests(cp, model, requests, pause_ms, width, heartbeat=True):
    """Requests that keep their outputs with the autograd graph: grad mode is on (no no_grad, no detach),
    so every activation saved for a backward that never comes stays alive behind the kept slice.
    ~110 MiB per request for width 1024 and 6 blocks. heartbeat=False: the loop makes no CUDA call but
    the allocations (no .item(), no checkpoint)."""
    kept = []
    for i in range(requests):
        x = torch.randn(2, 256, width, device="cuda")
        out = model(x)
        kept.append(out[:, -1, :])
        if heartbeat:
            int(out[0, -1].argmax())  # the answer goes back to the host: a copy and a synchronize
            cp.mark(f"request{i}", request=i)
        sleep_ms(pause_ms)
    return kept


def serve(cp, model, requests, pause_ms, width, tokens=1024, mark_every=10):
    """Inference done right: no_grad, outputs reduced to a host value and dropped. Flat after request 0."""
    with torch.no_grad():
        for i in range(requests):
            x = torch.randn(4, tokens // 4, width, device="cuda")
            float(model(x)[:, -1].norm())
            if i % mark_every == mark_every - 1:
                cp.mark(f"request{i}", request=i)
            sleep_ms(pause_ms)


def train(cp, model, opt, steps, width, tokens=1024, ramp_steps=0, mark_every=10):
    """A training loop done right (backward, step, grads set to None, loss read with .item()). With
    ramp_steps, the sequence length grows over the first ramp_steps steps (a curriculum), so the
    allocator's cache grows for several steps before it is flat."""
    torch.manual_seed(1)
    for step in range(steps):
        seq = (tokens // 8) * min(step + 1, ramp_steps) // ramp_steps if ramp_steps else tokens // 8
        x = torch.randn(8, seq, width, device="cuda")
        y = torch.randn(8, seq, width, device="cuda")
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        if step % mark_every == mark_every - 1:
            cp.mark(f"step{step}", step=step)


def serving_session(cp, width, depth, requests):
    """Loads a model and serves requests; every input and output is a local that dies on return."""
    model = mlp(width, depth)
    cp.mark("model_loaded")
    serve(cp, model, requests, 0, width)
    return model


def training_session(cp, width, depth, steps):
    model = mlp(width, depth)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    cp.mark("model_loaded")
    train(cp, model, opt, steps, width)
    return model, opt


def release(cp):
    """What users do to give memory back: collect, then empty the allocator's cache."""
    gc.collect()
    torch.cuda.empty_cache()
    cp.mark("empty_cache")


def wait_for_go(cp, go_file, timeout_s=120):
    """Holds here until the tracer has attached (record.sh creates go_file then)."""
    cp.mark("before_attach")
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(go_file):
        if time.monotonic() > deadline:
            sys.exit(f"workloads.py: {go_file} did not appear within {timeout_s} s: no tracer attached")
        time.sleep(0.05)
    cp.mark("attached")


# ---- the workloads: each takes the checkpoints and the parsed arguments ----

def leak_after_startup(cp, a):
    """A long start-up, then fast requests that each keep ~110 MiB (outputs with their graphs)."""
    model = load_model_slowly(1024, 6, a.startup_s)
    cp.mark("model_loaded")
    kept = leaking_requests(cp, model, a.requests, a.pause_ms, 1024)
    cp.mark("served", kept=len(kept))


def leak_silent(cp, a):
    """leak_after_startup whose request loop makes no CUDA call but its allocations."""
    model = load_model_slowly(1024, 6, a.startup_s)
    cp.mark("model_loaded")
    kept = leaking_requests(cp, model, a.requests, a.pause_ms, 1024, heartbeat=False)
    cp.mark("served", kept=len(kept))


def leak_slow(cp, a):
    """A feature cache that never evicts: 1.5 MiB kept per step for hundreds of steps, with 4 ms of host
    work (data loading) per step; the caching allocator serves them from 20 MiB segments, so a cudaMalloc
    comes only every ~13 steps."""
    model = mlp(1024, 2)
    cp.mark("model_loaded")
    features = []
    with torch.no_grad():
        for step in range(a.requests):
            x = torch.randn(384, 1024, device="cuda")
            y = model(x)
            features.append(y)  # 384 x 1024 fp32 = 1.5 MiB
            float(y.square().mean())
            if step % 50 == 49:
                cp.mark(f"step{step}", step=step)
            sleep_ms(a.pause_ms)
    cp.mark("done", kept=len(features))


def leak_loss_accum(cp, a):
    """Training with a validation pass per step in grad mode, accumulated as `total_val_loss += val_loss`:
    the sum keeps every validation graph and its activations (~36 MiB per step)."""
    model = mlp(1024, 4)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    cp.mark("model_loaded")
    torch.manual_seed(1)
    x, y = torch.randn(8, 128, 1024, device="cuda"), torch.randn(8, 128, 1024, device="cuda")
    xv, yv = torch.randn(2, 128, 1024, device="cuda"), torch.randn(2, 128, 1024, device="cuda")
    total_val_loss = 0
    for step in range(a.requests):
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        val_loss = F.mse_loss(model(xv), yv)
        total_val_loss += val_loss
        loss.item()
        if step % 10 == 9:
            cp.mark(f"step{step}", step=step)
    cp.mark("done", mean_val_loss=float(total_val_loss) / a.requests)


def plateau_context(cp, a):
    """Serving with a context that grows by 256 tokens per request up to a cap (--growing requests):
    each larger input needs larger blocks and the cache grows; then the remaining requests run at the
    cap and reuse the cache (flat)."""
    model = mlp(512, 2)
    cp.mark("model_loaded")
    with torch.no_grad():
        for i in range(a.requests):
            ctx = 256 * min(i + 1, a.growing)
            x = torch.randn(2, ctx, 512, device="cuda")
            float(model(x)[:, -1].norm())
            cp.mark(f"request{i}", request=i, ctx=ctx)
            sleep_ms(a.pause_ms)


def plateau_warmup(cp, a):
    """Training whose memory grows over its first 5 steps (sequence length ramped up, Adam's states
    created at the first step), then --requests - 5 flat steps."""
    model = mlp(1024, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    cp.mark("model_loaded")
    train(cp, model, opt, a.requests, 1024, ramp_steps=5)


def plateau_step(cp, a):
    """Serving inputs of 64-512 tokens; request --step-at is 4096 tokens, a new largest input once; then
    smaller ones again: a step, then flat."""
    model = mlp(1024, 4)
    cp.mark("model_loaded")
    lengths = torch.randint(64, 513, (a.requests,), generator=torch.Generator().manual_seed(0)).tolist()
    lengths[a.step_at] = 4096
    with torch.no_grad():
        for i, n in enumerate(lengths):
            x = torch.randn(1, n, 1024, device="cuda")
            float(model(x)[:, -1].norm())
            if i % 10 == 9 or i == a.step_at:
                cp.mark(f"request{i}", request=i, tokens=n)


def healthy_serving(cp, a):
    model = mlp(1024, 6)
    cp.mark("model_loaded")
    serve(cp, model, a.requests, a.pause_ms, 1024)


def healthy_training(cp, a):
    model = mlp(1024, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    cp.mark("model_loaded")
    train(cp, model, opt, a.requests, 1024)


def cache_held_idle(cp, a):
    """A GPU preprocessing stage whose 1 GiB of tensors is deleted without empty_cache(), then --idle-s
    of CPU-only work: the caching allocator keeps the segments, nvidia-smi still counts them."""
    torch.manual_seed(0)
    frames = [torch.randn(64, 1024, 1024, device="cuda") for _ in range(4)]  # 4 x 256 MiB
    means = [float(f.mean()) for f in frames]
    cp.mark("processed", frames=len(means))
    del frames
    cp.mark("deleted")
    cpu_work(a.idle_s)


def cache_held_serving(cp, a):
    """Serving, then the model dropped (gc, no empty_cache()) before --idle-s of CPU-only post-processing."""
    model = serving_session(cp, 1024, 6, a.requests)
    del model
    gc.collect()
    cp.mark("deleted")
    cpu_work(a.idle_s)


def live_after_empty_cache_list(cp, a):
    """`del model; gc.collect(); torch.cuda.empty_cache()` while a list of its parameters (kept for
    logging) still references ~800 MiB of weights: the segments that stay hold live tensors."""
    model = serving_session(cp, 2048, 6, a.requests)
    params = list(model.parameters())
    del model
    release(cp)
    cpu_work(a.idle_s)
    cp.mark("idle", stray_tensors=len(params))


def live_after_empty_cache_optimizer(cp, a):
    """The same with the optimizer left alive: it references the weights and Adam's two states
    (~576 MiB), which empty_cache() cannot return."""
    model, opt = training_session(cp, 1024, 6, a.requests)
    del model
    release(cp)
    cpu_work(a.idle_s)
    cp.mark("idle", optimizer_states=len(opt.state))


def released_clean_model(cp, a):
    """The clean counterpart of live_after_empty_cache_optimizer: model and optimizer both dropped, so
    empty_cache() returns everything but PyTorch's cuBLAS workspaces (~33 MiB, live by design)."""
    model, opt = training_session(cp, 1024, 6, a.requests)
    del model, opt
    release(cp)
    cpu_work(a.idle_s)


def released_clean_serving(cp, a):
    """The clean counterpart of live_after_empty_cache_list."""
    model = serving_session(cp, 2048, 6, a.requests)
    del model
    release(cp)
    cpu_work(a.idle_s)


def sync_loop(cp, a):
    """Many synchronizing calls: a 2048x2048 matmul (~0.3 ms on the GPU) then torch.cuda.synchronize(),
    which spins for it; every 10th step a .item(). A thread preempted meanwhile is preempted in a call."""
    torch.manual_seed(0)
    m = torch.randn(2048, 2048, device="cuda")
    cp.mark("ready")
    for i in range(a.requests):
        p = m @ m
        torch.cuda.synchronize()
        if i % 10 == 0:
            float(p[0, 0])
    cp.mark("done")


def copy_loop(cp, a):
    """Many host-to-device copies of 4 MiB from pageable memory (the driver stages them with the CPU,
    inside the call), every 10th step a copy back with .cpu()."""
    torch.manual_seed(0)
    host = torch.randn(MIB)  # 4 MiB of fp32
    cp.mark("ready")
    for i in range(a.requests):
        dev = host.to("cuda")
        if i % 10 == 0:
            dev[:1024].cpu()
    cp.mark("done")


def oom_hard(cp, a):
    """16 GiB tensors until cudaMalloc really fails (PyTorch frees its cache, retries, fails again and
    raises OutOfMemoryError); caught, everything freed and returned, clean exit."""
    held = []
    try:
        for _ in range(64):  # 1 TiB: far beyond any GPU, so the loop ends by the error
            held.append(torch.empty(16 * GIB, dtype=torch.uint8, device="cuda"))
            cp.mark(f"held{len(held)}", held=len(held))
    except torch.cuda.OutOfMemoryError as e:
        cp.mark("out_of_memory", held=len(held), error=str(e).splitlines()[0])
    del held
    release(cp)


def oom_retry(cp, a):
    """An allocation that succeeds only after PyTorch's allocator freed its cache and retried: the GPU is
    filled with 4 GiB blocks, which are deleted (cached, not returned), leaving 8-12 GiB free; then a
    12 GiB tensor is asked for: no cached block is that large and cudaMalloc fails out of memory, the
    allocator frees cached segments and retries, and the retry succeeds."""
    free, _ = torch.cuda.mem_get_info()
    chunk = 4 * GIB
    blocks = [torch.empty(chunk, dtype=torch.uint8, device="cuda") for _ in range((free - 8 * GIB) // chunk)]
    cp.mark("filled", blocks=len(blocks), free_before=free)
    del blocks
    cp.mark("cached")
    big = torch.empty(12 * GIB, dtype=torch.uint8, device="cuda")
    big[:1].zero_().item()
    cp.mark("big_allocated")
    del big
    release(cp)


def attach_leak(cp, a):
    """Holds a loaded, warmed-up model before the tracer attaches (memory the trace cannot see), then
    leaks after the attach: leaking_requests."""
    model = mlp(1024, 6)
    serve(cp, model, 3, 0, 1024)  # warm-up: cuBLAS's handle and workspaces, the allocator's first segments
    wait_for_go(cp, a.go_file)
    kept = leaking_requests(cp, model, a.requests, a.pause_ms, 1024)
    cp.mark("served", kept=len(kept))


def attach_healthy(cp, a):
    """The same process healthy after the attach: it serves requests with no_grad."""
    model = mlp(1024, 6)
    serve(cp, model, 3, 0, 1024)
    wait_for_go(cp, a.go_file)
    serve(cp, model, a.requests, a.pause_ms, 1024)


EXIT_STATE = []  # module-level: still referenced when the interpreter exits


def exit_holding_state(cp, a):
    """A simulation's state (3 grids of 256 MiB) stepped with elementwise kernels (no cuBLAS), then a
    normal exit without freeing it: PyTorch's allocator returns nothing at exit, the driver does."""
    EXIT_STATE.extend(torch.zeros(64 * MIB, device="cuda") for _ in range(3))
    u, v, w = EXIT_STATE
    for step in range(a.requests):
        u.add_(0.01)
        v.copy_(u.sin())
        w.mul_(0.5).add_(v)
        float(w[:1])
    cp.mark("stepped", steps=a.requests)


# Multi-process launchers: a parent without CUDA starting two workers at once, each a workload above.
MULTI = {
    "multi_leak": [
        ["leak_after_startup", "--startup-s", "3", "--requests", "30"],
        ["healthy_serving", "--requests", "80", "--pause-ms", "40"],
    ],
    "multi_leak_vs_warmup": [
        ["leak_after_startup", "--startup-s", "2", "--requests", "30", "--pause-ms", "50"],
        ["plateau_warmup", "--requests", "150"],
    ],
}


def launch_workers(script, multi, name, out):
    """Runs `script` once per worker of multi[name], concurrently; each writes OUT's stem + its workload name +
    .json. Returns the first non-zero exit code, else 0."""
    stem = out[:-5] if out.endswith(".json") else out
    workers = []
    for argv in multi[name]:
        cmd = [sys.executable, str(script), *argv, "--out", f"{stem}.{argv[0]}.json"]
        print(f"[{name}] starting {' '.join(cmd)}", flush=True)
        workers.append(subprocess.Popen(cmd))
    codes = [w.wait() for w in workers]
    print(f"[{name}] worker exit codes {codes}", flush=True)
    return next((c for c in codes if c != 0), 0)


WORKLOADS = {f.__name__: f for f in (
    leak_after_startup, leak_silent, leak_slow, leak_loss_accum,
    plateau_context, plateau_warmup, plateau_step, healthy_serving, healthy_training,
    cache_held_idle, cache_held_serving, live_after_empty_cache_list, live_after_empty_cache_optimizer,
    released_clean_model, released_clean_serving, sync_loop, copy_loop, oom_hard, oom_retry,
    attach_leak, attach_healthy, exit_holding_state)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload", choices=sorted([*WORKLOADS, *MULTI]))
    ap.add_argument("--out", required=True, help="checkpoints JSON to write")
    ap.add_argument("--requests", type=int, default=40, help="requests, steps or iterations")
    ap.add_argument("--pause-ms", type=float, default=0, help="pause between requests")
    ap.add_argument("--startup-s", type=float, default=4, help="start-up before the first request")
    ap.add_argument("--growing", type=int, default=25, help="plateau_context: requests whose context grows")
    ap.add_argument("--step-at", type=int, default=20, help="plateau_step: the request with the largest input")
    ap.add_argument("--idle-s", type=float, default=1.5, help="CPU-only work after releasing memory")
    ap.add_argument("--go-file", default="/tmp/vramscope-go", help="attach_*: start once this file exists")
    a = ap.parse_args()
    if a.workload in MULTI:
        sys.exit(launch_workers(Path(__file__).resolve(), MULTI, a.workload, a.out))
    Checkpoints = load_torch()
    torch.cuda.init()
    cp = Checkpoints(a.out, a.workload)
    cp.doc["argv"] = sys.argv[1:]
    cp.mark("start")
    WORKLOADS[a.workload](cp, a)
    cp.mark("end")


if __name__ == "__main__":
    main()
