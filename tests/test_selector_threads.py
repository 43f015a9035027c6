"""Selectors shared between threads: calls take turns (rollwise.selectors.base.SERIALISED)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import rollwise


@pytest.mark.parametrize("strategy", ["gps", "mopps"])
def test_observe_select_predict_from_four_threads(strategy):
    pool = rollwise.PromptPool(np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32))
    sel = rollwise.make_selector(strategy, pool, 8, seed=0)
    errors: list[str] = []

    def work(i: int) -> None:
        rng = np.random.default_rng(i)
        try:
            for _ in range(15):
                idx = sel.select()
                sel.observe(idx, (rng.random((8, 4)) < 0.5).astype(float))
                assert np.all(np.isfinite(sel.predict()))
        except Exception as err:  # noqa: BLE001 - every failure is what the test counts
            errors.append(repr(err))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sel.step == 60


def test_overrides_in_subclasses_are_serialised_too():
    from rollwise.selectors import MoPPSSelector

    class Mine(MoPPSSelector):
        def predict(self, indices=None):
            assert self._lock._is_owned()  # the caller holds the selector's lock here
            return super().predict(indices)

    pool = rollwise.PromptPool(np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    sel = Mine(pool, 4, seed=0)
    sel.select()  # creates the lock
    assert sel.predict().shape == (20,)
