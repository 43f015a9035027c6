"""Shared helpers for the tests: small pools, tiny GPS settings, reward simulation, tiny LLMs."""

from __future__ import annotations

import numpy as np

import rollwise

# Tiny PPM so that hypothesis can run many GPS examples on a CPU in seconds.
TINY_GPS = {"hidden": 8, "encoder_heads": 2, "latent_dim": 2, "mc_samples": 2, "window": 2,
            "grad_steps": 1}


def hyper_for(name: str, **extra) -> dict:
    """Keyword arguments for ``make_selector``: tiny PPM settings for every GPS variant."""
    if name.startswith("gps"):
        hyper = dict(TINY_GPS)
        if name == "gps-nolatent":
            hyper.pop("latent_dim")  # the preset sets latent_dim=0
        return {**hyper, **extra}
    return dict(extra)


def make_pool(n: int, d: int = 8, seed: int = 0, **kw) -> rollwise.PromptPool:
    rng = np.random.default_rng(seed)
    return rollwise.PromptPool(rng.standard_normal((n, d)), **kw)


def make(name: str, pool: rollwise.PromptPool, batch_size: int, seed: int = 0, **extra):
    return rollwise.make_selector(name, pool, batch_size, seed=seed, **hyper_for(name, **extra))


def bernoulli_rewards(rng: np.random.Generator, rates: np.ndarray, k: int = 8) -> np.ndarray:
    return (rng.random((len(rates), k)) < np.asarray(rates)[:, None]).astype(np.float64)


def run_steps(sel, truth: np.ndarray, steps: int, seed: int = 0, k: int = 4,
              candidates=None) -> list[np.ndarray]:
    """``steps`` select/observe rounds with Bernoulli rewards drawn from ``truth``."""
    rng = np.random.default_rng(seed)
    picks = []
    for _ in range(steps):
        idx = sel.select(candidates)
        picks.append(idx)
        sel.observe(idx, bernoulli_rewards(rng, truth[idx], k))
    return picks


def twins(name, extra, n=24, d=6, batch=4, steps=3, seed=7):
    """Two selectors brought to the same state by the same calls, plus the pool and truth."""
    pool = make_pool(n, d, seed=seed)
    truth = np.random.default_rng(seed).uniform(size=n)
    a, b = make(name, pool, batch, seed=seed, **extra), make(name, pool, batch, seed=seed, **extra)
    pa, pb = run_steps(a, truth, steps, seed=1), run_steps(b, truth, steps, seed=1)
    for x, y in zip(pa, pb, strict=True):
        np.testing.assert_array_equal(x, y)
    return a, b, pool, truth


def continue_equal(a, b, truth, steps=3, seed=11, candidates=None):
    """Feed both selectors the same rewards; their selections and predictions must agree."""
    rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
    for _ in range(steps):
        ia, ib = a.select(candidates), b.select(candidates)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(a.predict(), b.predict())
        a.observe(ia, bernoulli_rewards(rng_a, truth[ia], 4))
        b.observe(ib, bernoulli_rewards(rng_b, truth[ib], 4))
    assert a.step == b.step


def char_tokenizer():
    """A character-level fast tokenizer over printable ASCII, built offline."""
    import string

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = ["<pad>", "<eos>", "<unk>"] + sorted(set(string.printable))
    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(chars)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>")


CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant: {% endif %}")


def save_tiny_llama(path, hidden: int = 32, intermediate: int = 64, layers: int = 2, seed: int = 0,
                    chat: bool = False) -> str:
    """A randomly initialised tiny Llama and :func:`char_tokenizer` saved at ``path`` (seeds torch's
    global RNG with ``seed`` first, so the weights are the same every time); ``chat`` gives the
    tokenizer a minimal chat template, for conversational prompts."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = char_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(path)
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(path)
    return str(path)
