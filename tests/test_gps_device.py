"""Where the PPM runs: a machine setting of the GPS selector, checked up front, never saved."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _support import make, make_pool, run_steps

import rollwise

CUDA = torch.cuda.is_available()


def _trajectory(**extra):
    pool = make_pool(60, d=8, seed=3)
    truth = np.linspace(0.05, 0.95, 60)
    sel = make("gps", pool, 6, seed=1, **extra)
    picks = run_steps(sel, truth, steps=6, seed=2)
    return pool, sel, picks


def test_an_explicit_cpu_device_gives_the_default_selector():
    _, default, picks_default = _trajectory()
    _, cpu, picks_cpu = _trajectory(device="cpu")
    assert cpu.device == torch.device("cpu")
    assert all(np.array_equal(a, b) for a, b in zip(picks_default, picks_cpu, strict=True))
    np.testing.assert_array_equal(default.predict(), cpu.predict())


@pytest.mark.parametrize("device", ["tpu", "not a device", 3.5])
def test_a_bad_device_is_refused_by_name(device):
    with pytest.raises(ValueError, match="device"):
        make("gps", make_pool(20), 4, device=device)


@pytest.mark.skipif(CUDA, reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(ValueError, match="no CUDA device"):
        make("gps", make_pool(20), 4, device="cuda")


def test_the_device_is_not_saved_and_load_selector_takes_it(tmp_path):
    pool, sel, _ = _trajectory()
    state = sel.state_dict()
    assert "device" not in state["hyper"]
    tensors = [v for v in state["model"]["model"].values()]
    assert all(t.device.type == "cpu" for t in tensors)
    path = tmp_path / "gps.pt"
    sel.save(path)
    again = rollwise.load_selector(path, pool, device="cpu")
    np.testing.assert_array_equal(again.predict(), sel.predict())
    with pytest.raises(ValueError, match="device"):
        rollwise.load_selector(path, pool, device="tpu")


def test_load_selector_refuses_a_device_for_a_selector_without_a_model(tmp_path):
    pool = make_pool(20)
    path = tmp_path / "mopps.pt"
    make("mopps", pool, 4).save(path)
    with pytest.raises(ValueError, match="GPS selectors only"):
        rollwise.load_selector(path, pool, device="cpu")


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_on_a_gpu_the_ppm_learns_what_it_learns_on_the_cpu(tmp_path):
    pool, cpu, _ = _trajectory()
    _, gpu, _ = _trajectory(device="cuda")
    assert next(gpu.model.parameters()).device.type == "cuda"
    # the same random draws; float differences between devices may change a late pick, so
    # compare the predictions, not every batch
    assert np.abs(gpu.predict() - cpu.predict()).max() < 0.05
    path = tmp_path / "gps.pt"
    gpu.save(path)
    back = rollwise.load_selector(path, pool)  # on the CPU
    np.testing.assert_allclose(back.predict(), gpu.predict(), atol=1e-4)
