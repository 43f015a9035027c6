"""Run each distinct prompt once when a batch repeats prompts: in generation and in the loss.

GRPO generates ``num_generations`` completions per prompt, and TRL hands ``generate`` each prompt
repeated that many times in a row (training and evaluation alike). On a CPU the prefill of a
63-token chat prompt costs more than decoding 32 tokens, so most of the prefill is repeated work.
:func:`shared_prefill` patches a causal LM's ``forward`` for the duration of a ``with`` block:
when ``generate`` calls it for the prefill (an empty cache) on a batch whose rows come in equal
runs of identical prompts, it runs the unique rows only and repeats the logits and the cache
(``Cache.batch_repeat_interleave``). Decoding then proceeds on the full batch as before, so the
completions are sampled from the same distribution with the same random draws; the prefill's
matrix products run on fewer rows, which can change the last bits of a logit.

:func:`shared_prompt_logps` does the same for the loss's forward and backward pass: the prompt
tokens of each distinct prompt go through the model once (with gradients), their keys and values
are indexed out to every row that repeats the prompt, and the completions are scored against
them. With a 66-token prompt and 32-token completions in groups of 4, the pass covers half the
tokens of TRL's (which runs every row's prompt again); the log-probabilities and their gradients
are the same functions of the weights, up to the last bits of float arithmetic.
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


def shared_prompt_logps(
    model: Any, input_ids: Any, attention_mask: Any, logits_to_keep: int, compute_entropy: bool
) -> tuple[Any, Any] | None:
    """Per-token log-probabilities (and entropies) of the last ``logits_to_keep`` tokens of each
    row, as TRL's ``_get_per_token_logps_and_entropies`` computes them with its fused LM head,
    but with each distinct prompt run once (see the module docstring). Rows may come in any
    order (TRL shuffles a generation batch's rows before the loss) and repeat unequally.

    ``model`` is a plain transformers causal LM patched with TRL's fused head (not wrapped for
    several processes, not PEFT). None where the shortcut does not apply (no prompt repeated, a
    prompt under two tokens, gradient checkpointing in training, which drops the cache); the
    caller then runs TRL's own pass.
    """
    import torch
    from transformers import DynamicCache, PreTrainedModel

    if not isinstance(model, PreTrainedModel) or not hasattr(model, "base_model_prefix"):
        return None
    if model.training and getattr(model, "is_gradient_checkpointing", False):
        return None
    backbone = getattr(model, model.base_model_prefix, None)
    rows, prompt_len = input_ids.shape[0], input_ids.shape[1] - logits_to_keep
    if backbone is None or prompt_len < 2 or logits_to_keep < 1:
        return None
    prompts = torch.cat([input_ids[:, :prompt_len], attention_mask[:, :prompt_len].to(input_ids.dtype)], 1)
    distinct, inverse = torch.unique(prompts, dim=0, return_inverse=True)
    if distinct.shape[0] == rows:
        return None
    first = torch.full((distinct.shape[0],), rows, dtype=torch.long, device=input_ids.device)
    first = first.scatter_reduce(0, inverse, torch.arange(rows, device=input_ids.device), "amin")
    cache = DynamicCache(config=model.config)
    # each distinct prompt but its last token, once, with gradients through the cached keys/values
    backbone(input_ids=input_ids[first, : prompt_len - 1],
             attention_mask=attention_mask[first, : prompt_len - 1],
             past_key_values=cache, use_cache=True)
    cache.batch_select_indices(inverse)  # every row's copy, in the batch's order
    # the prompt's last token scores the first completion token; later positions the rest
    tail = input_ids[:, prompt_len - 1 :]
    labels = tail.masked_fill(attention_mask[:, prompt_len - 1 :] == 0, -100)
    labels[:, 0] = -100
    out = model(input_ids=tail, attention_mask=attention_mask, past_key_values=cache,
                labels=labels, fused_lm_head=True)
    entropy = out.entropy[:, -logits_to_keep:] if compute_entropy else None
    return out.log_probs[:, -logits_to_keep:], entropy


__all__ = ["run_length", "shared_prefill", "shared_prompt_logps"]
