"""What one selection per step costs in communication with several TRL processes.

``RollwiseGRPOTrainer`` on N processes: the main process selects and broadcasts its choice with
accelerate's ``broadcast_object_list`` (the chosen indices, their predictions and, with
per-prompt budgets, their groups). This script times exactly that call on CPU processes over
gloo (started by torchrun), for several batch sizes, and writes
``benchmarks/results/broadcast_overhead.{json,md}``::

    python benchmarks/broadcast_overhead.py                 # 2 processes (torchrun inside)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def worker(batches: list[int], repeats: int, out: str) -> None:
    """One torchrun process: time the trainer's broadcast for each batch size."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState(cpu=True)
    rows = []
    for b in batches:
        times = []
        for r in range(repeats + 5):
            payload = [None, None, None]
            if state.is_main_process:
                rng = np.random.default_rng(r)
                payload = [rng.choice(40_000, b, replace=False), rng.random(b),
                           rng.integers(0, 3, b)]
            state.wait_for_everyone()
            t0 = time.perf_counter()
            broadcast_object_list(payload, from_process=0)
            if r >= 5:  # the first calls set up the group
                times.append(time.perf_counter() - t0)
        rows.append({"batch": b, "median_ms": 1e3 * float(np.median(times)),
                     "p95_ms": 1e3 * float(np.percentile(times, 95))})
    if state.is_main_process:
        Path(out).write_text(json.dumps({"processes": state.num_processes, "rows": rows}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--batches", type=int, nargs="+", default=[8, 64, 256, 1024])
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--out", default="benchmarks/results/broadcast_overhead")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.batches, args.repeats, args.worker)
        return
    from provenance import provenance

    out = Path(args.out)
    tmp = out.with_suffix(".part.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.processes),
           __file__, "--worker", str(tmp), "--repeats", str(args.repeats),
           "--batches", *map(str, args.batches)]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   capture_output=True, text=True)
    result = {**json.loads(tmp.read_text()), **provenance(), "args": vars(args)}
    tmp.unlink()
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = ["# Broadcast of one selection across TRL processes", "",
             f"{result['processes']} CPU processes over gloo (torchrun), accelerate's "
             f"`broadcast_object_list` of what `RollwiseGRPOTrainer._choose` sends (indices, "
             f"predictions, groups), {args.repeats} timed calls per batch size after 5 warm-up "
             f"calls. Written by `{result['command']}` at {result['commit']}.", "",
             "| prompts per selection | median (ms) | 95th percentile (ms) |", "|---|---|---|"]
    lines += [f"| {r['batch']} | {r['median_ms']:.3f} | {r['p95_ms']:.3f} |" for r in result["rows"]]
    from rollwise._io import atomic_write_report

    atomic_write_report(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
