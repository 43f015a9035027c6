"""GPS's prediction over a whole pool split across worker threads: the same numbers for any
count, the caller's thread settings kept, errors raised, a machine setting that is never saved."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from _support import make, make_pool, run_steps

import rollwise
import rollwise.selectors.gps as gps_module
from rollwise.ppm import PPMConfig, PromptPredictiveModel
from rollwise.threads import limited_threads, run_in_workers


def _trained(n: int = 2500, workers: int = 2, **extra):
    pool = make_pool(n, d=8, seed=4)
    truth = np.linspace(0.05, 0.95, n)
    sel = make("gps", pool, 16, seed=1, prediction_workers=workers, **extra)
    run_steps(sel, truth, steps=4, seed=2)
    return pool, sel


@pytest.mark.parametrize("workers", [2, 3, 7])
def test_the_model_predicts_the_same_numbers_on_any_number_of_workers(workers):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = PromptPredictiveModel(8, PPMConfig(hidden=8, encoder_heads=2, latent_dim=2))
    emb = torch.randn(101, 8)
    one = model.predict(emb, None, torch.Generator().manual_seed(5), chunk=7)
    many = model.predict(emb, None, torch.Generator().manual_seed(5), chunk=7, workers=workers)
    assert torch.equal(one, many)


def test_a_selector_predicts_and_selects_the_same_with_one_or_more_workers(monkeypatch):
    monkeypatch.setattr(gps_module, "usable_cores", lambda: 4)  # split even on a 1-core machine
    _, one = _trained(workers=1)
    _, three = _trained(workers=3)
    assert three._workers() == 3 and one._workers() == 1
    np.testing.assert_array_equal(one.predict(), three.predict())
    np.testing.assert_array_equal(one.select(), three.select())


def test_workers_are_capped_by_the_cores_and_off_without_a_thread_bound(monkeypatch):
    monkeypatch.setattr(gps_module, "usable_cores", lambda: 2)
    _, sel = _trained(n=50, workers=8)
    assert sel._workers() == 2
    sel.threads = None  # the process's own settings: one call on the calling thread
    assert sel._workers() == 1


def test_run_in_workers_keeps_the_callers_threads_and_turns_autograd_off():
    seen: list[tuple[int, bool, str]] = []
    lock = threading.Lock()

    def task() -> None:
        with lock:
            seen.append((torch.get_num_threads(), torch.is_grad_enabled(),
                         threading.current_thread().name))

    before = torch.get_num_threads()
    with limited_threads(2):
        run_in_workers([task, task, task])
    assert torch.get_num_threads() == before
    assert len(seen) == 3
    assert all(n == 2 and not grad for n, grad, _ in seen)
    assert all(name != threading.main_thread().name for _, _, name in seen)


def test_run_in_workers_raises_a_tasks_error_after_the_others_end():
    done: list[int] = []

    def fail() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_in_workers([fail, lambda: done.append(1)])
    assert done == [1]


@pytest.mark.parametrize("bad, err", [(0, ValueError), (1.5, TypeError), ("2", TypeError)])
def test_bad_prediction_workers_are_refused_by_name(bad, err):
    with pytest.raises(err, match="prediction_workers"):
        make("gps", make_pool(20), 4, prediction_workers=bad)
    sel = make("gps", make_pool(20), 4, prediction_workers=3)
    with pytest.raises(err, match="prediction_workers"):
        sel.prediction_workers = bad
    assert sel.prediction_workers == 3


def test_prediction_workers_are_not_saved_and_load_selector_takes_them(tmp_path):
    pool, sel = _trained(n=50, workers=3)
    assert "prediction_workers" not in sel.state_dict()["hyper"]
    path = tmp_path / "gps.pt"
    sel.save(path)
    assert rollwise.load_selector(path, pool).prediction_workers == 2  # the default
    again = rollwise.load_selector(path, pool, prediction_workers=1)
    assert again.prediction_workers == 1
    np.testing.assert_array_equal(again.predict(), sel.predict())
    with pytest.raises(ValueError, match="prediction_workers"):
        rollwise.load_selector(path, pool, prediction_workers=0)
    mopps = tmp_path / "mopps.pt"
    make("mopps", pool, 4).save(mopps)
    with pytest.raises(ValueError, match="prediction_workers applies to GPS selectors only"):
        rollwise.load_selector(mopps, pool, prediction_workers=2)
