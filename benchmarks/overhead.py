"""Per-step overhead of GPS on CPU: median select and observe time for several pool/batch sizes.

Pool: N random unit embeddings (d = 256 by default) whose success rates are a sigmoid of a linear
function of the embedding, so that the PPM has something to learn. Each step draws k Bernoulli
rewards per selected prompt. After a few warm-up steps the next ``--steps`` steps are timed:

* ``predict``: the full-pool prediction select starts with (timed through ``sel.predict()``, whose
  result select then reuses);
* ``acquire``: the rest of ``select``, i.e. the greedy batch acquisition;
* ``select`` = predict + acquire, ``observe``: the PPM update, ``total`` = select + observe.

Results go to ``benchmarks/results/overhead.json`` and ``overhead.md``; ``--append`` adds a run
to those already there (e.g. another thread count; numpy's BLAS threads follow the usual
``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` variables, set before start)::

    python benchmarks/overhead.py                      # N in {1000, 10000, 40000}, B in {64, 256}
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/overhead.py --threads 1 --append
    python benchmarks/overhead.py --sizes 40000 --batches 256 --set grad_steps=4 --set window=4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

import rollwise

TARGET = (40000, 256, 0.25)  # N, B, seconds per step


def make_world(n: int, dim: int, seed: int) -> tuple[rollwise.PromptPool, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    w = rng.standard_normal(dim)
    w /= np.linalg.norm(w)
    truth = 1.0 / (1.0 + np.exp(-(12.0 * emb @ w)))  # rates spread over (0, 1)
    return rollwise.PromptPool(emb), truth


def bench(n: int, batch: int, dim: int, k: int, warmup: int, steps: int, seed: int,
          hyper: dict | None = None) -> dict:
    pool, truth = make_world(n, dim, seed)
    sel = rollwise.make_selector("gps", pool, batch, seed=seed, **(hyper or {}))
    rng = np.random.default_rng(seed + 1)
    times: dict[str, list[float]] = {"predict": [], "acquire": [], "observe": []}
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        sel.predict()  # what select computes first; select reuses it
        t1 = time.perf_counter()
        idx = sel.select()
        t2 = time.perf_counter()
        rewards = (rng.random((batch, k)) < truth[idx, None]).astype(np.float64)
        t3 = time.perf_counter()
        sel.observe(idx, rewards)
        t4 = time.perf_counter()
        if step >= warmup:
            times["predict"].append(t1 - t0)
            times["acquire"].append(t2 - t1)
            times["observe"].append(t4 - t3)
    pred, acq, obs = (np.asarray(times[key]) for key in ("predict", "acquire", "observe"))
    sel_t = pred + acq
    return {
        "N": n, "B": batch, "d": dim, "k": k, "steps": steps,
        "predict_s": float(np.median(pred)),
        "acquire_s": float(np.median(acq)),
        "select_s": float(np.median(sel_t)),
        "observe_s": float(np.median(obs)),
        "total_s": float(np.median(sel_t + obs)),
    }


def run_table(rows: list[dict], meta: dict) -> list[str]:
    settings = ", ".join(f"{k}={v}" for k, v in meta["gps"].items()) or "default GPS settings"
    lines = [
        f"## torch threads = {meta['torch_threads']}, BLAS threads = {meta['blas_threads']}, "
        f"{settings}",
        "",
        f"Median over {rows[0]['steps']} steps after {meta['warmup']} warm-up steps; "
        f"d = {rows[0]['d']}, k = {rows[0]['k']} Bernoulli rewards. {meta['cpus']} CPUs; "
        f"load average {meta['load_before']} before / {meta['load_after']} after.",
        "",
        "| N | B | select (s) | = predict | + acquire | observe (s) | total (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['N']} | {r['B']} | {r['select_s']:.3f} | {r['predict_s']:.3f} | "
            f"{r['acquire_s']:.3f} | {r['observe_s']:.3f} | {r['total_s']:.3f} |"
        )
    n, b, limit = TARGET
    hit = [r for r in rows if r["N"] == n and r["B"] == b]
    if hit:
        ok = "met" if hit[0]["total_s"] < limit else "missed"
        lines += ["", f"Target N = {n}, B = {b}: total < {limit} s per step: **{ok}** "
                      f"({hit[0]['total_s']:.3f} s)."]
    return lines + [""]


def markdown(runs: list[dict]) -> str:
    lines = ["# GPS per-step overhead (CPU)", "",
             "Written by `benchmarks/overhead.py`; select = predict (full pool) + acquire "
             "(greedy batch), total = select + observe (PPM update).", ""]
    for run in runs:
        lines += run_table(run["rows"], run["meta"])
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 40000])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="GPS hyper-parameter, e.g. grad_steps=4 (repeatable)")
    ap.add_argument("--append", action="store_true", help="add to the results already written")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hyper = {}
    for item in args.set:
        key, _, value = item.partition("=")
        hyper[key] = json.loads(value)
    meta = {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "gps": hyper,
        "warmup": args.warmup,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "load_before": round(os.getloadavg()[0], 2),
    }
    rows = []
    for n in args.sizes:
        for b in args.batches:
            if b > n:
                continue
            row = bench(n, b, args.dim, args.k, args.warmup, args.steps, args.seed, hyper)
            rows.append(row)
            print(f"N={n:6d} B={b:4d}  select {row['select_s']:.3f}s (predict "
                  f"{row['predict_s']:.3f} + acquire {row['acquire_s']:.3f})  observe "
                  f"{row['observe_s']:.3f}s  total {row['total_s']:.3f}s", flush=True)
    meta["load_after"] = round(os.getloadavg()[0], 2)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "overhead.json"
    runs = json.loads(path.read_text())["runs"] if args.append and path.exists() else []
    runs.append({"meta": meta, "rows": rows})
    path.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    md = markdown(runs)
    (args.out / "overhead.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
