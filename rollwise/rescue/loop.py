"""P²O inside a training run: every ``every`` optimiser steps, evolve a rescue template on the bank's
hard prompts with the *current* policy and hand it to the :class:`RescueGRPOTrainer`.

The evolution runs in a ``TrainerCallback`` (``on_step_end``), so it sees the weights the next
generation batch will sample from. Its rollouts are cost like any other: they are counted in the
trainer's ``gepa_rollouts`` (hence in ``total_rollouts``, what a rollout budget counts) and logged
(``rescue/gepa_rollouts``) next to TRL's metrics of the step. The callback keeps no state of its
own: the template, the counters and the record of evolutions live on the trainer and are saved
in its checkpoints, so a resumed run goes on from the last template.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from transformers import TrainerCallback

from rollwise.llm.generation import TransformersPolicy
from rollwise.rescue.examples import ExampleProposer
from rollwise.rescue.gepa_adapter import DEFAULT_TEMPLATE, EvolutionResult, evolve_template
from rollwise.rescue.reflection import ReflectionLMError, make_reflection_lm
from rollwise.rescue.templates import PLACEHOLDER
from rollwise.validation import check_int

log = logging.getLogger(__name__)

REFLECTION_TOKENS = 512  # a proposed template needs more room than a task answer
PROPOSERS = ("examples", "reflection")


class RescueCallback(TrainerCallback):
    """Evolves the trainer's rescue template every ``every`` steps from its bank's hard prompts.

    ``rows`` are the training rows (``question``, ``answer``) in pool order, so a hard prompt id
    maps to its row. At most ``max_hard`` hard prompts (the oldest) are given to GEPA. A reflection
    LM that cannot be reached skips the evolution (logged, recorded) and training goes on.
    """

    def __init__(self, trainer: Any, rows: Sequence[Mapping[str, Any]], verify: Callable[[str, str], float],
                 reflection_lm: Any, *, every: int, max_metric_calls: int = 200, max_hard: int = 16,
                 seed_template: str | None = None, max_new_tokens: int = 256, seed: int = 0,
                 proposer: str = "reflection", max_examples: int = 4) -> None:
        check_int("every", every, 1)
        check_int("max_hard", max_hard, 1)
        if proposer not in PROPOSERS:
            raise ValueError(f"proposer must be one of {PROPOSERS}, got {proposer!r}")
        if proposer == "examples" and getattr(trainer, "examples", None) is None:
            raise ValueError("proposer='examples' needs a trainer with a solved-example store "
                             "(RescueGRPOTrainer(examples=SolvedExampleStore(...)))")
        ids = trainer.selector.pool.ids
        if len(rows) != len(ids):
            raise ValueError(f"rows has {len(rows)} entries for a pool of {len(ids)} prompts")
        self.trainer, self.verify, self.reflection_lm = trainer, verify, reflection_lm
        self.rows_by_id = {pid: rows[i] for i, pid in enumerate(ids)}
        self.every, self.max_metric_calls, self.max_hard = every, max_metric_calls, max_hard
        self.seed_template = seed_template or DEFAULT_TEMPLATE
        self.max_new_tokens, self.seed = max_new_tokens, seed
        self.proposer = proposer
        self._examples: ExampleProposer | None = None
        if proposer == "examples":
            pool = trainer.selector.pool
            by_question = {str(row["question"]): pool.embeddings[pool.index_of(pid)]
                           for pid, row in self.rows_by_id.items()}
            # example templates end like the seed: the problem, then its instruction
            tail = self.seed_template.split(PLACEHOLDER, 1)[1] if PLACEHOLDER in self.seed_template else ""
            self._examples = ExampleProposer(trainer.examples, tail=tail, max_examples=max_examples,
                                             seed=seed, embed_problem=by_question.get)

    @property
    def template(self) -> str:
        """Where the next evolution starts: the last best template, else the seed."""
        return self.trainer.template or self.seed_template

    @property
    def gepa_rollouts(self) -> int:
        return self.trainer.gepa_rollouts

    @property
    def evolutions(self) -> list[dict[str, Any]]:
        return self.trainer.evolutions

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step % self.every == 0:
            self.evolve(state.global_step)

    def evolve(self, step: int) -> dict[str, Any]:
        """One evolution on the current hard prompts; returns (and records) what happened."""
        hard = self.trainer.bank.hard_ids()
        rows = [self.rows_by_id[pid] for pid in hard[: min(self.max_hard, self.max_metric_calls)]]
        record: dict[str, Any] = {"step": step, "hard": len(hard), "used": len(rows)}
        if not rows:
            record["skipped"] = "no hard prompts"
        elif self._examples is not None and not len(self.trainer.examples):
            record["skipped"] = "no solved examples yet"
        else:
            proposed = len(self._examples.proposals) if self._examples is not None else 0
            result = self._run_gepa(rows, step)
            if self._examples is not None:
                record["mutations"] = [m for m, _ in self._examples.proposals[proposed:]]
            self.trainer.gepa_rollouts += result.rollouts_spent
            record.update(rollouts=result.rollouts_spent, tried=len(result.tried),
                          best_score=None if math.isnan(result.best_score) else result.best_score,
                          seed_score=None if math.isnan(result.seed_score) else result.seed_score,
                          reflection_calls=result.reflection_calls, seconds=round(result.seconds, 1),
                          skipped=result.skipped)
            if result.tried:  # scored: guide hard prompts with the best template found
                self.trainer.template = result.best_template
                record["template"] = result.best_template
        record["rescued"] = len(self.trainer.bank.rescued)
        record = self._agree(record)
        self.evolutions.append(record)
        self._log(record)
        return record

    def _agree(self, record: dict[str, Any]) -> dict[str, Any]:
        """With several processes each evolves (generation may need every process), but the main
        process's outcome is the run's: its record, template and GEPA rollouts are broadcast, so
        every process guides the same rows with the same template (sampling on several devices
        need not agree bit for bit)."""
        acc = self.trainer.accelerator
        if acc.num_processes == 1:
            return record
        from accelerate.utils import broadcast_object_list

        payload: list[Any] = [None, None, None]
        if acc.is_main_process:
            payload = [record, self.trainer.template, self.trainer.gepa_rollouts]
        broadcast_object_list(payload, from_process=0)
        record, self.trainer.template, self.trainer.gepa_rollouts = payload
        return record

    def _run_gepa(self, rows: list[Mapping[str, Any]], step: int) -> EvolutionResult:
        trainer = self.trainer
        model = trainer.accelerator.unwrap_model(trainer.model)
        tok = trainer.processing_class
        was_training, padding_side = model.training, tok.padding_side
        # templates are scored on samples drawn as guided rollouts will be: at the training
        # temperature (greedy decoding would miss a template that lifts a 0% prompt to 20%)
        policy = TransformersPolicy(model, tok, max_new_tokens=self.max_new_tokens,
                                    temperature=float(trainer.args.temperature),
                                    device=str(next(model.parameters()).device), seed=self.seed + step)
        reflection, extra = self.reflection_lm, {}
        if self._examples is not None:  # templates from the policy's own solved examples
            reflection = None
            extra = dict(proposer=self._examples, resolve=trainer.example_resolver())
        elif reflection == "policy":  # the policy reflects, with room to write a template
            reflection = make_reflection_lm("policy", TransformersPolicy(
                model, tok, max_new_tokens=REFLECTION_TOKENS, device=policy.device, seed=self.seed + step))
        try:
            return evolve_template(rows, policy, self.verify, reflection,
                                   seed_template=self.template, max_metric_calls=self.max_metric_calls,
                                   seed=self.seed, on_unreachable="skip", **extra)
        except ReflectionLMError as err:  # belt and braces: evolve_template already skips
            log.warning("template evolution skipped: %s", err)
            return EvolutionResult(self.template, math.nan, skipped=str(err))
        finally:
            model.train(was_training)
            tok.padding_side = padding_side

    def _log(self, record: dict[str, Any]) -> None:
        metrics = self.trainer._metrics["train"]  # averaged into the step's TRL log
        metrics["rescue/hard_prompts"].append(float(record["hard"]))
        metrics["rescue/templates_tried"].append(float(record.get("tried", 0)))
        if record.get("best_score") is not None:
            metrics["rescue/best_score"].append(float(record["best_score"]))
        metrics["rescue/gepa_rollouts"].append(float(self.gepa_rollouts))
        metrics["rescue/rescued"].append(float(record["rescued"]))
        if record.get("skipped"):
            log.warning("step %d: template evolution skipped (%s)", record["step"], record["skipped"])
        else:
            log.info("step %d: %d hard prompts, %d templates tried, best score %s, %d GEPA rollouts",
                     record["step"], record["hard"], record["tried"], record["best_score"],
                     record["rollouts"])

    def summary(self) -> dict[str, Any]:
        """What the rescue did over the run, for ``rollwise_run.json``."""
        return rescue_summary(self.trainer, self.proposer)


def rescue_summary(trainer: Any, proposer: str) -> dict[str, Any]:
    """What a :class:`~rollwise.rescue.distill.RescueGRPOTrainer`'s rescue did over the run, read
    from the trainer (where its state lives), with the template ``proposer`` it ran with."""
    examples = getattr(trainer, "examples", None)
    return {"proposer": proposer, "evolutions": trainer.evolutions, "gepa_rollouts": trainer.gepa_rollouts,
            "solved_examples": None if examples is None else len(examples),
            "guided_rollouts": trainer.guided_rollouts, "template": trainer.template,
            "hard_prompts": len(trainer.bank.hard_ids()),
            "rescued": len(trainer.bank.rescued), "rescued_ids": trainer.bank.rescued}


__all__ = ["PROPOSERS", "RescueCallback", "rescue_summary"]
