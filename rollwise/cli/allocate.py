"""``rollwise allocate``: test-time samples per new prompt from a trained GPS selector."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rollwise.cli.bench import positive_int


def _quantiles(text: str) -> tuple[float, float]:
    try:
        lower, upper = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOWER,UPPER (e.g. 0.25,0.75), got {text!r}") from None
    if not 0.0 <= lower <= upper <= 1.0:
        raise argparse.ArgumentTypeError(f"need 0 <= LOWER <= UPPER <= 1, got {text!r}")
    return lower, upper


CALIBRATION_MODES = ("beta", "mean", "none")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rollwise.allocation import DEFAULT_QUANTILES, METHODS

    p.add_argument("--selector", type=Path, required=True,
                   help="saved GPS selector state (Selector.save)")
    p.add_argument("--pool", type=Path, required=True,
                   help="the JSON/JSONL/parquet prompt file the selector's pool was built from "
                        "(same rows, same ids), embedded again with --embedder")
    p.add_argument("--prompts", type=Path, required=True,
                   help="JSON/JSONL/parquet file of the new prompts to allocate samples to")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget", type=int, help="total number of samples")
    budget.add_argument("--per-prompt", type=positive_int,
                        help="average samples per prompt (budget = K * number of prompts)")
    p.add_argument("--method", choices=METHODS, default="greedy",
                   help="allocation rule (see rollwise.allocation)")
    p.add_argument("--min-per-prompt", type=int, default=1, help="samples every prompt gets at least")
    p.add_argument("--quantiles", type=_quantiles, default=DEFAULT_QUANTILES,
                   help="LOWER,UPPER quantiles of the window method")
    p.add_argument("--calibration", choices=CALIBRATION_MODES, default="beta",
                   help="how the selector's predictions are used: 'beta', the calibrated rates "
                        "with their fitted uncertainty (greedy maximises the expected pass@k under "
                        "it); 'mean', the calibrated rates; 'none', the raw predictions")
    p.add_argument("--contamination", default="0",
                   help="greedy: share of prompts whose prediction is taken as no better than a "
                        "random prompt's, a number in [0, 1] or 'fitted' (the selector's estimate "
                        "from its first observations); helped on the simulated world, hurt on "
                        "SmolLM2 (docs/allocation.md)")
    p.add_argument("--uniform-share", type=float, default=0.0,
                   help="guard: this share of the budget is spread as uniform allocation spreads "
                        "it, so pass@k is never below uniform's at that share of the budget")
    p.add_argument("--out", type=Path, required=True, help="output JSONL: one {id, samples} per prompt")
    p.add_argument("--text-field", default=None,
                   help="field holding the prompt text in --pool and --prompts; none: the first "
                        "of prompt, problem, question, text")
    p.add_argument("--embedder", default="wordllama",
                   help="the embedder the selector was trained with: wordllama, hashing, "
                        "hf:<checkpoint> (hf:smollm2), or sentence-transformers:<model>")


MAX_BUDGET = 1_000_000  # samples; the greedy allocation takes about 6 s for this many on a CPU


def _contamination(text: str) -> float | None:
    """``--contamination``: a share in [0, 1], or None for the selector's fitted estimate."""
    if text == "fitted":
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"--contamination must be a number in [0, 1] or 'fitted', got {text!r}")
    return value


def _kind(embedder_name: str) -> str:
    """An embedder's name without where its checkpoint lies (``hf:<path>@16-mean#<files>`` ->
    ``hf@16-mean``): a selector moved to another machine keeps its embedder; a different
    checkpoint at the same settings is caught by the pool check, whose fingerprint covers the
    embeddings themselves."""
    if not embedder_name.startswith("hf:"):
        return embedder_name
    return "hf@" + embedder_name.split("#", 1)[0].rpartition("@")[2]


def _selector_embedder_check(state_path: Path, embedder_name: str) -> None:
    """Refuse an embedder other than the one the selector was trained with, before the pool is
    embedded (selectors saved before the embedder was recorded are checked by their pool)."""
    import torch

    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable: load_selector reports it
        return
    trained = state.get("embedder") if isinstance(state, dict) else None
    if trained and _kind(trained) != _kind(embedder_name):
        raise ValueError(f"--embedder: the selector {str(state_path)!r} was trained with embedder "
                         f"{trained!r}, --embedder gives {embedder_name!r}; pass the selector's")


def _selector_pool_check(state_path: Path, pool) -> None:
    """Explain a pool mismatch before load_selector refuses it with a terser message."""
    import torch

    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable: load_selector reports it
        return
    if not isinstance(state, dict) or "pool_fingerprint" not in state:
        return
    size = state.get("pool_size")
    if state["pool_fingerprint"] != pool.fingerprint():
        what = (f"it was trained on {int(size)} prompts, --pool has {len(pool)}"
                if size is not None and int(size) != len(pool) else "the ids or embeddings differ")
        raise ValueError(
            f"--selector {str(state_path)!r} was not trained on this pool ({what}); pass the same "
            "prompt file as --pool and the same --embedder the selector was trained with"
        )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from rollwise import load_selector
    from rollwise._io import atomic_write_text
    from rollwise.allocation import allocate, saving_vs_uniform
    from rollwise.feedback.prompt_files import load_prompt_file
    from rollwise.pool import PromptPool

    for flag, path in (("--selector", args.selector), ("--pool", args.pool),
                       ("--prompts", args.prompts)):
        if not Path(path).is_file():
            what = "is a folder, not a file" if Path(path).is_dir() else "does not exist"
            raise FileNotFoundError(f"{flag}: {str(path)!r} {what}")
    from rollwise._io import check_output_file

    check_output_file("--out", args.out, inputs={"--selector": args.selector, "--pool": args.pool,
                                                 "--prompts": args.prompts})
    if args.min_per_prompt < 0:
        raise ValueError(f"--min-per-prompt must be >= 0, got {args.min_per_prompt}")
    fixed_contamination = _contamination(args.contamination)
    try:
        pool_set = load_prompt_file(args.pool, text_field=args.text_field)
    except ValueError as err:
        raise ValueError(f"--pool: {err}") from err
    try:
        new = load_prompt_file(args.prompts, text_field=args.text_field)
    except ValueError as err:
        raise ValueError(f"--prompts: {err}") from err
    n = len(new.texts)
    budget = args.budget if args.budget is not None else args.per_prompt * n
    if budget < 0:
        raise ValueError(f"--budget must be >= 0, got {budget}")
    if budget > MAX_BUDGET:
        raise ValueError(f"--budget {budget:,} (or --per-prompt x {n} prompts) is above the "
                         f"{MAX_BUDGET:,} samples allocate answers in seconds (one greedy step per "
                         "sample); split the prompts or lower the budget")
    if budget < n * args.min_per_prompt:
        raise ValueError(f"--budget {budget} is smaller than {n} prompts * --min-per-prompt "
                         f"{args.min_per_prompt} = {n * args.min_per_prompt}")
    from rollwise.llm.models import resolve_embedder

    try:
        embedder = resolve_embedder(args.embedder)
    except ValueError as err:
        raise ValueError(f"--embedder: {err}") from err
    from rollwise.embed import get_embedder

    _selector_embedder_check(args.selector, get_embedder(embedder).name)
    pool = PromptPool.from_texts(pool_set.texts, ids=pool_set.ids, embedder=embedder)
    _selector_pool_check(args.selector, pool)
    sel = load_selector(args.selector, pool)
    if not hasattr(sel, "predict_texts"):
        raise ValueError(f"--selector: strategy {sel.strategy!r} cannot predict prompts outside its pool; "
                         "use a GPS selector")
    if not 0.0 <= args.uniform_share <= 1.0:
        raise ValueError(f"--uniform-share must lie in [0, 1], got {args.uniform_share}")
    raw = sel.predict_texts(new.texts, embedder=embedder)
    calibration = sel.calibration()
    pred = raw if args.calibration == "none" else calibration.mean(raw)
    concentration = calibration.concentration if args.calibration == "beta" else None
    contamination = calibration.contamination if fixed_contamination is None else fixed_contamination
    counts = allocate(pred, budget, args.method, args.min_per_prompt, quantiles=args.quantiles,
                      concentration=concentration, uniform_share=args.uniform_share,
                      contamination=contamination)
    lines = [json.dumps({"id": pid, "samples": int(c), "predicted_rate": round(float(p), 6),
                         "raw_predicted_rate": round(float(r), 6)})
             for pid, c, p, r in zip(new.ids, counts, pred, raw, strict=True)]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    saving = saving_vs_uniform(pred, counts, min_per_prompt=args.min_per_prompt)
    used = saving["samples"]
    if args.calibration != "none":
        print(f"calibration ({calibration.groups} observed groups): slope {calibration.slope:.2f}, "
              f"bias {calibration.bias:.2f}, concentration {calibration.concentration:.1f}, "
              f"fitted contamination {calibration.contamination:.3f} (allocation uses "
              f"{contamination:.3f}: --contamination)")
    print(f"{n} prompts, {args.method}: {used} samples (budget {budget}), "
          f"{int(counts.min())}-{int(counts.max())} per prompt; predicted pass@k {saving['pass_at_k']:.3f}")
    if saving["uniform_samples"] is None:
        print("uniform allocation does not reach the same predicted pass@k within "
              f"{64 * n * max(1, args.min_per_prompt)} samples")
    else:
        print(f"uniform allocation needs {saving['uniform_samples']} samples for the same predicted "
              f"pass@k: {saving['saved']} saved ({saving['saved_fraction']:.1%})")
    print(f"wrote {args.out}")
    return saving
