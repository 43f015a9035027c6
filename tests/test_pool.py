"""PromptPool and the embedders: ids, normalisation, fingerprint, the on-disk embedding cache."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import rollwise
from rollwise import embed
from rollwise.embed import HashingEmbedder, embed_texts, get_embedder


def test_default_ids_and_basic_accessors():
    pool = rollwise.PromptPool(np.eye(3, 5) + 0.1)
    assert pool.ids == ("0", "1", "2")
    assert len(pool) == 3 and pool.dim == 5 and pool.texts is None
    assert pool.index_of("2") == 2
    np.testing.assert_array_equal(pool.indices_of(["2", "0"]), [2, 0])
    with pytest.raises(KeyError, match="'7'"):
        pool.index_of("7")
    assert "n=3" in repr(pool) and "dim=5" in repr(pool)


def test_custom_ids_and_texts():
    pool = rollwise.PromptPool(np.ones((2, 3)), ids=np.array(["a", "b"]), texts=("x", "y"))
    assert pool.ids == ("a", "b") and pool.texts == ("x", "y")
    assert pool.index_of("b") == 1


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=12),
                  elements=st.floats(-1e300, 1e300, allow_nan=False, allow_subnormal=False)))
def test_embeddings_are_l2_normalised(raw):
    """Any finite non-zero rows are accepted, however small or large (float32 cannot hold all)."""
    if raw.size == 0 or np.any(np.all(raw == 0, axis=1)):
        with pytest.raises(ValueError, match="embeddings"):
            rollwise.PromptPool(raw)
        return
    norms = np.linalg.norm(raw / np.abs(raw).max(axis=1, keepdims=True), axis=1)
    unit = raw / np.abs(raw).max(axis=1, keepdims=True) / norms[:, None]
    pool = rollwise.PromptPool(raw)
    assert pool.embeddings.dtype == np.float32 and pool.embeddings.shape == raw.shape
    np.testing.assert_allclose(np.linalg.norm(pool.embeddings, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(pool.embeddings, unit, atol=1e-5)


def test_embeddings_are_read_only_copies():
    raw = np.ones((2, 2), dtype=np.float32)
    pool = rollwise.PromptPool(raw)
    raw[0, 0] = 5.0  # the caller's array is not shared
    np.testing.assert_allclose(pool.embeddings[0], [2**-0.5, 2**-0.5], rtol=1e-6)
    with pytest.raises(ValueError):
        pool.embeddings[0, 0] = 1.0


def test_fingerprint():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((6, 4))
    base = rollwise.PromptPool(emb)
    assert base.fingerprint() == rollwise.PromptPool(emb.copy()).fingerprint()
    assert base.fingerprint() == rollwise.PromptPool(emb * 2.0).fingerprint()  # same directions
    assert base.fingerprint() == rollwise.PromptPool(emb, texts=list("abcdef")).fingerprint()
    bumped = emb.copy()
    bumped[3, 2] += 1e-3
    assert rollwise.PromptPool(bumped).fingerprint() != base.fingerprint()
    assert rollwise.PromptPool(emb[::-1]).fingerprint() != base.fingerprint()
    ids = [f"p{i}" for i in range(6)]
    assert rollwise.PromptPool(emb, ids=ids).fingerprint() != base.fingerprint()
    assert len(base.fingerprint()) == 32
    # normalisation is idempotent: a pool rebuilt from its own embeddings is the same pool
    big = rollwise.PromptPool(rng.standard_normal((500, 64)))
    rebuilt = rollwise.PromptPool(big.embeddings.copy(), ids=list(big.ids))
    np.testing.assert_array_equal(rebuilt.embeddings, big.embeddings)
    assert rebuilt.fingerprint() == big.fingerprint()


def test_subset():
    pool = rollwise.PromptPool(np.random.default_rng(1).standard_normal((5, 3)),
                               ids=list("abcde"), texts=list("ABCDE"))
    sub = pool.subset([4, 1])
    assert sub.ids == ("e", "b") and sub.texts == ("E", "B")
    np.testing.assert_array_equal(sub.embeddings, pool.embeddings[[4, 1]])
    with pytest.raises(ValueError, match="indices"):
        pool.subset([0, 9])


# ---- embedders and the cache -----------------------------------------------------------------

TEXTS = ["Solve 2x + 3 = 7.", "What is the derivative of x^2?", "Compute 17 * 23.", "a"]


def test_hashing_embedder_is_deterministic():
    emb = HashingEmbedder(dim=64)
    a, b = emb.encode(TEXTS), HashingEmbedder(dim=64).encode(TEXTS)
    assert a.shape == (4, 64) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.all(np.abs(a).sum(axis=1) > 0)  # even a one-letter text gets a non-zero vector
    unit = a / np.linalg.norm(a, axis=1, keepdims=True)
    sim = unit @ unit[0]
    assert sim[0] == pytest.approx(1.0) and np.all(sim[1:] < 0.9)


def test_from_texts_hashing_uses_the_cache(tmp_path, monkeypatch):
    pool = rollwise.PromptPool.from_texts(TEXTS, embedder="hashing", cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    assert pool.texts == tuple(TEXTS) and pool.ids == ("0", "1", "2", "3")

    def boom(self, texts):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(HashingEmbedder, "encode", boom)
    again = rollwise.PromptPool.from_texts(TEXTS, embedder="hashing", cache_dir=tmp_path)
    np.testing.assert_array_equal(again.embeddings, pool.embeddings)
    assert again.fingerprint() == pool.fingerprint()
    with pytest.raises(AssertionError, match="cache"):  # other texts: a new entry is computed
        rollwise.PromptPool.from_texts(TEXTS[:2], embedder="hashing", cache_dir=tmp_path)


@pytest.mark.parametrize("content", [b"", b"garbage" * 20, "truncate"])
def test_unreadable_cache_entry_is_recomputed(tmp_path, content):
    first = embed_texts(TEXTS, "hashing", cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) - 7] if content == "truncate" else content)
    np.testing.assert_array_equal(embed_texts(TEXTS, "hashing", cache_dir=tmp_path), first)
    np.testing.assert_array_equal(np.load(path)["embeddings"], first)  # and the entry was repaired


def test_cache_can_be_bypassed(tmp_path):
    out = embed_texts(TEXTS, "hashing", cache_dir=tmp_path, use_cache=False)
    assert out.shape == (4, 256) and not list(tmp_path.iterdir())


def test_default_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ROLLWISE_CACHE", str(tmp_path))
    assert embed.default_cache_dir() == tmp_path
    embed_texts(["x y z"], "hashing")
    assert len(list((tmp_path / "embeddings").glob("*.npz"))) == 1


def test_custom_embedder_object(tmp_path):
    class Const:
        name = "const-3"

        def encode(self, texts):
            return np.tile(np.arange(1.0, 4.0), (len(texts), 1))

    assert get_embedder(Const()).name == "const-3"
    pool = rollwise.PromptPool.from_texts(["a", "b"], embedder=Const(), cache_dir=tmp_path)
    np.testing.assert_allclose(pool.embeddings[1], np.arange(1.0, 4.0) / np.sqrt(14), rtol=1e-6)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access is not allowed in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_wordllama_embedder_loads_offline(tmp_path, monkeypatch, no_network):
    pytest.importorskip("wordllama")
    monkeypatch.setenv("ROLLWISE_CACHE", str(tmp_path))
    monkeypatch.setattr(embed, "_LOADED", {})  # force a fresh load under these conditions
    texts = ["Solve for x: 2x + 3 = 7.", "Find x if 2x + 3 = 7.",
             "Name the capital city of France.", "What is the capital of France?"]
    pool = rollwise.PromptPool.from_texts(texts)  # the default embedder is WordLlama
    assert pool.dim == 256
    assert (tmp_path / "wordllama" / "tokenizers").is_dir()  # tokenizer config copied, not fetched
    assert len(list((tmp_path / "embeddings").glob("*.npz"))) == 1
    sim = pool.embeddings @ pool.embeddings.T
    # paraphrases are closer to each other than to the other topic
    assert sim[0, 1] > max(sim[0, 2], sim[0, 3])
    assert sim[2, 3] > max(sim[2, 0], sim[2, 1])


@pytest.mark.parametrize("edit", ["permute", "int", "narrow", "nan"])
def test_an_edited_cache_entry_is_recomputed_with_a_warning_naming_it(tmp_path, edit, caplog):
    """Rows permuted, an integer dtype, another width or a NaN: each prompt would get another's
    (or no) embedding; the entry is embedded again and the warning names the file."""
    first = embed_texts(TEXTS, "hashing", cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    with np.load(path) as f:
        arr, digest = f["embeddings"].copy(), f["digest"].copy()
    arr = {"permute": arr[::-1], "int": arr.astype(np.int64), "narrow": arr[:, :8],
           "nan": np.where(np.arange(arr.shape[1]) == 0, np.nan, arr).astype(np.float32)}[edit]
    with open(path, "wb") as f:
        np.savez(f, embeddings=arr, digest=digest)
    np.testing.assert_array_equal(embed_texts(TEXTS, "hashing", cache_dir=tmp_path), first)
    assert str(path) in caplog.text and "embedding the texts again" in caplog.text
    with np.load(path) as f:
        np.testing.assert_array_equal(f["embeddings"], first)  # repaired


def test_cache_key_names_the_embedders_package_version(tmp_path, monkeypatch):
    """An upgrade of the package that computes the vectors is a new cache entry."""
    from importlib import metadata

    embed_texts(TEXTS, "hashing", cache_dir=tmp_path)
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda p: "999" if p == "rollwise" else real(p))
    embed_texts(TEXTS, "hashing", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2
