"""Text embedders and an on-disk embedding cache.

* ``wordllama`` (default, as in the GPS paper): WordLlama's 256-d static token embeddings; the
  weights ship inside the PyPI package (extra ``embed``), so it works offline.
* ``sentence-transformers:<model>``: any sentence-transformers model (extra ``st``).
* ``hashing``: dependency-free hashed character n-grams, for tests and minimal installs.

Embeddings are cached as ``.npy`` files keyed by the embedder's name and a hash of the texts, so a
40k-prompt pool is embedded once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from rollwise._io import atomic_write


def default_cache_dir() -> Path:
    """``$ROLLWISE_CACHE`` or ``~/.cache/rollwise``."""
    return Path(os.environ.get("ROLLWISE_CACHE", Path.home() / ".cache" / "rollwise"))


@runtime_checkable
class Embedder(Protocol):
    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class HashingEmbedder:
    """Signed hashed character n-grams (n = 3..5): crude but deterministic and dependency-free."""

    def __init__(self, dim: int = 256, ngram_range: tuple[int, int] = (3, 5)) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim, self.ngram_range = int(dim), ngram_range
        self.name = f"hashing-{dim}-{ngram_range[0]}-{ngram_range[1]}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        lo, hi = self.ngram_range
        for row, text in enumerate(texts):
            t = f" {text.lower()} "
            for n in range(lo, hi + 1):
                for i in range(len(t) - n + 1):
                    h = zlib.crc32(t[i : i + n].encode())
                    out[row, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
            if not out[row].any():  # too short for any n-gram: hash the whole text
                out[row, zlib.crc32(t.encode()) % self.dim] = 1.0
        return out


class WordLlamaEmbedder:
    """WordLlama (l2_supercat) loaded fully offline from the installed package's files."""

    def __init__(self, dim: int = 256, cache_dir: str | Path | None = None) -> None:
        try:
            import wordllama
            from wordllama import WordLlama
        except ImportError as err:
            raise ImportError(
                "the 'wordllama' embedder needs the wordllama package: "
                "pip install 'rollwise[embed]' (or use embedder='hashing')"
            ) from err
        self.dim = int(dim)
        self.name = f"wordllama-l2_supercat-{self.dim}"
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "wordllama"
        pkg = Path(wordllama.__file__).parent
        # WordLlama looks for its tokenizer config in the cache dir before trying the hub;
        # the package ships the file, so place a copy there and never download.
        tok_src = pkg / "tokenizers" / "l2_supercat_tokenizer_config.json"
        tok_dst = cache / "tokenizers" / tok_src.name
        if tok_src.exists() and not tok_dst.exists():
            atomic_write(tok_dst, lambda tmp: shutil.copyfile(tok_src, tmp), make_parents=True)
        self._model = WordLlama.load(dim=self.dim, cache_dir=cache, disable_download=True)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._model.embed(list(texts), norm=True), dtype=np.float32)


class SentenceTransformerEmbedder:
    """Any sentence-transformers model (local path or a name already in the HF cache)."""

    def __init__(self, model: str = "all-MiniLM-L6-v2") -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise ImportError(
                "sentence-transformers embedders need: pip install 'rollwise[st]'"
            ) from err
        self.name = f"st-{model}"
        self._model = SentenceTransformer(model)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._model.encode(list(texts), normalize_embeddings=True), np.float32)


_LOADED: dict[str, Embedder] = {}


def check_embedder_name(name: str) -> str:
    """``name`` if :func:`get_embedder` knows it, else a ``ValueError`` (nothing is loaded)."""
    if name in ("wordllama", "hashing") or (
            isinstance(name, str) and name.startswith(("sentence-transformers:", "st:"))
            and name.split(":", 1)[1]):
        return name
    raise ValueError(f"unknown embedder {name!r}; use 'wordllama', 'hashing' or "
                     "'sentence-transformers:<model>'")


def get_embedder(embedder: str | Embedder) -> Embedder:
    """Resolve ``'wordllama'``, ``'hashing'``, ``'sentence-transformers:<model>'`` or an object."""
    if not isinstance(embedder, str):
        if isinstance(embedder, Embedder):
            return embedder
        raise TypeError("embedder must be a name or an object with .name and .encode(texts)")
    if embedder not in _LOADED:
        if embedder == "wordllama":
            _LOADED[embedder] = WordLlamaEmbedder()
        elif embedder == "hashing":
            _LOADED[embedder] = HashingEmbedder()
        else:
            _LOADED[embedder] = SentenceTransformerEmbedder(check_embedder_name(embedder).split(":", 1)[1])
    return _LOADED[embedder]


def embed_texts(
    texts: Sequence[str],
    embedder: str | Embedder = "wordllama",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> np.ndarray:
    """Embed ``texts`` into an (N, d) float32 array, reading/writing the on-disk cache."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must all be strings")
    emb = get_embedder(embedder)
    if not texts:
        raise ValueError("texts is empty")
    h = hashlib.sha256(emb.name.encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    path = Path(cache_dir or default_cache_dir() / "embeddings") / f"{h.hexdigest()[:40]}.npy"
    if use_cache and path.exists():
        try:
            arr = np.load(path)
            if arr.shape[0] == len(texts):
                return arr
        except (OSError, ValueError, EOFError):
            pass  # unreadable cache entry (empty, truncated, garbage): recompute and overwrite
    arr = np.asarray(emb.encode(texts), dtype=np.float32)
    if use_cache:
        atomic_write(path, lambda tmp: np.save(open(tmp, "wb"), arr), make_parents=True)
    return arr
