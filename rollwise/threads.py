"""Bounded CPU threads for the selector's own work, set around each call and restored after.

A selector runs inside the trainer's process, beside tokenisers, dataloader workers and reward
code. torch's and OpenBLAS's default thread pools use every core and synchronise at barriers, so
when another process holds a core they wait for a thread that is not running: a GPS step on 2
busy cores took 5.4 s with the defaults against 0.08 s with one thread. The PPM and the
acquisition are small enough that one thread loses little on a quiet machine (see
``benchmarks/results/overhead.md``), so ``DEFAULT_SELECTOR_THREADS`` is 1.

Work that splits into independent parts (GPS's prediction over a whole pool, chunk by chunk)
can instead run on a few :func:`run_in_workers` threads of its own: they share no barrier, so a
busy neighbour slows them no more than it slows one thread, and on a quiet machine they use the
idle cores.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rollwise.validation import check_int

DEFAULT_SELECTOR_THREADS = 1
# GPS's prediction over a whole pool on 2 workers of one thread each, N = 40k, B = 256 on 2 cores
# (benchmarks/results/overhead.md): 0.044 s against 0.056 s on one thread when quiet, 0.059 s
# against 0.053 s beside a busy process; a step 0.194 s against 0.205 s, and 0.204 s against 0.202
DEFAULT_PREDICTION_WORKERS = 2

_controller: Any = None  # threadpoolctl's view of the loaded BLAS libraries, made on first use
_executor: tuple[int, ThreadPoolExecutor] | None = None  # run_in_workers' threads: (size, pool)
_executor_lock = threading.Lock()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS says, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def model_threads() -> int:
    """Default torch threads for a policy on the CPU: one less than the usable cores (at least
    one), so the rest of the process and its neighbours keep a core. Measured with SmolLM2-135M
    on 2 cores (``benchmarks/model_threads.py``): 2 threads sampled and trained 1.6x faster than
    1 on a quiet machine, but 1.5x slower than 1 beside one busy process."""
    return max(1, usable_cores() - 1)


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


def run_in_workers(tasks: Sequence[Callable[[], None]]) -> None:
    """Run ``tasks`` at once, each on a worker thread of its own, and wait for all of them (the
    first error is raised after every task has ended). Every worker runs torch with the calling
    thread's intra-op thread count, so that a task computes exactly what it would compute on the
    calling thread; autograd is off in the workers. A single task runs on the calling thread."""
    if len(tasks) <= 1:
        for task in tasks:
            task()
        return
    import torch

    global _executor
    with _executor_lock:
        if _executor is None or _executor[0] < len(tasks):
            if _executor is not None:
                _executor[1].shutdown(wait=False)
            _executor = (len(tasks), ThreadPoolExecutor(len(tasks), thread_name_prefix="rollwise"))
        executor = _executor[1]
    threads = torch.get_num_threads()

    def run(task: Callable[[], None]) -> None:
        if torch.get_num_threads() != threads:  # a per-thread setting: set it in each worker
            torch.set_num_threads(threads)
        with torch.no_grad():
            task()

    futures = [executor.submit(run, task) for task in tasks]
    errors = [f.exception() for f in futures]
    for err in errors:
        if err is not None:
            raise err
