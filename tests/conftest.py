"""Test-session settings.

The models in these tests are tiny: torch's intra-op thread pool only adds synchronisation cost
to them, and on a busy machine its spinning threads slow a step down by an order of magnitude.
"""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Llama checkpoint and 12 plain-text prompts with answers (TRL tests)."""
    from _support import save_tiny_llama
    from datasets import Dataset

    path = save_tiny_llama(tmp_path_factory.mktemp("tiny"))
    rows = [{"id": f"q{i}", "prompt": f"{i} + {i} =", "answer": str(2 * i)} for i in range(12)]
    return str(path), Dataset.from_list(rows)
