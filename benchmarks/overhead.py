"""Per-step overhead of GPS on CPU, on a quiet machine and beside a busy process.

Pool: N random unit embeddings (d = 256 by default) whose success rates are a sigmoid of a linear
function of the embedding, so that the PPM has something to learn. Each step draws k Bernoulli
rewards per selected prompt. Every step from the first is timed:

* ``predict``: the full-pool prediction select starts with (timed through ``sel.predict()``, whose
  result select then reuses);
* ``acquire``: the rest of ``select``, i.e. the greedy batch acquisition;
* ``observe``: the PPM update; ``total`` = predict + acquire + observe.

Reported per (N, B): the median total over the steps after the first ``--early`` ("steady"),
with its parts, and the slowest of the first ``--early`` steps ("early max"), where predictions
are still flat and the acquisition works hardest. Each configuration runs ``quiet`` and
``loaded``: loaded starts ``--load`` busy processes (a pure-Python loop each, standing for a
trainer's dataloader or reward code) before the timing and stops them after. ``--demo`` also
times ``rollwise demo`` both ways (its wall time as printed by the command).

The selector runs with its own thread setting (``--threads``, default: the selector's default,
see :mod:`rollwise.threads`; ``none`` keeps the process's torch/BLAS defaults, to show what the
setting prevents) and its prediction workers (``--prediction-workers``, default the selector's).
Results go to ``benchmarks/results/overhead.json`` and ``overhead.md``::

    python benchmarks/overhead.py                    # N in {1k, 10k, 40k}, B in {64, 256}
    python benchmarks/overhead.py --sizes 40000 --batches 256 --prediction-workers 1 --append
    python benchmarks/overhead.py --sizes 40000 --batches 256 --threads none --append
    python benchmarks/overhead.py --demo --sizes --append   # only the demo's wall time
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import rollwise
from rollwise.threads import DEFAULT_PREDICTION_WORKERS, DEFAULT_SELECTOR_THREADS

TARGET_STEADY = (40000, 256, 0.2)  # N, B, seconds per select+observe step, steady state
TARGET_EARLY = 0.4  # seconds: no step of the first ten above this (N = 40k, B = 256)
TARGET_LOADED_RATIO = 1.5  # loaded / quiet steady time at N = 40k, B = 256
TARGET_DEMO_LOADED = 90.0  # seconds for `rollwise demo` beside one busy process


def make_world(n: int, dim: int, seed: int) -> tuple[rollwise.PromptPool, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    w = rng.standard_normal(dim)
    w /= np.linalg.norm(w)
    truth = 1.0 / (1.0 + np.exp(-(12.0 * emb @ w)))  # rates spread over (0, 1)
    return rollwise.PromptPool(emb), truth


def _spin() -> None:
    while True:
        pass


@contextlib.contextmanager
def busy(processes: int):
    """``processes`` busy-looping processes for the duration of the block (none when 0)."""
    procs = [mp.get_context("spawn").Process(target=_spin, daemon=True) for _ in range(processes)]
    for p in procs:
        p.start()
    time.sleep(0.5 if procs else 0.0)  # let them reach the loop
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
            p.join()


def bench(n: int, batch: int, dim: int, k: int, early: int, steps: int, seed: int,
          threads: int | None, hyper: dict | None = None, device: str = "cpu",
          workers: int = DEFAULT_PREDICTION_WORKERS) -> dict:
    pool, truth = make_world(n, dim, seed)
    sel = rollwise.make_selector("gps", pool, batch, seed=seed, threads=threads, device=device,
                                 prediction_workers=workers, **(hyper or {}))
    rng = np.random.default_rng(seed + 1)
    times = np.zeros((early + steps, 3))  # predict, acquire, observe
    for step in range(early + steps):
        t0 = time.perf_counter()
        sel.predict()  # what select computes first; select reuses it
        t1 = time.perf_counter()
        idx = sel.select()
        t2 = time.perf_counter()
        rewards = (rng.random((batch, k)) < truth[idx, None]).astype(np.float64)
        t3 = time.perf_counter()
        sel.observe(idx, rewards)
        t4 = time.perf_counter()
        times[step] = (t1 - t0, t2 - t1, t4 - t3)
    total = times.sum(axis=1)
    steady = times[early:]
    return {
        "N": n, "B": batch, "d": dim, "k": k, "early_steps": early, "steady_steps": steps,
        "predict_s": float(np.median(steady[:, 0])),
        "acquire_s": float(np.median(steady[:, 1])),
        "observe_s": float(np.median(steady[:, 2])),
        "total_s": float(np.median(total[early:])),
        "early_max_s": float(total[:early].max()) if early else float("nan"),
        "max_s": float(total.max()),
        "per_step_s": [round(float(t), 4) for t in total],
    }


def time_demo(processes: int) -> dict:
    """Wall time of ``rollwise demo`` (fresh output directory, no progress bar)."""
    exe = Path(sys.executable).with_name("rollwise")
    with tempfile.TemporaryDirectory() as out, busy(processes):
        t0 = time.perf_counter()
        proc = subprocess.run([str(exe), "demo", "--quiet", "--out", out], capture_output=True,
                              text=True, check=True)
        wall = time.perf_counter() - t0
    printed = re.search(r"in (\d+) s", proc.stdout)
    return {"busy_processes": processes, "wall_s": round(wall, 1),
            "printed_s": int(printed.group(1)) if printed else None}


def run_table(rows: list[dict], meta: dict) -> list[str]:
    settings = ", ".join(f"{k}={v}" for k, v in meta["gps"].items()) or "default GPS settings"
    lines = [
        f"## selector threads = {meta['selector_threads']}, "
        f"{_workers_text(meta)}PPM on {meta.get('device', 'cpu')}, {settings}",
        "",
        f"{meta['cpus']} CPUs; loaded = {meta['load_processes']} busy process(es) beside the "
        f"timing. Steady: median of steps {meta['early'] + 1}-{meta['early'] + meta['steps']}; "
        f"early max: slowest of steps 1-{meta['early']}. d = {rows[0]['d'] if rows else '-'}, "
        f"k = {rows[0]['k'] if rows else '-'} Bernoulli rewards; torch {meta['torch']}.",
        "",
        "| N | B | steady quiet (s) | = predict + acquire + observe | steady loaded (s) | "
        "loaded/quiet | early max quiet (s) | early max loaded (s) |",
        "|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    by = {(r["N"], r["B"], r["mode"]): r for r in rows}

    def cell(row: dict | None, key: str) -> str:
        return f"{row[key]:.3f}" if row else "-"

    for n, b in sorted({(r["N"], r["B"]) for r in rows}):
        q, ld = by.get((n, b, "quiet")), by.get((n, b, "loaded"))
        parts = (f"{q['predict_s']:.3f} + {q['acquire_s']:.3f} + {q['observe_s']:.3f}"
                 if q else "-")
        ratio = f"{ld['total_s'] / q['total_s']:.2f}" if q and ld else "-"
        lines.append(f"| {n} | {b} | {cell(q, 'total_s')} | {parts} | {cell(ld, 'total_s')} | "
                     f"{ratio} | {cell(q, 'early_max_s')} | {cell(ld, 'early_max_s')} |")
    n, b, limit = TARGET_STEADY
    q, ld = by.get((n, b, "quiet")), by.get((n, b, "loaded"))
    if q:
        verdict = lambda ok: "met" if ok else "missed"  # noqa: E731
        lines += ["", f"Targets at N = {n}, B = {b}: steady <= {limit} s: "
                      f"**{verdict(q['total_s'] <= limit)}** ({q['total_s']:.3f} s quiet); "
                      f"no early step above {TARGET_EARLY} s: "
                      f"**{verdict(q['early_max_s'] <= TARGET_EARLY)}** ({q['early_max_s']:.3f} s)"]
        if ld:
            ratio = ld["total_s"] / q["total_s"]
            lines[-1] += (f"; loaded/quiet <= {TARGET_LOADED_RATIO}: "
                          f"**{verdict(ratio <= TARGET_LOADED_RATIO)}** ({ratio:.2f}).")
    for demo in meta.get("demo", []):
        lines += ["", f"`rollwise demo` beside {demo['busy_processes']} busy process(es): "
                      f"{demo['wall_s']:.0f} s wall"
                  + (f" (target <= {TARGET_DEMO_LOADED:.0f} s: "
                     f"**{'met' if demo['wall_s'] <= TARGET_DEMO_LOADED else 'missed'}**)"
                     if demo["busy_processes"] else "") + "."]
    return lines + [""]


def _workers_text(meta: dict) -> str:
    """The prediction workers of a run (absent from runs before they existed: one)."""
    workers = meta.get("prediction_workers", 1)
    used = 1 if meta["selector_threads"] is None else min(workers, meta["cpus"])
    return f"pool prediction on {used} worker(s), "


def markdown(runs: list[dict]) -> str:
    lines = ["# GPS per-step overhead (CPU)", "",
             "Written by `benchmarks/overhead.py`; a step = predict (full pool) + acquire "
             "(greedy batch) + observe (PPM update).", ""]
    for run in runs:
        lines += run_table(run["rows"], run["meta"])
    return "\n".join(lines)


def _threads(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 40000])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--early", type=int, default=10, help="first steps, reported by their maximum")
    ap.add_argument("--steps", type=int, default=10, help="steady steps after them (median)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=_threads, default=DEFAULT_SELECTOR_THREADS,
                    help="selector threads, or 'none' for the process's torch/BLAS defaults")
    ap.add_argument("--device", default="cpu", help="where the PPM runs (e.g. cuda)")
    ap.add_argument("--prediction-workers", type=int, default=DEFAULT_PREDICTION_WORKERS,
                    help="threads that split the prediction over the pool (GPSSelector)")
    ap.add_argument("--load", type=int, default=1, help="busy processes in the loaded mode")
    ap.add_argument("--modes", default="quiet,loaded", help="quiet, loaded or both")
    ap.add_argument("--demo", action="store_true", help="also time `rollwise demo` in each mode")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="GPS hyper-parameter, e.g. grad_steps=4 (repeatable)")
    ap.add_argument("--append", action="store_true", help="add to the results already written")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"quiet", "loaded"}:
        ap.error(f"--modes: expected quiet, loaded or both, got {args.modes!r}")
    hyper = {}
    for item in args.set:
        key, _, value = item.partition("=")
        hyper[key] = json.loads(value)
    meta = {
        "cpus": os.cpu_count(), "selector_threads": args.threads, "device": args.device,
        "prediction_workers": args.prediction_workers,
        "process_torch_threads": torch.get_num_threads(), "load_processes": args.load,
        "gps": hyper, "early": args.early, "steps": args.steps, "torch": torch.__version__,
        "numpy": np.__version__, "python": platform.python_version(),
        "load_before": round(os.getloadavg()[0], 2), "demo": [],
    }
    rows = []
    for n in args.sizes:
        for b in args.batches:
            if b > n:
                continue
            for mode in modes:
                with busy(args.load if mode == "loaded" else 0):
                    row = bench(n, b, args.dim, args.k, args.early, args.steps, args.seed,
                                args.threads, hyper, args.device, args.prediction_workers)
                row["mode"] = mode
                rows.append(row)
                print(f"N={n:6d} B={b:4d} {mode:6s}  steady {row['total_s']:.3f}s (predict "
                      f"{row['predict_s']:.3f} + acquire {row['acquire_s']:.3f} + observe "
                      f"{row['observe_s']:.3f})  early max {row['early_max_s']:.3f}s", flush=True)
    if args.demo:
        for mode in modes:
            meta["demo"].append(time_demo(args.load if mode == "loaded" else 0))
            print(f"demo {mode}: {meta['demo'][-1]}", flush=True)
    meta["load_after"] = round(os.getloadavg()[0], 2)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "overhead.json"
    runs = json.loads(path.read_text())["runs"] if args.append and path.exists() else []
    runs.append({"meta": meta, "rows": rows})
    from rollwise._io import atomic_write_json, atomic_write_report

    atomic_write_json(path, {"runs": runs})
    md = markdown(runs)
    atomic_write_report(args.out / "overhead.md", md)
    print(md)


if __name__ == "__main__":
    main()
