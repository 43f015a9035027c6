"""Prompt files: problems with their skill, difficulty level, id and answer, from JSON, JSONL or
parquet (e.g. the MATH dataset with its subject ``type`` and ``difficulty`` level)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class PromptSet:
    """Texts with a skill name and a raw difficulty level (higher is harder)."""

    texts: list[str]
    skills: list[str]
    level: np.ndarray
    ids: list[str]
    answers: list[str] | None = None

    def __post_init__(self) -> None:
        n = len(self.texts)
        if n == 0:
            raise ValueError("the prompt set is empty")
        if not (len(self.skills) == len(self.ids) == n and self.level.shape == (n,)):
            raise ValueError("texts, skills, ids and level must have the same length")



MAX_PROMPT_CHARS = 32_768  # a longer prompt stalls generation long before it could teach
MAX_FILE_BYTES = 1 << 30  # a prompt file is read whole: beyond 1 GiB, split it
TEXT_FIELDS = ("prompt", "problem", "question", "text")
SKILL_FIELDS = ("skill", "type", "subject", "family")
LEVEL_FIELDS = ("difficulty", "level")


def normalise_skill(name: str) -> str:
    """'Counting & Probability' and 'counting_and_probability' map to the same skill."""
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower().replace("&", "and")).strip("_")


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    size = path.stat().st_size if path.is_file() else 0
    if size > MAX_FILE_BYTES:
        raise ValueError(f"prompt file {str(path)!r} is {size / 2**30:.1f} GiB, over the limit of "
                         f"{MAX_FILE_BYTES / 2**30:.0f} GiB that is read whole; split it")
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        elif suffix == ".jsonl":
            rows = []
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError as err:
                        raise ValueError(f"line {number}: {err}") from None
        else:
            rows = json.loads(path.read_text())
    except RecursionError:
        raise ValueError(f"prompt file {str(path)!r} nests its JSON too deeply to be a prompt "
                         f"file (a list of flat objects)") from None
    except (ValueError, OSError) as err:
        raise ValueError(f"prompt file {str(path)!r} is not valid {suffix or 'JSON'}: {err}") from err
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"prompt file {str(path)!r} must hold a non-empty list of objects")
    return rows


def load_prompt_file(
    path: str | Path,
    text_field: str | None = None,
    skill_field: str | None = None,
    level_field: str | None = None,
    answer_field: str | None = None,
) -> PromptSet:
    """Read prompts from JSON (a list of objects), JSONL or parquet (rows counted from 1 in
    error messages).

    Fields are detected when not given: text from prompt/problem/question/text, skill from
    skill/type/subject/family (else, for MATH-style ``unique_id`` paths such as
    ``test/precalculus/807.json``, the subject in the path; else one skill), level from
    difficulty/level (else 0 for every prompt), answers from ``answer_field`` (default
    ``answer``, where present).
    """
    path = Path(path)
    rows = _read_rows(path)
    keys = set(rows[0])

    def pick(given: str | None, options: tuple[str, ...], what: str) -> str | None:
        if given is not None:
            if given not in keys:
                raise ValueError(f"{what} {given!r} is not a field of {str(path)!r} ({sorted(keys)})")
            return given
        return next((f for f in options if f in keys), None)

    tf = pick(text_field, TEXT_FIELDS, "text_field")
    if tf is None:
        raise ValueError(f"{str(path)!r} has no text field ({', '.join(TEXT_FIELDS)}); name it with "
                         f"--text-field (text_field= in Python); fields: {sorted(keys)}")
    sf = pick(skill_field, SKILL_FIELDS, "skill_field")
    lf = pick(level_field, LEVEL_FIELDS, "level_field")
    texts, skills, levels = [], [], []
    for i, r in enumerate(rows):
        t = r.get(tf)
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"{str(path)!r}: row {i + 1} has no text in field {tf!r}")
        if len(t) > MAX_PROMPT_CHARS:
            raise ValueError(f"{str(path)!r}: row {i + 1}'s {tf!r} is {len(t):,} characters, over "
                             f"the limit of {MAX_PROMPT_CHARS:,}")
        texts.append(t)
        if sf is not None:
            skills.append(normalise_skill(r.get(sf, "unknown")))
        elif isinstance(r.get("unique_id"), str) and r["unique_id"].count("/") >= 2:
            skills.append(normalise_skill(r["unique_id"].split("/")[1]))
        else:
            skills.append("all")
        if lf is not None:
            try:
                levels.append(float(r[lf]))
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{str(path)!r}: row {i + 1} has no numeric {lf!r}") from None
            if not np.isfinite(levels[-1]):
                raise ValueError(f"{str(path)!r}: row {i + 1} has a non-finite {lf!r} ({r[lf]!r})")
    level = np.asarray(levels, dtype=np.float64) if lf is not None else np.zeros(len(texts))
    # rows without ids are numbered as PromptPool numbers them, so that a pool built from the
    # same texts in code and from the file on the command line is the same pool
    ids = [str(r.get("unique_id", r.get("id", i))) for i, r in enumerate(rows)]
    first: dict[str, int] = {}
    for i, pid in enumerate(ids):
        if pid in first:  # renumbering would break every join back to the user's rows
            raise ValueError(f"{str(path)!r}: rows {first[pid] + 1} and {i + 1} have the same id "
                             f"{pid!r} (ids are compared as text); give every row its own id")
        first[pid] = i
    af = pick(answer_field, ("answer",), "answer_field")
    # a missing or null answer is "" (never the text "None"): callers that need answers refuse it
    answers = [_answer(r.get(af), i, af, path) for i, r in enumerate(rows)] if af is not None else None
    return PromptSet(texts, skills, level, ids, answers)


def _answer(value: object, row: int, field: str, path: Path) -> str:
    """A row's answer as text: a string or a finite number; missing or null is ``""``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    raise ValueError(f"{str(path)!r}: row {row + 1}'s {field!r} is {value!r}; an answer must be "
                     f"a string or a finite number")
