"""Shared prefill of repeated prompts: the same completions as plain generation, fewer rows prefilled."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from rollwise.integrations.prefill import run_length, shared_prefill  # noqa: E402


def test_run_length():
    a, b = [1, 2, 3], [4, 5, 6]
    assert run_length(torch.tensor([a, a, b, b])) == 2
    assert run_length(torch.tensor([a, a, a, b, b, b])) == 3
    assert run_length(torch.tensor([a, b, a, b])) == 1
    assert run_length(torch.tensor([a, a, b, a])) == 1  # second run differs inside
    assert run_length(torch.tensor([a, a, a, b, b])) == 1  # runs of unequal length
    assert run_length(torch.tensor([a])) == 1
    mask = torch.tensor([[1, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1]])
    assert run_length(torch.tensor([a, a, b, b]), mask) == 1  # same ids, other masks


def _model_and_batch(tmp_path, repeats):
    from _support import save_tiny_llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = save_tiny_llama(tmp_path)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    texts = [t for t in ["1 + 1 =", "12 + 30 + 7 =", "9 ="] for _ in range(repeats)]
    return model, tok, tok(texts, return_tensors="pt", padding=True)


def _sample(model, tok, enc, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.generate(**enc, max_new_tokens=8, do_sample=True, temperature=1.0, top_k=0,
                              top_p=1.0, pad_token_id=tok.pad_token_id)


def test_same_completions_and_fewer_rows_prefilled(tmp_path):
    model, tok, enc = _model_and_batch(tmp_path, repeats=4)
    plain = _sample(model, tok, enc)
    rows_seen = []
    hook = model.model.register_forward_pre_hook(
        lambda mod, args, kwargs: rows_seen.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    with shared_prefill(model):
        shared = _sample(model, tok, enc)
    hook.remove()
    assert torch.equal(plain, shared)
    assert rows_seen[0] == 3 and set(rows_seen[1:]) == {12}  # prefill on the 3 unique prompts
    assert "forward" not in model.__dict__  # the class's forward again
    assert torch.equal(_sample(model, tok, enc), plain)


def test_no_repeats_and_instance_patch_restored(tmp_path):
    model, tok, enc = _model_and_batch(tmp_path, repeats=1)
    plain = _sample(model, tok, enc)
    calls = []
    inner = model.forward

    def patched(*args, **kwargs):  # an instance-level forward, as TRL's fused LM head installs
        calls.append(kwargs["input_ids"].shape[0])
        return inner(*args, **kwargs)

    model.forward = patched
    with shared_prefill(model):
        assert torch.equal(_sample(model, tok, enc), plain)
    assert model.forward is patched and calls[0] == 3  # nothing repeated: nothing shared


def _loss_batch(tmp_path, repeats=4):
    """A fused-head tiny Llama in training mode and a GRPO-shaped batch: 3 prompts (left padded,
    unequal lengths) x ``repeats`` completions (right padded, unequal lengths), rows shuffled."""
    from _support import save_tiny_llama
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.utils import add_fused_lm_head

    path = save_tiny_llama(tmp_path)
    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    model.train()
    prompts = tok([t for t in ["1 + 1 =", "12 + 30 + 7 =", "9 ="] for _ in range(repeats)],
                  return_tensors="pt", padding=True)
    gen = torch.Generator().manual_seed(0)
    rows, length = prompts["input_ids"].shape[0], 6
    completion = torch.randint(3, model.config.vocab_size, (rows, length), generator=gen)
    completion_mask = torch.ones(rows, length, dtype=torch.long)
    for i in range(rows):  # completions ending early: padding on the right
        completion_mask[i, 1 + i % length:] = 0
    completion[completion_mask == 0] = tok.pad_token_id
    ids = torch.cat([prompts["input_ids"], completion], dim=1)
    mask = torch.cat([prompts["attention_mask"], completion_mask], dim=1)
    order = torch.randperm(rows, generator=gen)  # TRL shuffles a batch's rows before the loss
    return model, ids[order], mask[order], length, completion_mask[order]


def _trl_logps(model, ids, mask, keep):
    """TRL's own computation (GRPOTrainer._get_per_token_logps_and_entropies, one chunk)."""
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :-keep] = -100
    out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    return out.log_probs[:, -keep:], out.entropy[:, -keep:]


def test_shared_prompt_logps_match_trl_values_and_gradients(tmp_path):
    from rollwise.integrations.prefill import shared_prompt_logps

    model, ids, mask, keep, cmask = _loss_batch(tmp_path)
    ref_lp, ref_ent = _trl_logps(model, ids, mask, keep)
    lp, ent = shared_prompt_logps(model, ids, mask, keep, compute_entropy=True)
    assert lp.shape == ref_lp.shape == (12, keep)
    assert torch.allclose(lp * cmask, ref_lp * cmask, atol=1e-5)
    assert torch.allclose(ent * cmask, ref_ent * cmask, atol=1e-5)
    assert ref_lp[cmask == 1].abs().min() > 1e-3  # real log-probabilities, not zeros

    def grads(fn):
        model.zero_grad()
        logps = fn()[0]
        weights = torch.linspace(-1.0, 1.0, logps.numel()).reshape(logps.shape)  # any advantages
        (logps * cmask * weights).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref = grads(lambda: _trl_logps(model, ids, mask, keep))
    got = grads(lambda: shared_prompt_logps(model, ids, mask, keep, compute_entropy=False))
    assert ref.keys() == got.keys() and "model.layers.0.self_attn.q_proj.weight" in ref
    for name in ref:  # gradients reach the prompt's keys and values through the shared cache
        assert torch.allclose(got[name], ref[name], atol=1e-5, rtol=1e-4), name


def test_shared_prompt_logps_declines_where_it_does_not_apply(tmp_path):
    from rollwise.integrations.prefill import shared_prompt_logps

    model, ids, mask, keep, _ = _loss_batch(tmp_path, repeats=1)
    assert shared_prompt_logps(model, ids, mask, keep, compute_entropy=False) is None  # no repeats
    model, ids, mask, keep, _ = _loss_batch(tmp_path / "gc", repeats=2)
    model.gradient_checkpointing_enable()
    assert shared_prompt_logps(model, ids, mask, keep, compute_entropy=False) is None  # drops caches
    model.eval()  # no checkpointing outside training: the shortcut applies again
    with torch.no_grad():
        assert shared_prompt_logps(model, ids, mask, keep, compute_entropy=False) is not None
