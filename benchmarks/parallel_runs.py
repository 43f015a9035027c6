"""Run a benchmark's (arm, seed) jobs as parallel worker processes of the benchmark script.

A worker is the script itself called with ``--one ARM SEED`` plus forwarded options; it prints
its record as JSON on the last line of its output. Each record is handed to ``on_done`` as soon
as its worker finishes, so the caller can merge and save it before the others end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path


def run_workers(script: str, todo: Sequence[tuple[str, int]], forwarded: Sequence[str], runs: str | Path,
                jobs: int, on_done: Callable[[str, int, dict], None]) -> None:
    """Run every (arm, seed) of ``todo``, ``jobs`` at a time; worker logs go to ``runs``."""
    Path(runs).mkdir(parents=True, exist_ok=True)

    def work(job: tuple[str, int]) -> tuple[str, int, dict]:
        arm, seed = job
        log_path = Path(runs) / f"{arm.replace('/', '+')}-seed{seed}.log"
        t0 = time.perf_counter()
        with open(log_path, "w") as log:
            proc = subprocess.run([sys.executable, script, "--one", arm, str(seed), f"--runs={runs}",
                                   *forwarded], stdout=subprocess.PIPE, stderr=log, text=True, check=False)
        if proc.returncode:
            raise RuntimeError(f"{arm} seed {seed} failed (exit {proc.returncode}); see {log_path}")
        print(f"{arm} seed {seed}: done in {time.perf_counter() - t0:.0f} s", flush=True)
        return arm, seed, json.loads(proc.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in as_completed([pool.submit(work, job) for job in todo]):
            on_done(*future.result())
