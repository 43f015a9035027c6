"""One sampling helper for every generation rollwise does outside the trainer (evaluation,
GenSelect's chooser, P²O's template scoring and reflection): batched, left-padded, greedy or
seeded sampling that leaves the caller's torch RNG as it found it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rollwise.validation import check_int, check_number


def generate(model: Any, tokenizer: Any, texts: Sequence[str], *, max_new_tokens: int,
             temperature: float = 0.0, batch_size: int = 16, seed: int = 0,
             device: str | None = None, add_special_tokens: bool = False) -> list[str]:
    """Completions of already-rendered prompt ``texts`` (one each, in order).

    ``temperature`` 0 decodes greedily; above 0 samples (top-p 1, top-k off) from ``seed``, the
    same texts giving the same completions. Sampling runs inside a forked RNG, so a training run's
    next rollouts do not depend on whether anything was generated here. ``tokenizer`` must pad on
    the left (see :func:`rollwise.llm.models.load_for_generation`). A prompt repeated in a row is
    prefilled once (:func:`rollwise.integrations.prefill.shared_prefill`; the same completions).
    """
    import torch

    from rollwise.integrations.prefill import shared_prefill

    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    check_int("max_new_tokens", max_new_tokens, 1)
    check_int("batch_size", batch_size, 1)
    check_number("temperature", temperature, 0)
    device = device or str(next(model.parameters()).device)
    gen: dict[str, Any] = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    if temperature > 0:
        gen.update(do_sample=True, temperature=float(temperature), top_p=1.0, top_k=0)
    else:
        gen.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    out: list[str] = []
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for lo in range(0, len(texts), batch_size):
            enc = tokenizer(list(texts[lo : lo + batch_size]), return_tensors="pt", padding=True,
                            add_special_tokens=add_special_tokens).to(device)
            with torch.no_grad(), shared_prefill(model):
                ids = model.generate(**enc, **gen)
            out += tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def render_chat(tokenizer: Any, prompt: str | Sequence[dict[str, Any]]) -> str:
    """A prompt as the policy sees it in training: chat messages (or one user message) rendered
    with the tokenizer's chat template and the generation prompt; plain text without a template."""
    if not getattr(tokenizer, "chat_template", None):
        if isinstance(prompt, str):
            return prompt
        raise ValueError("chat messages need a tokenizer with a chat template")
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class TransformersPolicy:
    """A causal LM as a text-in, text-out policy: ``policy(prompts) -> completions``.

    Prompts are user messages rendered with the tokenizer's chat template when it has one (the
    way the policy sees prompts in training). Greedy by default; with ``temperature > 0`` each
    call samples from ``seed`` (the same prompts give the same completions) and leaves the
    global torch RNG as it found it.
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, max_new_tokens: int = 256,
                 temperature: float = 0.0, batch_size: int = 16, seed: int = 0,
                 device: str | None = None) -> None:
        check_int("max_new_tokens", max_new_tokens, 1)
        check_int("batch_size", batch_size, 1)
        check_number("temperature", temperature, 0)
        from rollwise.llm.models import load_for_generation

        self.model, self.tokenizer, self.device = load_for_generation(model, tokenizer, device)
        self.max_new_tokens, self.temperature = max_new_tokens, float(temperature)
        self.batch_size, self.seed = batch_size, seed
        self.calls = 0

    def __call__(self, prompts: list[str]) -> list[str]:
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, not one string")
        self.calls += 1
        return generate(self.model, self.tokenizer, [render_chat(self.tokenizer, p) for p in prompts],
                        max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                        batch_size=self.batch_size, seed=self.seed, device=self.device)


__all__ = ["generate", "render_chat", "TransformersPolicy"]
