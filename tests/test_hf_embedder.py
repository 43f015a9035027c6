"""The ``hf:`` embedder: a language model's pooled hidden states, on a tiny random Llama."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")
import torch  # noqa: E402

import rollwise  # noqa: E402
from rollwise.embed import HFEmbedder, check_embedder_name, embed_texts, parse_hf_embedder  # noqa: E402

TEXTS = ["1 + 1 =", "How many letters r in strawberry?", "2 * 3 =", "x", "12 - 7 + 3 ="]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from _support import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny-embed"), layers=3)


def full_hidden_states(path: str, texts: list[str]) -> tuple:
    """Every hidden state of the whole model, one text at a time (no padding)."""
    from transformers import AutoModel, AutoTokenizer

    tok, net = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    with torch.inference_mode():
        return [net(**tok(t, return_tensors="pt"), output_hidden_states=True).hidden_states
                for t in texts]


@pytest.mark.parametrize("layer", [0, 1, 2])
@pytest.mark.parametrize("pooling", ["mean", "last", "body"])
def test_pooled_hidden_state_matches_the_whole_model(tiny_llama, layer, pooling):
    """Dropping the later blocks and batching with padding change nothing: each row is the
    unit-normalised pool of that layer's output (before any final norm) of that text alone."""
    emb = HFEmbedder(tiny_llama, layer=layer, pooling=pooling, batch_size=2, device="cpu")
    out = emb.encode(TEXTS)
    assert out.shape == (len(TEXTS), 32) and out.dtype == np.float32
    for row, hs in zip(out, full_hidden_states(tiny_llama, TEXTS), strict=True):
        h = hs[layer][0]
        want = {"mean": h.mean(0), "last": h[-1],
                "body": h[1:].mean(0) if len(h) > 1 else h[0]}[pooling]
        np.testing.assert_allclose(row, (want / want.norm()).numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_last_layer_is_read_before_the_final_norm(tiny_llama):
    """Layer n_layers differs from HF's normalised last hidden state, and equals the last
    block's output (the input of the final norm)."""
    from transformers import AutoModel, AutoTokenizer

    tok, net = AutoTokenizer.from_pretrained(tiny_llama), AutoModel.from_pretrained(tiny_llama).eval()
    seen = []
    net.norm.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.inference_mode():
        net(**tok(TEXTS[1], return_tensors="pt"))
    want = seen[0][0].mean(0)
    row = HFEmbedder(tiny_llama, layer=3, device="cpu").encode([TEXTS[1]])[0]
    np.testing.assert_allclose(row, (want / want.norm()).numpy(), atol=1e-5)


def test_default_layer_is_past_the_middle_and_name_carries_the_choice(tiny_llama):
    emb = HFEmbedder(tiny_llama, device="cpu")
    assert emb.layer == 2 and emb.pooling == "mean"
    assert emb.name.startswith(f"hf:{tiny_llama}@2-mean#")
    assert HFEmbedder(tiny_llama, layer=1, device="cpu").name != emb.name


def test_cache_round_trip_and_a_changed_checkpoint_is_embedded_again(tiny_llama, tmp_path):
    import os

    name = f"hf:{tiny_llama}@1-mean"
    first = embed_texts(TEXTS, name, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    np.testing.assert_array_equal(embed_texts(TEXTS, name, cache_dir=tmp_path), first)
    # the same path holding a changed checkpoint has another fingerprint, hence another cache entry
    weights = next(p for p in os.listdir(tiny_llama) if p.endswith(".safetensors"))
    st = os.stat(os.path.join(tiny_llama, weights))
    os.utime(os.path.join(tiny_llama, weights), ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = HFEmbedder(tiny_llama, layer=1, device="cpu")
    assert again.name != rollwise.embed.get_embedder(name).name


def test_pool_records_its_embedder_and_the_selector_saves_it(tiny_llama, tmp_path):
    pool = rollwise.PromptPool.from_texts(TEXTS, embedder=f"hf:{tiny_llama}@1-last",
                                          cache_dir=tmp_path)
    assert pool.dim == 32 and pool.embedder.startswith(f"hf:{tiny_llama}@1-last#")
    sel = rollwise.make_selector("uniform", pool, 2, seed=0)
    assert sel.state_dict()["embedder"] == pool.embedder


@pytest.mark.parametrize("name, part", [
    ("hf:", "checkpoint"), ("hf:model@x", "layer"), ("hf:model@3-max", "pooling"),
])
def test_bad_names_are_refused_before_loading(name, part):
    with pytest.raises(ValueError, match=part):
        check_embedder_name(name)


def test_names_parse():
    assert parse_hf_embedder("hf:/a/b") == ("/a/b", None, "mean")
    assert parse_hf_embedder("hf:/a/b@12") == ("/a/b", 12, "mean")
    assert parse_hf_embedder("hf:/a/b@-last") == ("/a/b", None, "last")
    assert parse_hf_embedder("hf:/a/b@4-last") == ("/a/b", 4, "last")


def test_layer_out_of_range_is_refused(tiny_llama):
    with pytest.raises(ValueError, match=r"layer must lie in \[0, 3\]"):
        HFEmbedder(tiny_llama, layer=4, device="cpu")


def test_resolve_embedder(tiny_llama):
    from rollwise.llm.models import resolve_embedder

    assert resolve_embedder("wordllama") == "wordllama"
    assert resolve_embedder("policy", policy=tiny_llama) == f"hf:{tiny_llama}"
    assert resolve_embedder(f"hf:{tiny_llama}@1-last") == f"hf:{tiny_llama}@1-last"
    assert resolve_embedder("policy@1-body", policy=tiny_llama) == f"hf:{tiny_llama}@1-body"
    with pytest.raises(ValueError, match="needs a policy"):
        resolve_embedder("policy")
    with pytest.raises(ValueError, match="needs a policy"):
        resolve_embedder("policy@16-body")
    with pytest.raises(ValueError, match="does not exist"):
        resolve_embedder("hf:/no/such/checkpoint")


def test_train_with_the_policy_embedder(tiny_llama, tmp_path):
    """``rollwise train --embedder policy``: the pool is embedded with the policy's own
    checkpoint, and the saved selector says so."""
    pytest.importorskip("trl")
    from rollwise.llm.engine import TrainSettings, run_grpo

    rows = [{"id": f"q{i}", "prompt": f"{i} + {i} =", "question": f"{i} + {i}",
             "answer": str(2 * i), "level": 0} for i in range(12)]
    settings = TrainSettings(model="unused", output_dir=str(tmp_path / "run"), steps=1,
                             prompts_per_step=3, num_generations=2, max_new_tokens=4,
                             embedder="policy", strategy="gps", eval_prompts=0, save_steps=100)
    run_grpo(settings, tiny_llama, rows, [], lambda completions, **kw: [0.0] * len(completions))
    state = torch.load(tmp_path / "run" / "rollwise_selector.pt", weights_only=True)
    assert state["embedder"].startswith(f"hf:{tiny_llama}@2-mean#")


@pytest.mark.parametrize("pooling", ["mean", "body"])
def test_policy_in_memory_reads_what_the_checkpoint_embedder_reads(tiny_llama, pooling):
    """A causal LM held in memory (a policy in training) is embedded as its checkpoint is, the
    forward stopping after the block read; its training mode comes back unchanged."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rollwise.embed import PolicyEmbedder

    policy = AutoModelForCausalLM.from_pretrained(tiny_llama).train()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.padding_side = "left"  # as a trainer's generation tokenizer has it: must not matter
    live = PolicyEmbedder(policy, tok, layer=2, pooling=pooling, batch_size=2)
    want = HFEmbedder(tiny_llama, layer=2, pooling=pooling, batch_size=3, device="cpu").encode(TEXTS)
    np.testing.assert_allclose(live.encode(TEXTS), want, atol=1e-5)
    assert policy.training and live.name == f"policy-in-memory@2-{pooling}"
    with torch.no_grad():  # the weights change: so do the embeddings (nothing is cached)
        policy.model.layers[0].mlp.down_proj.weight.mul_(3.0)
    assert not np.allclose(live.encode(TEXTS), want, atol=1e-3)
    with pytest.raises(ValueError, match="layer"):
        PolicyEmbedder(policy, tok, layer=4)
    with pytest.raises(ValueError, match="pooling"):
        PolicyEmbedder(policy, tok, pooling="max")
