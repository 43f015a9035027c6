"""What embedding a pool costs: seconds per 10,000 prompts for each embedder, uncached.

GPS and test-time allocation read every prompt's embedding, so a pool is embedded once before
training (and, with ``rollwise train --embed-refresh-steps``, again every few steps). This times
``--embedders`` on ``--prompts`` prompts of the default world's pool (reasoning-gym, seeded; or a
``--pool`` prompt file) with the cache off, ``--repeats`` times, with ``--threads`` torch threads
(one entry per count), and reports the median scaled to 10,000 prompts (embedding is linear in
the prompts: batches are sorted by length and independent). A GPU, where there is one, runs
the ``hf:`` embedders on it; the report names the device.

    python benchmarks/embedder_cost.py --prompts 2000 --threads 1 2 --out benchmarks/results/embedder_cost
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from provenance import provenance

from rollwise._io import atomic_write_json, atomic_write_report
from rollwise.embed import embed_texts, get_embedder
from rollwise.llm.models import resolve_embedder


def pool_texts(args: argparse.Namespace) -> list[str]:
    if args.pool:
        from rollwise.feedback import load_prompt_file

        texts = list(load_prompt_file(args.pool).texts)
    else:
        from rollwise.sim import reasoning_gym_sets

        texts = list(reasoning_gym_sets()[0].texts)
    if len(texts) < args.prompts:
        raise SystemExit(f"--prompts: the pool has only {len(texts)} prompts")
    rng = np.random.default_rng(0)
    return [texts[i] for i in rng.choice(len(texts), args.prompts, replace=False)]


def time_embedder(name: str, texts: list[str], repeats: int) -> list[float]:
    embedder = get_embedder(name)  # loading is not timed: a run loads it once
    embed_texts(texts[:8], embedder, use_cache=False)  # warm-up
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        embed_texts(texts, embedder, use_cache=False)
        seconds.append(time.perf_counter() - t0)
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embedders", nargs="+", default=["wordllama", "hf:smollm2"])
    p.add_argument("--prompts", type=int, default=2000)
    p.add_argument("--pool", help="a prompt file (default: the default world's training pool)")
    p.add_argument("--threads", type=int, nargs="+", default=[1])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/embedder_cost")
    args = p.parse_args()
    if args.prompts < 1 or args.repeats < 1 or min(args.threads) < 1:
        raise SystemExit("--prompts, --repeats and --threads must be >= 1")
    names = [resolve_embedder(e) for e in args.embedders]  # refused before any timing
    texts = pool_texts(args)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for given, name in zip(args.embedders, names, strict=True):
            seconds = time_embedder(name, texts, args.repeats)
            median = statistics.median(seconds)
            rows.append({"embedder": given, "threads": threads, "seconds": seconds,
                         "per_10k_prompts_s": median * 10_000 / len(texts)})
            print(f"{given} threads={threads}: {median:.1f} s for {len(texts)} prompts "
                  f"({rows[-1]['per_10k_prompts_s']:.0f} s per 10k)", flush=True)
    lengths = [len(t) for t in texts]
    result = {"args": vars(args), "device": device, "cores": os.cpu_count(),
              "prompts": len(texts), "mean_characters": float(np.mean(lengths)), "rows": rows,
              "provenance": provenance()}
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), result, make_parents=True)
    lines = ["# Embedding cost per 10,000 prompts (uncached)", "",
             f"{len(texts)} prompts ({'the default world' if not args.pool else Path(args.pool).name}; "
             f"mean {np.mean(lengths):.0f} characters) on {device}; median of {args.repeats}.", "",
             "| embedder | torch threads | seconds per 10k prompts | runs (s) |", "|---|---|---|---|"]
    lines += [f"| `{r['embedder']}` | {r['threads']} | {r['per_10k_prompts_s']:.0f} | "
              f"{', '.join(f'{s:.1f}' for s in r['seconds'])} |" for r in rows]
    atomic_write_report(out.with_suffix(".md"), "\n".join(lines) + "\n", make_parents=True)


if __name__ == "__main__":
    main()
