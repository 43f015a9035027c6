"""Which embedding sees prompt difficulty: WordLlama against a language model's hidden states.

Two parts.

``probe``: for each pool (the default reasoning-gym world: 1,680 train / 420 held-out prompts of
six families; MATH: a seeded 2,000 of the 7,474 training problems / MATH-500), a ridge regression
from the embedding to the pool's difficulty label (generator level; MATH level 1-5), fitted on the
training prompts (penalty chosen on a seeded fifth of them), ranks the held-out prompts: Spearman
overall and the mean within families (MATH: subjects). Embeddings: WordLlama and SmolLM2-135M's
hidden states after every fourth block, mean or last-token pooled, read before the final norm or
after it. This is the choice of layer and pooling behind ``hf:``'s default.

``table``: the measurement table of the issue, per embedder, from runs of the other scripts:
``allocation_world.py --embedder E`` (the embedding-fit diagnostic's Spearman, GPS's Spearman on
the world's held-out prompts, greedy allocation's saving at 2 / 4 / 8 samples per prompt) and
``rollwise bench --embedder E`` on the default world (GPS's rollouts to uniform's final, its
Spearman on never-offered prompts) and on MATH.

    python benchmarks/embedders.py probe --math-dir DIR    # DIR: train_math.json, test_math.json
    python benchmarks/embedders.py table \\
        --allocation wordllama=benchmarks/results/allocation_world.json \\
                     hf:smollm2=benchmarks/results/allocation_world_smollm2.json \\
                     hf:smollm2@16-body=benchmarks/results/allocation_world_smollm2_body.json \\
        --bench wordllama=benchmarks/results/bench-default/results.json \\
                hf:smollm2=benchmarks/results/centred_diversity/bench-default-smollm2/results.json\\
:gps-centred \\
                hf:smollm2@16-body=benchmarks/results/bench-default-smollm2-body/results.json:gps-centred \\
        --math wordllama=benchmarks/results/bench-math/results.json \\
               hf:smollm2=benchmarks/results/bench-math-smollm2/results.json \\
        --real wordllama=gps hf:smollm2=gps@policy,gps@policy+5 \\
               hf:smollm2@16-body=gps@hf:smollm2@16-body \\
        --real-allocation wordllama=benchmarks/results/allocation_smollm2.json \\
                          hf:smollm2=benchmarks/results/allocation_smollm2_policy.json

Writes ``OUT_probe.{json,md}`` or ``OUT.{json,md}`` (``summary``: per embedder
``embedding_fit_spearman``, ``gps_unseen_spearman`` {default, math}, ``greedy_saving`` {2, 4, 8}).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from provenance import provenance
from scipy.stats import spearmanr

from rollwise._io import atomic_write_json, atomic_write_report

LAYERS = (0, 4, 8, 12, 16, 20, 24, 28, 30)
POOLINGS = ("mean", "last")
ALPHAS = (1.0, 10.0, 100.0, 1000.0, 10000.0)


def pools(math_dir: Path | None, math_train: int):
    """``{name: (train PromptSet, held-out PromptSet)}`` for the default world and MATH."""
    from rollwise.feedback.prompt_files import PromptSet
    from rollwise.sim import world_prompt_sets

    out = {}
    tr, he, _ = world_prompt_sets()
    out["default"] = (tr, he)
    if math_dir is not None and (math_dir / "train_math.json").exists():
        tr, he, _ = world_prompt_sets(math_dir / "train_math.json", math_dir / "test_math.json")
        keep = np.sort(np.random.default_rng(0).choice(len(tr.texts), math_train, replace=False))
        tr = PromptSet([tr.texts[i] for i in keep], [tr.skills[i] for i in keep], tr.level[keep],
                       [tr.ids[i] for i in keep], None)
        out["math"] = (tr, he)
    else:
        print("no --math-dir with train_math.json and test_math.json: the MATH pool is skipped",
              flush=True)
    return out


def hidden_state_embeddings(texts: list[str], model_path: str, batch_size: int = 32) -> dict:
    """``{(layer, pooling, normed): (n, d) unit rows}`` from one pass of the whole model."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.pad_token = tok.pad_token or tok.eos_token
    tok.padding_side = "right"
    net = AutoModel.from_pretrained(model_path, dtype=torch.float32).eval()
    n_layers = net.config.num_hidden_layers
    out: dict = {}
    order = np.argsort([len(t) for t in texts], kind="stable")
    seen: list = []  # the input of the final norm: the last block's output before it
    net.norm.register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    with torch.inference_mode():
        for lo in range(0, len(texts), batch_size):
            idx = order[lo : lo + batch_size]
            batch = tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                        max_length=512)
            seen.clear()
            states = list(net(**batch, output_hidden_states=True).hidden_states)
            states[n_layers] = seen[0]  # HF's last entry is after the final norm: read it before
            mask = batch["attention_mask"].unsqueeze(-1).float()
            last = batch["attention_mask"].sum(1) - 1
            for layer in LAYERS:
                for normed in (False, True):
                    h = net.norm(states[layer]) if normed else states[layer]
                    for pooling in POOLINGS:
                        v = ((h * mask).sum(1) / mask.sum(1) if pooling == "mean"
                             else h[torch.arange(len(idx)), last])
                        v = torch.nn.functional.normalize(v, dim=-1).numpy()
                        key = (layer, pooling, normed)
                        out.setdefault(key, np.zeros((len(texts), v.shape[1]), np.float32))[idx] = v
    return out


def ridge_predict(x: np.ndarray, y: np.ndarray, xh: np.ndarray, alpha: float) -> np.ndarray:
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z, zh = (x - mu) / sd, (xh - mu) / sd
    w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    return zh @ w + y.mean()


def probe_score(x, y, xh, yh, groups_h) -> dict:
    """Held-out Spearman of a ridge fit (penalty chosen on a seeded fifth of the training set)."""
    perm = np.random.default_rng(1).permutation(len(y))
    fit, val = perm[: len(y) * 4 // 5], perm[len(y) * 4 // 5 :]
    alpha = max(ALPHAS, key=lambda a: spearmanr(ridge_predict(x[fit], y[fit], x[val], a),
                                                  y[val]).statistic)
    pred = ridge_predict(x, y, xh, alpha)
    groups_h = np.asarray(groups_h)
    within = [spearmanr(pred[groups_h == g], yh[groups_h == g]).statistic
              for g in sorted(set(groups_h)) if np.ptp(yh[groups_h == g]) > 0]
    return {"overall": float(spearmanr(pred, yh).statistic),
            "within": float(np.nanmean(within)), "alpha": alpha}


def run_probe(args) -> None:
    import torch

    from rollwise.embed import embed_texts
    from rollwise.llm.models import smollm2

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results: dict = {}
    math_dir = Path(args.math_dir) if args.math_dir else None
    for name, (tr, he) in pools(math_dir, args.math_train).items():
        y, yh = tr.level.astype(float), he.level.astype(float)
        rows = {"wordllama": probe_score(embed_texts(tr.texts, "wordllama"), y,
                                         embed_texts(he.texts, "wordllama"), yh, he.skills)}
        emb_tr = hidden_state_embeddings(list(tr.texts), smollm2())
        emb_he = hidden_state_embeddings(list(he.texts), smollm2())
        for key in emb_tr:
            layer, pooling, normed = key
            label = f"smollm2 layer {layer} {pooling}{' normed' if normed else ''}"
            rows[label] = probe_score(emb_tr[key], y, emb_he[key], yh, he.skills)
            print(name, label, rows[label], flush=True)
        results[name] = rows
    out = Path(args.out + "_probe")
    data = {"args": vars(args), "seconds": round(time.perf_counter() - t0, 1), "probe": results}
    atomic_write_json(out.with_suffix(".json"), data)
    lines = ["# Embedding probe: does the embedding rank difficulty?\n",
             "Ridge regression from the embedding to the difficulty label, fitted on the training "
             "prompts, scored on the held-out prompts (Spearman overall / mean within families or "
             "subjects). SmolLM2-135M-Instruct's hidden state after block L (0: the token "
             "embeddings), read before the final norm unless 'normed'. Written by "
             f"`benchmarks/embedders.py probe` in {data['seconds']:.0f} s.\n"]
    for name, rows in results.items():
        lines += [f"## {name}\n", "| embedding | Spearman overall | within families |",
                  "|---|---|---|"]
        lines += [f"| {label} | {r['overall']:.3f} | {r['within']:.3f} |" for label, r in rows.items()]
        lines.append("")
    atomic_write_report(out.with_suffix(".md"), "\n".join(lines))


def _pairs(values: list[str]) -> dict[str, Path]:
    return dict((v.split("=", 1)[0], Path(v.split("=", 1)[1])) for v in values)


def _bench_pairs(values: list[str]) -> dict[str, tuple[Path, str]]:
    """``EMBEDDER=RESULTS.json[:STRATEGY]`` -> {embedder: (path, strategy)}; the strategy (default
    ``gps``) names the row that ran today's GPS default in that file."""
    out = {}
    for emb, path in _pairs(values).items():
        file, _, strategy = str(path).partition(".json:")
        out[emb] = (Path(file + ".json") if strategy else path, strategy or "gps")
    return out


def real_model_row(runs: dict, arm: str) -> dict:
    """Final held-out accuracy and GPS's held-out Spearman (never-trained prompts) at the end of
    each seed's SmolLM2 run of ``arm`` (a ``gps_smollm2.json`` arm)."""
    seeds = sorted(runs, key=int)
    final = [runs[s]["eval_accuracy"][-1] for s in seeds]
    rho = [runs[s]["eval_calibration"][-1]["spearman"] for s in seeds]
    sem = float(np.std(final, ddof=1) / np.sqrt(len(final))) if len(final) > 1 else None
    return {"arm": arm, "seeds": [int(s) for s in seeds], "final_heldout": final,
            "final_heldout_mean": float(np.mean(final)), "final_heldout_sem": sem,
            "heldout_spearman_end": rho, "heldout_spearman_end_mean": float(np.mean(rho))}


def run_table(args) -> None:
    alloc, math, bench = _pairs(args.allocation), _bench_pairs(args.math), _bench_pairs(args.bench)
    real = {k: v.split(",") for k, v in (a.split("=", 1) for a in args.real)}
    real_alloc = _pairs(args.real_allocation)
    real_runs = json.loads(Path(args.real_results).read_text()) if real else {}
    summary, details, lines = {}, {}, []
    for emb in dict.fromkeys(list(alloc) + list(math) + list(bench) + list(real) + list(real_alloc)):
        row: dict = {"embedding_fit_spearman": None, "gps_unseen_spearman": {},
                     "greedy_saving": None}
        extra = {}
        if emb in alloc:
            d = json.loads(alloc[emb].read_text())
            pred = d["final"]["prediction"]
            row["embedding_fit_spearman"] = pred["spearman_greedy-embedding-fit"][0]
            row["gps_unseen_spearman"]["default"] = pred["spearman"][0]
            row["greedy_saving"] = {k: d["summary"]["greedy_saving"][k] for k in ("2", "4", "8")}
        if emb in math:
            d = json.loads(math[emb][0].read_text())["strategies"][math[emb][1]]
            row["gps_unseen_spearman"]["math"] = d["spearman_unseen_final"]
            extra.update(math_gps_unseen_spearman_at_50=d["spearman_unseen_at_step"],
                         math_gps_ratio_to_uniform=d["ratio_to_uniform"])
        if emb in bench:
            d = json.loads(bench[emb][0].read_text())["strategies"][bench[emb][1]]
            extra.update(bench_gps_unseen_spearman=d["spearman_unseen_final"],
                         bench_gps_ratio_to_uniform=d["ratio_to_uniform"])
        if emb in real:
            extra["smollm2"] = [real_model_row(real_runs["runs"][arm], arm) for arm in real[emb]]
        if emb in real_alloc:
            d = json.loads(real_alloc[emb].read_text())
            saving = {m: {str(v["budget"] // d["comparison"]["n_prompts"]): v["saving"]
                          for v in d["comparison"]["savings"][m]}
                      for m in ("greedy", "greedy-beta")}
            extra["smollm2_allocation"] = {"run": d["args"]["run"], "spearman": d["spearman"],
                                           "saving": saving}
        summary[emb] = row
        details[emb] = extra

    def f(v, spec=".2f"):
        return "—" if v is None else format(v, spec)

    lines = ["# Embedders: what the embedding lets GPS and allocation see\n",
             "| embedder | embedding-fit Spearman (default world) | GPS unseen Spearman, default "
             "world (allocation run / bench run) | GPS unseen Spearman, MATH | greedy saving at "
             "2 / 4 / 8 per prompt | GPS rollouts to uniform's final, default world |",
             "|---|---|---|---|---|---|"]
    for emb, r in summary.items():
        gs, x = r["greedy_saving"], details[emb]
        saving = " / ".join(f"{100 * gs[k]:.1f}%" for k in ("2", "4", "8")) if gs else "—"
        lines.append(f"| {emb} | {f(r['embedding_fit_spearman'])} | "
                     f"{f(r['gps_unseen_spearman'].get('default'))} / "
                     f"{f(x.get('bench_gps_unseen_spearman'))} | "
                     f"{f(r['gps_unseen_spearman'].get('math'))} | {saving} | "
                     f"{f(x.get('bench_gps_ratio_to_uniform'))}x |")
    lines += ["", "On MATH (`rollwise bench`, 5 seeds): GPS's Spearman on never-offered problems "
              "after 50 steps and at the end, and its rollouts to uniform's final accuracy.\n",
              "| embedder | Spearman @50 / end | rollouts to uniform's final |", "|---|---|---|"]
    lines += [f"| {emb} | {f(x.get('math_gps_unseen_spearman_at_50'))} / "
              f"{f(summary[emb]['gps_unseen_spearman'].get('math'))} | "
              f"{f(x.get('math_gps_ratio_to_uniform'))}x |"
              for emb, x in details.items() if "math_gps_ratio_to_uniform" in x]
    lines += ["", "On the real model (SmolLM2-135M-Instruct, chain sums, CPU size; "
              "`benchmarks/gps_smollm2.py`): GPS's final held-out accuracy and its Spearman on the "
              "held-out prompts at the end (per seed); test-time allocation after one run "
              "(`benchmarks/allocation_smollm2.py`, 100 held-out prompts x 8 real samples): "
              "saving at 2 / 4 samples per prompt, greedy on the raw predictions and under the "
              "calibrated Beta rates (`rollwise allocate`'s default).\n",
              "| embedder | arm | seeds | final held-out | held-out Spearman, end | allocation run | "
              "allocation Spearman | greedy / greedy-beta saving at 2, at 4 |",
              "|---|---|---|---|---|---|---|---|"]
    for emb, x in details.items():
        for i, r in enumerate(x.get("smollm2") or [{}]):
            a = x.get("smollm2_allocation") if i == 0 else None
            if not r and not a:
                continue
            lines.append(f"| {emb} | " + " | ".join(_real_cells(r, a)) + " |")
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), {"args": vars(args), "summary": summary,
                                                 "details": details, "provenance": provenance()})
    atomic_write_report(out.with_suffix(".md"), "\n".join(lines) + "\n")


def _real_cells(r: dict, a: dict | None) -> list[str]:
    """The real-model table's cells of one arm (``r``) and one allocation run (``a``)."""
    cells = ([f"`{r['arm']}`", ", ".join(map(str, r["seeds"])),
              f"{r['final_heldout_mean']:.3f}" + (f" ± {r['final_heldout_sem']:.3f}"
                                                  if r["final_heldout_sem"] else ""),
              " / ".join(f"{v:.2f}" for v in r["heldout_spearman_end"])] if r else ["—"] * 4)
    if a:
        sv = a["saving"]
        cells += [f"`{Path(a['run']).parent.name}/{Path(a['run']).name}`", f"{a['spearman']:.2f}",
                  ", ".join(f"{100 * sv['greedy'][k]:.1f}% / {100 * sv['greedy-beta'][k]:.1f}%"
                            for k in ("2", "4"))]
    else:
        cells += ["—"] * 3
    return cells


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="part", required=True)
    pr = sub.add_parser("probe", help="the layer and pooling probe")
    pr.add_argument("--math-dir", default=None,
                    help="folder with train_math.json and test_math.json (not in the repository)")
    pr.add_argument("--math-train", type=int, default=2000)
    pr.add_argument("--threads", type=int, default=1)
    pr.add_argument("--out", default="benchmarks/results/embedders")
    tb = sub.add_parser("table", help="the measurement table from other scripts' results")
    tb.add_argument("--allocation", nargs="+", default=[], metavar="EMBEDDER=JSON")
    tb.add_argument("--math", nargs="+", default=[], metavar="EMBEDDER=JSON[:STRATEGY]",
                    help="rollwise bench results.json on MATH (the GPS default's row: STRATEGY, "
                         "default gps)")
    tb.add_argument("--bench", nargs="+", default=[], metavar="EMBEDDER=JSON[:STRATEGY]",
                    help="rollwise bench results.json on the default world (as --math)")
    tb.add_argument("--real", nargs="+", default=[], metavar="EMBEDDER=ARM[,ARM...]",
                    help="arms of --real-results (SmolLM2 runs) that used the embedder")
    tb.add_argument("--real-results", default="benchmarks/results/gps_smollm2.json")
    tb.add_argument("--real-allocation", nargs="+", default=[], metavar="EMBEDDER=JSON",
                    help="allocation_smollm2.py results after a run with the embedder")
    tb.add_argument("--out", default="benchmarks/results/embedders")
    args = p.parse_args()
    run_probe(args) if args.part == "probe" else run_table(args)


if __name__ == "__main__":
    main()
