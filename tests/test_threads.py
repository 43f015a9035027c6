"""Selector calls run with a bounded thread count and leave the caller's settings as they were."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _support import make, make_pool
from threadpoolctl import threadpool_info

import rollwise
from rollwise.threads import limited_threads


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.fixture
def three_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(before)


def test_limited_threads_sets_and_restores(three_threads):
    with limited_threads(1):
        assert torch.get_num_threads() == 1
        assert all(n == 1 for n in _blas_threads())
    assert torch.get_num_threads() == 3


def test_limited_threads_restores_after_an_error(three_threads):
    with pytest.raises(RuntimeError), limited_threads(2):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 3


def test_none_leaves_the_process_settings_alone(three_threads):
    with limited_threads(None):
        assert torch.get_num_threads() == 3


@pytest.mark.parametrize("name", ["uniform", "mopps", "gps"])
@pytest.mark.parametrize("threads", [1, 2])
def test_selector_calls_run_with_their_threads(name, threads, three_threads, monkeypatch):
    sel = make(name, make_pool(20), 4, threads=threads)
    seen: list[int] = []
    for method in ("_select", "_observe", "_predict"):
        original = getattr(sel, method)

        def spy(*args, _original=original, **kwargs):
            seen.append(torch.get_num_threads())
            return _original(*args, **kwargs)

        monkeypatch.setattr(sel, method, spy)
    idx = sel.select()
    sel.observe(idx, np.ones((4, 2)))
    sel.predict()
    assert seen and all(n == threads for n in seen)
    assert torch.get_num_threads() == 3


def test_threads_none_uses_the_process_setting(three_threads):
    sel = make("gps", make_pool(20), 4, threads=None)
    idx = sel.select()
    sel.observe(idx, np.zeros((4, 2)))
    assert sel.threads is None and torch.get_num_threads() == 3


@pytest.mark.parametrize("bad, err", [(0, ValueError), (-1, ValueError), (1.5, TypeError),
                                      (True, TypeError), ("2", TypeError)])
def test_bad_threads_is_refused_naming_the_argument(bad, err):
    pool = make_pool(20)
    with pytest.raises(err, match="threads"):
        rollwise.make_selector("gps", pool, 4, threads=bad)
    sel = rollwise.make_selector("uniform", pool, 4, threads=2)
    with pytest.raises(err, match="threads"):
        sel.threads = bad
    assert sel.threads == 2


def test_threads_is_not_part_of_the_saved_state(tmp_path):
    pool = make_pool(20)
    sel = rollwise.make_selector("gps", pool, 4, threads=2)
    sel.observe(sel.select(), np.ones((4, 2)))
    sel.save(tmp_path / "s.pt")
    back = rollwise.load_selector(tmp_path / "s.pt", pool, threads=None)
    assert back.threads is None
    np.testing.assert_array_equal(back.select(), sel.select())


def test_train_settings_check_threads():
    from rollwise.llm.engine import TrainSettings
    from rollwise.threads import model_threads

    assert model_threads() >= 1
    with pytest.raises(ValueError, match="threads"):
        TrainSettings(threads=0).validate()
    TrainSettings(threads=2).validate()
