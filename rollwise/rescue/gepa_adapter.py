"""GEPA evolution of rescue templates: prompt texts under which the current policy solves hard prompts.

A *template* is an instruction wrapped around the problem, with a ``{problem}`` placeholder, or a
system-style preamble (no placeholder: the problem follows it after a blank line). GEPA evolves
the template text; the *task LM* is the policy itself, any ``generate(list_of_prompts) ->
list_of_completions`` callable (:class:`TransformersPolicy` for a checkpoint); each completion is
scored by a rollwise verifier. The *reflection LM*, which reads failures and proposes new
templates, is a ``str -> str`` callable, the policy itself (``"policy"``) or an OpenAI-compatible
endpoint URL (:class:`OpenAIReflectionLM`, standard library only).

Every completion generated for GEPA is one rollout, counted in ``EvolutionResult.rollouts_spent``:
the price of a rescue, to weigh against the rollouts it saves. Needs ``pip install 'rollwise[rescue]'``.
"""

from __future__ import annotations

import json
import logging
import math
import time
import urllib.error
import urllib.request
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
from rollwise.rescue.templates import PLACEHOLDER, render_template

log = logging.getLogger(__name__)

COMPONENT = "template"  # the one text component GEPA evolves
DEFAULT_TEMPLATE = PLACEHOLDER + INSTRUCTION

Generate = Callable[[list[str]], list[str]]
Verify = Callable[[str, str], float]


class ReflectionLMError(RuntimeError):
    """The reflection LM cannot answer (endpoint unreachable, HTTP error, malformed reply)."""


def _as_text(prompt: str | Sequence[Mapping[str, Any]]) -> str:
    """GEPA may pass chat messages; a text-only LM gets their contents joined."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(str(m.get("content", "")) for m in prompt)


class OpenAIReflectionLM:
    """An OpenAI-compatible chat endpoint (``POST {base}/v1/chat/completions``) as a ``str -> str`` LM.

    Any failure to get a reply raises :class:`ReflectionLMError` naming the URL, never a bare
    socket error, so a caller can skip the rescue instead of crashing a training run.
    """

    def __init__(self, url: str, model: str = "default", api_key: str | None = None,
                 timeout: float = 120.0, temperature: float = 0.7, max_tokens: int = 1024) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be an http(s) URL, got {url!r}")
        if not timeout > 0 or not max_tokens >= 1 or not temperature >= 0:
            raise ValueError("timeout must be > 0, max_tokens >= 1 and temperature >= 0")
        base = url.rstrip("/")
        if base.endswith("/chat/completions"):
            self.endpoint = base
        elif base.endswith("/v1"):
            self.endpoint = base + "/chat/completions"
        else:
            self.endpoint = base + "/v1/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, float(timeout)
        self.temperature, self.max_tokens = float(temperature), int(max_tokens)
        self.calls = 0

    def _open(self, request: urllib.request.Request, timeout: float) -> bytes:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only
                return response.read()
        except urllib.error.HTTPError as err:
            detail = err.read()[:200].decode("utf-8", "replace")
            raise ReflectionLMError(f"reflection endpoint {self.endpoint} answered HTTP {err.code}: "
                                    f"{detail}") from err
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            reason = getattr(err, "reason", err)
            raise ReflectionLMError(f"reflection endpoint {self.endpoint} is unreachable: {reason}") from err

    def ping(self, timeout: float = 5.0) -> None:
        """Raise :class:`ReflectionLMError` when nothing listens at the endpoint (any HTTP answer,
        even an error status, proves something does)."""
        request = urllib.request.Request(self.endpoint.rsplit("/chat/completions", 1)[0] + "/models",
                                         headers=self._headers())
        try:
            self._open(request, timeout)
        except ReflectionLMError as err:
            if isinstance(err.__cause__, urllib.error.HTTPError):
                return
            raise

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def __call__(self, prompt: str | Sequence[Mapping[str, Any]]) -> str:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature,
                           "max_tokens": self.max_tokens}).encode("utf-8")
        request = urllib.request.Request(self.endpoint, data=body, headers=self._headers(), method="POST")
        raw = self._open(request, self.timeout)
        self.calls += 1
        try:
            return str(json.loads(raw)["choices"][0]["message"]["content"])
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise ReflectionLMError(f"reflection endpoint {self.endpoint} sent a reply that is not a chat "
                                    f"completion: {raw[:200]!r}") from err


def make_reflection_lm(spec: Any, policy: Generate | None = None,
                       **endpoint_kwargs: Any) -> Callable[[Any], str]:
    """A ``str -> str`` reflection LM from a callable, ``"policy"`` (the task LM) or an endpoint URL."""
    if isinstance(spec, str):
        if spec == "policy":
            if policy is None or not callable(policy):
                raise ValueError("reflection_lm='policy' needs a callable policy")
            return lambda prompt: policy([_as_text(prompt)])[0]
        if spec.startswith(("http://", "https://")):
            return OpenAIReflectionLM(spec, **endpoint_kwargs)
        raise ValueError(f"reflection_lm must be a callable, 'policy' or an http(s) URL, got {spec!r}")
    if callable(spec):
        return spec
    raise TypeError("reflection_lm must be a callable, 'policy' or an http(s) URL, "
                    f"got {type(spec).__name__}")


class TransformersPolicy:
    """A causal LM checkpoint as a task LM: ``policy(prompts) -> completions``, batched, left-padded.

    Prompts are user messages rendered with the tokenizer's chat template when it has one (the
    way the policy sees prompts in training). Greedy by default; with ``temperature > 0`` each
    call samples from ``seed`` (the same prompts give the same completions) and leaves the
    global torch RNG as it found it.
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, max_new_tokens: int = 256,
                 temperature: float = 0.0, batch_size: int = 16, seed: int = 0,
                 device: str | None = None) -> None:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature}")
        from rollwise.llm.models import load_for_generation

        self.model, self.tokenizer, self.device = load_for_generation(model, tokenizer, device)
        self.max_new_tokens, self.temperature = max_new_tokens, float(temperature)
        self.batch_size, self.seed = batch_size, seed
        self.calls = 0

    def _render(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        return prompt

    def __call__(self, prompts: list[str]) -> list[str]:
        import torch

        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings, not one string")
        gen: dict[str, Any] = dict(max_new_tokens=self.max_new_tokens,
                                   pad_token_id=self.tokenizer.pad_token_id)
        if self.temperature > 0:
            gen.update(do_sample=True, temperature=self.temperature, top_p=1.0, top_k=0)
        else:
            gen.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        texts = [self._render(p) for p in prompts]
        out: list[str] = []
        devices = [torch.device(self.device)] if torch.device(self.device).type == "cuda" else []
        # seeded sampling without touching the caller's RNG (e.g. a training run's next rollouts)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            self.calls += 1
            for lo in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[lo : lo + self.batch_size], return_tensors="pt", padding=True,
                                     add_special_tokens=False).to(self.device)
                with torch.no_grad():
                    ids = self.model.generate(**enc, **gen)
                out += self.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:],
                                                   skip_special_tokens=True)
        return out


class TemplateAdapter:
    """GEPA's adapter protocol for one component, the template: evaluate = render, generate, verify.

    ``rollouts`` counts every completion generated (one per example per GEPA metric call).
    """

    def __init__(self, policy: Generate, verify: Verify, max_feedback: int = 8) -> None:
        if not callable(policy):
            raise TypeError(f"policy must be callable (prompts -> completions), got {type(policy).__name__}")
        if not callable(verify):
            raise TypeError("verify must be callable (completion, answer) -> float, "
                            f"got {type(verify).__name__}")
        self.policy, self.verify, self.max_feedback = policy, verify, max_feedback
        self.rollouts = 0
        self.scored: dict[str, list[float]] = {}  # template -> every score it got, minibatches included

    propose_new_texts = None  # GEPA's reflective proposer writes new templates

    def evaluate(self, batch: list[dict[str, Any]], candidate: dict[str, str],
                 capture_traces: bool = False) -> EvaluationBatch:
        template = candidate[COMPONENT]
        prompts = [render_template(template, str(row["question"])) for row in batch]
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
) -> EvolutionResult:
    """Evolve a template under which ``policy`` solves ``hard_rows`` (task rows: ``question``, ``answer``).

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
    if isinstance(max_metric_calls, bool) or not isinstance(max_metric_calls, int):
        raise TypeError(f"max_metric_calls must be an int, got {type(max_metric_calls).__name__}")
    if max_metric_calls < len(val):
        raise ValueError(f"max_metric_calls={max_metric_calls} cannot even score the seed template on "
                         f"the {len(val)} validation rows")
    if wall_time_s is not None and not wall_time_s > 0:
        raise ValueError(f"wall_time_s must be > 0 or None, got {wall_time_s}")
    if isinstance(minibatch_size, bool) or not isinstance(minibatch_size, int) or minibatch_size < 1:
        raise ValueError(f"minibatch_size must be an int >= 1, got {minibatch_size!r}")
    if on_unreachable not in ("skip", "raise"):
        raise ValueError(f"on_unreachable must be 'skip' or 'raise', got {on_unreachable!r}")
    lm = make_reflection_lm(reflection_lm, policy, **dict(endpoint_kwargs or {}))

    start = time.monotonic()
    if isinstance(lm, OpenAIReflectionLM):
        try:
            lm.ping()
        except ReflectionLMError as err:
            if on_unreachable == "raise":
                raise
            log.warning("template evolution skipped: %s", err)
            return EvolutionResult(seed_template, math.nan, skipped=str(err))

    guard = _GuardedReflection(lm)
    adapter = TemplateAdapter(policy, verify)
    stoppers: list[Any] = [guard.stop]
    if wall_time_s is not None:
        stoppers.append(TimeoutStopCondition(wall_time_s))
    result = gepa.optimize(
        seed_candidate={COMPONENT: seed_template}, trainset=rows, valset=val, adapter=adapter,
        reflection_lm=guard, max_metric_calls=max_metric_calls, stop_callbacks=stoppers,
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
