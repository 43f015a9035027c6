"""Worked-example templates for P²O: the solved-example store, templates, and the GEPA proposer."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from rollwise.rescue.examples import (
    EXAMPLES_HEADER,
    ExampleProposer,
    Layout,
    SolvedExample,
    SolvedExampleStore,
    example_template,
    expand_examples,
    format_example,
    nearest_resolver,
)
from rollwise.rescue.templates import render_template

TAIL = "\nGive the final answer on the last line as 'Answer: <number>'."


def _vec(*xs):
    return np.array(xs, dtype=float)


def _store_with(n, capacity=16, per_prompt=2):
    store = SolvedExampleStore(capacity, per_prompt)
    for i in range(n):
        angle = i * np.pi / 16
        store.add(f"p{i}", f"{i} + 1", f"Answer: {i + 1}", _vec(np.cos(angle), np.sin(angle)), step=i)
    return store


# ---- the store --------------------------------------------------------------------------------
def test_store_keeps_the_newest_within_its_bounds():
    store = SolvedExampleStore(capacity=3, per_prompt=2)
    assert store.add("a", "1 + 1", "two. Answer: 2", _vec(1, 0))
    assert not store.add("a", "1 + 1", "two. Answer: 2", _vec(1, 0))  # the same solution once
    store.add("a", "1 + 1", "Answer: 2", _vec(1, 0))
    store.add("a", "1 + 1", "2. Answer: 2", _vec(1, 0))  # a third for 'a': its oldest goes
    assert [ex.solution for ex in store.examples] == ["Answer: 2", "2. Answer: 2"]
    store.add("b", "2 + 2", "Answer: 4", _vec(0, 1))
    store.add("c", "3 + 3", "Answer: 6", _vec(1, 1))  # over capacity: the store's oldest goes
    assert len(store) == 3 and [ex.pid for ex in store.examples] == ["a", "b", "c"]
    assert store.added == 5 and store.prompts() == {"a", "b", "c"}


def test_nearest_ranks_distinct_prompts_by_cosine_and_excludes():
    store = _store_with(8)
    got = store.nearest(_vec(1, 0), 3)
    assert [ex.pid for ex in got] == ["p0", "p1", "p2"]
    assert [ex.pid for ex in store.nearest(_vec(1, 0), 3, exclude=["p0"])] == ["p1", "p2", "p3"]
    store.add("p1", "1 + 1", "1 + 1 = 2. Answer: 2", _vec(1, 0.2))
    assert [ex.pid for ex in store.nearest(_vec(1, 0), 8)] == [f"p{i}" for i in range(8)]  # distinct
    assert store.nearest(_vec(1, 0), 0) == [] and SolvedExampleStore().nearest(_vec(1, 0), 2) == []


def test_store_state_round_trip_through_json():
    store = _store_with(5, capacity=4)
    state = json.loads(json.dumps(store.state_dict()))
    other = SolvedExampleStore(4, 2)
    other.load_state_dict(state)
    assert other.state_dict() == store.state_dict() and other.added == 5
    assert [e.pid for e in other.nearest(_vec(0, 1), 2)] == [e.pid for e in store.nearest(_vec(0, 1), 2)]


@pytest.mark.parametrize("change", [
    {"version": 9}, {"config": {"capacity": 9, "per_prompt": 2}}, {"added": -1},
    {"examples": "x"}, {"examples": [{"pid": "a"}]},
])
def test_bad_store_state_changes_nothing(change):
    store = _store_with(3)
    before = store.state_dict()
    with pytest.raises((ValueError, TypeError)):
        store.load_state_dict({**before, **change})
    assert store.state_dict() == before


def test_repeated_example_in_a_state_is_rejected():
    store = _store_with(2)
    state = store.state_dict()
    state["examples"].append(dict(state["examples"][0]))
    with pytest.raises(ValueError, match="repeats"):
        SolvedExampleStore(16, 2).load_state_dict(state)


@pytest.mark.parametrize("args, err, match", [
    (("", "1", "Answer: 1", [1, 0]), TypeError, "pid"),
    (("a", " ", "Answer: 1", [1, 0]), ValueError, "problem"),
    (("a", "1", "", [1, 0]), ValueError, "solution"),
    (("a", "1", "Answer: 1", [0, 0]), ValueError, "zeros"),
    (("a", "1", "Answer: 1", [1, 0, 0]), ValueError, "dimensions"),
])
def test_bad_additions_change_nothing(args, err, match):
    store = _store_with(2)
    before = store.state_dict()
    with pytest.raises(err, match=match):
        store.add(*args)
    assert store.state_dict() == before


# ---- templates --------------------------------------------------------------------------------
def test_example_template_and_per_prompt_expansion():
    store = _store_with(4)
    literal = store.examples[3]
    template = example_template([literal], nearest=2, tail=TAIL)
    assert template.startswith(EXAMPLES_HEADER) and "{examples:2}" in template
    assert template.endswith("Problem: {problem}" + TAIL)
    assert example_template([], 0, TAIL) == "{problem}" + TAIL  # no examples: the bare prompt
    resolve = nearest_resolver(store, lambda row: _vec(1, 0))
    text = render_template(resolve(template, {"id": "p0"}), "9 + 1")
    blocks = text.split("\n\n")
    # the literal example, then the two nearest to the row, never the row's own solution
    assert blocks[1] == format_example(literal)
    assert blocks[2:4] == [format_example(store.examples[1]), format_example(store.examples[2])]
    assert blocks[-1] == "Problem: 9 + 1" + TAIL and "{examples" not in text
    assert expand_examples("A\n\n{examples:3}\n\nB", lambda k: []) == "A\n\nB"


def test_examples_end_in_the_verifiers_answer_format():
    bare = SolvedExample("a", "2 + 3", "2 + 3 is 5", answer="5")
    assert format_example(bare) == "Problem: 2 + 3\nSolution: 2 + 3 is 5\nAnswer: 5"
    already = SolvedExample("a", "2 + 3", "So: answer = 5", answer="5")
    assert format_example(already).endswith("Solution: So: answer = 5")
    assert format_example(SolvedExample("a", "2 + 3", "5")) == "Problem: 2 + 3\nSolution: 5"


# ---- the proposer -----------------------------------------------------------------------------
def _layout_of(proposer, text):
    return proposer.layouts[text]


def test_proposer_starts_with_nearest_examples_then_mutates_within_bounds():
    store = _store_with(6)
    proposer = ExampleProposer(store, TAIL, max_examples=3, seed=0)
    first = proposer.propose("{problem}" + TAIL)
    assert _layout_of(proposer, first) == Layout(nearest=2) and first.endswith(TAIL)
    again = proposer.propose("{problem}" + TAIL)  # the first proposal was rejected: mutate instead
    assert again != first and proposer.proposals[-1][0] in ("add_nearest", "add_literal")
    text, seen = first, set()
    for _ in range(60):
        child = proposer.propose(text)
        layout = _layout_of(proposer, child)
        assert 1 <= layout.size <= 3 or layout.size == 0
        assert len(set(layout.literal)) == len(layout.literal)
        seen.add(proposer.proposals[-1][0])
        text = child if layout.size else first
    assert {"add_nearest", "add_literal", "drop", "fewer_nearest"} <= seen


def test_proposer_draws_literal_examples_near_the_failures():
    store = _store_with(8)
    failed = {"Inputs": {"problem": "far"}, "Feedback": "Incorrect. The reference answer is 9"}
    solved = {"Inputs": {"problem": "near"}, "Feedback": "Correct."}
    embed = {"far": _vec(0, 1), "near": _vec(1, 0)}.get
    proposer = ExampleProposer(store, TAIL, max_examples=4, seed=1, embed_problem=embed, first=None)
    drawn = []
    for _ in range(40):
        child = proposer.propose("{problem}" + TAIL, [solved, failed])
        if proposer.proposals[-1][0] == "add_literal":
            drawn.append(_layout_of(proposer, child).literal[0][0])
    # the example nearest to the failed problem (p7 at angle 7pi/16), never the solved one's (p0)
    assert drawn and set(drawn) == {"p7"}


def test_gepa_with_the_example_proposer_finds_a_template_that_solves_hard_prompts():
    pytest.importorskip("gepa")
    from rollwise.llm.tasks import verify_number
    from rollwise.rescue.gepa_adapter import evolve_template

    # stand-in policy: solves 'a * b' only when the prompt shows a worked product example,
    # and never solves it bare
    def policy(prompts):
        out = []
        for p in prompts:
            a, b = map(int, re.findall(r"(\d+) \* (\d+)", p)[-1])  # the hard problem comes last
            shown = re.search(r"Problem: \d+ \* \d+\nSolution:", p) is not None
            out.append(f"Answer: {a * b if shown else a + b}")
        return out

    store = SolvedExampleStore()
    for i in range(2, 6):
        store.add(f"m{i}", f"{i} * 3", f"{i} * 3 = {3 * i}. Answer: {3 * i}", _vec(1, 0.1 * i))
        store.add(f"s{i}", f"{i} + 3", f"Answer: {i + 3}", _vec(-1, 0.1 * i))
    rows = [{"id": f"h{i}", "question": f"{i} * 7", "answer": str(7 * i)} for i in range(2, 6)]
    proposer = ExampleProposer(store, TAIL, seed=0)
    resolve = nearest_resolver(store, lambda row: _vec(1, 0))
    res = evolve_template(rows, policy, verify_number, None, seed_template="{problem}" + TAIL,
                          max_metric_calls=40, proposer=proposer, resolve=resolve)
    assert res.seed_score == 0.0 and res.best_score == 1.0 and res.reflection_calls == 0
    assert proposer.proposals and res.best_template in proposer.layouts
    assert res.rollouts_spent == res.metric_calls <= 40 + len(rows)
