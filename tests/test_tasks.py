"""Real-RL tasks generated offline: the mixed pool of two reasoning-gym families."""

from __future__ import annotations

import pytest

pytest.importorskip("reasoning_gym")

from rollwise.llm.tasks import MIXED_LEVELS, get_task, mixed, verify_number  # noqa: E402


def test_mixed_task_levels_families_and_answers():
    task = get_task("mixed", per_level=4, heldout_per_level=2)
    assert task.name == "mixed" and task.verify is verify_number
    assert len(task.train) == 4 * len(MIXED_LEVELS) and len(task.heldout) == 2 * len(MIXED_LEVELS)
    rows = task.train + task.heldout
    assert len({r["id"] for r in rows}) == len(rows)
    assert len({r["question"] for r in rows}) == len(rows)  # no held-out prompt also trained on
    families = {f for f, _ in MIXED_LEVELS}
    assert families == {"letter_counting", "simple_equations"}
    for r in rows:
        family, level = r["id"].split("/")[1], int(r["id"].split("/")[2])
        assert r["level"] == level and MIXED_LEVELS[level][0] == family
        assert r["answer"].lstrip("-").isdigit()  # a number the verifier can match
        assert verify_number(f"so\nAnswer: {r['answer']}", r["answer"]) == 1.0
        assert r["prompt"][0]["content"].startswith(r["question"])
    assert [r["id"] for r in mixed(per_level=4, heldout_per_level=2).train] == [r["id"] for r in task.train]


def _write(path, rows):
    import json

    path.write_text(json.dumps(rows))
    return str(path)


def test_task_file_null_answer_names_its_row(tmp_path):
    from rollwise.llm.tasks import from_file

    rows = [{"problem": f"{i} + 1", "answer": str(i + 1)} for i in range(5)]
    rows[3]["answer"] = None
    with pytest.raises(ValueError, match="row 4 has no answer"):
        from_file(_write(tmp_path / "t.json", rows))


def test_task_file_duplicates_removed_and_splits_disjoint(tmp_path, caplog):
    from rollwise.llm.tasks import from_file

    rows = [{"problem": f"{i % 6} + 1", "answer": str(i % 6 + 1)} for i in range(18)]  # each 3 times
    task = from_file(_write(tmp_path / "t.json", rows), heldout_fraction=0.5)
    train, held = {r["question"] for r in task.train}, {r["question"] for r in task.heldout}
    assert len(task.train) + len(task.heldout) == 6 and not train & held
    assert "12 duplicate" in caplog.text


def test_prompt_files_refuse_what_would_join_or_train_wrongly(tmp_path):
    """Repeated ids (1 and "1" too) are refused, never renumbered; answers that are not text or
    finite numbers name their row; deep nesting and huge prompts are one clear line."""
    from rollwise.feedback.prompt_files import MAX_PROMPT_CHARS, load_prompt_file

    with pytest.raises(ValueError, match="rows 1 and 3 have the same id '1'"):
        load_prompt_file(_write(tmp_path / "ids.json", [{"prompt": "a", "id": 1},
                                                         {"prompt": "b", "id": 2},
                                                         {"prompt": "c", "id": "1"}]))
    kept = load_prompt_file(_write(tmp_path / "ok.json", [{"prompt": "a", "id": "x7"},
                                                           {"prompt": "b", "id": "x3"}]))
    assert kept.ids == ["x7", "x3"]
    for bad in ([3, 0], {"a": 1}, True, float("nan")):
        with pytest.raises(ValueError, match="row 2's 'answer' is .*a string or a finite number"):
            load_prompt_file(_write(tmp_path / "ans.json", [{"prompt": "a", "answer": "4"},
                                                             {"prompt": "b", "answer": bad}]))
    numbers = load_prompt_file(_write(tmp_path / "num.json", [{"prompt": "a", "answer": 4},
                                                               {"prompt": "b", "answer": 2.5},
                                                               {"prompt": "c", "answer": None}]))
    assert numbers.answers == ["4", "2.5", ""]
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nests its JSON too deeply"):
        load_prompt_file(deep)
    with pytest.raises(ValueError, match=f"over the limit of {MAX_PROMPT_CHARS:,}"):
        load_prompt_file(_write(tmp_path / "long.json", [{"prompt": "x" * (MAX_PROMPT_CHARS + 1)}]))
    huge = tmp_path / "huge.jsonl"
    with open(huge, "wb") as f:  # sparse: 2 GiB on paper, nothing on disk, never read
        f.truncate(2 << 30)
    with pytest.raises(ValueError, match="2.0 GiB, over the limit of 1 GiB"):
        load_prompt_file(huge)


def test_prompt_file_row_errors_name_the_row_or_line(tmp_path):
    from rollwise.feedback.prompt_files import load_prompt_file

    with pytest.raises(ValueError, match="row 2 has a non-finite 'level'"):
        load_prompt_file(_write(tmp_path / "p.json", [{"prompt": "a", "level": 1},
                                                       {"prompt": "b", "level": float("nan")}]))
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n{"prompt": \n')
    with pytest.raises(ValueError, match="line 4"):
        load_prompt_file(bad)
