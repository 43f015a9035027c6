"""Tasks with verifiable rewards for real RLVR runs: prompts, reference answers and a verifier.

``arithmetic`` is generated offline with reasoning-gym's ``chain_sum`` at graded settings (from
single-digit sums of two terms to sums of several multi-digit numbers), so the pool spans prompts
a small model usually solves, sometimes solves and almost never solves. ``mixed`` mixes two other
reasoning-gym families at three settings each (letter counting and simple equations), as real RLVR
datasets mix sources. ``math`` reads any
JSON/JSONL/parquet file of problems with an ``answer`` field and verifies with math-verify.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

INSTRUCTION = "\nGive the final answer on the last line as 'Answer: <number>'."

# chain_sum settings from easiest to hardest
ARITHMETIC_LEVELS: list[dict[str, int]] = [
    dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1),
    dict(min_terms=3, max_terms=3, min_digits=1, max_digits=1),
    dict(min_terms=2, max_terms=2, min_digits=2, max_digits=2),
    dict(min_terms=3, max_terms=3, min_digits=2, max_digits=2),
    dict(min_terms=2, max_terms=2, min_digits=3, max_digits=3),
]


# (family, reasoning-gym settings); a row's level is its index here (family-major),
# MIXED_LEVELS[level][0] its family. A level names a generator setting, not a difficulty rank:
# SmolLM2-135M-Instruct's base pass rates by level are 0.035 / 0.039 / 0.078 (letter counting in
# 12, 5 and 2 words) and 0.031 / 0.062 / 0.012 (equations), 32 prompts x 8 samples each
# (benchmarks/results/smollm2_pass_rates_mixed.md).
_PLUS, _PLUS_MINUS = dict(operators=("+",), operators_weights=[1.0]), dict(
    operators=("+", "-"), operators_weights=[0.5, 0.5])
MIXED_LEVELS: list[tuple[str, dict[str, Any]]] = [
    ("letter_counting", dict(min_words=12, max_words=12)),
    ("letter_counting", dict(min_words=5, max_words=5)),
    ("letter_counting", dict(min_words=2, max_words=2)),
    ("simple_equations", dict(min_terms=2, max_terms=2, min_value=1, max_value=10, **_PLUS)),
    ("simple_equations", dict(min_terms=2, max_terms=2, min_value=1, max_value=10, **_PLUS_MINUS)),
    ("simple_equations", dict(min_terms=2, max_terms=2, min_value=1, max_value=50, **_PLUS_MINUS)),
]


@dataclass
class Task:
    """Train and held-out rows: ``{"id", "prompt" (chat messages), "question", "answer", "level"}``
    and the verifier that scores a completion against a row's answer."""

    name: str
    train: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    verify: Callable[[str, str], float]


def _row(rid: str, question: str, answer: str, level: float) -> dict[str, Any]:
    return {"id": rid, "question": question, "answer": str(answer), "level": float(level),
            "prompt": [{"role": "user", "content": question + INSTRUCTION}]}


def arithmetic(per_level: int = 80, heldout_per_level: int = 20, seed: int = 0) -> Task:
    """Graded integer sums from reasoning-gym (deterministic per seed)."""
    try:
        import reasoning_gym
    except ImportError as err:
        raise ImportError("the arithmetic task needs reasoning-gym: pip install 'rollwise[sim]'") from err
    if per_level < 1 or heldout_per_level < 0:
        raise ValueError("per_level must be >= 1 and heldout_per_level >= 0")
    train, held = [], []
    for lvl, cfg in enumerate(ARITHMETIC_LEVELS):
        ds = reasoning_gym.create_dataset("chain_sum", size=per_level + heldout_per_level,
                                          seed=seed * 100 + lvl, **cfg)
        for j in range(per_level + heldout_per_level):
            item = ds[j]
            row = _row(f"arith/{lvl}/{j}", item["question"], item["answer"], lvl)
            (train if j < per_level else held).append(row)
    return Task("arithmetic", train, held, verify_number)


def mixed(per_level: int = 150, heldout_per_level: int = 17, seed: int = 0) -> Task:
    """Two reasoning-gym families at three settings each (:data:`MIXED_LEVELS`), deterministic
    per seed; ids are ``mixed/<family>/<level>/<j>``."""
    try:
        import reasoning_gym
    except ImportError as err:
        raise ImportError("the mixed task needs reasoning-gym: pip install 'rollwise[sim]'") from err
    if per_level < 1 or heldout_per_level < 0:
        raise ValueError("per_level must be >= 1 and heldout_per_level >= 0")
    train, held, seen = [], [], set()
    need = per_level + heldout_per_level
    for lvl, (family, cfg) in enumerate(MIXED_LEVELS):
        # easy levels repeat questions: draw more and keep the first distinct ones, so that no
        # held-out prompt is also a training prompt
        ds = reasoning_gym.create_dataset(family, size=3 * need, seed=seed * 100 + 50 + lvl, **cfg)
        kept = [item for item in ds if not (item["question"] in seen or seen.add(item["question"]))]
        if len(kept) < need:
            raise ValueError(f"mixed task: {family} level {lvl} has only {len(kept)} distinct "
                             f"questions, {need} needed")
        for j, item in enumerate(kept[:need]):
            row = _row(f"mixed/{family}/{lvl}/{j}", item["question"], item["answer"], lvl)
            (train if j < per_level else held).append(row)
    return Task("mixed", train, held, verify_number)


def from_file(path: str | Path, heldout_fraction: float = 0.1, seed: int = 0,
              text_field: str | None = None, answer_field: str | None = None) -> Task:
    """Problems with reference answers from a JSON/JSONL/parquet file, verified by math-verify."""
    import numpy as np

    from rollwise.feedback.prompt_files import load_prompt_file

    ps = load_prompt_file(path, text_field=text_field, answer_field=answer_field)
    if ps.answers is None:
        raise ValueError(f"task file {str(path)!r} has no 'answer' field: rewards cannot be verified; "
                         "name the field with --answer-field (answer_field= in Python)")
    missing = [n + 1 for n, a in enumerate(ps.answers) if not a.strip()]
    if missing:
        raise ValueError(f"task file {str(path)!r}: row {missing[0]} has no answer in its answer "
                         f"field ({len(missing)} row(s) without one): it could never be rewarded")
    rows, seen = [], set()
    for i, t, a, lv in zip(ps.ids, ps.texts, ps.answers, ps.level, strict=True):
        if t not in seen:  # a duplicate could sit in both splits and contaminate the held-out score
            seen.add(t)
            rows.append(_row(i, t, a, lv))
    if len(rows) < len(ps.texts):
        log.warning("task file %s: %d duplicate problem text(s) removed", path, len(ps.texts) - len(rows))
    perm = np.random.default_rng(seed).permutation(len(rows))
    cut = max(1, int(round(heldout_fraction * len(rows))))
    held = [rows[i] for i in sorted(perm[:cut])]
    train = [rows[i] for i in sorted(perm[cut:])]
    return Task(Path(path).stem, train, held, verify_math)


TASKS = {"arithmetic": arithmetic, "mixed": mixed}


def get_task(name: str, text_field: str | None = None, answer_field: str | None = None,
             **kwargs: Any) -> Task:
    """``arithmetic`` or a path to a problem file."""
    if name in TASKS:
        return TASKS[name](**kwargs)
    if Path(name).suffix.lower() in (".json", ".jsonl", ".parquet"):
        if not Path(name).exists():
            raise FileNotFoundError(f"task file {name!r} does not exist")
        return from_file(name, text_field=text_field, answer_field=answer_field, **kwargs)
    raise ValueError(f"unknown task {name!r}; use {sorted(TASKS)} or a .json/.jsonl/.parquet file")


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_ANSWER_LINE = re.compile(r"answer\s*[:=]\s*(.*)", re.IGNORECASE)


def extract_answer(text: str) -> str | None:
    """The number on the last ``Answer:`` line, else the last number in the text."""
    lines = _ANSWER_LINE.findall(text)
    for candidate in reversed(lines):
        nums = _NUMBER.findall(candidate)
        if nums:
            return nums[0].replace(",", "")
    nums = _NUMBER.findall(text)
    return nums[-1].replace(",", "") if nums else None


def verify_number(completion: str, answer: str) -> float:
    """1.0 when the extracted final number equals the reference exactly, else 0.0."""
    got = extract_answer(completion)
    if got is None:
        return 0.0
    try:
        return float(float(got) == float(str(answer).replace(",", "")))
    except ValueError:
        return 0.0


def verify_math(completion: str, answer: str) -> float:
    """math-verify equivalence of the completion's final answer and the reference."""
    from math_verify import parse, verify

    gold = parse(f"${answer}$")
    pred = parse(completion)
    try:
        return float(bool(verify(gold, pred)))
    except Exception:  # math-verify raises on exotic expressions: count as wrong
        return 0.0


def completion_text(completion: Any) -> str:
    """TRL passes plain strings or chat messages; return the assistant text."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def reward_function(task: Task) -> Callable[..., list[float]]:
    """A TRL reward function: ``(completions, answer, **kwargs) -> list[float]`` in {0, 1}."""

    def correctness(completions: list[Any], answer: list[str], **kwargs: Any) -> list[float]:
        return [task.verify(completion_text(c), a) for c, a in zip(completions, answer, strict=True)]

    correctness.__name__ = f"{task.name}_correct"
    return correctness
