"""Worked-example templates for hard prompts, built from the policy's own verified solutions.

A small policy rarely writes a better instruction for itself; it may instead follow worked
examples: a template holding a few of its own verified solutions to related, solved prompts, in
the answer format the verifier reads, followed by the hard problem (on SmolLM2-135M and
arithmetic this did not raise the hard prompts' success: docs/rescue.md). Three pieces:

- :class:`SolvedExampleStore`: verified successful rollouts seen in training (problem, solution,
  embedding), bounded, with nearest-neighbour lookup and a JSON state for checkpoints.
- Example templates: literal worked examples and/or a ``{examples:K}`` marker that
  :func:`expand_examples` replaces, per hard prompt, with the K stored solutions nearest to it.
- :class:`ExampleProposer`: GEPA's ``propose_new_texts`` without an LM: mutations that add,
  drop, swap or reorder examples, drawn from the store near the prompts the parent failed.

No dependency beyond numpy: GEPA calls the proposer through
:class:`rollwise.rescue.gepa_adapter.TemplateAdapter`.
"""

from __future__ import annotations

import random
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rollwise.rescue.templates import PLACEHOLDER
from rollwise.validation import check_int

STORE_VERSION = 1
EXAMPLES_HEADER = "Solved examples:"
NEAREST_MARKER = re.compile(r"\{examples:(\d+)\}")
Record = Mapping[str, Any]  # one entry of GEPA's reflective dataset
ANSWER_LINE = re.compile(r"answer\s*[:=]", re.IGNORECASE)


@dataclass(frozen=True)
class SolvedExample:
    """One verified solution: the problem as the template shows it and the policy's completion."""

    pid: str
    problem: str
    solution: str
    step: int = 0
    answer: str | None = None  # the verified answer, shown on an "Answer:" line if the solution lacks one

    @property
    def key(self) -> tuple[str, str]:
        return self.pid, self.solution


def format_example(example: SolvedExample) -> str:
    """An example as it appears in a template, ending in the answer format the verifier reads."""
    solution = example.solution.strip()
    if example.answer is not None and not ANSWER_LINE.search(solution):
        solution += f"\nAnswer: {example.answer}"
    return f"Problem: {example.problem}\nSolution: {solution}"


def _unit(vector: Any, dim: int | None = None) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError("embedding must be a non-empty finite vector")
    if dim is not None and v.size != dim:
        raise ValueError(f"embedding has {v.size} dimensions, the store holds {dim}")
    norm = float(np.linalg.norm(v))
    if norm == 0:
        raise ValueError("embedding must not be all zeros")
    return v / norm


class SolvedExampleStore:
    """Verified successful rollouts, at most ``per_prompt`` per prompt and ``capacity`` in all.

    The newest solutions win: adding beyond a bound evicts the prompt's oldest solution, or the
    store's oldest. The same solution text twice for one prompt is kept once. Embeddings are
    stored unit-normalised, so :meth:`nearest` ranks by cosine similarity.
    """

    def __init__(self, capacity: int = 256, per_prompt: int = 2) -> None:
        self.capacity = int(check_int("capacity", capacity, 1))
        self.per_prompt = int(check_int("per_prompt", per_prompt, 1))
        self._items: OrderedDict[tuple[str, str], tuple[SolvedExample, np.ndarray]] = OrderedDict()
        self.added = 0  # solutions accepted over the store's life (evicted ones included)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def examples(self) -> list[SolvedExample]:
        """Every stored example, oldest first."""
        return [ex for ex, _ in self._items.values()]

    def prompts(self) -> set[str]:
        return {key[0] for key in self._items}

    def add(self, pid: str, problem: str, solution: str, embedding: Any, step: int = 0,
            answer: str | None = None) -> bool:
        """Store one verified solution (``answer``: the reference it was verified against).
        Returns False when it was already stored; it then becomes the newest."""
        if not isinstance(pid, str) or not pid:
            raise TypeError(f"pid must be a non-empty string, got {pid!r}")
        for name, text in (("problem", problem), ("solution", solution)):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{name} must be a non-empty string")
        check_int("step", step, 0)
        if answer is not None and (not isinstance(answer, str) or not answer.strip()):
            raise ValueError(f"answer must be a non-empty string or None, got {answer!r}")
        vec = _unit(embedding, self.dim)
        example = SolvedExample(pid, problem, solution, int(step), answer)
        fresh = example.key not in self._items
        self._items.pop(example.key, None)
        self._items[example.key] = (example, vec)
        if fresh:
            self.added += 1
            own = [k for k in self._items if k[0] == pid]
            for key in own[: max(0, len(own) - self.per_prompt)]:
                del self._items[key]
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return fresh

    @property
    def dim(self) -> int | None:
        return next(iter(self._items.values()))[1].size if self._items else None

    def nearest(self, embedding: Any, k: int, exclude: Sequence[str] = ()) -> list[SolvedExample]:
        """The ``k`` examples of distinct prompts nearest to ``embedding`` (most similar first),
        leaving out the prompts in ``exclude`` (a hard prompt is not its own example)."""
        check_int("k", k, 0)
        if not self._items or k == 0:
            return []
        vec = _unit(embedding, self.dim)
        banned = set(exclude)
        pairs = [(ex, v) for ex, v in reversed(self._items.values()) if ex.pid not in banned]
        if not pairs:
            return []
        sims = np.stack([v for _, v in pairs]) @ vec
        out, seen = [], set()
        for j in np.argsort(-sims, kind="stable"):  # newest first among equals
            ex = pairs[int(j)][0]
            if ex.pid in seen:
                continue
            seen.add(ex.pid)
            out.append(ex)
            if len(out) == k:
                break
        return out

    # ---- state ---------------------------------------------------------------------------
    def config(self) -> dict[str, int]:
        return {"capacity": self.capacity, "per_prompt": self.per_prompt}

    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot, oldest example first."""
        return {"version": STORE_VERSION, "config": self.config(), "added": self.added,
                "examples": [{"pid": ex.pid, "problem": ex.problem, "solution": ex.solution,
                              "step": ex.step, "answer": ex.answer, "embedding": [float(x) for x in v]}
                             for ex, v in self._items.values()]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a snapshot; it is checked whole first, so a bad state changes nothing."""
        if not isinstance(state, Mapping) or set(state) != {"version", "config", "added", "examples"}:
            raise ValueError("a solved-example store state needs exactly the keys "
                             "['added', 'config', 'examples', 'version']")
        if state["version"] != STORE_VERSION:
            raise ValueError(f"store state version {state['version']!r} is not {STORE_VERSION}")
        if state["config"] != self.config():
            raise ValueError(f"store state was saved with config {state['config']}, this store has "
                             f"{self.config()}")
        check_int("state's added", state["added"], 0)
        raw = state["examples"]
        if not isinstance(raw, list) or len(raw) > self.capacity:
            raise ValueError("store state: examples must be a list within capacity")
        fresh = SolvedExampleStore(**self.config())
        for i, item in enumerate(raw):
            if not isinstance(item, Mapping) or set(item) != {"pid", "problem", "solution", "step",
                                                              "answer", "embedding"}:
                raise ValueError(f"store state: bad example {i}")
            if not fresh.add(item["pid"], item["problem"], item["solution"], item["embedding"],
                             item["step"], item["answer"]):
                raise ValueError(f"store state: example {i} repeats an earlier one")
        if len(fresh) != len(raw):
            raise ValueError("store state: more examples per prompt than per_prompt allows")
        self._items, self.added = fresh._items, int(state["added"])


# ---- templates ---------------------------------------------------------------------------
def example_template(examples: Sequence[SolvedExample], nearest: int = 0, tail: str = "") -> str:
    """A template: the header, the literal ``examples``, ``nearest`` per-prompt examples (the
    ``{examples:K}`` marker), then the problem followed by ``tail`` (e.g. the answer format)."""
    check_int("nearest", nearest, 0)
    if not examples and nearest == 0:
        return PLACEHOLDER + tail
    blocks = [format_example(ex) for ex in examples]
    if nearest:
        blocks.append(f"{{examples:{nearest}}}")
    return f"{EXAMPLES_HEADER}\n\n" + "\n\n".join(blocks) + f"\n\nProblem: {PLACEHOLDER}{tail}"


def expand_examples(template: str, nearest: Callable[[int], Sequence[SolvedExample]]) -> str:
    """``template`` with each ``{examples:K}`` marker replaced by ``nearest(K)``'s examples (the
    ones for the prompt being rendered); a marker with no examples to show disappears."""
    def fill(match: re.Match[str]) -> str:
        return "\n\n".join(format_example(ex) for ex in nearest(int(match.group(1))))

    text = NEAREST_MARKER.sub(fill, template)
    return re.sub(r"\n{3,}", "\n\n", text)


def has_nearest_marker(template: str) -> bool:
    return NEAREST_MARKER.search(template) is not None


@dataclass(frozen=True)
class Layout:
    """What an example template is made of: literal examples (by store key) and how many nearest
    examples are filled in per prompt."""

    literal: tuple[tuple[str, str], ...] = ()
    nearest: int = 0

    @property
    def size(self) -> int:
        return len(self.literal) + self.nearest


class ExampleProposer:
    """GEPA's ``propose_new_texts`` for example templates: one random mutation of the parent.

    Mutations: one more nearest example per prompt; a literal example near a prompt the parent
    failed; drop one; swap a literal example for another near the failures; reverse their order;
    one fewer nearest example. A template the proposer did not write (the seed) starts empty;
    its first proposal is ``first`` (default: two nearest examples per prompt), made once. Every
    template it writes keeps ``tail`` after the problem (the answer format).

    ``embed_problem`` maps a problem text in GEPA's reflective records to its embedding (for the
    failures' neighbours); with None, literal examples are drawn uniformly.
    """

    def __init__(self, store: SolvedExampleStore, tail: str = "", *, max_examples: int = 4,
                 first: Layout | None = Layout(nearest=2), seed: int = 0,
                 embed_problem: Callable[[str], Any] | None = None) -> None:
        if not isinstance(store, SolvedExampleStore):
            raise TypeError(f"store must be a SolvedExampleStore, got {type(store).__name__}")
        self.store, self.tail, self.embed_problem = store, tail, embed_problem
        self.max_examples = int(check_int("max_examples", max_examples, 1))
        self.first = first
        self.rng = random.Random(seed)
        self.layouts: dict[str, Layout] = {}
        self._started: set[str] = set()  # parents not written here that got the first proposal
        self.proposals: list[tuple[str, str]] = []  # (mutation, template) in proposal order

    def __call__(self, candidate: Mapping[str, str], reflective_dataset: Mapping[str, Sequence[Record]],
                 components_to_update: list[str]) -> dict[str, str]:
        out = {}
        for name in components_to_update:
            records = list(reflective_dataset.get(name, ()))
            out[name] = self.propose(candidate[name], records)
        return out

    def propose(self, parent: str, records: Sequence[Record] = ()) -> str:
        """A mutated child of ``parent`` (its layout if the proposer wrote it, else empty)."""
        layout = self.layouts.get(parent)
        if layout is None and self.first is not None and parent not in self._started:
            self._started.add(parent)  # once: a rejected first proposal is not proposed again
            mutation, child = "first", self.first
        else:
            layout = layout or Layout()
            mutation, child = self._mutate(layout, records)
        text = self.render(child)
        self.layouts[text] = child
        self.proposals.append((mutation, text))
        return text

    def render(self, layout: Layout) -> str:
        by_key = {ex.key: ex for ex in self.store.examples}
        literal = [by_key[k] for k in layout.literal if k in by_key]
        return example_template(literal, layout.nearest, self.tail)

    def _mutate(self, layout: Layout, records: Sequence[Record]) -> tuple[str, Layout]:
        options = []
        if layout.size < self.max_examples:
            options += ["add_nearest", "add_literal"] if len(self.store) else ["add_nearest"]
        if layout.literal:
            options += ["drop"] + (["swap"] if len(self.store) > len(layout.literal) else [])
        if len(layout.literal) > 1:
            options.append("reverse")
        if layout.nearest:
            options.append("fewer_nearest")
        mutation = self.rng.choice(options)
        literal, nearest = list(layout.literal), layout.nearest
        if mutation == "add_nearest":
            nearest += 1
        elif mutation == "fewer_nearest":
            nearest -= 1
        elif mutation == "drop":
            literal.pop(self.rng.randrange(len(literal)))
        elif mutation == "reverse":
            literal.reverse()
        else:
            new = self._draw(records, set(literal))
            if new is None:  # nothing new to draw: fall back to one more nearest example
                mutation, nearest = "add_nearest", min(nearest + 1, self.max_examples - len(literal))
            elif mutation == "swap":
                literal[self.rng.randrange(len(literal))] = new
            else:
                literal.insert(self.rng.randrange(len(literal) + 1), new)
        return mutation, Layout(tuple(literal), max(0, nearest))

    def _draw(self, records: Sequence[Record], taken: set[tuple[str, str]]) -> tuple[str, str] | None:
        """A stored example not in ``taken``: near a failed record's problem where possible."""
        failed = [r for r in records if not str(r.get("Feedback", "")).startswith("Correct")]
        problems = [str(r.get("Inputs", {}).get("problem", "")) for r in failed]
        problems = [p for p in problems if p]
        if self.embed_problem is not None and problems:
            target = self.rng.choice(problems)
            vec = self.embed_problem(target)
            if vec is not None:
                for ex in self.store.nearest(vec, len(self.store)):
                    if ex.key not in taken and ex.problem != target:
                        return ex.key
        free = [ex.key for ex in self.store.examples if ex.key not in taken]
        return self.rng.choice(free) if free else None


def nearest_resolver(store: SolvedExampleStore, embedding_of: Callable[[Mapping[str, Any]], Any]
                     ) -> Callable[[str, Mapping[str, Any]], str]:
    """``resolve(template, row)``: the template for ``row`` with its ``{examples:K}`` markers
    filled by the K stored solutions nearest to ``embedding_of(row)`` (never the row's own)."""
    def resolve(template: str, row: Mapping[str, Any]) -> str:
        if not has_nearest_marker(template):
            return template
        vec, own = embedding_of(row), [str(row.get("id", ""))]
        return expand_examples(template, lambda k: store.nearest(vec, k, exclude=own))

    return resolve


__all__ = ["EXAMPLES_HEADER", "ExampleProposer", "Layout", "SolvedExample",
           "SolvedExampleStore", "example_template", "expand_examples", "format_example",
           "has_nearest_marker", "nearest_resolver"]
