"""Prefill each distinct prompt once when a generation batch repeats prompts.

GRPO generates ``num_generations`` completions per prompt, and TRL hands ``generate`` each prompt
repeated that many times in a row (training and evaluation alike). On a CPU the prefill of a
63-token chat prompt costs more than decoding 32 tokens, so most of the prefill is repeated work.
:func:`shared_prefill` patches a causal LM's ``forward`` for the duration of a ``with`` block:
when ``generate`` calls it for the prefill (an empty cache) on a batch whose rows come in equal
runs of identical prompts, it runs the unique rows only and repeats the logits and the cache
(``Cache.batch_repeat_interleave``). Decoding then proceeds on the full batch as before, so the
completions are sampled from the same distribution with the same random draws; the prefill's
matrix products run on fewer rows, which can change the last bits of a logit.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def run_length(input_ids: Any, attention_mask: Any = None) -> int:
    """``r`` when the rows of ``input_ids`` (and of ``attention_mask``) come in consecutive runs of
    ``r`` identical rows, every run the same length; 1 otherwise."""
    import torch

    rows = input_ids.shape[0]
    r = 1
    while r < rows and torch.equal(input_ids[r], input_ids[0]):
        r += 1
    if r == 1 or rows % r:
        return 1
    for t in (input_ids, attention_mask):
        if t is None:
            continue
        blocks = t.reshape(rows // r, r, *t.shape[1:])
        if not bool((blocks == blocks[:, :1]).all()):
            return 1
    return r


@contextmanager
def shared_prefill(model: Any) -> Iterator[None]:
    """Within the block, ``model``'s prefill runs once per run of repeated prompt rows (see the
    module docstring); any other call goes to the model's own ``forward`` unchanged."""
    original = model.__dict__.get("forward")  # an instance-level patch (e.g. TRL's) to restore
    inner = model.forward

    @functools.wraps(type(model).forward)  # generate validates its kwargs against the signature
    def forward(*args: Any, **kwargs: Any) -> Any:
        ids, cache = kwargs.get("input_ids"), kwargs.get("past_key_values")
        if (args or ids is None or cache is None or not hasattr(cache, "batch_repeat_interleave")
                or cache.get_seq_length() != 0):
            return inner(*args, **kwargs)
        rows = ids.shape[0]
        r = run_length(ids, kwargs.get("attention_mask"))
        if r == 1:
            return inner(*args, **kwargs)
        first = slice(0, rows, r)
        unique = {k: (v[first] if hasattr(v, "shape") and v.ndim >= 1 and v.shape[0] == rows else v)
                  for k, v in kwargs.items() if k != "cache_position"}
        if "cache_position" in kwargs:
            unique["cache_position"] = kwargs["cache_position"]
        out = inner(**unique)
        cache.batch_repeat_interleave(r)
        out.logits = out.logits.repeat_interleave(r, dim=0)
        return out

    model.forward = forward
    try:
        yield
    finally:
        if original is None:
            del model.forward
        else:
            model.forward = original


__all__ = ["run_length", "shared_prefill"]
