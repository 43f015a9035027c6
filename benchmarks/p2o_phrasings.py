"""Do instruction phrasings or a response prefix lift SmolLM2-135M's hard prompts? A fixed
library of templates, no search.

P²O's gain must come from a template under which the policy solves prompts it fails bare. The
worked-example templates of ``p2o_smollm2.py`` do not lift the 135M policy; this panel asks the
same of plain instruction phrasings (answer only, step by step, a role, restating the problem)
and of a *response prefix*: the assistant's turn starts with given text (``Answer:``, or the
problem's expression restated, e.g. ``8 - 7 =``) and the policy continues it; the verifier scores
prefix + continuation. The hard prompts of the starting model recorded in ``p2o_smollm2.json``
(0 successes in ``k`` samples there) are sampled ``--samples`` times under each template, with the
same sampling seed for every template. ``--model DIR`` measures a trained model instead (e.g. a
final checkpoint of ``p2o_smollm2.py``): its hard prompts are found as that script finds them (the
pool sampled ``k`` times bare, 0 successes). Writes ``benchmarks/results/p2o_phrasings.{json,md}``::

    python benchmarks/p2o_phrasings.py
    python benchmarks/p2o_phrasings.py --model runs/p2o_smollm2/grpo/seed2/final \
        --templates bare,restate,answer_only,prefix_answer,prefix_expression \
        --threads 2 --out benchmarks/results/p2o_phrasings_trained
"""

from __future__ import annotations

import argparse
import json
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
from p2o_smollm2 import bare_prompt, sample, sample_started, task_rows

from rollwise.llm.tasks import INSTRUCTION
from rollwise.rescue.gepa_adapter import DEFAULT_TEMPLATE
from rollwise.rescue.prefixes import restate_expression

# name -> user-turn template ({problem} is the problem text)
TEMPLATES = {
    "bare": DEFAULT_TEMPLATE,
    "number_only": "{problem}\nReply with only the number.",
    "answer_only": "{problem}\nDo not explain. Write only 'Answer: <number>'.",
    "step": "{problem}\nWork it out step by step, one operation per line." + INSTRUCTION,
    "calculator": "You are a precise calculator.\n{problem}" + INSTRUCTION,
    "restate": "{problem}\nFirst copy the expression, then compute it." + INSTRUCTION,
    "short": "{problem}\nBe brief." + INSTRUCTION,
    "prefix_answer": DEFAULT_TEMPLATE,
    "prefix_expression": DEFAULT_TEMPLATE,
}


# name -> the start of the assistant's turn, from the problem text (none: the policy starts it)
PREFIXES: dict[str, Callable[[str], str]] = {
    "prefix_answer": lambda problem: "Answer: ",
    "prefix_expression": lambda problem: restate_expression(problem) or "",  # what P²O's restate uses
}
PREFIX_TEXT = {"prefix_answer": "Answer: ", "prefix_expression": "the expression restated, e.g. 8 - 7 = "}


def markdown(data: dict) -> str:
    rates = data["rates"]
    bare = np.mean(rates["bare"])
    n, s = data["hard_prompts"], data["samples"]
    whose = ("the starting model in [p2o_smollm2.md](p2o_smollm2.md)" if data.get("model") is None
             else f"`{data['model']}`, found on the same pool")
    lines = [
        "# Instruction phrasings and response prefixes on SmolLM2-135M-Instruct's hard prompts", "",
        f"Written by `benchmarks/p2o_phrasings.py`. The {n} hard prompts of {whose} (0 successes "
        f"in {data['k']} samples), sampled "
        f"{s} times under each template (T = 1, {data['max_new_tokens']} new tokens, the same seed "
        "for every template). s.e.: binomial, of the mean rate.", "",
        "| template | mean success (s.e.) | vs bare | hard prompts solved at least once |",
        "|---|---|---|---|",
    ]
    for name, r in rates.items():
        r = np.asarray(r)
        se = np.sqrt(r.mean() * (1 - r.mean()) / (n * s))
        lines.append(f"| `{name}` | {r.mean():.3f} ({se:.3f}) | "
                     f"{r.mean() / bare if bare else float('nan'):.2f}x | {np.mean(r > 0):.2f} |")
    lines += ["", "Templates (`{problem}` is the problem text; a prefix starts the assistant's "
              "turn, the policy continues it and the verifier scores prefix + continuation):", ""]
    lines += [f"* `{name}`: `{json.dumps(t)[1:-1]}`"
              + (f", response prefix: {data['prefixes'][name]}" if name in data["prefixes"] else "")
              for name, t in data["templates"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--start", type=Path, default=Path(__file__).parent / "results" / "p2o_smollm2.json",
                    help="the P²O results whose starting model's hard prompts are sampled")
    ap.add_argument("--model", default=None, help="a trained model directory (default: the start)")
    ap.add_argument("--templates", default=",".join(TEMPLATES), help="comma-separated template names")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "p2o_phrasings")
    args = ap.parse_args()
    import torch

    from rollwise._io import atomic_write_json, atomic_write_report
    from rollwise.llm.generation import TransformersPolicy
    from rollwise.llm.models import resolve_model

    torch.set_num_threads(args.threads)
    saved = json.loads(args.start.read_text())
    config, start = saved["args"], saved["start"]
    pool_args = types.SimpleNamespace(levels=config["levels"], per_level=config["per_level"],
                                      pool_seed=config["pool_seed"], eval_prompts=config["eval_prompts"])
    task, rows, _ = task_rows(pool_args)
    chosen = [t.strip() for t in args.templates.split(",") if t.strip()]
    unknown = sorted(set(chosen) - set(TEMPLATES))
    if unknown:
        ap.error(f"--templates: unknown {unknown}; choose from {', '.join(TEMPLATES)}")
    chosen = ["bare"] + [t for t in chosen if t != "bare"]  # the reference of every ratio
    t0 = time.perf_counter()
    policy = TransformersPolicy(args.model or resolve_model("smollm2"), max_new_tokens=args.max_new_tokens,
                                temperature=1.0, batch_size=64, seed=args.seed)
    if args.model is None:
        hard_ids = set(start["hard"])
    else:  # as p2o_smollm2.py's mechanism finds them
        policy.seed = config["pool_seed"]
        base, _ = sample(policy, [bare_prompt(r) for r in rows], [r["answer"] for r in rows],
                         task.verify, config["k"])
        hard_ids = {r["id"] for r, b in zip(rows, base, strict=True) if b.sum() == 0}
    hard = [r for r in rows if r["id"] in hard_ids]
    if len(hard) != len(hard_ids):
        raise SystemExit(f"--start: {len(hard_ids)} hard prompts recorded, {len(hard)} found in the pool")
    rates, examples = {}, {}
    for name in chosen:
        template = TEMPLATES[name]
        start_of = PREFIXES.get(name, lambda problem: "")
        rate, completions = sample_started(policy, hard, template, start_of, task.verify, args.samples,
                                           args.seed)
        rates[name] = rate.tolist()
        examples[name] = start_of(hard[0]["question"]) + completions[0]
        print(f"{name}: {np.mean(rates[name]):.3f}", flush=True)
    data = {"model": args.model, "hard_prompts": len(hard), "k": config["k"], "samples": args.samples,
            "max_new_tokens": args.max_new_tokens, "seed": args.seed,
            "templates": {name: TEMPLATES[name] for name in chosen},
            "prefixes": PREFIX_TEXT, "hard": [r["id"] for r in hard], "rates": rates,
            "first_completion": examples,
            "wall_seconds": round(time.perf_counter() - t0, 1)}
    atomic_write_json(args.out.with_suffix(".json"), data)
    atomic_write_report(args.out.with_suffix(".md"), markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()
