#!/usr/bin/env python3
"""Held-out workloads for vramscope's diagnosis corpus (manifest.json entries with "set": "heldout").

The workloads of workloads.py were recorded while the findings' rules were tuned; these were written
afterwards, without looking at the rules, to measure the rules on programs they were not fitted to. They
differ from workloads.py in shape, not only in numbers: a transformers model's generate() with its
past_key_values kept per session, convolutional training keeping metrics as GPU tensors (sub-MiB blocks
from the small pool), batch sizes that depend on the data, an LRU cache that evicts, a preallocated KV
cache, a leak that starts halfway through the run, tensors made on a side stream, cudaMallocAsync serving,
a notebook's output history, reference cycles under gc.disable(), a second worker that leaks, a single
request too large for any GPU. The right answer for each is the one a user needs (manifest.json `why`).

Like workloads.py, whose helpers they import (torch is loaded by workloads.load_torch(), and Checkpoints
comes from examples/gpu/workloads.py), every workload records torch.cuda.memory_stats() checkpoints stamped
with CLOCK_MONOTONIC (examples/gpu/compare.py checks the trace against them), is seeded (torch.manual_seed,
random.Random(--seed) for data-dependent sizes), holds MiBs to a few GiB and works a few seconds; every
request or step makes at least one probed CUDA call that is not an allocation (.item(), .cpu(), .tolist(),
a host-to-device copy, a synchronize).

    python3 heldout.py conv_metrics_leak --out stats.json [--requests 300 --seed 0 ...]
    python3 heldout.py multi_second_leaks --out stats.json   # a launcher without CUDA; its two workers write
                                                             # stats.random_batch_plateau.json, stats.conv_metrics_leak.json
Each workload's defaults (DEFAULTS) are what record.sh records (CORPUS_SET=heldout bash record.sh OUTDIR).
"""
import argparse
import collections
import gc
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import workloads as wl  # noqa: E402  (no torch at import: wl.load_torch() loads it)

MIB = wl.MIB
GIB = wl.GIB

torch = None
nn = None
F = None


def load_torch():
    """torch through workloads.py (which its helpers use too), and the Checkpoints class."""
    global torch, nn, F
    checkpoints = wl.load_torch()
    torch, nn, F = wl.torch, wl.nn, wl.F
    return checkpoints


# ---- building blocks ----

def qwen(hidden=512, layers=8, heads=8, kv_heads=8, vocab=32000):
    """A small Qwen2 causal LM with random weights, built on the GPU in bf16 (no download: as
    examples/gpu/workloads.py). head_dim 64; its KV cache is layers x 2 x batch x kv_heads x tokens x 64 x 2 B."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=2048)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.eval()
    return model


def convnet(classes=1000):
    """A small CIFAR-style classifier: 3 conv/BN/ReLU stages (cuDNN), global pooling, a linear head."""
    torch.manual_seed(0)
    with torch.device("cuda"):
        return nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(128, 256, 3, padding=1), nn.BatchNorm2d(256), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, classes))


IMAGES = 2048  # the host-side data set of the convolutional workloads


def image_dataset(classes=1000):
    """A data set in host memory (what a DataLoader yields): 2048 images 3x32x32 and their labels."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(IMAGES, 3, 32, 32, generator=g), torch.randint(0, classes, (IMAGES,), generator=g)


def naive_attention(q, k, v):
    """Attention with the full n x n score matrix materialized (no fused kernel)."""
    scores = (q @ k.transpose(-2, -1)) / 8.0
    return scores.softmax(-1) @ v


class StaticKVDecoder:
    """A decoder-only model (pre-norm attention and MLP blocks) whose KV cache is allocated once for
    batch x max_len and reused by every request, as serving engines do: requests write their keys and
    values into it at their positions and attend over its prefix."""

    def __init__(self, width=1024, layers=4, heads=16, vocab=32000, batch=8, max_len=1024):
        torch.manual_seed(0)
        self.width, self.layers, self.heads, self.batch = width, layers, heads, batch
        with torch.device("cuda"):
            self.embed = nn.Embedding(vocab, width)
            self.norm1 = [nn.LayerNorm(width) for _ in range(layers)]
            self.qkv = [nn.Linear(width, 3 * width) for _ in range(layers)]
            self.proj = [nn.Linear(width, width) for _ in range(layers)]
            self.norm2 = [nn.LayerNorm(width) for _ in range(layers)]
            self.mlp = [wl.block(width) for _ in range(layers)]
            self.head = nn.Linear(width, vocab)
            # 4 x 8 x 16 x 1024 x 64 fp32 = 128 MiB each, allocated once
            self.k = torch.zeros(layers, batch, heads, max_len, width // heads)
            self.v = torch.zeros(layers, batch, heads, max_len, width // heads)

    def forward(self, tokens, start, length):
        """tokens: batch x length ids at positions start..start+length-1; the last position's logits."""
        b, t, h, d = self.batch, length, self.heads, self.width // self.heads
        end = start + t
        x = self.embed(tokens)
        for i in range(self.layers):
            qkv = self.qkv[i](self.norm1[i](x)).view(b, t, 3, h, d).permute(2, 0, 3, 1, 4)
            self.k[i, :, :, start:end] = qkv[1]
            self.v[i, :, :, start:end] = qkv[2]
            a = F.scaled_dot_product_attention(qkv[0], self.k[i, :, :, :end], self.v[i, :, :, :end], is_causal=t > 1)
            x = x + self.proj[i](a.transpose(1, 2).reshape(b, t, self.width))
            x = x + self.mlp[i](self.norm2[i](x))
        return self.head(x[:, -1])


class Notebook:
    """Cells run in order in one namespace, with IPython's output history: a cell's value is displayed
    (its repr: a copy to the host for a tensor), stored in Out[n] and in _ (the previous ones shift to __
    and ___). Nothing in it is dropped until %reset."""

    def __init__(self):
        self.ns = {"Out": {}, "_": None, "__": None, "___": None}
        self.count = 0

    def run(self, cell):
        self.count += 1
        value = cell(self.ns)
        if value is not None:
            repr(value)
            self.ns["Out"][self.count] = value
            self.ns["___"], self.ns["__"], self.ns["_"] = self.ns["__"], self.ns["_"], value
        return value

    def reset_out(self):
        """%reset -f out: the output history and _, __, ___ dropped."""
        self.ns["Out"].clear()
        self.ns["_"] = self.ns["__"] = self.ns["___"] = None


def notebook_session(cp, a, reset_out_first):
    """Cells: build a 2048-wide model (~512 MiB), make an input, evaluate the model twice (grad mode, as
    in a notebook: each output keeps its autograd graph, ~300 MiB of activations, and the weights), look at
    a mean; then the cell users write to free the GPU: del model, x; gc.collect(); empty_cache()."""
    nb = Notebook()
    nb.run(lambda ns: ns.update(model=wl.mlp(2048, 4)))
    nb.run(lambda ns: ns.update(x=torch.randn(4, 256, 2048, device="cuda")))
    cp.mark("model_loaded")
    nb.run(lambda ns: ns["model"](ns["x"]))
    nb.run(lambda ns: ns["model"](ns["x"] * 2))
    nb.run(lambda ns: float(ns["_"].mean()))
    cp.mark("evaluated", outputs=len(nb.ns["Out"]))
    if reset_out_first:
        nb.reset_out()

    def free_gpu(ns):
        del ns["model"], ns["x"]
        gc.collect()
        torch.cuda.empty_cache()

    nb.run(free_gpu)
    cp.mark("empty_cache", outputs_kept=len(nb.ns["Out"]))
    nb.run(lambda ns: wl.cpu_work(a.idle_s))  # the next cells: plotting, pandas, on the host


# ---- the workloads: each takes the checkpoints and the parsed arguments ----

def kv_cache_dict_leak(cp, a):
    """A chat server keeps each conversation's past_key_values in a dict by session id, to resume it on
    the user's next turn; the users do not come back and nothing evicts them. generate() of 32 tokens
    after a 112-token prompt, batch 8: 8 layers x 2 x 8 x 8 heads x 144 x 64 bf16 = 18 MiB kept per request."""
    model = qwen()
    cp.mark("model_loaded")
    sessions = {}
    with torch.no_grad():
        for i in range(a.requests):
            prompt = torch.randint(0, 32000, (8, 112), device="cuda")
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=32,
                                 do_sample=False, pad_token_id=0, return_dict_in_generate=True)
            sessions[f"session-{i}"] = out.past_key_values
            out.sequences[:, 112:].cpu()  # the reply, detokenized on the host
            if i % 5 == 4:
                cp.mark(f"request{i}", request=i, sessions=len(sessions))
    cp.mark("served", sessions=len(sessions))


def conv_training(cp, a, keep_tensors):
    """SGD training of convnet() on batches of 256 images copied from host memory (a copy per step).
    keep_tensors: the history keeps each step's loss and logits as GPU tensors for an end-of-training
    accuracy plot (`history.append({"loss": loss, "logits": logits})`; 256 x 1000 fp32 logits = 1000 KiB
    per step, sub-MiB blocks from the allocator's small pool), and each step is timed with a synchronize.
    Else the loop done right: loss.item() and the number of correct predictions as Python numbers."""
    model = convnet()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = image_dataset()
    cp.mark("model_loaded")
    history = []
    batch = 256
    for step in range(a.requests):
        lo = step * batch % IMAGES
        x, y = images[lo:lo + batch].to("cuda"), labels[lo:lo + batch].to("cuda")
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if keep_tensors:
            history.append({"loss": loss, "logits": logits, "labels": y})
            torch.cuda.synchronize()  # the step's time, for the throughput log
        else:
            history.append({"loss": loss.item(), "correct": int(logits.argmax(1).eq(y).sum())})
        if step % 25 == 24:
            cp.mark(f"step{step}", step=step)
    if keep_tensors:
        mean_loss = float(torch.stack([h["loss"] for h in history]).mean())
    else:
        mean_loss = float(sum(h["loss"] for h in history)) / len(history)
    cp.mark("trained", steps=len(history), mean_loss=mean_loss)


def conv_metrics_leak(cp, a):
    conv_training(cp, a, keep_tensors=True)


def conv_training_healthy(cp, a):
    conv_training(cp, a, keep_tensors=False)


def random_batch_plateau(cp, a):
    """Training whose batch size depends on the data (samples filtered on the fly): each step n sequences
    of 16 tokens, n drawn from 32, 64, ..., 512 (random.Random(--seed)). Memory grows with each new largest
    batch and stops at the largest, 512 (with seed 2: new largest batches at steps 1, 3, 10, 13 and 43 of
    200), then the remaining steps reuse the cache."""
    rng = random.Random(a.seed)
    sizes = [rng.randrange(32, 513, 32) for _ in range(a.requests)]
    new_highs = [i for i in range(len(sizes)) if i == 0 or sizes[i] > max(sizes[:i])]
    cp.doc["batch_sizes"] = sizes
    cp.doc["new_largest_batch_at"] = new_highs
    model = wl.mlp(1024, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    cp.mark("model_loaded")
    for step, n in enumerate(sizes):
        x = torch.randn(n, 16, 1024, device="cuda")
        y = torch.randn(n, 16, 1024, device="cuda")
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        if step in new_highs or step % 25 == 24:
            cp.mark(f"step{step}", step=step, batch=n)


def lru_cache_plateau(cp, a):
    """A feature server with a per-user GPU cache that evicts (an OrderedDict used as an LRU of --capacity
    entries of 4 MiB): users drawn from 200 (random.Random(--seed)); a miss computes the user's features
    and evicts the least recently used entry beyond the capacity. The cache fills, then stays at its
    capacity (each miss frees one entry and makes another of the same size)."""
    rng = random.Random(a.seed)
    model = wl.mlp(1024, 2)
    cp.mark("model_loaded")
    cache = collections.OrderedDict()
    misses = 0
    with torch.no_grad():
        for i in range(a.requests):
            user = rng.randrange(200)
            feats = cache.get(user)
            if feats is None:
                misses += 1
                feats = model(torch.randn(1024, 1024, device="cuda"))  # 4 MiB
                cache[user] = feats
                if len(cache) > a.capacity:
                    cache.popitem(last=False)
            else:
                cache.move_to_end(user)
            query = torch.randn(64, 1024, device="cuda")
            float((query @ feats.T).max())
            del feats
            if i % 20 == 19:
                cp.mark(f"request{i}", request=i, cached=len(cache), misses=misses)


def kv_prealloc_healthy(cp, a):
    """Serving with StaticKVDecoder: per request a 128-token prompt (batch 8) prefilled into the
    preallocated cache, then 64 tokens decoded one at a time, each streamed to the client (.cpu())."""
    dec = StaticKVDecoder()
    cp.mark("model_loaded")
    prompt_len, new_tokens = 128, 64
    with torch.inference_mode():
        for i in range(a.requests):
            prompt = torch.randint(0, 32000, (dec.batch, prompt_len), device="cuda")
            logits = dec.forward(prompt, 0, prompt_len)
            for t in range(new_tokens):
                nxt = logits.argmax(-1, keepdim=True)
                nxt.cpu()
                logits = dec.forward(nxt, prompt_len + t, 1)
            if i % 5 == 4:
                cp.mark(f"request{i}", request=i)


def late_phase_leak(cp, a):
    """Serving that is healthy until request --phase-at, when a configuration reload switches on a debug
    capture of activations (a forward hook on every block appending its output to a list for a dump
    that never comes): from then on every request keeps 4 x 4 MiB."""
    model = wl.mlp(1024, 4)
    cp.mark("model_loaded")
    captured = []
    with torch.no_grad():
        for i in range(a.requests):
            if i == a.phase_at:
                for blk in model:
                    blk.register_forward_hook(lambda module, inputs, output: captured.append(output))
                cp.mark("capture_enabled", request=i)
            x = torch.randn(4, 256, 1024, device="cuda")
            float(model(x)[:, -1].norm())
            if i % 10 == 9:
                cp.mark(f"request{i}", request=i, captured=len(captured))
    cp.mark("served", captured=len(captured))


def stream_prefetch_leak(cp, a):
    """Batches prefetched on a side stream (copies from pinned host memory, record_stream for the main
    stream) into a queue that the consumer indexes but never pops: 128 x 1024 fp32 = 512 KiB kept per
    step, made on the side stream, with --pause-ms of host work per step. record.sh runs it with
    expandable segments."""
    model = wl.mlp(1024, 2)
    side = torch.cuda.Stream()
    main = torch.cuda.current_stream()
    torch.manual_seed(0)
    host = [torch.randn(128, 1024).pin_memory() for _ in range(8)]
    cp.mark("model_loaded")
    queue = []
    with torch.no_grad():
        for step in range(a.requests):
            with torch.cuda.stream(side):
                queue.append(host[step % 8].to("cuda", non_blocking=True))
            main.wait_stream(side)
            batch = queue[step]
            batch.record_stream(main)
            float(model(batch).mean())
            wl.sleep_ms(a.pause_ms)
            if step % 50 == 49:
                cp.mark(f"step{step}", step=step, queued=len(queue))
    cp.mark("done", queued=len(queue))


def async_serving_healthy(cp, a):
    """A reranker served under inference_mode: embedding + 4 nn.TransformerEncoderLayer (d_model 512) +
    a scoring head; each request 16 candidates of 64, 128 or 256 tokens (random.Random(--seed)), the top 5
    sent back with .tolist(). record.sh runs it with PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync."""
    rng = random.Random(a.seed)
    lengths = [rng.choice((64, 128, 256)) for _ in range(a.requests)]
    torch.manual_seed(0)
    with torch.device("cuda"):
        embed = nn.Embedding(32000, 512)
        encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(512, 8, 2048, batch_first=True), num_layers=4)
        head = nn.Linear(512, 1)
    encoder.eval()
    cp.mark("model_loaded")
    with torch.inference_mode():
        for i, n in enumerate(lengths):
            tokens = torch.randint(0, 32000, (16, n), device="cuda")
            scores = head(encoder(embed(tokens)).mean(1)).squeeze(1)
            scores.topk(5).indices.tolist()
            if i % 10 == 9:
                cp.mark(f"request{i}", request=i, tokens=n)


def notebook_live_after_empty_cache(cp, a):
    """notebook_session: Out[3] and Out[4] (and __, ___) still hold both outputs with their graphs, which
    hold activations and the weights: empty_cache() cannot return their segments."""
    notebook_session(cp, a, reset_out_first=False)


def notebook_reset_clean(cp, a):
    """notebook_session with %reset -f out before the freeing cell: nothing references the outputs."""
    notebook_session(cp, a, reset_out_first=True)


class Request:
    """A request object whose completion callback is a closure over itself: a reference cycle, so the
    request and its GPU tensors are freed only by the cyclic garbage collector, not when it goes out of
    scope."""

    def __init__(self, rid, hidden):
        self.rid = rid
        self.hidden = hidden  # the per-block hidden states of the request, on the GPU
        self.on_done = lambda: [float(h[:, -1].norm()) for h in self.hidden]


def gc_cycle_clean(cp, a):
    """Serving with the cyclic gc disabled in the request path (against gc pauses) and gc.collect() every
    10 requests: each request's cycle keeps 4 x 4 MiB until the next collection (a sawtooth within the
    allocator's cache). At the end: del model, gc.collect(), empty_cache(): everything returned, then
    --idle-s of host work."""
    model = wl.mlp(1024, 4)
    cp.mark("model_loaded")
    gc.disable()
    collected = 0
    with torch.no_grad():
        for i in range(a.requests):
            x = torch.randn(4, 256, 1024, device="cuda")
            hidden = []
            for blk in model:
                x = blk(x)
                hidden.append(x)
            req = Request(i, hidden)
            req.on_done()
            del req, hidden, x
            if i % 10 == 9:
                collected += gc.collect()
                cp.mark(f"request{i}", request=i, collected=collected)
    gc.enable()
    del model
    wl.release(cp)  # gc.collect(), empty_cache()
    wl.cpu_work(a.idle_s)


def cache_held_after_eval(cp, a):
    """Training (workloads.train), then a final evaluation with a large batch (64 x 512 tokens: ~1 GiB of
    temporaries, freed when it returns), then the checkpoint copied to the host and serialized on the CPU
    for --idle-s, with no empty_cache(): the evaluation's segments stay in the allocator's cache."""
    model = wl.mlp(1024, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    cp.mark("model_loaded")
    wl.train(cp, model, opt, a.requests, 1024)
    with torch.no_grad():
        total = 0.0
        for _ in range(4):
            x = torch.randn(64, 512, 1024, device="cuda")
            total += float(model(x).square().mean())
        del x
    cp.mark("evaluated", val_loss=total / 4)
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    cp.mark("checkpoint_copied", tensors=len(state))
    wl.cpu_work(a.idle_s)


def oom_single_request(cp, a):
    """An attention service computing attention naively (the n x n scores materialized), 8 heads of 64.
    Requests of 512-2048 tokens (random.Random(--seed)) are served; request --big-at asks for 131072 tokens:
    its scores are 8 x 131072^2 fp32 = 512 GiB, more than any GPU holds: cudaMalloc fails, PyTorch frees
    its cache and retries, fails again and raises OutOfMemoryError. The server rejects that request and
    serves the next ones."""
    rng = random.Random(a.seed)
    torch.manual_seed(0)
    with torch.device("cuda"):
        proj = nn.Linear(512, 3 * 512)
    cp.mark("model_loaded")
    rejected = 0
    with torch.no_grad():
        for i in range(a.requests):
            n = 131072 if i == a.big_at else rng.randrange(512, 2049, 128)
            try:
                x = torch.randn(1, n, 512, device="cuda")
                qkv = proj(x).view(1, n, 3, 8, 64).permute(2, 0, 3, 1, 4)
                out = naive_attention(qkv[0], qkv[1], qkv[2])
                float(out.norm())
            except torch.cuda.OutOfMemoryError as e:
                rejected += 1
                cp.mark("out_of_memory", request=i, tokens=n, error=str(e).splitlines()[0])
            x = qkv = out = None
            if i % 5 == 4:
                cp.mark(f"request{i}", request=i, rejected=rejected)


# Multi-process launchers: a parent without CUDA starting two workers at once, each a workload above.
# In multi_second_leaks the worker started second leaks; the first grows early (new largest batches) and
# then stays flat.
MULTI = {
    "multi_second_leaks": [
        ["random_batch_plateau"],
        ["conv_metrics_leak"],
    ],
}


# Each workload and its default --requests (what record.sh records).
DEFAULTS = {
    kv_cache_dict_leak: 30,
    conv_metrics_leak: 300,
    conv_training_healthy: 300,
    random_batch_plateau: 200,
    lru_cache_plateau: 250,
    kv_prealloc_healthy: 24,
    late_phase_leak: 120,
    stream_prefetch_leak: 600,
    async_serving_healthy: 80,
    notebook_live_after_empty_cache: 0,
    notebook_reset_clean: 0,
    gc_cycle_clean: 60,
    cache_held_after_eval: 40,
    oom_single_request: 30,
}
WORKLOADS = {f.__name__: f for f in DEFAULTS}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload", choices=sorted([*WORKLOADS, *MULTI]))
    ap.add_argument("--out", required=True, help="checkpoints JSON to write")
    ap.add_argument("--requests", type=int, help="requests, steps or iterations (default: the workload's)")
    ap.add_argument("--pause-ms", type=float, default=3, help="stream_prefetch_leak: host work per step")
    ap.add_argument("--seed", type=int, help="random.Random seed of data-dependent sizes (default: the workload's)")
    ap.add_argument("--phase-at", type=int, default=60, help="late_phase_leak: the request where the leak starts")
    ap.add_argument("--capacity", type=int, default=48, help="lru_cache_plateau: entries the cache keeps")
    ap.add_argument("--big-at", type=int, default=15, help="oom_single_request: the too-large request")
    ap.add_argument("--idle-s", type=float, default=1.0, help="host-only work at the end")
    a = ap.parse_args()
    if a.workload in MULTI:
        sys.exit(wl.launch_workers(Path(__file__).resolve(), MULTI, a.workload, a.out))
    workload = WORKLOADS[a.workload]
    if a.requests is None:
        a.requests = DEFAULTS[workload]
    if a.seed is None:
        a.seed = 2 if workload is random_batch_plateau else 0
    checkpoints = load_torch()
    torch.cuda.init()
    cp = checkpoints(a.out, a.workload)
    cp.doc["argv"] = sys.argv[1:]
    cp.doc["set"] = "heldout"
    cp.mark("start")
    workload(cp, a)
    cp.mark("end")


if __name__ == "__main__":
    main()
