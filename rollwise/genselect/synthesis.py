"""Selection tasks from problems with verified answers and sampled candidate solutions.

A *selection task* shows one problem and a window of candidate solutions (shuffled, numbered from
1) and asks for the number of a correct one. Only windows holding at least one correct and one
incorrect candidate are kept: an all-correct or all-wrong window rewards every choice alike, so
it teaches nothing (the filter of arXiv 2602.02143).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rollwise._io import atomic_write_text
from rollwise.llm.tasks import INSTRUCTION, extract_answer, verify_number
from rollwise.validation import Interval

NO_ANSWER = "(no answer)"
VIEWS = ("answer", "full")
SELECT_LINE = "Selected: <number>"


def candidate_view(text: str, view: str | Callable[[str], str] = "answer", max_chars: int = 200) -> str:
    """What the selector sees of one candidate: its final answer, its (one-line, truncated) text, or
    ``view(text)``. Short views keep selection prompts of 8 candidates within a small model's reach."""
    if not isinstance(text, str):
        raise TypeError(f"candidate must be a string, got {type(text).__name__}")
    if callable(view):
        shown = view(text)
        if not isinstance(shown, str):
            raise TypeError(f"view returned {type(shown).__name__}, expected a string")
        return " ".join(shown.split()) or NO_ANSWER
    if view == "answer":
        answer = extract_answer(text)
        return answer if answer is not None else NO_ANSWER
    if view == "full":
        if max_chars < 1:
            raise ValueError(f"max_chars must be >= 1, got {max_chars}")
        flat = " ".join(text.split())  # one line: a newline would break the numbered list
        if len(flat) > max_chars:
            flat = flat[: max_chars - 3].rstrip() + "..."
        return flat or NO_ANSWER
    raise ValueError(f"unknown view {view!r}; choose from {list(VIEWS)} or pass a callable")


def selection_text(question: str, shown: Sequence[str], view_name: str = "answer") -> str:
    """The user message of a selection task (also used at inference: keep the two identical)."""
    if not shown:
        raise ValueError("a selection prompt needs at least one candidate")
    what = "answers" if view_name == "answer" else "solutions"
    listing = "\n".join(f"[{i}] {c}" for i, c in enumerate(shown, start=1))
    return (f"Problem: {question}\n\nCandidate {what}:\n{listing}\n\n"
            f"Which candidate is correct? Reply with one line '{SELECT_LINE}', "
            f"<number> from 1 to {len(shown)}.")


def render_prompt(tokenizer: Any, text: str, prefix: str = "") -> str:
    """The model's input string: the chat template (when the tokenizer has one) plus ``prefix``,
    the start of the assistant's reply (e.g. ``"Selected:"``)."""
    if getattr(tokenizer, "chat_template", None):
        head = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    else:
        head = text + "\n"
    return head + prefix


def _check_problems(problems: Sequence[dict[str, Any]]) -> None:
    if isinstance(problems, dict | str) or not isinstance(problems, Sequence):
        raise TypeError("problems must be a sequence of dicts with 'question' and 'answer'")
    if not problems:
        raise ValueError("problems is empty")
    for i, p in enumerate(problems):
        if not isinstance(p, dict):
            raise TypeError(f"problems[{i}] must be a dict, got {type(p).__name__}")
        for key in ("question", "answer"):
            if p.get(key) is None or str(p[key]).strip() == "":
                raise ValueError(f"problems[{i}] has no {key!r}: answers must be verifiable")


def _problem_id(p: dict[str, Any], i: int) -> str:
    return str(p.get("id", f"p{i}"))


def sample_candidates(
    problems: Sequence[dict[str, Any]],
    model: str = "smollm2",
    n: int = 8,
    temperature: float = 1.0,
    max_new_tokens: int = 48,
    seed: int = 0,
    batch_size: int = 64,
    verify: Callable[[str, str], float] = verify_number,
) -> list[dict[str, Any]]:
    """``n`` sampled solutions per problem, verified: one *candidate set* per problem
    (``id, question, answer, candidates, answers, scores``)."""
    _check_problems(problems)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    from rollwise.llm.evaluation import sample_outcomes
    from rollwise.llm.models import resolve_model

    rows = [{"prompt": p.get("prompt") or [{"role": "user", "content": p["question"] + INSTRUCTION}],
             "answer": str(p["answer"])} for p in problems]
    scores, texts = sample_outcomes(resolve_model(model), rows, verify, samples=n,
                                    max_new_tokens=max_new_tokens, temperature=temperature,
                                    batch_size=batch_size, seed=seed, return_texts=True)
    return [candidate_set(p, t, verify, problem_id=_problem_id(p, i), scores=s.tolist())
            for i, (p, t, s) in enumerate(zip(problems, texts, scores, strict=True))]


def candidate_set(problem: dict[str, Any], candidates: Sequence[str],
                  verify: Callable[[str, str], float] = verify_number, problem_id: str | None = None,
                  scores: Sequence[float] | None = None) -> dict[str, Any]:
    """One problem's candidates with their verified scores (0/1) and extracted answers."""
    if isinstance(candidates, str) or not all(isinstance(c, str) for c in candidates):
        raise TypeError("candidates must be a sequence of strings")
    if scores is None:
        scores = [float(verify(c, str(problem["answer"]))) for c in candidates]
    return {"id": problem_id if problem_id is not None else _problem_id(problem, 0),
            "question": str(problem["question"]), "answer": str(problem["answer"]),
            "candidates": list(candidates), "answers": [extract_answer(c) for c in candidates],
            "scores": [float(s) for s in scores]}


def check_task_shape(window: int, min_window: int | None = None, windows_per_problem: int = 1,
                     max_correct_fraction: float | None = None, view: Any = "answer") -> None:
    """Raise ``ValueError`` (naming the argument) for settings :func:`synthesize` cannot use;
    callers check before sampling any candidate."""
    if not Interval(int, 2).is_valid(window):
        raise ValueError(f"window must be an int >= 2 (a choice needs two candidates), got {window!r}")
    lo = window if min_window is None else min_window
    if not Interval(int, 2, window).is_valid(lo):
        raise ValueError(f"min_window must be an int in [2, window={window}], got {min_window!r}")
    if windows_per_problem < 1:
        raise ValueError(f"windows_per_problem must be >= 1, got {windows_per_problem}")
    if max_correct_fraction is not None and not 0 < max_correct_fraction <= 1:
        raise ValueError(f"max_correct_fraction must lie in (0, 1], got {max_correct_fraction}")
    if not callable(view) and view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose from {list(VIEWS)} or pass a callable")


def synthesize(
    problems: Sequence[dict[str, Any]],
    candidates: Sequence[Sequence[str]] | None = None,
    *,
    window: int = 8,
    min_window: int | None = None,
    windows_per_problem: int = 1,
    view: str | Callable[[str], str] = "answer",
    max_chars: int = 200,
    max_correct_fraction: float | None = None,
    seed: int = 0,
    verify: Callable[[str, str], float] = verify_number,
    out: str | os.PathLike | None = None,
    model: str = "smollm2",
    n: int = 8,
    temperature: float = 1.0,
    max_new_tokens: int = 48,
) -> list[dict[str, Any]]:
    """Selection tasks from ``problems`` (dicts with ``question`` and ``answer``).

    ``candidates[i]`` are problem i's candidate solutions; without them ``n`` are sampled from
    ``model`` (default: the SmolLM2 policy). For each problem, ``windows_per_problem`` windows of
    ``window`` candidates (a size drawn from ``[min_window, window]`` when ``min_window`` is given,
    never more than the problem has) are drawn without replacement in random order; a window is
    kept only if it holds a correct and an incorrect candidate (and at most
    ``max_correct_fraction`` correct ones, the paper's cap, when given). Deterministic given
    ``seed``: problem i's draws use the generator seeded with ``(seed, i)``.

    Each task: ``id, problem_id, question, answer, candidates`` (the shown views, numbered from 1
    in the prompt), ``source_index`` (position of each shown candidate in the problem's list),
    ``correct`` (the 1-based numbers of the correct ones), ``n_candidates``, ``text`` (the user
    message), ``prompt`` (chat messages) and ``view``. ``out`` writes them as JSONL, atomically.
    """
    _check_problems(problems)
    check_task_shape(window, min_window, windows_per_problem, max_correct_fraction, view)
    lo = window if min_window is None else min_window
    if candidates is None:
        sets = sample_candidates(problems, model=model, n=n, temperature=temperature,
                                 max_new_tokens=max_new_tokens, seed=seed, verify=verify)
    else:
        if len(candidates) != len(problems):
            raise ValueError(f"candidates has {len(candidates)} lists but there are "
                             f"{len(problems)} problems")
        sets = [candidate_set(p, c, verify, problem_id=_problem_id(p, i))
                for i, (p, c) in enumerate(zip(problems, candidates, strict=True))]
    view_name = view if isinstance(view, str) else "custom"
    tasks: list[dict[str, Any]] = []
    for i, cs in enumerate(sets):
        cands, scores = cs["candidates"], np.asarray(cs["scores"]) >= 0.5
        if len(cands) < 2 or scores.all() or not scores.any():
            continue
        rng = np.random.default_rng([seed, i])
        for j in range(windows_per_problem):
            size = int(rng.integers(lo, window + 1))
            pick = rng.permutation(len(cands))[: min(size, len(cands))]
            good = scores[pick]
            if good.all() or not good.any():
                continue
            if max_correct_fraction is not None and good.mean() > max_correct_fraction:
                continue
            shown = [candidate_view(cands[k], view, max_chars) for k in pick]
            text = selection_text(cs["question"], shown, view_name)
            tasks.append({
                "id": f"{cs['id']}/{j}", "problem_id": cs["id"], "question": cs["question"],
                "answer": cs["answer"], "candidates": shown,
                "source_index": [int(k) for k in pick],
                "correct": [pos + 1 for pos, ok in enumerate(good) if ok],
                "n_candidates": len(shown), "text": text,
                "prompt": [{"role": "user", "content": text}], "view": view_name,
            })
    if out is not None:
        write_jsonl(out, tasks)
    return tasks


def write_jsonl(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """Rows as JSON lines, written atomically."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"file {os.fspath(path)!r} does not exist")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{os.fspath(path)!r} line {n} is not JSON: {err}") from err
    return rows


def read_tasks(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Selection tasks written by :func:`synthesize`, checked."""
    tasks = read_jsonl(path)
    if not tasks:
        raise ValueError(f"{os.fspath(path)!r} holds no selection tasks")
    for n, t in enumerate(tasks, start=1):
        missing = {"id", "text", "correct", "n_candidates"} - set(t)
        if missing:
            raise ValueError(f"{os.fspath(path)!r} row {n} is not a selection task (missing "
                             f"{sorted(missing)})")
        if not t["correct"] or not all(1 <= c <= t["n_candidates"] for c in t["correct"]):
            raise ValueError(f"{os.fspath(path)!r} row {n}: 'correct' must name candidates 1.."
                             f"{t['n_candidates']}")
    return tasks


def to_dataset(tasks: Sequence[dict[str, Any]]) -> Any:
    """The tasks as a Hugging Face ``datasets.Dataset``."""
    from datasets import Dataset

    return Dataset.from_list(list(tasks))
