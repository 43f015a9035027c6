"""Text embedders and an on-disk embedding cache.

* ``wordllama`` (default, as in the GPS paper): WordLlama's 256-d static token embeddings; the
  weights ship inside the PyPI package (extra ``embed``), so it works offline.
* ``sentence-transformers:<model>``: any sentence-transformers model (extra ``st``).
* ``hf:<checkpoint>``: a causal language model's own pooled hidden states (extra ``trl``):
  its hidden states carry a prompt's length, number sizes, operations and the model's familiarity
  with the text, which static word vectors average away. ``hf:<checkpoint>@<layer>-<pooling>``
  picks the layer and the pooling (``mean`` or ``last``); the default is mean pooling just past
  the middle layer (see docs/embedders.md for the measurement).
* ``hashing``: dependency-free hashed character n-grams, for tests and minimal installs.

Embeddings are cached as ``.npz`` files keyed by the embedder's name, the version of the package
that computes them and a hash of the texts, so a 40k-prompt pool is embedded once. Each entry
holds a digest of its own key and values: an entry that is damaged, edited (rows permuted,
another dtype or width) or not finite is recomputed with a warning that names the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from rollwise._io import atomic_write

log = logging.getLogger(__name__)


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
        self.package = "wordllama"
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
        self.package = "sentence-transformers"
        self._model = SentenceTransformer(model)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._model.encode(list(texts), normalize_embeddings=True), np.float32)


class HFEmbedder:
    """Pooled hidden states of a Hugging Face language model at one layer.

    Only the blocks up to ``layer`` run (the rest of the model is dropped after loading), in
    batches sorted by length so padding stays small. ``layer`` counts like ``hidden_states``:
    0 is the token embeddings, ``n_layers`` the last block (read before the final norm);
    ``None`` is just past the middle, ``n_layers // 2 + 1`` (16 of SmolLM2-135M's 30), where a
    linear probe of difficulty ranked held-out prompts best (benchmarks/embedders.py). Each
    pooled vector is L2-normalised.

    Poolings: ``mean`` over every token, ``last`` the last token, ``body`` the mean over every
    token but the first. In a causal LM the first position is the attention sink: its hidden
    state carries massive activations in a few dimensions (SmolLM2-135M at block 16: norm about
    23,000 against about 170 elsewhere), so ``mean`` is mostly that one token, and every pooled
    vector points almost the same way (mean pairwise cosine 0.97 on MATH problems; 0.92 with
    ``body``). A one-token text pools its only token.
    """

    POOLINGS = ("mean", "last", "body")

    def __init__(self, model: str, layer: int | None = None, pooling: str = "mean",
                 batch_size: int = 32, device: str | None = None, max_length: int = 512,
                 show_progress: bool | None = None) -> None:
        if pooling not in self.POOLINGS:
            raise ValueError(f"pooling must be one of {self.POOLINGS}, got {pooling!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        try:
            import torch
            from transformers import AutoConfig, AutoModel, AutoTokenizer
        except ImportError as err:
            raise ImportError("the 'hf:' embedder needs torch and transformers: "
                              "pip install 'rollwise[trl]'") from err
        config = AutoConfig.from_pretrained(model)
        n_layers = int(getattr(config, "num_hidden_layers", 0) or 0)
        if n_layers < 1:
            raise ValueError(f"hf embedder: {model!r} has no num_hidden_layers in its config")
        layer = resolve_layer(layer, n_layers, f" for {model!r}")
        self.model_path, self.layer, self.pooling = model, layer, pooling
        self.batch_size, self.max_length = int(batch_size), int(max_length)
        self.show_progress = show_progress
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.name = f"hf:{model}@{layer}-{pooling}#{_checkpoint_fingerprint(model)}"
        self.package = "transformers"
        self._tok = AutoTokenizer.from_pretrained(model)
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        self._tok.padding_side = "right"
        net = _quietly(lambda: AutoModel.from_pretrained(model, dtype=torch.float32))
        # Read the output of block ``layer`` before any final norm: it is the input of the
        # model's final norm once the later blocks are dropped (they are never needed).
        layers, norm = getattr(net, "layers", None), getattr(net, "norm", None)
        self._captured: list = []
        if isinstance(layers, torch.nn.ModuleList) and isinstance(norm, torch.nn.Module):
            del layers[layer:]
            norm.register_forward_pre_hook(lambda _m, args: self._captured.append(args[0]))
            self._hooked = True
        else:  # an architecture without the usual layout: run it whole, read hidden_states
            self._hooked = False
        self._net = net.to(self.device).eval()

    def _hidden(self, batch: dict):
        """Hidden states after block ``self.layer``, before any final norm: (b, t, d)."""
        self._captured.clear()
        out = self._net(**batch, output_hidden_states=not self._hooked)
        return self._captured[-1] if self._hooked else out.hidden_states[self.layer]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        show = self.show_progress if self.show_progress is not None else len(texts) > 2000
        return pooled_hidden_states(self._hidden, self._tok, texts, self.pooling,
                                    batch_size=self.batch_size, max_length=self.max_length,
                                    device=self.device,
                                    progress=f"embedding with {Path(self.model_path).name}"
                                    if show else None)


class PolicyEmbedder:
    """Pooled hidden states of a causal LM already in memory (a policy being trained), read the
    way :class:`HFEmbedder` reads a checkpoint: the output of block ``layer`` before any final
    norm, pooled and L2-normalised. The forward stops after that block, and the model's training
    mode is restored afterwards. Its embeddings change with the weights, so they are never cached
    (``name`` says so); re-embedding a pool from the current policy is
    ``RollwiseGRPOTrainer(embed_refresh_steps=...)``."""

    def __init__(self, model, tokenizer, layer: int | None = None, pooling: str = "mean",
                 batch_size: int = 32, max_length: int = 512) -> None:
        import torch

        if pooling not in HFEmbedder.POOLINGS:
            raise ValueError(f"pooling must be one of {HFEmbedder.POOLINGS}, got {pooling!r}")
        base = model.get_decoder() if hasattr(model, "get_decoder") else model
        layers = getattr(base, "layers", None)
        if not isinstance(layers, torch.nn.ModuleList) or not hasattr(base, "embed_tokens"):
            raise ValueError(f"{type(model).__name__}: no decoder with 'layers' and "
                             "'embed_tokens' to read hidden states from")
        layer = resolve_layer(layer, len(layers))
        self.model, self.layer, self.pooling = model, layer, pooling
        self.batch_size, self.max_length = int(batch_size), int(max_length)
        self._tok = tokenizer
        self._block = base.embed_tokens if layer == 0 else layers[layer - 1]
        self.name = f"policy-in-memory@{layer}-{pooling}"

    def _hidden(self, batch: dict):
        captured: list = []

        def stop(_module, _args, output):
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _Captured

        handle = self._block.register_forward_hook(stop)
        try:
            self.model(**batch)
        except _Captured:
            pass
        finally:
            handle.remove()
        return captured[-1]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        training = self.model.training
        self.model.eval()
        try:
            device = next(self.model.parameters()).device
            return pooled_hidden_states(self._hidden, self._tok, texts, self.pooling,
                                        batch_size=self.batch_size, max_length=self.max_length,
                                        device=device)
        finally:
            self.model.train(training)


def resolve_layer(layer: int | None, n_layers: int, where: str = "") -> int:
    """``layer``, or just past the middle block (``n_layers // 2 + 1``) when None; refused
    outside ``[0, n_layers]``."""
    layer = n_layers // 2 + 1 if layer is None else int(layer)
    if not 0 <= layer <= n_layers:
        raise ValueError(f"layer must lie in [0, {n_layers}]{where}, got {layer}")
    return layer


class _Captured(Exception):
    """Raised by :class:`PolicyEmbedder`'s hook to stop the forward once its block has run."""


def pooled_hidden_states(hidden, tokenizer, texts: Sequence[str], pooling: str, batch_size: int,
                         max_length: int, device, progress: str | None = None) -> np.ndarray:
    """``(len(texts), d)`` unit vectors: ``hidden(batch)`` -> (b, t, d) hidden states of
    right-padded batches sorted by length (little padding), pooled by ``pooling``."""
    import torch

    texts = list(texts)
    order = np.argsort([len(t) for t in texts], kind="stable")
    chunks = range(0, len(texts), batch_size)
    if progress:
        from tqdm.auto import tqdm
        chunks = tqdm(chunks, desc=progress, unit="batch")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = []
    with torch.inference_mode():
        for lo in chunks:
            idx = order[lo : lo + batch_size]
            batch = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                              padding_side="right", truncation=True,
                              max_length=max_length).to(device)
            h = hidden(batch).float()
            mask = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
            if pooling == "body":  # right padding: position 0 is every text's first
                mask = mask.clone()
                mask[:, 0] *= (mask.sum(1) <= 1).to(mask.dtype).view(-1, 1)
            if pooling in ("mean", "body"):
                pooled = (h * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            else:
                last = batch["attention_mask"].sum(1).clamp_min(1) - 1
                pooled = h[torch.arange(h.shape[0], device=h.device), last]
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            rows.append((idx, pooled.cpu().numpy().astype(np.float32)))
    out = np.zeros((len(texts), rows[0][1].shape[1] if rows else 0), dtype=np.float32)
    for idx, arr in rows:
        out[idx] = arr
    return out


def _quietly(load):
    """``load()`` without transformers' progress bar and load report (the base model is loaded
    from a causal LM checkpoint on purpose: its unused LM head is no news to the user)."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return load()
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _checkpoint_fingerprint(model: str) -> str:
    """A short hash of a local checkpoint's files (names, sizes, modification times), so that a
    changed checkpoint at the same path is embedded again instead of read from the cache."""
    path = Path(model)
    h = hashlib.sha256(str(path.resolve() if path.exists() else model).encode())
    if path.is_dir():
        for f in sorted(path.iterdir()):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def parse_hf_embedder(name: str) -> tuple[str, int | None, str]:
    """``'hf:<checkpoint>[@<layer>[-<pooling>]]'`` -> ``(checkpoint, layer, pooling)``; a
    ``ValueError`` naming the part that is wrong (nothing is loaded)."""
    spec = name.split(":", 1)[1]
    model, _, tail = spec.rpartition("@") if "@" in spec else (spec, "", "")
    layer, pooling = None, "mean"
    if tail:
        layer_s, _, pool_s = tail.partition("-")
        if layer_s:
            if not layer_s.isdigit():
                raise ValueError(f"embedder {name!r}: the layer after '@' must be a number")
            layer = int(layer_s)
        if pool_s:
            if pool_s not in HFEmbedder.POOLINGS:
                raise ValueError(f"embedder {name!r}: pooling must be one of {HFEmbedder.POOLINGS}")
            pooling = pool_s
    if not model:
        raise ValueError(f"embedder {name!r}: give a checkpoint after 'hf:'")
    return model, layer, pooling


_LOADED: dict[str, Embedder] = {}


def check_embedder_name(name: str) -> str:
    """``name`` if :func:`get_embedder` knows it, else a ``ValueError`` (nothing is loaded)."""
    if isinstance(name, str) and name.startswith("hf:"):
        parse_hf_embedder(name)
        return name
    if name in ("wordllama", "hashing") or (
            isinstance(name, str) and name.startswith(("sentence-transformers:", "st:"))
            and name.split(":", 1)[1]):
        return name
    raise ValueError(f"unknown embedder {name!r}; use 'wordllama', 'hashing', "
                     "'hf:<checkpoint>' or 'sentence-transformers:<model>'")


def get_embedder(embedder: str | Embedder) -> Embedder:
    """Resolve ``'wordllama'``, ``'hashing'``, ``'hf:<checkpoint>'``,
    ``'sentence-transformers:<model>'`` or an object."""
    if not isinstance(embedder, str):
        if isinstance(embedder, Embedder):
            return embedder
        raise TypeError("embedder must be a name or an object with .name and .encode(texts)")
    if embedder not in _LOADED:
        if embedder == "wordllama":
            _LOADED[embedder] = WordLlamaEmbedder()
        elif embedder == "hashing":
            _LOADED[embedder] = HashingEmbedder()
        elif embedder.startswith("hf:"):
            model, layer, pooling = parse_hf_embedder(embedder)
            _LOADED[embedder] = HFEmbedder(model, layer=layer, pooling=pooling)
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
    h = hashlib.sha256(f"{emb.name}\n{_package_version(emb)}".encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    key = h.hexdigest()
    path = Path(cache_dir or default_cache_dir() / "embeddings") / f"{key[:40]}.npz"
    if use_cache and path.exists():
        arr, problem = _read_entry(path, key, len(texts))
        if arr is not None:
            return arr
        log.warning("embedding cache entry %s is %s: embedding the texts again", path, problem)
    arr = np.asarray(emb.encode(texts), dtype=np.float32)
    if use_cache:
        digest = np.frombuffer(_digest(key, arr), dtype=np.uint8)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, embeddings=arr, digest=digest)

        atomic_write(path, write, make_parents=True)
    return arr


def _digest(key: str, arr: np.ndarray) -> bytes:
    h = hashlib.sha256(key.encode())
    h.update(str(arr.shape).encode())
    h.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
    return h.digest()


def _read_entry(path: Path, key: str, rows: int) -> tuple[np.ndarray | None, str]:
    """A cache entry's embeddings, or None and what is wrong with it."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arr, digest = f["embeddings"], f["digest"].tobytes()
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:  # damaged
        return None, f"unreadable ({type(err).__name__})"
    if arr.dtype != np.float32 or arr.ndim != 2 or arr.shape[0] != rows:
        return None, f"of the wrong shape or type ({arr.dtype}, {arr.shape}; {rows} texts)"
    if not np.all(np.isfinite(arr)):
        return None, "not finite"
    if digest != _digest(key, arr):
        return None, "not what was written (its digest differs)"
    return arr, ""


def _package_version(emb: object) -> str:
    """The version of the package that computes the embedder's vectors (part of the cache key,
    so an upgrade is embedded again): its ``package`` attribute, else its class's top package."""
    from importlib import metadata

    package = getattr(emb, "package", None) or type(emb).__module__.split(".")[0]
    try:
        return f"{package} {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return package
