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
