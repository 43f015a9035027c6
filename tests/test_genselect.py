"""GenSelect: task synthesis, the strict choice parser, tournaments, baselines, a DAPO run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rollwise.genselect import (
    candidate_view,
    groups_of,
    majority_vote,
    majority_vote_accuracy,
    oracle_accuracy,
    parse_choice,
    random_pick_accuracy,
    read_tasks,
    reward_function,
    select_best,
    select_best_many,
    selection_reward,
    synthesize,
)

# ---- synthesis --------------------------------------------------------------------------------


def _problems(n: int = 6) -> list[dict]:
    return [{"id": f"q{i}", "question": f"{i} + {i} =", "answer": str(2 * i)} for i in range(n)]


def _candidates(problems: list[dict], m: int = 8) -> list[list[str]]:
    """Problem i: i % 3 == 0 all wrong, == 1 all right, == 2 mixed (answers wrong for odd j)."""
    out = []
    for i, p in enumerate(problems):
        right = int(p["answer"])
        if i % 3 == 0:
            out.append([f"Answer: {right + 1 + j}" for j in range(m)])
        elif i % 3 == 1:
            out.append([f"so Answer: {right}" for _ in range(m)])
        else:
            out.append([f"Answer: {right if j % 2 == 0 else right + 10 + j}" for j in range(m)])
    return out


def test_synthesis_keeps_only_mixed_windows_and_correct_indices_follow_the_shuffle():
    problems = _problems(9)
    cands = _candidates(problems)
    tasks = synthesize(problems, cands, window=4, windows_per_problem=5, seed=3)
    assert tasks, "mixed problems must give tasks"
    assert {t["problem_id"] for t in tasks} <= {"q2", "q5", "q8"}  # all-right / all-wrong dropped
    shuffled = False
    for t in tasks:
        p = int(t["problem_id"][1:])
        src = t["source_index"]
        assert len(src) == len(set(src)) == t["n_candidates"] == len(t["candidates"]) <= 4
        shuffled |= src != sorted(src)
        for pos, k in enumerate(src, start=1):
            assert t["candidates"][pos - 1] == candidate_view(cands[p][k])
            assert (pos in t["correct"]) == (k % 2 == 0)  # even source index = right answer
        assert 0 < len(t["correct"]) < t["n_candidates"]
        for pos, shown in enumerate(t["candidates"], start=1):
            assert f"[{pos}] {shown}" in t["text"]
        assert t["prompt"] == [{"role": "user", "content": t["text"]}]
    assert shuffled


def test_synthesis_is_deterministic_given_a_seed_and_writes_jsonl(tmp_path):
    problems = _problems(12)
    cands = _candidates(problems)
    kw = dict(window=5, min_window=2, windows_per_problem=3)
    a = synthesize(problems, cands, seed=7, out=tmp_path / "a.jsonl", **kw)
    b = synthesize(problems, cands, seed=7, **kw)
    c = synthesize(problems, cands, seed=8, **kw)
    assert a == b
    assert a != c
    assert read_tasks(tmp_path / "a.jsonl") == a
    assert {t["n_candidates"] for t in a} <= set(range(2, 6))
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temporary file


def test_synthesis_views_and_correct_fraction_cap():
    problems = _problems(3)[2:]  # the mixed problem only
    cands = [["First I add. Answer: 4", "Answer: 5\nmore text", "Answer: 4", "nothing"]]
    full = synthesize(problems, cands, window=4, view="full", max_chars=12, seed=0)
    assert all(len(c) <= 12 and "\n" not in c for c in full[0]["candidates"])
    ans = synthesize(problems, cands, window=4, seed=0)[0]
    assert sorted(ans["candidates"]) == sorted(["4", "5", "4", "(no answer)"])
    assert "Candidate answers" in ans["text"] and "Candidate solutions" in full[0]["text"]
    # 2 of 4 correct: a cap of 0.25 drops the window, 0.5 keeps it
    assert synthesize(problems, cands, window=4, max_correct_fraction=0.25) == []
    assert len(synthesize(problems, cands, window=4, max_correct_fraction=0.5)) == 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(window=1), "window"),
    (dict(window=4, min_window=5), "min_window"),
    (dict(windows_per_problem=0), "windows_per_problem"),
    (dict(view="nope"), "view"),
    (dict(max_correct_fraction=0.0), "max_correct_fraction"),
])
def test_synthesis_rejects_bad_arguments(kwargs, match):
    problems = _problems(3)
    with pytest.raises(ValueError, match=match):
        synthesize(problems, _candidates(problems), **kwargs)


def test_synthesis_rejects_bad_problems():
    with pytest.raises(ValueError, match="answer"):
        synthesize([{"question": "1 + 1 ="}], [["2", "3"]])
    with pytest.raises(ValueError, match="empty"):
        synthesize([], [])
    with pytest.raises(ValueError, match="candidates has 1"):
        synthesize(_problems(2), [["2", "3"]])
    with pytest.raises(TypeError, match="strings"):
        synthesize(_problems(1), [[2, 3]])


def test_read_tasks_rejects_files_that_are_not_tasks(tmp_path):
    (tmp_path / "x.jsonl").write_text(json.dumps({"id": "a", "text": "t", "correct": [3],
                                                  "n_candidates": 2}) + "\n")
    with pytest.raises(ValueError, match="correct"):
        read_tasks(tmp_path / "x.jsonl")
    (tmp_path / "y.jsonl").write_text('{"id": "a"}\n')
    with pytest.raises(ValueError, match="missing"):
        read_tasks(tmp_path / "y.jsonl")
    with pytest.raises(FileNotFoundError):
        read_tasks(tmp_path / "none.jsonl")


# ---- the strict choice parser and the reward --------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("Selected: 3", 3),
    ("  selected:[2].", 2),
    ("I compared them.\nCandidate 5 looks off.\nSelected: 1", 1),
    ("Selected: 3\nSelected: 3", 3),  # repeating the same choice is fine
    ("", None),
    ("The answer is 3", None),  # no choice line
    ("I have Selected: 2", None),  # not at the start of a line
    ("Selected:", None),
    ("Selected: 3 4", None),  # several numbers
    ("Selected: 3 or 4", None),
    ("Selected: three", None),
    ("Selected: 2\nSelected: 4", None),  # conflicting choices
    ("Selected: 9", None),  # out of range for 8 candidates
    ("Selected: 0", None),
    ("Selected: -1", None),
    ("Selected: 2.5", None),
    ("Selected: 99999999999", None),
])
def test_parse_choice_is_strict(text, expected):
    assert parse_choice(text, 8) == expected


def test_reward_scores_only_correct_well_formed_choices():
    assert selection_reward("Selected: 2", [2, 5], 6) == 1.0
    assert selection_reward("Selected: 3", [2, 5], 6) == 0.0
    assert selection_reward("Selected: 2\nSelected: 5", [2, 5], 6) == 0.0  # hedging earns nothing
    fn = reward_function(prefix="Selected:")
    completions = [" 2", " 7", "", [{"role": "assistant", "content": " 5\nbecause"}]]
    assert fn(completions, correct=[[2]] * 4, n_candidates=[6] * 4) == [1.0, 0.0, 0.0, 0.0]
    assert fn([" 5"], correct=[[5]], n_candidates=[6]) == [1.0]
    with pytest.raises(ValueError, match="n"):
        parse_choice("Selected: 1", 0)


# ---- tournaments ------------------------------------------------------------------------------


class MaxChooser:
    """Picks the largest number; records every request so the bracket can be checked."""

    def __init__(self, window: int, malformed_every: int = 0):
        self.window, self.malformed_every = window, malformed_every
        self.requests, self.calls = [], 0

    def choose(self, requests):
        self.calls += 1
        out = []
        for _, cands in requests:
            assert 2 <= len(cands) <= self.window, "a comparison must hold 2..window candidates"
            self.requests.append(list(cands))
            if self.malformed_every and len(self.requests) % self.malformed_every == 0:
                out.append(None)
            else:
                out.append(int(np.argmax([float(c) for c in cands])))
        return out


@pytest.mark.parametrize("window", [2, 3, 8])
def test_tournament_finds_the_best_for_any_n(window):
    for n in range(1, 41):
        cands = [str(v) for v in np.random.default_rng(n).permutation(n)]
        chooser = MaxChooser(window)
        res = select_best_many(["q"], [cands], chooser, window=window, seed=n)[0]
        assert cands[res.winner] == str(n - 1)
        assert res.malformed == 0
        if n == 1:
            assert res.calls == 0 and chooser.requests == []
        elif n <= window:
            assert res.calls == 1 and res.rounds == 1 and sorted(chooser.requests[0]) == sorted(cands)
        else:
            assert res.rounds >= 2
            # a knockout over n entrants: every comparison of g removes g - 1, so n - 1 in all
            assert sum(len(r) - 1 for r in chooser.requests) == n - 1


def test_tournament_batches_problems_per_round_and_handles_malformed_choices():
    lists = [[str(v) for v in range(n)] for n in (1, 5, 16, 17)]
    chooser = MaxChooser(8)
    res = select_best_many(["a", "b", "c", "d"], lists, chooser, window=8)
    assert [lists[i][r.winner] for i, r in enumerate(res)] == ["0", "4", "15", "16"]
    assert chooser.calls == max(r.rounds for r in res) == 2  # one batched call per round
    assert groups_of(17, 8) == [6, 6, 5] and groups_of(16, 8) == [8, 8] and groups_of(3, 8) == [3]
    bad = MaxChooser(8, malformed_every=1)  # every output malformed: random members advance
    res = select_best_many(["c"], [lists[2]], bad, window=8, seed=1)[0]
    assert res.malformed == res.calls == 3 and 0 <= res.winner < 16
    again = select_best_many(["c"], [lists[2]], MaxChooser(8, malformed_every=1), window=8, seed=1)[0]
    assert again.winner == res.winner  # the fallback is seeded


def test_select_best_and_bad_tournament_input():
    assert select_best("q", ["3", "9", "1"], MaxChooser(8)) == 1
    assert select_best("q", ["7"], MaxChooser(8)) == 0
    with pytest.raises(ValueError, match="window"):
        select_best("q", ["1", "2"], MaxChooser(8), window=1)
    with pytest.raises(ValueError, match="non-empty"):
        select_best("q", [], MaxChooser(8))
    with pytest.raises(TypeError, match="choose"):
        select_best("q", ["1", "2"], object())

    class Short:
        def choose(self, requests):
            return []

    with pytest.raises(ValueError, match="0 choices for 1"):
        select_best("q", ["1", "2"], Short())


# ---- baselines --------------------------------------------------------------------------------


def test_baselines():
    answers = ["4", "5", "4.0", None, "5", "7"]
    scores = [1, 0, 1, 0, 0, 0]
    assert majority_vote_accuracy(answers, scores) == 0.5  # 4 and 5 tie (4.0 == 4)
    picks = {majority_vote(answers, np.random.default_rng(s)) for s in range(30)}
    assert picks == {0, 1}  # one representative per tied answer
    assert majority_vote(["1", "2", "2"]) == 1
    assert majority_vote_accuracy(["1", "2", "2"], [1, 0, 0]) == 0.0
    assert majority_vote_accuracy([None, None], [1, 0]) == 0.5  # nobody votes: random pick
    assert random_pick_accuracy(scores) == pytest.approx(2 / 6)
    assert oracle_accuracy(scores) == 1.0 and oracle_accuracy([0, 0]) == 0.0
    with pytest.raises(ValueError):
        majority_vote([])
    with pytest.raises(ValueError):
        majority_vote_accuracy(["1"], [1, 0])


def test_evaluate_best_of_n_with_a_fake_chooser():
    from rollwise.genselect import candidate_set, evaluate_best_of_n

    sets = [candidate_set({"question": "q", "answer": "9"}, [f"Answer: {v}" for v in range(10)],
                          problem_id=f"p{i}") for i in range(3)]

    class Answers:  # picks the largest final answer, so it always finds 9 when 9 is present
        def choose(self, requests):
            return [int(np.argmax([float(c.split()[-1]) for c in cands])) for _, cands in requests]

    res = evaluate_best_of_n(sets, ns=(5, 10, 20), choosers={"max": Answers()}, window=4)
    assert set(res) == {"5", "10"}  # 20 > 10 candidates: skipped
    assert res["10"]["max"] == 1.0 and res["10"]["oracle"] == 1.0
    assert res["10"]["random"] == pytest.approx(0.1)
    assert res["5"]["draws"] == 6 and res["5"]["oracle"] == 0.5 and res["5"]["max"] == 0.5
    assert res["10"]["max_calls_per_problem"] == 4  # 10 -> groups 4,3,3 -> final of 3


# ---- DAPO through TRL on a tiny model ---------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    pytest.importorskip("trl")
    from _support import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny_genselect"))


def test_dapo_run_trains_and_the_selector_observes_rewards(tiny_model, tmp_path, monkeypatch):
    import torch

    import rollwise.genselect.reward as reward_module
    from rollwise.genselect import GenSelectModel, GenSelectTrainSettings, train
    from rollwise.integrations.trl import RollwiseGRPOTrainer

    problems = _problems(9)
    synthesize(problems, _candidates(problems), window=4, min_window=2, windows_per_problem=2,
               out=tmp_path / "tasks.jsonl")
    scored, observed = [], []
    make_reward = reward_module.reward_function

    def recording_reward(prefix):
        fn = make_reward(prefix)

        def wrapped(completions, **kw):
            # make some completions right, so rewards vary inside groups (a random tiny model
            # never writes a well-formed choice)
            completions = [c if i % 2 else f" {kw['correct'][i][0]}" for i, c in enumerate(completions)]
            out = fn(completions, **kw)
            scored.append(out)
            return out

        wrapped.__name__ = fn.__name__
        return wrapped

    observe = RollwiseGRPOTrainer._observe

    def spy(self, rewards):
        observed.append((self._pending[0].copy(), np.asarray(rewards).copy(), self.args.loss_type,
                         self.args.epsilon, self.args.epsilon_high))
        return observe(self, rewards)

    monkeypatch.setattr(reward_module, "reward_function", recording_reward)
    monkeypatch.setattr(RollwiseGRPOTrainer, "_observe", spy)
    settings = GenSelectTrainSettings(
        tasks=str(tmp_path / "tasks.jsonl"), model=tiny_model, output_dir=str(tmp_path / "run"),
        strategy="mopps", steps=2, prompts_per_step=2, num_generations=2, max_new_tokens=4,
        learning_rate=1e-3, embedder="hashing", epsilon_high=0.28)
    result = train(settings)
    assert len(observed) == 2 and len(scored) == 2
    for idx, rewards, loss_type, eps, eps_high in observed:
        assert len(idx) == 2 and rewards.shape == (4,)
        assert (loss_type, eps, eps_high) == ("dapo", 0.2, 0.28)
    np.testing.assert_array_equal(np.concatenate([o[1] for o in observed]), np.concatenate(scored))
    assert np.concatenate(scored).max() == 1.0
    assert result["rollouts"] == 8
    steps = [h for h in result["log_history"] if "rollwise/esr" in h]
    assert [h["step"] for h in steps] == [1, 2]
    state = torch.load(tmp_path / "run" / "rollwise_selector.pt", weights_only=True)
    assert state["step"] == 2
    alpha, beta = state["model"]["alpha"].numpy(), state["model"]["beta"].numpy()
    assert (alpha + beta).sum() > 2.0 * len(alpha)  # the posterior moved away from the prior
    # the trained weights differ from the start and load as a chooser
    from transformers import AutoModelForCausalLM

    start = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    end = AutoModelForCausalLM.from_pretrained(result["final_model"]).state_dict()
    assert any(not torch.equal(start[k], end[k]) for k in start)
    chooser = GenSelectModel(result["final_model"], max_new_tokens=3)
    assert len(chooser.choose([("1 + 1 =", ["2", "3"])])) == 1


def test_train_settings_and_cli_reject_bad_input(tmp_path, capsys):
    from rollwise.cli import main
    from rollwise.genselect import GenSelectTrainSettings

    with pytest.raises(ValueError, match="tasks"):
        GenSelectTrainSettings().validate()
    with pytest.raises(ValueError, match="epsilon"):
        GenSelectTrainSettings(tasks="x", epsilon_high=0.1).validate()
    with pytest.raises(ValueError, match="loss_type"):
        GenSelectTrainSettings(tasks="x", loss_type="grpo").validate()
    assert main(["genselect", "train", "--tasks", str(tmp_path / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["genselect", "eval", "--candidates", str(tmp_path / "missing.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["genselect", "synthesize"])  # --out is required


@pytest.mark.parametrize(("argv", "flag"), [
    (["synthesize", "--out", "{tmp}/no/such/t.jsonl"], "--out"),
    (["synthesize", "--out", "{tmp}/t.jsonl", "--window", "1"], "--window"),
    (["synthesize", "--out", "{tmp}/t.jsonl", "--min-window", "9"], "--min-window"),
    (["synthesize", "--out", "{tmp}/t.jsonl", "--candidates-out", "{tmp}/t.jsonl"], "--candidates-out"),
    (["eval", "--out", "{tmp}/no/such/r.json"], "--out"),
    (["eval", "--window", "1"], "--window"),
    # an output that is the --task file (here or through a link) would replace the user's problems
    (["synthesize", "--task", "{tmp}/p.json", "--out", "{tmp}/p.json"], "--out"),
    (["synthesize", "--task", "{tmp}/p.json", "--out", "{tmp}/t.jsonl", "--candidates-out",
      "{tmp}/link.json"], "--candidates-out"),
    (["eval", "--task", "{tmp}/p.json", "--out", "{tmp}/link.json"], "--out"),
])
def test_genselect_refuses_before_sampling(argv, flag, tmp_path, capsys, monkeypatch):
    """Output paths and task shapes are checked before the model is loaded or anything sampled."""
    import json

    from rollwise.cli import main
    from rollwise.genselect import synthesis

    problems = tmp_path / "p.json"
    problems.write_text(json.dumps([{"problem": f"{i} + 1", "answer": str(i + 1)} for i in range(8)]))
    (tmp_path / "link.json").symlink_to(problems)

    def boom(*args, **kwargs):
        raise AssertionError("candidates sampled before the arguments were checked")

    monkeypatch.setattr(synthesis, "sample_candidates", boom)
    rc = main(["genselect", *[a.replace("{tmp}", str(tmp_path)) for a in argv]])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"rollwise genselect: error: {flag}") and "\n" not in err
    assert json.loads(problems.read_text())[0]["problem"] == "0 + 1"  # the input is untouched


def test_genselect_eval_unequal_candidate_lists_named(tmp_path, capsys):
    import json

    from rollwise.cli import main

    rows = [{"id": "a", "question": "q", "candidates": ["1", "2"], "answers": ["1", "2"], "scores": [1, 0]},
            {"id": "b", "question": "q", "candidates": ["1", "2"], "answers": ["1"], "scores": [1, 0]}]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    rc = main(["genselect", "eval", "--candidates", str(path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "line 2" in err and "\n" not in err
