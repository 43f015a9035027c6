"""Best-of-N with a generative selector: one comparison for N <= window, else a knockout tournament.

A *chooser* is anything with ``choose(requests) -> list[int | None]``: each request is
``(question, candidates)`` and the answer is the 0-based index of the chosen candidate or None
when the output was malformed. :class:`GenSelectModel` is the chooser backed by a causal LM
(batched generation); tests and other selectors can pass their own.

Baselines scored on the same candidates: random pick, majority vote over parsed answers, and the
oracle (pass@N).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from rollwise.genselect.reward import parse_choice
from rollwise.genselect.synthesis import candidate_view, render_prompt, selection_text
from rollwise.validation import Interval, check_int


class Chooser(Protocol):
    def choose(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[int | None]: ...


class GenSelectModel:
    """A causal LM as a chooser: renders each request like a synthesised task, generates (greedy
    by default, batched, left-padded) and parses the reply with the strict rule.

    ``view``, ``max_chars`` and ``prefix`` must match the ones the model was trained with.
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, view: str | Callable[[str], str] = "answer",
                 max_chars: int = 200, prefix: str = "Selected:", max_new_tokens: int = 8,
                 temperature: float = 0.0, batch_size: int = 16, seed: int = 0,
                 device: str | None = None) -> None:
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be >= 1")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0: greedy), got {temperature}")
        from rollwise.llm.models import load_for_generation

        self.model, self.tokenizer, self.device = load_for_generation(model, tokenizer, device)
        self.view, self.max_chars, self.prefix = view, max_chars, prefix
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.batch_size, self.seed = batch_size, seed
        self.outputs: list[str] = []  # raw replies of the last choose call (prefix included)

    def prompt(self, question: str, candidates: Sequence[str]) -> str:
        shown = [candidate_view(c, self.view, self.max_chars) for c in candidates]
        name = self.view if isinstance(self.view, str) else "custom"
        return render_prompt(self.tokenizer, selection_text(question, shown, name), self.prefix)

    def choose(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[int | None]:
        from rollwise.llm.generation import generate

        prompts = [self.prompt(q, c) for q, c in requests]
        # the rendered prompts carry their special tokens already; the tokenizer's default adds
        # none for SmolLM2 and is what this chooser has always used
        replies = generate(self.model, self.tokenizer, prompts, max_new_tokens=self.max_new_tokens,
                           temperature=self.temperature, batch_size=self.batch_size, seed=self.seed,
                           device=self.device, add_special_tokens=True)
        self.outputs = [self.prefix + r for r in replies]
        picks = [parse_choice(text, len(c)) for text, (_, c) in zip(self.outputs, requests, strict=True)]
        return [None if p is None else p - 1 for p in picks]


@dataclass
class TournamentResult:
    """The winner's index in the original candidate list and what it cost."""

    winner: int
    rounds: int = 0
    calls: int = 0  # comparisons (chooser requests) for this problem
    malformed: int = 0  # comparisons whose output was malformed (a random group member advanced)


def groups_of(n: int, window: int) -> list[int]:
    """Sizes of the ``ceil(n / window)`` balanced groups a round of ``n`` survivors splits into."""
    if n < 1 or window < 2:
        raise ValueError(f"need n >= 1 and window >= 2, got n={n}, window={window}")
    k = math.ceil(n / window)
    base, extra = divmod(n, k)
    return [base + 1] * extra + [base] * (k - extra)


def select_best_many(
    questions: Sequence[str],
    candidate_lists: Sequence[Sequence[str]],
    chooser: Chooser,
    window: int = 8,
    seed: int = 0,
    shuffle: bool = True,
) -> list[TournamentResult]:
    """Best-of-N for many problems at once, one batched chooser call per tournament round.

    N <= window: one comparison. N > window: the survivors split into balanced groups of at most
    ``window`` (:func:`groups_of`), each group's chosen candidate advances, until one is left;
    a group of one advances without a comparison and N = 1 needs none. ``shuffle`` randomises
    the order candidates are shown in (seeded per problem with ``(seed, i)``), so a selector's
    position bias does not favour the first candidates. A malformed choice advances a random
    member of its group and is counted.
    """
    check_int("window", window, 2)
    if isinstance(questions, str) or len(questions) != len(candidate_lists):
        raise ValueError("questions and candidate_lists must be sequences of the same length")
    if not hasattr(chooser, "choose"):
        raise TypeError(f"chooser must have a choose(requests) method, got {type(chooser).__name__}")
    rngs = [np.random.default_rng([seed, i]) for i in range(len(questions))]
    alive: list[list[int]] = []
    for i, cands in enumerate(candidate_lists):
        if isinstance(cands, str) or len(cands) == 0:
            raise ValueError(f"candidate_lists[{i}] must be a non-empty list of candidates")
        order = rngs[i].permutation(len(cands)) if shuffle else np.arange(len(cands))
        alive.append([int(j) for j in order])
    results = [TournamentResult(winner=-1) for _ in questions]
    while any(len(a) > 1 for a in alive):
        requests: list[tuple[str, list[str]]] = []
        slots: list[tuple[int, list[int], int | None]] = []  # (problem, group, request index)
        for p, members in enumerate(alive):
            if len(members) <= 1:
                continue
            results[p].rounds += 1
            start = 0
            for size in groups_of(len(members), window):
                group = members[start : start + size]
                start += size
                if size == 1:
                    slots.append((p, group, None))
                else:
                    slots.append((p, group, len(requests)))
                    requests.append((questions[p], [candidate_lists[p][j] for j in group]))
        choices = list(chooser.choose(requests))
        if len(choices) != len(requests):
            raise ValueError(f"chooser returned {len(choices)} choices for {len(requests)} requests")
        nxt: dict[int, list[int]] = {}
        for p, group, r in slots:
            if r is None:
                pick = 0
            else:
                results[p].calls += 1
                c = choices[r]
                valid = Interval(int, 0, len(group) - 1).is_valid(c)
                if not valid:
                    results[p].malformed += 1
                    c = int(rngs[p].integers(len(group)))
                pick = int(c)
            nxt.setdefault(p, []).append(group[pick])
        for p, members in nxt.items():
            alive[p] = members
    for p, members in enumerate(alive):
        results[p].winner = members[0]
    return results


def select_best(question: str, candidates: Sequence[str], model: Chooser | str, window: int = 8,
                seed: int = 0, **model_kwargs: Any) -> int:
    """Index of the candidate a generative selector picks (see :func:`select_best_many`).

    ``model`` is a chooser (e.g. :class:`GenSelectModel`) or a model name/path, loaded here with
    ``model_kwargs`` (load it once and pass the chooser when selecting for many problems).
    """
    chooser = GenSelectModel(model, **model_kwargs) if isinstance(model, str) else model
    return select_best_many([question], [candidates], chooser, window=window, seed=seed)[0].winner


# ---- baselines --------------------------------------------------------------------------------
def _normalise(answer: str | None) -> str | None:
    if answer is None:
        return None
    text = str(answer).strip()
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return text or None
    return repr(value) if math.isfinite(value) else text


def majority_vote(answers: Sequence[str | None], rng: np.random.Generator | None = None) -> int:
    """Index of a candidate whose parsed answer is the most common (None answers do not vote;
    ties and all-None broken at random with ``rng``, else the first)."""
    if len(answers) == 0:
        raise ValueError("majority_vote needs at least one candidate")
    norm = [_normalise(a) for a in answers]
    counts = Counter(a for a in norm if a is not None)
    if not counts:
        pool = list(range(len(answers)))
    else:
        top = max(counts.values())
        winners = {a for a, c in counts.items() if c == top}
        pool = [i for i, a in enumerate(norm) if a in winners]
        # one representative per tied answer, so a tie is broken between answers, not candidates
        seen: dict[str, int] = {}
        for i in pool:
            seen.setdefault(norm[i], i)
        pool = list(seen.values())
    return int(pool[int(rng.integers(len(pool)))]) if rng is not None else pool[0]


def majority_vote_accuracy(answers: Sequence[str | None], scores: Sequence[float]) -> float:
    """Expected accuracy of :func:`majority_vote` with ties broken uniformly at random."""
    if len(answers) != len(scores) or len(answers) == 0:
        raise ValueError("answers and scores must be non-empty and of the same length")
    norm = [_normalise(a) for a in answers]
    s = np.asarray(scores, dtype=float) >= 0.5
    counts = Counter(a for a in norm if a is not None)
    if not counts:
        return float(s.mean())
    top = max(counts.values())
    winners = [a for a, c in counts.items() if c == top]
    return float(np.mean([s[[i for i, x in enumerate(norm) if x == a]].mean() for a in winners]))


def random_pick_accuracy(scores: Sequence[float]) -> float:
    """Expected accuracy of picking a candidate uniformly at random."""
    return float((np.asarray(scores, dtype=float) >= 0.5).mean())


def oracle_accuracy(scores: Sequence[float]) -> float:
    """pass@N: 1 when any candidate is correct."""
    return float((np.asarray(scores, dtype=float) >= 0.5).any())


def evaluate_best_of_n(
    sets: Sequence[dict[str, Any]],
    ns: Sequence[int] = (4, 8, 16),
    choosers: dict[str, Chooser] | None = None,
    window: int = 8,
    seeds: Sequence[int] = (0,),
) -> dict[str, Any]:
    """Best-of-N accuracy of random pick, majority vote, the oracle and each chooser.

    Each candidate set (:func:`~rollwise.genselect.synthesis.candidate_set`) with M candidates
    yields ``M // N`` disjoint draws of N candidates (in the order sampled, i.e. i.i.d. draws);
    accuracies average over draws and, for choosers, over tournament ``seeds`` (presentation
    order). Sets with fewer than N candidates are skipped for that N.
    """
    if not sets:
        raise ValueError("sets is empty")
    out: dict[str, Any] = {}
    for n in ns:
        if n < 1:
            raise ValueError(f"N must be >= 1, got {n}")
        draws = [(s, list(range(lo, lo + n))) for s in sets
                 for lo in range(0, len(s["candidates"]) - n + 1, n)]
        if not draws:
            continue
        row: dict[str, Any] = {"draws": len(draws), "problems": len({s["id"] for s, _ in draws})}
        per_draw = {
            "random": [random_pick_accuracy([s["scores"][j] for j in d]) for s, d in draws],
            "majority": [majority_vote_accuracy([s["answers"][j] for j in d], [s["scores"][j] for j in d])
                         for s, d in draws],
            "oracle": [oracle_accuracy([s["scores"][j] for j in d]) for s, d in draws],
        }
        for name, chooser in (choosers or {}).items():
            acc, calls, bad = np.zeros(len(draws)), 0, 0
            for seed in seeds:
                res = select_best_many([s["question"] for s, _ in draws],
                                       [[s["candidates"][j] for j in d] for s, d in draws],
                                       chooser, window=window, seed=seed)
                acc += [float(s["scores"][d[r.winner]] >= 0.5) for (s, d), r in zip(draws, res, strict=True)]
                calls += sum(r.calls for r in res)
                bad += sum(r.malformed for r in res)
            per_draw[name] = list(acc / len(seeds))
            row[f"{name}_malformed"] = bad / calls if calls else 0.0
            row[f"{name}_calls_per_problem"] = calls / (len(draws) * len(seeds))
        for name, values in per_draw.items():
            v = np.asarray(values, dtype=float)
            row[name] = float(v.mean())
            # standard error over draws (draws of one problem are not independent: a lower bound)
            row[f"{name}_se"] = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
        out[str(n)] = row
    return out
