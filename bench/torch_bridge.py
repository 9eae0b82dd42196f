#!/usr/bin/env python3
"""A PyTorch training loop with torch.nn.GRU vs the same model after ``rnnkit.torch.convert``.

Usage::

    python bench/torch_bridge.py [--threads 1 2] [--steps 300] [--block 25] [--json out.json]

The model is an embedding -> 2-layer bidirectional GRU -> linear tagger (vocab 1000, embedding
64, hidden 128, batch_first), trained with per-step cross-entropy and ``torch.optim.Adam`` on
synthetic batches (batch 32, sequence length 50; the tag of a step is the previous token mod 10).
One training step = ``zero_grad``, forward, loss, ``backward``, ``optimizer.step``, timed with
``perf_counter``.

Both variants live in one process and start from the same weights, each with its own Adam, and see
the same batches. They are **interleaved in blocks**: ``--block`` steps of torch.nn, then the same
steps of rnnkit, and so on. Blocks rather than single steps, because both libraries' thread pools
keep spinning for a moment after a call and would steal the cores from a step of the other library
started right after; a noisy stretch of the machine still hits both. The first block of each is a
warm-up and is not counted. Threads: ``torch.set_num_threads(n)`` and ``rnnkit.set_num_threads(n)``
together. Reported: min / median / max step time in ms and the ratio of the medians
(torch.nn / rnnkit: above 1 means rnnkit is faster), with the load average before and after.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from typing import Dict, List

import torch

import rnnkit
import rnnkit.torch

VOCAB, EMB, HIDDEN, TAGS, T, N = 1000, 64, 128, 10, 50, 32


class Tagger(torch.nn.Module):
    """embedding -> 2-layer bidirectional GRU -> linear, per-step logits ``[N, T, TAGS]``."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(VOCAB, EMB)
        self.gru = torch.nn.GRU(EMB, HIDDEN, num_layers=2, bidirectional=True, batch_first=True)
        self.head = torch.nn.Linear(2 * HIDDEN, TAGS)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.emb(tokens))
        return self.head(out)


def batches(n: int, seed: int = 0) -> List[tuple]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        tokens = torch.randint(0, VOCAB, (N, T), generator=g)
        tags = torch.roll(tokens, 1, dims=1) % TAGS
        out.append((tokens, tags))
    return out


def step(model: torch.nn.Module, opt: torch.optim.Optimizer, tokens: torch.Tensor, tags: torch.Tensor) -> float:
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(tokens).reshape(-1, TAGS), tags.reshape(-1))
    loss.backward()
    opt.step()
    return loss.item()


def run(threads: int, steps: int, block: int) -> Dict[str, object]:
    torch.set_num_threads(threads)
    rnnkit.set_num_threads(threads)
    torch.manual_seed(0)
    ref = Tagger()
    fast = rnnkit.torch.convert(copy.deepcopy(ref))
    variants = {"torch.nn": ref, "rnnkit": fast}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-3) for k, m in variants.items()}
    data = batches(steps + block)
    times: Dict[str, List[float]] = {k: [] for k in variants}
    losses: Dict[str, List[float]] = {k: [] for k in variants}
    load_before = os.getloadavg()
    for start in range(0, steps + block, block):
        for name, model in variants.items():
            for tokens, tags in data[start:start + block]:
                t0 = time.perf_counter()
                loss = step(model, opts[name], tokens, tags)
                dt = time.perf_counter() - t0
                if start >= block:          # the first block is the warm-up
                    times[name].append(dt * 1e3)
                losses[name].append(loss)
    load_after = os.getloadavg()
    res: Dict[str, object] = {"threads": threads, "steps": steps, "block": block,
                              "load_before": load_before, "load_after": load_after}
    for name, ts in times.items():
        res[name] = {"min": min(ts), "median": statistics.median(ts), "max": max(ts),
                     "final_loss": statistics.mean(losses[name][-block:])}
    res["ratio"] = res["torch.nn"]["median"] / res["rnnkit"]["median"]  # type: ignore[index]
    return res


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=300, help="timed steps per variant (after a warm-up block)")
    ap.add_argument("--block", type=int, default=25, help="steps per block of one variant")
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args(argv)
    info = rnnkit.build_info()
    print(f"torch {torch.__version__}, rnnkit {rnnkit.__version__} ({info.get('simd')}), "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"model: Embedding({VOCAB}, {EMB}) -> GRU({EMB}, {HIDDEN}, num_layers=2, bidirectional) -> "
          f"Linear({2 * HIDDEN}, {TAGS}); batch {N}, length {T}, Adam, cross-entropy")
    print(f"{args.steps} timed steps per variant, interleaved in blocks of {args.block} (+1 warm-up block)\n")
    print(f"{'threads':>7} {'variant':>9} {'min ms':>8} {'median':>8} {'max':>8} {'loss':>7}   load avg (1 min)")
    results = []
    for n in args.threads:
        r = run(n, args.steps, args.block)
        results.append(r)
        for name in ("torch.nn", "rnnkit"):
            s = r[name]
            print(f"{n:>7} {name:>9} {s['min']:8.2f} {s['median']:8.2f} {s['max']:8.2f} {s['final_loss']:7.3f}"
                  + (f"   {r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f}" if name == "rnnkit" else ""))
        print(f"{'':>7} ratio of medians torch.nn / rnnkit: {r['ratio']:.2f}x\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
