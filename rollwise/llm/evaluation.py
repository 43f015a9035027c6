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
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_path).to(device).eval()
    texts = [tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
             for r in rows]
    flat = [(i, t) for i, t in enumerate(texts) for _ in range(samples)]
    scores = np.zeros(len(flat))
    outputs: list[str] = [""] * len(flat)
    torch.manual_seed(seed)
    for lo in range(0, len(flat), batch_size):
        chunk = flat[lo : lo + batch_size]
        enc = tok([t for _, t in chunk], return_tensors="pt", padding=True).to(device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True,
                                 temperature=temperature, top_p=1.0, top_k=0,
                                 pad_token_id=tok.pad_token_id)
        gen = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for j, ((i, _), text) in enumerate(zip(chunk, gen, strict=True)):
            scores[lo + j] = verify(text, rows[i]["answer"])
            outputs[lo + j] = text
    result = scores.reshape(len(rows), samples)
    if return_texts:
        return result, [outputs[i * samples : (i + 1) * samples] for i in range(len(rows))]
    return result
