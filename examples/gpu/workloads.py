#!/usr/bin/env python3
"""PyTorch workloads for validating vramscope on a real GPU.

Each workload writes a JSON file of checkpoints: at known points it
synchronizes and records torch.cuda.memory_stats() with time.monotonic_ns()
(CLOCK_MONOTONIC, the clock vramscope's records use), so compare.py can check
vramscope's numbers against PyTorch's own accounting at the same instants.

Model weights cannot be downloaded there: the model is a small Qwen2 causal
LM built from a config with random weights, which exercises the caching
allocator the same way.

    python3 workloads.py empty_cache --out stats.json
    python3 workloads.py leak --out stats.json --requests 12
    python3 workloads.py exit_holding --out stats.json
    python3 workloads.py attach --out stats.json --go-file /tmp/go   # waits for the file before working
    python3 workloads.py bench --out stats.json                      # timed work, for overhead runs
"""
import argparse
import gc
import json
import os
import time

import torch

STAT_KEYS = [
    "num_device_alloc", "num_device_free",
    "reserved_bytes.all.current", "reserved_bytes.all.peak",
    "reserved_bytes.all.allocated", "reserved_bytes.all.freed",
    "allocated_bytes.all.current", "allocated_bytes.all.peak",
]


class Checkpoints:
    def __init__(self, path, workload):
        self.path = path
        self.doc = {
            "workload": workload,
            "pid": os.getpid(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "gpu": torch.cuda.get_device_name(0),
            "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
            "checkpoints": [],
        }

    def mark(self, label, **extra):
        torch.cuda.synchronize()
        stats = torch.cuda.memory_stats()
        cp = {"label": label, "t_ns": time.monotonic_ns()}
        cp.update({k: int(stats.get(k, 0)) for k in STAT_KEYS})
        cp.update(extra)
        self.doc["checkpoints"].append(cp)
        gib = 1 << 30
        print(f"[{label}] allocated {cp['allocated_bytes.all.current'] / gib:.3f} GiB, "
              f"reserved {cp['reserved_bytes.all.current'] / gib:.3f} GiB, "
              f"gap {(cp['reserved_bytes.all.current'] - cp['allocated_bytes.all.current']) / gib:.3f} GiB",
              flush=True)
        self.save()

    def save(self):
        with open(self.path, "w") as f:
            json.dump(self.doc, f, indent=1)


def build_model():
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=12,
                         num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.eval()
    return model


def prompt(batch=4, length=64):
    return torch.randint(0, 32000, (batch, length), device="cuda")


def empty_cache(cp, rounds=3):
    """The seeds' investigation: generate, del, empty_cache; then drop the model."""
    model = build_model()
    cp.mark("model_loaded")
    for r in range(rounds):
        with torch.no_grad():
            out = model.generate(prompt(), max_new_tokens=32, do_sample=False, pad_token_id=0)
        cp.mark(f"round{r}_generated")
        del out
        torch.cuda.empty_cache()
        cp.mark(f"round{r}_empty_cache")
    del model
    gc.collect()
    cp.mark("model_deleted")
    torch.cuda.empty_cache()
    cp.mark("final_empty_cache")


def leak(cp, requests=12):
    """A serving loop that keeps every output with its autograd graph (no no_grad, no detach)."""
    model = build_model()
    cp.mark("model_loaded")
    kept = []
    for i in range(requests):
        logits = model(prompt(batch=2, length=128)).logits  # grad enabled: activations stay alive
        kept.append(logits[:, -1, :])                          # the graph keeps everything behind it
        cp.mark(f"request{i}", request=i)
    del kept, logits
    gc.collect()
    cp.mark("released")


def exit_holding(cp):
    """Allocates and exits without freeing: the driver releases it at exit."""
    held = [torch.empty(n << 20, dtype=torch.uint8, device="cuda") for n in (64, 128, 256)]
    cp.mark("holding", held=len(held))
    os._exit(0)  # no cleanup, no empty_cache


def attach(cp, go_file):
    """CUDA is initialized and some memory is held before the tracer attaches."""
    before = torch.empty(32 << 20, dtype=torch.uint8, device="cuda")
    cp.mark("before_attach")
    while not os.path.exists(go_file):
        time.sleep(0.05)
    cp.mark("attached")
    tensors = [torch.empty(n << 20, dtype=torch.uint8, device="cuda") for n in (10, 20, 40, 80)]
    cp.mark("allocated")
    del tensors
    torch.cuda.empty_cache()
    cp.mark("after_empty_cache")
    del before


def make_step():
    """One step of inference and training work, for overhead runs."""
    model = build_model()
    opt_model = build_model().train()
    opt = torch.optim.SGD(opt_model.parameters(), lr=1e-4)
    def step():
        with torch.no_grad():
            model.generate(prompt(), max_new_tokens=32, do_sample=False, pad_token_id=0)
        loss = opt_model(prompt(batch=4, length=256), labels=prompt(batch=4, length=256)).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    step()  # warm-up: kernels loaded, allocator cache filled
    return step


def bench(cp, rounds=8):
    """A fixed number of steps, each timed."""
    step = make_step()
    steps = []
    for _ in range(rounds):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        steps.append(time.perf_counter() - t0)
    cp.doc["elapsed_s"] = sum(steps)
    cp.doc["step_s"] = steps
    cp.mark("timed")


def bench_loop(cp, seconds):
    """Steps for `seconds`, each stamped with CLOCK_MONOTONIC: a tracer attaches and detaches
    meanwhile, so traced and untraced windows of the same process can be compared."""
    step = make_step()
    cp.doc["steps"] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        torch.cuda.synchronize()
        t0 = time.monotonic_ns()
        step()
        torch.cuda.synchronize()
        cp.doc["steps"].append([t0, time.monotonic_ns()])
    cp.mark("done")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workload", choices=["empty_cache", "leak", "exit_holding", "attach", "bench", "bench_loop"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--requests", type=int, default=12)
    ap.add_argument("--go-file", default="/tmp/vramscope-go")
    ap.add_argument("--seconds", type=float, default=240)
    args = ap.parse_args()
    torch.cuda.init()
    cp = Checkpoints(args.out, args.workload)
    cp.mark("start")
    if args.workload == "empty_cache":
        empty_cache(cp)
    elif args.workload == "leak":
        leak(cp, args.requests)
    elif args.workload == "exit_holding":
        exit_holding(cp)
    elif args.workload == "bench":
        bench(cp)
    elif args.workload == "bench_loop":
        bench_loop(cp, args.seconds)
    else:
        attach(cp, args.go_file)
    cp.mark("end")


if __name__ == "__main__":
    main()
