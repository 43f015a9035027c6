"""Torch threads for the policy on a CPU: SmolLM2-135M-Instruct sampling and a training pass,
with 1 .. all cores, on a quiet machine and beside busy processes.

What ``rollwise train`` runs on a CPU is mostly the policy: sampling the group's completions and
one forward/backward pass over them. :func:`rollwise.threads.model_threads` picks the policy's
torch threads (one less than the usable cores); this benchmark is the measurement behind that
default. Each configuration times ``--repeats`` rounds of: sample ``--prompts`` arithmetic
prompts x ``--max-new-tokens`` tokens (temperature 1, fixed seed), then a forward and backward
pass of the language-model loss on the prompts with their completions. "loaded" starts
``--load`` busy processes (a pure-Python loop each, standing for dataloader workers, reward code
or a second experiment) before the timing and stops them after. Reported: the median round::

    python benchmarks/model_threads.py                  # threads 1 .. cores, quiet and loaded
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from overhead import busy  # the same busy processes as the selector's overhead benchmark


def one_round(policy, prompts: list[str]) -> tuple[float, float]:
    """Seconds to sample ``prompts`` and to run a forward/backward pass over the result."""
    t0 = time.perf_counter()
    completions = policy(prompts)
    t1 = time.perf_counter()
    tok = policy.tokenizer
    texts = [p + c for p, c in zip(prompts, completions, strict=True)]
    batch = tok(texts, return_tensors="pt", padding=True)
    policy.model.train()
    out = policy.model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    policy.model.zero_grad(set_to_none=True)
    policy.model.eval()
    return t1 - t0, time.perf_counter() - t1


def measure(policy, prompts: list[str], threads: int, repeats: int) -> dict:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        one_round(policy, prompts[:2])  # warm-up: allocator, kernels
        rounds = np.array([one_round(policy, prompts) for _ in range(repeats)])
    finally:
        torch.set_num_threads(before)
    return {"threads": threads, "sample_s": float(np.median(rounds[:, 0])),
            "train_pass_s": float(np.median(rounds[:, 1])),
            "round_s": float(np.median(rounds.sum(axis=1))),
            "rounds_s": [round(float(t), 3) for t in rounds.sum(axis=1)]}


def markdown(data: dict) -> str:
    meta = data["meta"]
    lines = [
        "# Policy threads on a CPU (SmolLM2-135M-Instruct)", "",
        "Written by `benchmarks/model_threads.py`. A round = sample "
        f"{meta['prompts']} prompts x {meta['max_new_tokens']} tokens + one forward/backward pass "
        f"over them; median of {meta['repeats']} rounds. {meta['cpus']} CPUs; loaded = "
        f"{meta['load_processes']} busy process(es) beside the timing; torch {meta['torch']}. "
        f"`rollwise.threads.model_threads()` here: {meta['default_threads']}.", "",
        "| torch threads | quiet: sample + train pass (s) | quiet round (s) | "
        "loaded: sample + train pass (s) | loaded round (s) | loaded/quiet |",
        "|---:|---|---:|---|---:|---:|",
    ]
    by = {(r["threads"], r["mode"]): r for r in data["rows"]}
    for t in sorted({r["threads"] for r in data["rows"]}):
        q, ld = by.get((t, "quiet")), by.get((t, "loaded"))
        parts = lambda r: f"{r['sample_s']:.1f} + {r['train_pass_s']:.1f}" if r else "-"  # noqa: E731
        whole = lambda r: f"{r['round_s']:.1f}" if r else "-"  # noqa: E731
        ratio = f"{ld['round_s'] / q['round_s']:.2f}" if q and ld else "-"
        lines.append(f"| {t} | {parts(q)} | {whole(q)} | {parts(ld)} | {whole(ld)} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="torch thread counts to time (default: 1 .. the usable cores)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--load", type=int, default=1, help="busy processes in the loaded mode")
    ap.add_argument("--modes", default="quiet,loaded")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    from rollwise._io import atomic_write_json, atomic_write_report
    from rollwise.llm.generation import TransformersPolicy
    from rollwise.llm.models import resolve_model
    from rollwise.llm.tasks import get_task
    from rollwise.threads import model_threads

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = args.threads or list(range(1, cores + 1))
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"quiet", "loaded"}:
        ap.error(f"--modes: expected quiet, loaded or both, got {args.modes!r}")
    task = get_task("arithmetic")
    prompts = [r["prompt"][-1]["content"] for r in task.train[: args.prompts]]
    policy = TransformersPolicy(resolve_model("smollm2"), max_new_tokens=args.max_new_tokens,
                                temperature=1.0, batch_size=args.prompts, seed=0)
    rows = []
    for mode in modes:
        with busy(args.load if mode == "loaded" else 0):
            for t in threads:
                row = measure(policy, prompts, t, args.repeats) | {"mode": mode}
                rows.append(row)
                print(f"{mode:6s} threads={t}: sample {row['sample_s']:.2f}s + train pass "
                      f"{row['train_pass_s']:.2f}s", flush=True)
    data = {"meta": {"cpus": cores, "default_threads": model_threads(), "prompts": args.prompts,
                     "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
                     "load_processes": args.load, "torch": torch.__version__,
                     "python": platform.python_version()},
            "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "model_threads.json", data)
    md = markdown(data)
    atomic_write_report(args.out / "model_threads.md", md)
    print(md)


if __name__ == "__main__":
    main()
