"""rollwise: spend RLVR rollouts where they teach.

Core API::

    pool = rollwise.PromptPool.from_texts(texts)          # embeddings (WordLlama by default)
    sel = rollwise.make_selector("gps", pool, batch_size=64, seed=0)
    idx = sel.select()                                     # prompts for the next step
    sel.observe(idx, rewards)                              # (B, k) rewards in [0, 1]
    sel.predict()                                          # success-rate estimates, all prompts
    sel.save("sel.pt"); sel = rollwise.load_selector("sel.pt", pool)

The names below are imported on first use (PEP 562), so ``import rollwise``, ``rollwise --help``
and ``from rollwise import PromptPool`` do not load torch or scipy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "PromptPool": "rollwise.pool",
    "Selector": "rollwise.selectors",
    "STRATEGIES": "rollwise.selectors",
    "make_selector": "rollwise.selectors",
    "load_selector": "rollwise.selectors",
    "DynamicSamplingBuffer": "rollwise.dynamic_sampling",
    "informative_mask": "rollwise.dynamic_sampling",
    "effective_sample_ratio": "rollwise.metrics",
    "spearman": "rollwise.metrics",
    "allocate": "rollwise.allocation",
    "expected_calibration_error": "rollwise.metrics",
    "BetaBinomialCalibration": "rollwise.calibration",
}

__all__ = [
    "PromptPool", "Selector", "STRATEGIES", "make_selector", "load_selector",
    "DynamicSamplingBuffer", "informative_mask", "effective_sample_ratio", "spearman", "allocate",
    "expected_calibration_error", "BetaBinomialCalibration",
]
assert set(__all__) == set(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs: the eager imports
    from rollwise.allocation import allocate
    from rollwise.calibration import BetaBinomialCalibration
    from rollwise.dynamic_sampling import DynamicSamplingBuffer, informative_mask
    from rollwise.metrics import effective_sample_ratio, expected_calibration_error, spearman
    from rollwise.pool import PromptPool
    from rollwise.selectors import STRATEGIES, Selector, load_selector, make_selector


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rollwise' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
