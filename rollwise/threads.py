"""Bounded CPU threads for the selector's own work, set around each call and restored after.

A selector runs inside the trainer's process, beside tokenisers, dataloader workers and reward
code. torch's and OpenBLAS's default thread pools use every core and synchronise at barriers, so
when another process holds a core they wait for a thread that is not running: a GPS step on 2
busy cores took 5.4 s with the defaults against 0.08 s with one thread. The PPM and the
acquisition are small enough that one thread loses little on a quiet machine (see
``benchmarks/results/overhead.md``), so ``DEFAULT_SELECTOR_THREADS`` is 1.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from rollwise.validation import check_int

DEFAULT_SELECTOR_THREADS = 1

_controller: Any = None  # threadpoolctl's view of the loaded BLAS libraries, made on first use


def model_threads() -> int:
    """Default torch threads for a policy on the CPU: one less than the usable cores (at least
    one), so the rest of the process and its neighbours keep a core. Measured with SmolLM2-135M
    on 2 cores (``benchmarks/model_threads.py``): 2 threads sampled and trained 1.6x faster than
    1 on a quiet machine, but 1.5x slower than 1 beside one busy process."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def check_threads(threads: Any, arg: str = "threads") -> int | None:
    """``threads`` as an int >= 1, or None (leave the process's settings alone)."""
    check_int(arg, threads, 1, optional=True)
    return None if threads is None else int(threads)


def _blas_controller() -> Any:
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller


@contextlib.contextmanager
def limited_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op and BLAS threads; restore the caller's
    settings afterwards, also on error. None changes nothing."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        with _blas_controller().limit(limits=threads, user_api="blas"):
            yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
