"""Hard-prompt rescue (P²O) on SmolLM2-135M-Instruct: the mechanism, then plain GRPO vs GRPO + P²O.

1. The mechanism, on the starting model: the pool's prompts are sampled ``--k`` times; those never
   solved are the *hard* prompts, the verified successes fill a solved-example store (as training
   would). Hard prompts are then sampled ``--samples`` times bare, under the example proposer's
   first template (the two stored solutions nearest to each prompt) and under the template GEPA
   evolves with the example proposer on ``--rescue-max-hard`` of them (as one training-time
   evolution does).
2. The whole, over seeds: every arm trains from the same start on the same pool until the same
   rollout budget is spent, GEPA's rollouts included (a P²O arm pays for its evolutions with
   fewer training steps). After training, with the same protocol for every arm: the initially
   hard prompts are sampled ``--k`` times bare (the fraction solved at least once, and their mean
   rate), and the held-out prompts ``--k`` times (final held-out accuracy). No template at test time.

Runs go in parallel as processes (``--jobs``, ``--threads`` torch threads each); each finished run
is merged into OUT.json at once (``--merge`` adds arms and seeds later; ``--report`` redraws).

    python benchmarks/p2o_smollm2.py --seeds 0 1 2 --jobs 2 --threads 1
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
from parallel_runs import run_workers

from rollwise._io import atomic_write, atomic_write_json, atomic_write_report

ARMS = {  # name: (selection strategy, template proposer ("none": no search) or None: no rescue, prefix)
    "grpo": ("uniform", None, "none"),
    "grpo+p2o": ("uniform", "examples", "restate"),
    "grpo+p2o-examples": ("uniform", "examples", "none"),
    "grpo+p2o-prefix": ("uniform", "none", "restate"),  # no template search: no GEPA rollouts
    "grpo+p2o-reflection": ("uniform", "reflection", "none"),
    "gps+p2o": ("gps", "examples", "restate"),
}
SUMMARY_ARMS = ("grpo", "grpo+p2o")  # the arms the results' summary reports
GUIDANCE = "prefix"  # the mechanism condition of the grpo+p2o arm's guidance
COLUMNS = ("id", "prompt", "answer", "level", "question")
TRAIN_KEYS = ("budget", "prompts_per_step", "num_generations", "max_new_tokens", "learning_rate",
              "eval_prompts", "eval_steps", "k", "levels", "per_level", "pool_seed", "threads",
              "rescue_every", "rescue_guided", "rescue_max_metric_calls", "rescue_max_hard",
              "rescue_window")


# ---- data and sampling -----------------------------------------------------------------------
def task_rows(args: argparse.Namespace) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    """The task, the training pool (``per_level`` prompts of each level, drawn with ``pool_seed``:
    the same pool for every seed) and the held-out rows."""
    from rollwise.llm.tasks import get_task

    task = get_task("arithmetic")
    rng = random.Random(args.pool_seed)
    rows = []
    for level in [int(x) for x in str(args.levels).split(",")]:
        at = [r for r in task.train if int(r["level"]) == level]
        rows += rng.sample(at, min(args.per_level, len(at)))
    stride = max(1, len(task.heldout) // args.eval_prompts)
    held = task.heldout[::stride][: args.eval_prompts]
    return task, [{k: r[k] for k in COLUMNS} for r in rows], [{k: r[k] for k in COLUMNS} for r in held]


def sample(policy: Any, prompts: list[str], answers: list[str], verify: Any,
           k: int) -> tuple[np.ndarray, list[str]]:
    """Scores (len(prompts), k) of ``k`` samples per prompt, and the completions (prompt-major)."""
    completions = policy([p for p in prompts for _ in range(k)])
    scores = [verify(c, a) for c, a in zip(completions, [a for a in answers for _ in range(k)], strict=True)]
    return np.asarray(scores, dtype=float).reshape(len(prompts), k), completions


def sample_started(policy: Any, rows: list[dict[str, Any]], template: str, start_of: Any, verify: Any,
                   samples: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Success rate per row of ``samples`` samples under ``template``, the assistant's turn
    starting with ``start_of(question)`` and continued by the policy (scored with it), and the
    completions (row-major, the start not included)."""
    from rollwise.llm.generation import generate, render_chat
    from rollwise.rescue.templates import render_template

    texts = [render_chat(policy.tokenizer, render_template(template, r["question"])) + start_of(r["question"])
             for r in rows for _ in range(samples)]
    completions = generate(policy.model, policy.tokenizer, texts, max_new_tokens=policy.max_new_tokens,
                           temperature=1.0, batch_size=64, seed=seed)
    scores = [verify(start_of(r["question"]) + c, r["answer"])
              for r, c in zip([r for r in rows for _ in range(samples)], completions, strict=True)]
    return np.asarray(scores, dtype=float).reshape(len(rows), samples).mean(axis=1), completions


def bare_prompt(row: dict[str, Any]) -> str:
    return row["prompt"][-1]["content"]


# ---- 1. the mechanism ------------------------------------------------------------------------
def measure_mechanism(args: argparse.Namespace, model: str) -> dict[str, Any]:
    """Hard prompts of ``model`` (0 of ``k`` samples) bare, under two nearest solved examples and
    under the template GEPA evolves with the example proposer, ``samples`` each; the store holds
    ``model``'s own verified solutions on the pool."""
    from rollwise.llm.generation import TransformersPolicy
    from rollwise.llm.tasks import INSTRUCTION
    from rollwise.pool import PromptPool
    from rollwise.rescue.examples import ExampleProposer, Layout, SolvedExampleStore, nearest_resolver
    from rollwise.rescue.gepa_adapter import DEFAULT_TEMPLATE, evolve_template
    from rollwise.rescue.templates import render_template

    task, rows, _ = task_rows(args)
    policy = TransformersPolicy(model, max_new_tokens=args.max_new_tokens,
                                temperature=1.0, batch_size=64, seed=args.pool_seed)
    base, completions = sample(policy, [bare_prompt(r) for r in rows], [r["answer"] for r in rows],
                               task.verify, args.k)
    pool = PromptPool.from_texts([r["question"] for r in rows], ids=[r["id"] for r in rows],
                                 embedder="wordllama")
    store = SolvedExampleStore()
    for i, j in zip(*np.nonzero(base), strict=True):
        store.add(rows[i]["id"], rows[i]["question"], completions[i * args.k + j], pool.embeddings[i],
                  answer=rows[i]["answer"])
    hard = [i for i in range(len(rows)) if base[i].sum() == 0]
    hard_rows = [rows[i] for i in hard]
    resolve = nearest_resolver(store, lambda row: pool.embeddings[pool.index_of(row["id"])])

    def under(template: str, seed: int) -> np.ndarray:
        policy.seed = seed
        prompts = [render_template(resolve(template, r), r["question"]) for r in hard_rows]
        return sample(policy, prompts, [r["answer"] for r in hard_rows], task.verify, args.samples)[0]

    proposer = ExampleProposer(store, tail=INSTRUCTION, seed=args.pool_seed)
    nearest = proposer.render(Layout(nearest=2))
    # one shared template: the two stored solutions nearest to the hard prompts' mean embedding
    centre = pool.embeddings[[pool.index_of(r["id"]) for r in hard_rows]].mean(axis=0)
    shared = proposer.render(Layout(tuple(ex.key for ex in store.nearest(centre, 2))))
    policy.seed = args.pool_seed + 3
    evolved = evolve_template(hard_rows[: args.rescue_max_hard], policy, task.verify, None,
                              seed_template=DEFAULT_TEMPLATE, max_metric_calls=args.rescue_max_metric_calls,
                              seed=args.pool_seed, proposer=proposer, resolve=resolve)
    conditions = {"bare": DEFAULT_TEMPLATE, "nearest2": nearest, "shared2": shared,
                  "evolved": evolved.best_template}
    rates = {name: under(t, args.pool_seed + 1).mean(axis=1) for name, t in conditions.items()}
    example_prompt = render_template(resolve(nearest, hard_rows[0]), hard_rows[0]["question"])
    return {
        "pool": [r["id"] for r in rows], "pool_levels": [int(r["level"]) for r in rows],
        "base_rates": base.mean(axis=1).tolist(), "hard": [r["id"] for r in hard_rows],
        "hard_levels": [int(r["level"]) for r in hard_rows], "solved_examples": len(store),
        "templates": conditions, "hard_rates": {k: v.tolist() for k, v in rates.items()},
        "evolution": {"tried": evolved.tried, "rollouts": evolved.rollouts_spent,
                      "best_score": evolved.best_score, "mutations": [m for m, _ in proposer.proposals]},
        "example_prompt": example_prompt,
    }


def measure_prefix(args: argparse.Namespace, model: str, hard_ids: list[str]) -> dict[str, list[float]]:
    """The hard prompts bare and with the ``restate`` response prefix (the answer starts with the
    problem's equation restated and the policy continues it; the verifier scores both), sampled
    ``samples`` times each from the same seed, through the same generation path."""
    from rollwise.llm.generation import TransformersPolicy
    from rollwise.rescue.gepa_adapter import DEFAULT_TEMPLATE
    from rollwise.rescue.prefixes import restate_expression

    task, rows, _ = task_rows(args)
    hard = [r for r in rows if r["id"] in set(hard_ids)]
    policy = TransformersPolicy(model, max_new_tokens=args.max_new_tokens, temperature=1.0, batch_size=64)
    rates = {}
    for name, start_of in (("prefix_bare", lambda q: ""), ("prefix", lambda q: restate_expression(q) or "")):
        rates[name] = sample_started(policy, hard, DEFAULT_TEMPLATE, start_of, task.verify, args.samples,
                                     args.pool_seed + 1)[0].tolist()
        print(f"{name}: {np.mean(rates[name]):.3f}", flush=True)
    return rates


def measure_restating(args: argparse.Namespace, arm: str, seed: int,
                      hard_ids: list[str]) -> dict[str, Any] | None:
    """Whether the ``restate`` prefix was distilled into the bare prompt: the run's final model
    (arm ``start``: the starting model) samples the initially hard prompts bare ``--k`` times
    from the seed ``run_one`` used (the same completions its ``hard_after`` scored), and the
    share that start by restating the problem's expression is counted, with the success rate of
    those and of the others (None where the run's final model is not there)."""
    import torch

    from rollwise.llm.generation import TransformersPolicy
    from rollwise.rescue.prefixes import restate_expression

    torch.set_num_threads(args.threads)
    task, rows, _ = task_rows(args)
    hard = [r for r in rows if r["id"] in set(hard_ids)]
    if arm == "start":
        from rollwise.llm.models import resolve_model

        final = Path(resolve_model("smollm2"))
    else:
        final = Path(args.runs) / arm / f"seed{seed}" / "final"
    if not final.is_dir():
        print(f"--restating: no final model at {final}: {arm} seed {seed} skipped", flush=True)
        return None
    policy = TransformersPolicy(str(final), max_new_tokens=args.max_new_tokens, temperature=1.0,
                                batch_size=64, seed=seed + 101)
    scores, completions = sample(policy, [bare_prompt(r) for r in hard], [r["answer"] for r in hard],
                                 task.verify, args.k)
    starts = [(restate_expression(r["question"]) or "").strip() for r in hard for _ in range(args.k)]
    restated = np.asarray([bool(s) and c.lstrip().startswith(s)
                           for c, s in zip(completions, starts, strict=True)])
    flat = scores.reshape(-1)
    return {"restated": float(restated.mean()), "hard_rate": float(flat.mean()),
            "success_restated": float(flat[restated].mean()) if restated.any() else None,
            "success_other": float(flat[~restated].mean()) if (~restated).any() else None}


# ---- 2. one training run ---------------------------------------------------------------------
def run_one(arm: str, seed: int, args: argparse.Namespace, start: dict[str, Any]) -> dict[str, Any]:
    import torch

    from rollwise.llm.engine import TrainSettings, run_grpo
    from rollwise.llm.generation import TransformersPolicy
    from rollwise.llm.models import resolve_model
    from rollwise.llm.tasks import reward_function
    from rollwise.rescue.addon import P2ORescue, RescueSettings

    torch.set_num_threads(args.threads)
    task, rows, held = task_rows(args)
    strategy, proposer, prefix = ARMS[arm]
    per_step = args.prompts_per_step * args.num_generations
    out_dir = Path(args.runs) / arm / f"seed{seed}"
    settings = TrainSettings(
        model="smollm2", strategy=strategy, seed=seed, output_dir=str(out_dir), overwrite=True,
        steps=args.budget // per_step, max_rollouts=args.budget, prompts_per_step=args.prompts_per_step,
        num_generations=args.num_generations, max_new_tokens=args.max_new_tokens,
        learning_rate=args.learning_rate, eval_steps=args.eval_steps, eval_prompts=args.eval_prompts,
        save_steps=10_000, threads=args.threads)
    addons = [] if proposer is None else [P2ORescue(RescueSettings(
        proposer=proposer, every=args.rescue_every, guided=args.rescue_guided,
        max_metric_calls=args.rescue_max_metric_calls, max_hard=args.rescue_max_hard,
        window=args.rescue_window, prefix=prefix))]
    final = str(out_dir / "final")
    result = run_grpo(settings, resolve_model("smollm2"), rows, held, reward_function(task),
                      final_model_dir=final, verify=task.verify, addons=addons)
    hard_rows = [r for r in rows if r["id"] in set(start["hard"])]
    policy = TransformersPolicy(final, max_new_tokens=args.max_new_tokens, temperature=1.0, batch_size=64,
                                seed=seed + 101)
    after = sample(policy, [bare_prompt(r) for r in hard_rows], [r["answer"] for r in hard_rows],
                   task.verify, args.k)[0].mean(axis=1)
    policy.seed = seed + 102
    held_rates = sample(policy, [bare_prompt(r) for r in held], [r["answer"] for r in held], task.verify,
                        args.k)[0].mean(axis=1)
    hist = result["log_history"]
    record = {
        "steps": result["steps"], "rollouts": result["rollouts"], "wall_seconds": result["wall_seconds"],
        "curve": eval_curve(result), "hard_after": after.tolist(),
        "hard_solved": float(np.mean(after > 0)), "hard_rate": float(np.mean(after)),
        "final_heldout": float(np.mean(held_rates)),
        "esr": [h["rollwise/esr"] for h in hist if "rollwise/esr" in h],
    }
    if "rescue" in result:
        r = result["rescue"]
        guided = [h["rescue/guided_success"] for h in hist if "rescue/guided_success" in h]
        bare = [h["rescue/hard_bare_success"] for h in hist if "rescue/hard_bare_success" in h]
        record["rescue"] = {
            "gepa_rollouts": r["gepa_rollouts"], "guided_rollouts": r["guided_rollouts"],
            "training_rollouts": r["training_rollouts"], "evolutions": r["evolutions"],
            "template": r["template"], "bank_hard": r["hard_prompts"], "bank_rescued": r["rescued"],
            "solved_examples": r.get("solved_examples"),
            "guided_success": float(np.mean(guided)) if guided else None,
            "hard_bare_success": float(np.mean(bare)) if bare else None,
        }
    return record


def eval_curve(result: dict[str, Any]) -> dict[str, list[float]]:
    """Held-out accuracy (TRL evaluation) against rollouts spent so far (training + GEPA)."""
    hist = result["log_history"]
    train_at = {h["step"]: h["rollwise/rollouts"] for h in hist if "rollwise/rollouts" in h}
    evolutions = result.get("rescue", {}).get("evolutions", [])

    def spent(step: int) -> float:
        return train_at.get(step, float("nan")) + sum(e.get("rollouts", 0) for e in evolutions
                                                      if e["step"] <= step)

    evals = [h for h in hist if "eval_reward" in h]
    return {"step": [0] + [h["step"] for h in evals], "rollouts": [0.0] + [spent(h["step"]) for h in evals],
            "accuracy": [result["initial_eval"].get("eval_reward", float("nan"))]
            + [h["eval_reward"] for h in evals]}


# ---- report ----------------------------------------------------------------------------------
def summarise(data: dict[str, Any]) -> dict[str, Any]:
    """The ``summary`` object: the hard prompts' success on the starting model, bare and under the
    guidance of the ``grpo+p2o`` arm (the response prefix; the evolved template where the prefix
    was not measured), and for ``grpo`` and ``grpo+p2o`` one ``hard_solved`` and
    ``final_heldout`` per seed."""
    start = data.get("start") or {}
    rates = start.get("hard_rates", {})
    guided = rates.get(GUIDANCE, rates.get("evolved"))
    summary: dict[str, Any] = {
        "hard_success_bare": float(np.mean(rates["bare"])) if rates else None,
        "hard_success_template": float(np.mean(guided)) if guided is not None else None,
    }
    for arm in SUMMARY_ARMS:
        runs = data["runs"].get(arm, {})
        seeds = sorted(runs, key=int)
        summary[arm] = {"hard_solved": [runs[s]["hard_solved"] for s in seeds],
                        "final_heldout": [runs[s]["final_heldout"] for s in seeds]}
    return summary


def _mean_se(values: list[float]) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return "n/a"
    se = v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else float("nan")
    return f"{v.mean():.3f} ± {se:.3f}" if v.size > 1 else f"{v.mean():.3f}"


def markdown(data: dict[str, Any]) -> str:
    a, start = data["args"], data.get("start") or {}
    lines = ["# Hard-prompt rescue (P²O) on SmolLM2-135M-Instruct", ""]
    if start:
        lines += [f"Pool: {len(start['pool'])} arithmetic prompts (levels {a['levels']}).", "",
                  f"## 1. The mechanism: hard prompts (0 successes in {a['k']} samples), {a['samples']} "
                  "samples each", "",
                  "| model | hard prompts | stored solutions | bare prompt | two nearest solved examples "
                  "(per prompt) | two solved examples (shared) | GEPA-evolved (example proposer) | "
                  "bare, again | response prefix `restate` |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for label, m in (("starting model", start), ("trained", data.get("checkpoint_mechanism"))):
            if not m:
                continue
            rates = m["hard_rates"]
            cells = [f"{np.mean(rates[n]):.3f} ({np.mean(np.asarray(rates[n]) > 0):.2f})" if n in rates
                     else "not measured" for n in ("bare", "nearest2", "shared2", "evolved",
                                                   "prefix_bare", "prefix")]
            name = label if label == "starting model" else f"trained (`{m['model']}`)"
            lines.append(f"| {name} | {len(m['hard'])} | {m['solved_examples']} | {' | '.join(cells)} |")
        lines += ["", "Cells: mean success rate (share of hard prompts solved at least once). The last "
                  "two columns are sampled together (the same seed and generation path): bare, and with "
                  "the assistant's turn starting with the problem's equation restated (`8 - 7 = `), "
                  "continued by the policy and scored with it."]
        for label, m in (("starting model", start), ("trained", data.get("checkpoint_mechanism"))):
            if m:
                evo = m["evolution"]
                lines.append(f"GEPA on the {label}: {a['rescue_max_hard']} hard prompts, {evo['rollouts']} "
                             f"rollouts, mutations {evo['mutations']}; full scores "
                             f"{[round(s, 3) for _, s in evo['tried']]}.")
        lines.append("")
    lines += [f"## 2. Training at equal rollouts ({a['budget']} per arm, GEPA's included), mean ± s.e. "
              "over seeds", "",
              "| arm | seeds | steps | final held-out | hard solved (>=1 of k) | hard mean rate | guided "
              "rollouts | guided success | same groups bare | GEPA rollouts |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for arm, runs in data["runs"].items():
        rs = [runs[s] for s in sorted(runs, key=int)]
        rescue = [r.get("rescue") or {} for r in rs]
        cells = [_mean_se([r[key] for r in rs]) for key in ("final_heldout", "hard_solved", "hard_rate")]
        cells.append("/".join(str(x.get("guided_rollouts", 0)) for x in rescue))
        cells += [_mean_se([x.get(key) for x in rescue]) for key in ("guided_success", "hard_bare_success")]
        lines.append(f"| {arm} | {len(rs)} | {'/'.join(str(r['steps']) for r in rs)} | {' | '.join(cells)} | "
                     f"{'/'.join(str(x.get('gepa_rollouts', 0)) for x in rescue)} |")
    lines += ["", "Per seed (final held-out / hard solved):", ""]
    for arm, runs in data["runs"].items():
        per = ", ".join(f"seed {s}: {runs[s]['final_heldout']:.3f} / {runs[s]['hard_solved']:.3f}"
                        for s in sorted(runs, key=int))
        lines.append(f"- {arm}: {per}")
    for arm, runs in data["runs"].items():
        for s in sorted(runs, key=int):
            rescue = runs[s].get("rescue")
            if not rescue or not rescue["evolutions"]:
                continue
            lines += ["", f"{arm} seed {s}, evolutions:"]
            for e in rescue["evolutions"]:
                lines.append(f"- step {e['step']}: {e['hard']} hard, seed score {e.get('seed_score')}, best "
                             f"{e.get('best_score')}, {e.get('rollouts', 0)} rollouts"
                             + (f" (skipped: {e['skipped']})" if e.get("skipped") else ""))
    if data.get("restating"):
        lines += ["", "## Was the prefix distilled? The initially hard prompts, bare, after training", "",
                  f"Each final model samples them {a['k']} times (the samples of `hard solved`); share of "
                  "answers that start by restating the problem's expression, and success rates.", "",
                  "| arm | seed | answers restating | success, restating | success, other | success |",
                  "|---|---|---|---|---|---|"]
        for arm, per in data["restating"].items():
            for seed in sorted(per, key=int):
                r = per[seed]
                cells = [f"{r[k]:.3f}" if r[k] is not None else "n/a"
                         for k in ("restated", "success_restated", "success_other", "hard_rate")]
                name = "starting model" if arm == "start" else arm
                lines.append(f"| {name} | {seed if arm != 'start' else '-'} | {' | '.join(cells)} |")
    if data.get("conclusion"):
        lines += ["", "## Reading", "", data["conclusion"]]
    return "\n".join(lines) + "\n"


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(15, 4))
    start = data.get("start") or {}
    models = [(label, m) for label, m in (("start", start), ("trained", data.get("checkpoint_mechanism")))
              if m]
    names = ["bare", "nearest2", "shared2", "evolved", "prefix"]
    for j, (label, m) in enumerate(models):
        heights = [np.mean(m["hard_rates"][n]) if n in m["hard_rates"] else np.nan for n in names]
        ax.bar(np.arange(len(names)) + 0.4 * j, heights, width=0.4, label=f"{label} model")
    if models:
        ax.set_xticks(np.arange(len(names)) + 0.2 * (len(models) - 1), names)
        ax.set(ylabel="mean success of the hard prompts", title="hard prompts: bare vs example templates")
        ax.legend(fontsize=8)
    for j, (arm, runs) in enumerate(data["runs"].items()):
        rs = [runs[s] for s in sorted(runs, key=int)]
        for r in rs:
            bx.plot(r["curve"]["rollouts"], r["curve"]["accuracy"], color=f"C{j}", alpha=0.35)
        bx.plot([], [], color=f"C{j}", label=arm)
        cx.scatter([j] * len(rs), [r["hard_solved"] for r in rs], color=f"C{j}")
        cx.bar(j, np.mean([r["hard_solved"] for r in rs]), color=f"C{j}", alpha=0.4)
    bx.set(xlabel="rollouts spent (training + GEPA)", ylabel="held-out accuracy (TRL eval)",
           title="held-out accuracy, one line per seed")
    if data["runs"]:
        bx.legend(fontsize=8)
    cx.set_xticks(range(len(data["runs"])), list(data["runs"]))
    cx.set(ylabel="initially hard prompts solved (>=1 of k, bare)", title="after training, per seed")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def write(data: dict[str, Any], out: Path) -> None:
    data["summary"] = summarise(data)
    atomic_write_json(out.with_suffix(".json"), data)
    atomic_write_report(out.with_suffix(".md"), markdown(data))
    plot(data, out.with_suffix(".png"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", default="grpo,grpo+p2o")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=640, help="rollouts per arm, GEPA's included")
    p.add_argument("--prompts-per-step", type=int, default=4)
    p.add_argument("--num-generations", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--learning-rate", type=float, default=2e-5)
    p.add_argument("--levels", default="0,1,2,3")
    p.add_argument("--per-level", type=int, default=16)
    p.add_argument("--pool-seed", type=int, default=0, help="draws the pool (the same for every seed)")
    p.add_argument("--k", type=int, default=8, help="samples per prompt to call a prompt hard / solved")
    p.add_argument("--samples", type=int, default=12, help="samples per hard prompt in the mechanism test")
    p.add_argument("--eval-prompts", type=int, default=40)
    p.add_argument("--eval-steps", type=int, default=10)
    p.add_argument("--rescue-every", type=int, default=8)
    p.add_argument("--rescue-guided", type=int, default=2)
    p.add_argument("--rescue-max-metric-calls", type=int, default=48)
    p.add_argument("--rescue-max-hard", type=int, default=8)
    p.add_argument("--rescue-window", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--runs", default="runs/p2o_smollm2")
    p.add_argument("--out", default="benchmarks/results/p2o_smollm2")
    p.add_argument("--merge", action="store_true", help="keep the start and runs already in OUT.json")
    p.add_argument("--report", action="store_true", help="only redraw OUT.md and OUT.png")
    p.add_argument("--start-only", action="store_true", help="only measure the mechanism (part 1)")
    p.add_argument("--prefix-mechanism", action="store_true",
                   help="only measure the response prefix on the starting model's hard prompts (adds it to "
                        "part 1 of OUT.json)")
    p.add_argument("--mechanism-checkpoint", default=None, metavar="MODEL_DIR",
                   help="only measure the mechanism on this trained model (e.g. RUNS/grpo/seed0/final)")
    p.add_argument("--restating", default=None, metavar="ARMS",
                   help="only measure, on the final models under --runs of these arms' runs ('start': "
                        "the starting model), how often the bare hard prompts' answers start by "
                        "restating the expression")
    p.add_argument("--conclusion", default=None, help="text for the report's reading section")
    p.add_argument("--one", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args()
    out = Path(args.out)
    unknown = [arm for arm in args.arms.split(",") if arm not in ARMS]
    if unknown:
        raise SystemExit(f"--arms: unknown {unknown}; choose from {list(ARMS)}")
    data: dict[str, Any] = {"runs": {}}
    if (args.merge or args.report or args.one or args.restating) and out.with_suffix(".json").exists():
        data = json.loads(out.with_suffix(".json").read_text())
        data.setdefault("runs", {})
    if args.one:  # a worker: train, print the record as JSON on the last line
        print("\n" + json.dumps(run_one(args.one[0], int(args.one[1]), args, data["start"])))
        return
    if args.conclusion is not None:
        data["conclusion"] = args.conclusion
    if args.report:
        write(data, out)
        return
    train = {k: getattr(args, k) for k in TRAIN_KEYS}
    if data.get("args") and {k: data["args"].get(k) for k in TRAIN_KEYS} != train:
        raise SystemExit(f"--merge: {out}.json was measured with other settings: {data['args']}")
    data["args"] = {**train, "samples": args.samples}
    if args.mechanism_checkpoint:  # the mechanism again, on a trained model
        record = measure_mechanism(args, args.mechanism_checkpoint)
        data["checkpoint_mechanism"] = {"model": args.mechanism_checkpoint, **record}
        write(data, out)
        return
    if args.restating:
        for arm in args.restating.split(","):
            for seed in ["0"] if arm == "start" else sorted(data["runs"].get(arm, {}), key=int):
                record = measure_restating(args, arm, int(seed), data["start"]["hard"])
                if record is None:
                    continue
                data.setdefault("restating", {}).setdefault(arm, {})[seed] = record
                print(arm, seed, record, flush=True)
                write(data, out)
        return
    if args.prefix_mechanism:
        from rollwise.llm.models import resolve_model

        if not data.get("start"):
            raise SystemExit("--prefix-mechanism: measure the mechanism first (part 1 of OUT.json)")
        start = data["start"]
        start["hard_rates"].update(measure_prefix(args, resolve_model("smollm2"), start["hard"]))
        write(data, out)
        return
    if not data.get("start"):
        from rollwise.llm.models import resolve_model

        data["start"] = measure_mechanism(args, resolve_model("smollm2"))
        write(data, out)
        print(markdown(data), flush=True)
    if args.start_only:
        return
    todo = [(arm, seed) for seed in args.seeds for arm in args.arms.split(",")
            if str(seed) not in data["runs"].get(arm, {})]
    forwarded = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in TRAIN_KEYS] + [f"--out={out}"]

    def merge(arm: str, seed: int, record: dict) -> None:
        data["runs"].setdefault(arm, {})[str(seed)] = record
        write(data, out)

    run_workers(__file__, todo, forwarded, args.runs, args.jobs, merge)


if __name__ == "__main__":
    main()
