"""Sampling-based evaluation of a causal LM on task rows: per-prompt outcomes of k samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def sample_outcomes(
    model_path: str,
    rows: Sequence[dict[str, Any]],
    verify: Callable[[str, str], float],
    samples: int = 8,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    return_texts: bool = False,
) -> np.ndarray | tuple[np.ndarray, list[list[str]]]:
    """(len(rows), samples) verifier scores of completions sampled at ``temperature``.

    Rows carry chat ``prompt`` messages and an ``answer`` (see :mod:`rollwise.llm.tasks`).
    """
    if samples < 1 or batch_size < 1 or max_new_tokens < 1:
        raise ValueError("samples, batch_size and max_new_tokens must be >= 1")
    from rollwise.llm.generation import generate, render_chat
    from rollwise.llm.models import load_for_generation

    model, tok, device = load_for_generation(model_path)
    texts = [render_chat(tok, r["prompt"]) for r in rows]
    flat = [(i, t) for i, t in enumerate(texts) for _ in range(samples)]
    # add_special_tokens as the tokenizer's default: what this evaluation has always used
    outputs = generate(model, tok, [t for _, t in flat], max_new_tokens=max_new_tokens,
                       temperature=temperature, batch_size=batch_size, seed=seed, device=device,
                       add_special_tokens=True)
    scores = np.array([verify(text, rows[i]["answer"]) for (i, _), text in zip(flat, outputs, strict=True)])
    result = scores.reshape(len(rows), samples)
    if return_texts:
        return result, [outputs[i * samples : (i + 1) * samples] for i in range(len(rows))]
    return result
