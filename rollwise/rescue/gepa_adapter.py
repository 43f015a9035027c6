"""GEPA evolution of rescue templates: prompt texts under which the current policy solves hard prompts.

A *template* is an instruction wrapped around the problem, with a ``{problem}`` placeholder, or a
system-style preamble (no placeholder: the problem follows it after a blank line). GEPA evolves
the template text; the *task LM* is the policy itself, any ``generate(list_of_prompts) ->
list_of_completions`` callable (:class:`rollwise.llm.generation.TransformersPolicy` for a
checkpoint); each completion is scored by a rollwise verifier. The *reflection LM*, which reads
failures and proposes new templates, is a ``str -> str`` callable, the policy itself
(``"policy"``) or an OpenAI-compatible endpoint URL (see :mod:`rollwise.rescue.reflection`).

Every completion generated for GEPA is one rollout, counted in ``EvolutionResult.rollouts_spent``:
the price of a rescue, to weigh against the rollouts it saves. Needs ``pip install 'rollwise[rescue]'``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

try:
    import gepa
    from gepa.core.adapter import EvaluationBatch
    from gepa.utils import TimeoutStopCondition
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("template evolution needs GEPA: pip install 'rollwise[rescue]'") from err

from rollwise.llm.tasks import INSTRUCTION, extract_answer
from rollwise.rescue.reflection import Generate, OpenAIReflectionLM, ReflectionLMError, make_reflection_lm
from rollwise.rescue.templates import PLACEHOLDER, render_template
from rollwise.validation import check_int

log = logging.getLogger(__name__)

COMPONENT = "template"  # the one text component GEPA evolves
DEFAULT_TEMPLATE = PLACEHOLDER + INSTRUCTION

Verify = Callable[[str, str], float]
Resolve = Callable[[str, Mapping[str, Any]], str]  # (template, row) -> the template for that row
ProposalFn = Callable[[dict[str, str], Mapping[str, Any], list[str]], dict[str, str]]


class TemplateAdapter:
    """GEPA's adapter protocol for one component, the template: evaluate = render, generate, verify.

    ``rollouts`` counts every completion generated (one per example per GEPA metric call).
    """

    def __init__(self, policy: Generate, verify: Verify, max_feedback: int = 8, *,
                 proposer: ProposalFn | None = None, resolve: Resolve | None = None) -> None:
        if not callable(policy):
            raise TypeError(f"policy must be callable (prompts -> completions), got {type(policy).__name__}")
        if not callable(verify):
            raise TypeError("verify must be callable (completion, answer) -> float, "
                            f"got {type(verify).__name__}")
        for name, fn in (("proposer", proposer), ("resolve", resolve)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}")
        self.policy, self.verify, self.max_feedback = policy, verify, max_feedback
        # None: GEPA's reflective proposer (a reflection LM) writes new templates; else this
        # programmatic proposer does (e.g. rollwise.rescue.examples.ExampleProposer)
        self.propose_new_texts = proposer
        self.resolve = resolve
        self.rollouts = 0
        self.scored: dict[str, list[float]] = {}  # template -> every score it got, minibatches included

    def render(self, template: str, row: Mapping[str, Any]) -> str:
        """The prompt ``row`` gets under ``template`` (per-row parts filled in by ``resolve``)."""
        if self.resolve is not None:
            template = self.resolve(template, row)
        return render_template(template, str(row["question"]))

    def evaluate(self, batch: list[dict[str, Any]], candidate: dict[str, str],
                 capture_traces: bool = False) -> EvaluationBatch:
        template = candidate[COMPONENT]
        prompts = [self.render(template, row) for row in batch]
        completions = list(self.policy(prompts))
        if len(completions) != len(prompts):
            raise ValueError(f"policy returned {len(completions)} completions for {len(prompts)} prompts")
        self.rollouts += len(prompts)
        scores = []
        for completion, row in zip(completions, batch, strict=True):
            try:
                scores.append(float(self.verify(str(completion), str(row["answer"]))))
            except Exception as err:  # a verifier crash is a failed example, not a failed run
                log.debug("verifier raised on %r: %s", row.get("id"), err)
                scores.append(0.0)
        self.scored.setdefault(template, []).extend(scores)
        traces = None
        if capture_traces:
            traces = [{"problem": str(row["question"]), "answer": str(row["answer"]), "prompt": p,
                       "completion": str(c), "score": s}
                      for row, p, c, s in zip(batch, prompts, completions, scores, strict=True)]
        return EvaluationBatch(outputs=completions, scores=scores, trajectories=traces,
                               num_metric_calls=len(prompts))

    def make_reflective_dataset(self, candidate: dict[str, str], eval_batch: EvaluationBatch,
                                components_to_update: list[str]) -> dict[str, list[dict[str, Any]]]:
        records = []
        for t in (eval_batch.trajectories or [])[: self.max_feedback]:
            if t["score"] >= 1.0:
                feedback = "Correct."
            else:
                got = extract_answer(t["completion"])
                feedback = (f"Incorrect. The reference answer is {t['answer']}; the final answer read from "
                            f"the response was {got if got is not None else 'missing'}.")
            records.append({"Inputs": {"problem": t["problem"]}, "Generated Outputs": t["completion"],
                            "Feedback": feedback})
        return {name: records for name in components_to_update}


@dataclass
class EvolutionResult:
    """What GEPA found and what it cost.

    ``tried`` lists the templates GEPA scored on the whole set (mean verifier score), seed first;
    proposals rejected on a minibatch are not in it but their rollouts are in ``rollouts_spent``.
    ``skipped`` says why evolution stopped early or never started (reflection LM unavailable);
    when it never started, ``best_template`` is the seed and ``best_score`` is nan (not scored).
    """

    best_template: str
    best_score: float
    tried: list[tuple[str, float]] = field(default_factory=list)
    rollouts_spent: int = 0
    metric_calls: int = 0  # GEPA's own count; equals rollouts_spent
    reflection_calls: int = 0
    seconds: float = 0.0
    skipped: str | None = None

    @property
    def seed_score(self) -> float:
        return self.tried[0][1] if self.tried else math.nan


class _GuardedReflection:
    """Counts reflection calls and remembers a :class:`ReflectionLMError`: GEPA swallows proposer
    errors and would keep spending rollouts, so the stopper below ends the run instead."""

    def __init__(self, lm: Callable[[Any], str]) -> None:
        self.lm, self.calls, self.error = lm, 0, None

    def __call__(self, prompt: Any) -> str:
        if self.error is not None:  # GEPA retries a failed reflection once: do not knock again
            raise ReflectionLMError(self.error)
        self.calls += 1
        try:
            return str(self.lm(prompt))
        except ReflectionLMError as err:
            self.error = str(err)
            log.warning("reflection LM failed, stopping template evolution: %s", err)
            raise

    def stop(self, state: Any) -> bool:
        return self.error is not None


def _no_reflection(prompt: Any) -> str:  # pragma: no cover - GEPA never calls it with a proposer
    raise ReflectionLMError("no reflection LM: templates come from the programmatic proposer")


class _LogToLogging:
    def log(self, message: str) -> None:
        log.debug("gepa: %s", message)


def _check_rows(name: str, rows: Any) -> list[dict[str, Any]]:
    if isinstance(rows, str | bytes | Mapping) or not isinstance(rows, Sequence) or not rows:
        raise ValueError(f"{name} must be a non-empty list of rows with 'question' and 'answer'")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or "question" not in row or "answer" not in row:
            raise ValueError(f"{name}[{i}] must be a dict with 'question' and 'answer', got {row!r:.80}")
    return [dict(r) for r in rows]


def evolve_template(
    hard_rows: Sequence[Mapping[str, Any]],
    policy: Generate,
    verify: Verify,
    reflection_lm: Any,
    seed_template: str = DEFAULT_TEMPLATE,
    max_metric_calls: int = 200,
    *,
    valset: Sequence[Mapping[str, Any]] | None = None,
    wall_time_s: float | None = None,
    minibatch_size: int = 3,
    seed: int = 0,
    on_unreachable: str = "skip",
    endpoint_kwargs: Mapping[str, Any] | None = None,
    proposer: ProposalFn | None = None,
    resolve: Resolve | None = None,
) -> EvolutionResult:
    """Evolve a template under which ``policy`` solves ``hard_rows`` (task rows: ``question``, ``answer``).

    New templates come from ``reflection_lm`` (GEPA's reflective proposer), or, with
    ``proposer``, from that programmatic proposer (GEPA's ``propose_new_texts``; then
    ``reflection_lm`` may be None). ``resolve(template, row)`` fills a template's per-row parts
    before it is rendered (e.g. :func:`rollwise.rescue.examples.nearest_resolver`).

    GEPA reflects on minibatches of ``hard_rows`` and scores accepted templates on ``valset``
    (default: ``hard_rows``). The budget is ``max_metric_calls`` rollouts and, optionally,
    ``wall_time_s`` seconds; GEPA checks both between iterations, so the last iteration may run
    over by its own evaluations. ``on_unreachable="skip"`` turns an unavailable reflection LM
    into a logged skip (``result.skipped``; best template = seed); ``"raise"`` raises
    :class:`ReflectionLMError`.
    """
    rows = _check_rows("hard_rows", hard_rows)
    val = _check_rows("valset", valset) if valset is not None else rows
    if not callable(policy):
        raise TypeError(f"policy must be callable (prompts -> completions), got {type(policy).__name__}")
    if not callable(verify):
        raise TypeError(f"verify must be callable (completion, answer) -> float, got {type(verify).__name__}")
    if not isinstance(seed_template, str) or not seed_template.strip():
        raise ValueError("seed_template must be a non-empty string")
    check_int("max_metric_calls", max_metric_calls)
    if max_metric_calls < len(val):
        raise ValueError(f"max_metric_calls={max_metric_calls} cannot even score the seed template on "
                         f"the {len(val)} validation rows")
    if wall_time_s is not None and not wall_time_s > 0:
        raise ValueError(f"wall_time_s must be > 0 or None, got {wall_time_s}")
    check_int("minibatch_size", minibatch_size, 1)
    if on_unreachable not in ("skip", "raise"):
        raise ValueError(f"on_unreachable must be 'skip' or 'raise', got {on_unreachable!r}")
    if proposer is not None and not callable(proposer):
        raise TypeError(f"proposer must be callable or None, got {type(proposer).__name__}")
    if proposer is None or reflection_lm is not None:
        lm = make_reflection_lm(reflection_lm, policy, **dict(endpoint_kwargs or {}))
    else:
        lm = _no_reflection

    start = time.monotonic()
    if proposer is None and isinstance(lm, OpenAIReflectionLM):
        try:
            lm.ping()
        except ReflectionLMError as err:
            if on_unreachable == "raise":
                raise
            log.warning("template evolution skipped: %s", err)
            return EvolutionResult(seed_template, math.nan, skipped=str(err))

    guard = _GuardedReflection(lm)
    adapter = TemplateAdapter(policy, verify, proposer=proposer, resolve=resolve)
    stoppers: list[Any] = [guard.stop]
    if wall_time_s is not None:
        stoppers.append(TimeoutStopCondition(wall_time_s))
    result = gepa.optimize(
        seed_candidate={COMPONENT: seed_template}, trainset=rows, valset=val, adapter=adapter,
        reflection_lm=guard if proposer is None else None, max_metric_calls=max_metric_calls,
        stop_callbacks=stoppers,
        reflection_minibatch_size=min(minibatch_size, len(rows)), logger=_LogToLogging(), seed=seed,
        raise_on_exception=True, display_progress_bar=False, track_best_outputs=False,
    )
    if guard.error is not None and on_unreachable == "raise":
        raise ReflectionLMError(guard.error)
    tried = [(c[COMPONENT], float(s)) for c, s in zip(result.candidates, result.val_aggregate_scores,
                                                       strict=True)]
    best = result.best_idx
    return EvolutionResult(
        best_template=tried[best][0], best_score=tried[best][1], tried=tried,
        rollouts_spent=adapter.rollouts, metric_calls=int(result.total_metric_calls or 0),
        reflection_calls=guard.calls, seconds=time.monotonic() - start, skipped=guard.error,
    )
