"""What one GRPO loss pass (forward and backward) costs on a CPU core, three ways.

The real-model harness (``gps_smollm2.py``) spends most of a training step in the loss's forward
and backward pass over 8 prompts x 4 completions. This script times that pass on SmolLM2-135M at
the harness's shapes (the task's own chat prompts, left padded; completions of
``--completion-tokens`` random tokens; rows shuffled, as TRL hands them to the loss) with one
torch thread, three ways:

* ``trl``: TRL's pass as the harness ran it (gradient checkpointing on, every row's prompt run);
* ``trl-nogc``: the same without gradient checkpointing;
* ``shared``: each group's prompt run once (``shared_prompt_logps``; needs checkpointing off).

It also reports the largest difference of the shared pass's log-probabilities and gradients from
TRL's (float rounding only: the same functions of the weights). Writes OUT.json and OUT.md::

    python benchmarks/loss_pass.py --task mixed --repeats 3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from provenance import provenance

from rollwise._io import atomic_write_json, atomic_write_report

WAYS = ("trl", "trl-nogc", "shared")


def batch(tok, rows, groups: int, k: int, completion_tokens: int, vocab: int, seed: int):
    import torch

    tok.padding_side = "left"
    if tok.pad_token is None:  # as TRL does
        tok.pad_token = tok.eos_token
    texts = [tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False)
             for r in rows[:groups] for _ in range(k)]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    gen = torch.Generator().manual_seed(seed)
    completion = torch.randint(3, vocab, (len(texts), completion_tokens), generator=gen)
    cmask = torch.ones_like(completion)
    ids = torch.cat([enc["input_ids"], completion], dim=1)
    mask = torch.cat([enc["attention_mask"], cmask], dim=1)
    order = torch.randperm(len(texts), generator=gen)  # TRL shuffles a batch's rows before the loss
    return ids[order], mask[order], cmask[order]


def loss_pass(model, way: str, ids, mask, keep: int, cmask):
    """Log-probs and entropies as the GRPO loss asks for them, then a backward pass of a
    weighted sum (as advantages weigh the tokens); returns the log-probs."""
    import torch

    from rollwise.integrations.prefill import shared_prompt_logps

    if way == "shared":
        logps, ent = shared_prompt_logps(model, ids, mask, keep, compute_entropy=True)
    else:
        labels = ids.masked_fill(mask == 0, -100)
        labels[:, :-keep] = -100
        out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        logps, ent = out.log_probs[:, -keep:], out.entropy[:, -keep:]
    weights = torch.linspace(-1.0, 1.0, logps.shape[0]).unsqueeze(1)
    ((logps * cmask * weights).sum() / cmask.sum() + 0.0 * ent.sum()).backward()
    return logps.detach()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="mixed", help="'arithmetic' or 'mixed' (the prompts' shapes)")
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--completion-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="benchmarks/results/loss_pass")
    args = p.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.utils import add_fused_lm_head

    from rollwise.llm import tasks
    from rollwise.llm.models import smollm2

    torch.set_num_threads(args.threads)
    path = smollm2()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    model.train()
    task = tasks.get_task(args.task)
    rng = np.random.default_rng(0)
    rows = [task.train[i] for i in rng.choice(len(task.train), args.groups, replace=False)]
    ids, mask, cmask = batch(tok, rows, args.groups, args.num_generations, args.completion_tokens,
                             model.config.vocab_size, seed=0)
    keep = args.completion_tokens
    times: dict[str, list[float]] = {w: [] for w in WAYS}
    grads: dict[str, dict[str, torch.Tensor]] = {}
    logps: dict[str, torch.Tensor] = {}
    for rep in range(args.repeats):
        for way in WAYS:  # interleaved, so that a busy neighbour weighs on every way alike
            if way == "trl":
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_disable()
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            lp = loss_pass(model, way, ids, mask, keep, cmask)
            times[way].append(time.perf_counter() - t0)
            if rep == 0:
                logps[way] = lp
                grads[way] = {n: q.grad.clone() for n, q in model.named_parameters()
                              if q.grad is not None}
            print(f"{way}: {times[way][-1]:.1f} s", flush=True)
    diff_logp = float((logps["shared"] - logps["trl"]).abs().max())
    diff_grad = max(float((grads["shared"][n] - g).abs().max() / g.abs().max().clamp(min=1e-12))
                    for n, g in grads["trl"].items())
    med = {w: float(np.median(t)) for w, t in times.items()}
    data = {"args": vars(args), "prompt_tokens": int(ids.shape[1] - keep), "rows": int(ids.shape[0]),
            "seconds": times, "median_seconds": med,
            "speedup_vs_trl": {w: med["trl"] / med[w] for w in WAYS},
            "max_abs_logp_difference": diff_logp, "max_relative_grad_difference": diff_grad,
            "provenance": provenance()}
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), data)
    lines = ["# One GRPO loss pass on a CPU core\n",
             f"SmolLM2-135M-Instruct, {data['rows']} rows ({args.groups} prompts x "
             f"{args.num_generations} completions), {data['prompt_tokens']}-token padded prompts "
             f"({args.task} task), {keep}-token completions, {args.threads} torch thread(s); "
             f"forward and backward, median of {args.repeats} (ways interleaved). Written by "
             "`benchmarks/loss_pass.py`.\n",
             "| way | seconds (median) | each | speed-up against `trl` |", "|---|---|---|---|"]
    for w in WAYS:
        lines.append(f"| `{w}` | {med[w]:.1f} | {' / '.join(f'{t:.1f}' for t in times[w])} | "
                     f"{med['trl'] / med[w]:.2f}x |")
    lines += ["", f"Shared against TRL's pass: largest log-probability difference {diff_logp:.1e}; "
                  f"largest gradient difference {diff_grad:.1e} of the parameter's largest gradient."]
    atomic_write_report(out.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
