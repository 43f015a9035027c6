"""rollwise: spend RLVR rollouts where they teach.

Core API::

    pool = rollwise.PromptPool.from_texts(texts)          # embeddings (WordLlama by default)
    sel = rollwise.make_selector("gps", pool, batch_size=64, seed=0)
    idx = sel.select()                                     # prompts for the next step
    sel.observe(idx, rewards)                              # (B, k) rewards in [0, 1]
    sel.predict()                                          # success-rate estimates, all prompts
    sel.save("sel.pt"); sel = rollwise.load_selector("sel.pt", pool)
"""

from rollwise.allocation import allocate
from rollwise.dynamic_sampling import DynamicSamplingBuffer, informative_mask
from rollwise.metrics import effective_sample_ratio, spearman
from rollwise.pool import PromptPool
from rollwise.selectors import STRATEGIES, Selector, load_selector, make_selector

__version__ = "0.1.0"

__all__ = [
    "PromptPool",
    "Selector",
    "STRATEGIES",
    "make_selector",
    "load_selector",
    "DynamicSamplingBuffer",
    "informative_mask",
    "effective_sample_ratio",
    "spearman",
    "allocate",
]
