"""The prompt pool: ids, optional texts and L2-normalised embeddings, shared by every selector."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np


class PromptPool:
    """N prompts with unique string ids, optional texts and an (N, d) float32 embedding matrix.

    Embeddings are L2-normalised on construction so that dot products are cosine similarities,
    which the diversity terms of the acquisition rely on.
    """

    def __init__(
        self,
        embeddings: np.ndarray,
        ids: Sequence[str] | None = None,
        texts: Sequence[str] | None = None,
    ) -> None:
        emb = np.asarray(embeddings)
        if emb.ndim != 2:
            raise ValueError(f"embeddings must be a 2-D array (N, d), got shape {emb.shape}")
        if emb.shape[0] == 0:
            raise ValueError("embeddings: the pool is empty (N = 0)")
        if emb.shape[1] == 0:
            raise ValueError("embeddings: dimension d must be positive")
        if not np.issubdtype(emb.dtype, np.number) or np.issubdtype(emb.dtype, np.complexfloating):
            raise TypeError(f"embeddings must be real numbers, got dtype {emb.dtype}")
        # Normalise in float64 (float32 would overflow or underflow on extreme finite rows), and
        # leave rows that are already unit in float32 as they are: normalising is idempotent, so
        # a pool rebuilt from its own embeddings has the same fingerprint.
        raw = emb.astype(np.float64, copy=True)
        if not np.all(np.isfinite(raw)):
            raise ValueError("embeddings contain NaN or inf")
        peak = np.abs(raw).max(axis=1, keepdims=True)
        scaled = raw / np.maximum(peak, np.finfo(float).tiny)
        norms = np.linalg.norm(scaled, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise ValueError(f"embeddings: row {int(np.argmin(norms[:, 0]))} is all zeros")
        unit = (peak <= 1.0) & (np.abs(peak * norms - 1.0) <= 1e-6)
        emb = np.where(unit, raw, scaled / norms).astype(np.float32)
        emb.setflags(write=False)
        n = emb.shape[0]
        if ids is None:
            ids = [str(i) for i in range(n)]
        else:
            if isinstance(ids, str):
                raise TypeError("ids must be a sequence of strings, not one string")
            ids = list(ids)
            if len(ids) != n:
                raise ValueError(f"ids has {len(ids)} entries but embeddings has {n} rows")
            if not all(isinstance(i, str) for i in ids):
                raise TypeError("ids must all be strings")
            if len(set(ids)) != n:
                dup = next(i for i in ids if ids.count(i) > 1)
                raise ValueError(f"ids must be unique; {dup!r} repeats")
        if texts is not None:
            if isinstance(texts, str):
                raise TypeError("texts must be a sequence of strings, not one string")
            texts = list(texts)
            if len(texts) != n:
                raise ValueError(f"texts has {len(texts)} entries but embeddings has {n} rows")
            if not all(isinstance(t, str) for t in texts):
                raise TypeError("texts must all be strings")
        self.embeddings: np.ndarray = emb
        self.ids: tuple[str, ...] = tuple(ids)
        self.texts: tuple[str, ...] | None = tuple(texts) if texts is not None else None
        self._index = {pid: i for i, pid in enumerate(self.ids)}
        self._fingerprint: str | None = None
        # the embedder's name when the pool was embedded here (from_texts), so a saved selector
        # can say which embedder it needs; not part of the fingerprint
        self.embedder: str | None = None

    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        ids: Sequence[str] | None = None,
        embedder: str | object = "wordllama",
        cache_dir: str | Path | None = None,
    ) -> PromptPool:
        """Embed ``texts`` (cached on disk by embedder and text hash) and build a pool."""
        from rollwise.embed import embed_texts

        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        texts = list(texts)
        if not texts:
            raise ValueError("texts: the pool is empty")
        from rollwise.embed import get_embedder

        emb = embed_texts(texts, embedder=embedder, cache_dir=cache_dir)
        pool = cls(emb, ids=ids, texts=texts)
        pool.embedder = get_embedder(embedder).name
        return pool

    def write_jsonl(self, path: str | Path) -> None:
        """Write ``{"id", "prompt"}`` per prompt (atomically): a pool file that ``rollwise
        allocate --pool`` (or :func:`rollwise.feedback.load_prompt_file`) reads back as this
        pool, same ids and texts. Needs the texts."""
        import json

        from rollwise._io import atomic_write_text

        if self.texts is None:
            raise ValueError("this pool has no texts to write (built from embeddings alone)")
        atomic_write_text(path, "".join(json.dumps({"id": i, "prompt": t}) + "\n"
                                        for i, t in zip(self.ids, self.texts, strict=True)))

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def __repr__(self) -> str:
        return f"PromptPool(n={len(self)}, dim={self.dim}, texts={self.texts is not None})"

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def index_of(self, prompt_id: str) -> int:
        try:
            return self._index[prompt_id]
        except KeyError:
            raise KeyError(f"prompt id {prompt_id!r} is not in the pool") from None

    def indices_of(self, prompt_ids: Sequence[str]) -> np.ndarray:
        return np.fromiter((self.index_of(p) for p in prompt_ids), dtype=np.int64)

    def fingerprint(self) -> str:
        """A hash of ids and embeddings: a saved selector refuses to load against another pool."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update("\x1f".join(self.ids).encode())
            h.update(np.ascontiguousarray(self.embeddings).tobytes())
            self._fingerprint = h.hexdigest()[:32]
        return self._fingerprint

    def with_embeddings(self, embeddings: np.ndarray, embedder: str | None = None) -> PromptPool:
        """The same prompts (ids, texts) with new embeddings of the same shape, e.g. re-embedded
        by a policy that has changed; ``embedder`` names what embedded them."""
        emb = np.asarray(embeddings)
        if emb.shape != self.embeddings.shape:
            raise ValueError(f"embeddings must have this pool's shape {self.embeddings.shape}, "
                             f"got {emb.shape}")
        pool = PromptPool(emb, ids=self.ids, texts=self.texts)
        pool.embedder = embedder
        return pool

    def subset(self, indices: Sequence[int]) -> PromptPool:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= len(self))):
            raise ValueError(f"indices must be 1-D pool indices in [0, {len(self) - 1}]")
        texts = [self.texts[i] for i in idx] if self.texts is not None else None
        return PromptPool(self.embeddings[idx], ids=[self.ids[i] for i in idx], texts=texts)
