"""``rollwise train --rescue p2o``: settings, CLI flags, and short real runs on a tiny random model."""

from __future__ import annotations

import json

import pytest

from rollwise.cli import build_parser, main
from rollwise.cli.train import addons, train_settings
from rollwise.llm.engine import TrainSettings, check_addons
from rollwise.rescue.addon import P2ORescue, RescueSettings

SEED_TEMPLATE = "Solve carefully: {problem}"
RESCUE = dict(every=2, window=1, max_metric_calls=8, max_hard=3, seed_template=SEED_TEMPLATE)


def _settings(tmp_path, **kw):
    base = dict(model="unused", output_dir=str(tmp_path / "run"), steps=3, prompts_per_step=3,
                num_generations=2, max_new_tokens=4, embedder="hashing", strategy="uniform", eval_prompts=0,
                save_steps=100)
    return TrainSettings(**{**base, **kw})


def _rescue(**kw):
    return [P2ORescue(RescueSettings(**{**RESCUE, **kw}))]


@pytest.mark.parametrize(("change", "match"), [
    (dict(guided=0), r"RescueSettings.guided must be an int >= 1"),
    (dict(guided=2), r"RescueSettings.guided must be an int in 1..num_generations-1 = 1..1"),
    (dict(every=0), r"RescueSettings.every must be an int >= 1"),
    (dict(every=2.0), r"RescueSettings.every must be an int >= 1, got 2.0"),
    (dict(max_metric_calls=2), r"RescueSettings.max_hard=3 exceeds max_metric_calls=2"),
    (dict(threshold=0.0), r"RescueSettings.threshold must be a finite number in \(0, 1\]"),
    (dict(reflection="gpt-4"), r"RescueSettings.reflection must be 'policy', an http"),
    (dict(seed_template="  "), r"RescueSettings.seed_template must be a non-empty"),
    (dict(proposer="none"), r"RescueSettings.proposer='none' searches no template.*RescueSettings.prefix"),
])
def test_bad_rescue_settings_are_rejected(tmp_path, change, match):
    check_addons(_settings(tmp_path), _rescue())  # the base is valid: only the change can fail it
    with pytest.raises(ValueError, match=match):
        check_addons(_settings(tmp_path), [_Unchecked(RescueSettings(**{**RESCUE, **change}))])


class _Unchecked(P2ORescue):
    """A P2ORescue whose settings are checked only by ``check`` (as the engine does)."""

    def __init__(self, settings):
        self.settings = settings


@pytest.mark.parametrize(("change", "match"), [
    (dict(max_rollouts=5), "max_rollouts must be None or an int >= one step's rollouts"),
    (dict(max_rollouts=12.5), "max_rollouts must be an int >= 1 or None"),
])
def test_bad_budget_is_rejected(tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        _settings(tmp_path, **change).validate()


def test_addons_must_be_addons_with_unique_names(tmp_path):
    with pytest.raises(TypeError, match="not a TrainerAddon"):
        check_addons(_settings(tmp_path), [RescueSettings()])
    with pytest.raises(ValueError, match="names must be unique"):
        check_addons(_settings(tmp_path), _rescue() + _rescue())


def test_cli_parses_rescue_flags():
    args = build_parser().parse_args([
        "train", "--num-generations", "4", "--rescue", "p2o", "--rescue-every", "5",
        "--rescue-guided", "3", "--rescue-reflection", "http://localhost:8000",
        "--rescue-max-metric-calls", "50", "--rescue-max-hard", "7",
        "--rescue-seed-template", "Q: {problem}", "--rescue-window", "3", "--rescue-threshold", "0.9",
        "--rescue-prefix", "restate"])
    (rescue,) = addons(args)
    r = rescue.settings
    assert (r.every, r.guided, r.reflection, r.max_metric_calls, r.max_hard, r.seed_template, r.window,
            r.threshold, r.prefix) == (5, 3, "http://localhost:8000", 50, 7, "Q: {problem}", 3, 0.9,
                                       "restate")
    assert RescueSettings().prefix == "none"
    assert r.proposer == "auto" and r.template_source == "reflection"  # an endpoint: it reflects
    check_addons(train_settings(args), [rescue])
    examples = addons(build_parser().parse_args([
        "train", "--rescue", "p2o", "--rescue-proposer", "examples", "--rescue-max-examples", "3",
        "--rescue-example-capacity", "32"]))[0].settings
    assert (examples.template_source, examples.max_examples, examples.example_capacity) == ("examples", 3, 32)
    assert RescueSettings().template_source == "examples"  # the policy itself: worked examples
    assert RescueSettings(reflection="policy", proposer="reflection").template_source == "reflection"
    prefix_only = addons(build_parser().parse_args([
        "train", "--rescue", "p2o", "--rescue-proposer", "none", "--rescue-prefix", "restate"]))[0].settings
    assert (prefix_only.template_source, prefix_only.prefix) == ("none", "restate")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--rescue", "p2o", "--rescue-proposer", "llm"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--rescue", "p2o", "--rescue-prefix", "answer"])
    off = build_parser().parse_args(["train"])
    assert addons(off) == [] and train_settings(off).max_rollouts is None
    assert train_settings(build_parser().parse_args(["train", "--max-rollouts", "640"])).max_rollouts == 640
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--rescue", "p3o"])


def test_cli_reports_bad_rescue_before_training(capsys):
    assert main(["train", "--rescue", "p2o", "--num-generations", "4", "--rescue-guided", "4"]) == 2
    assert "RescueSettings.guided must be an int in 1..num_generations-1 = 1..3" in capsys.readouterr().err


# ---- real runs ---------------------------------------------------------------------------------

trl = pytest.importorskip("trl")
pytest.importorskip("gepa")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from _support import save_tiny_llama

    return save_tiny_llama(tmp_path_factory.mktemp("tiny"))


# three prompts, three per step: every prompt is chosen at every step
ROWS = [{"id": f"q{i}", "prompt": f"{i} + {i} =", "question": f"{i} + {i}", "answer": str(2 * i)}
        for i in range(3)]


def never(completions, **kwargs):
    """Every rollout fails, so after one step (window 1) every prompt is hard."""
    return [0.0] * len(completions)


class Reflection:
    """Deterministic reflection LM: always proposes the same template."""

    def __init__(self):
        self.calls = 0

    def __call__(self, prompt):
        self.calls += 1
        return "A better instruction:\n```\nThink, then answer: {problem}\n```"


@pytest.fixture
def spy_evolve(monkeypatch):
    """Records, after each evolution, the step, the trainer's template and whether it trains again."""
    from rollwise.rescue.loop import RescueCallback

    seen = []
    evolve = RescueCallback.evolve

    def spy(self, step):
        record = evolve(self, step)
        seen.append({"step": step, "training": self.trainer.model.training, "template": self.trainer.template,
                     "guided_so_far": self.trainer.guided_rollouts})
        return record

    monkeypatch.setattr(RescueCallback, "evolve", spy)
    return seen


def test_run_grpo_with_rescue_evolves_at_the_configured_step(tiny_path, tmp_path, spy_evolve):
    from rollwise.llm.engine import run_grpo

    reflection = Reflection()
    result = run_grpo(_settings(tmp_path), tiny_path, ROWS, [], never, addons=_rescue(reflection=reflection))
    rescue = result["rescue"]
    assert [e["step"] for e in rescue["evolutions"]] == [2] and [s["step"] for s in spy_evolve] == [2]
    evo = rescue["evolutions"][0]
    assert evo["hard"] == 3 and evo["used"] == 3 and evo["skipped"] is None and evo["tried"] >= 1
    assert evo["rollouts"] >= 3 and rescue["gepa_rollouts"] == evo["rollouts"]  # the seed scored at least
    assert evo["reflection_calls"] == reflection.calls >= 1
    # the policy is back in train mode, the best template is set, and guidance started only after it
    assert spy_evolve[0]["training"] and spy_evolve[0]["template"] == evo["template"] == rescue["template"]
    assert spy_evolve[0]["guided_so_far"] == 0 and rescue["guided_rollouts"] == 3  # step 3: 3 groups x 1
    assert rescue["training_rollouts"] == 3 * 3 * 2
    assert result["rollouts"] == rescue["training_rollouts"] + rescue["gepa_rollouts"]
    logs = {h["step"]: h for h in result["log_history"] if "loss" in h}
    assert sorted(logs) == [1, 2, 3]
    assert logs[2]["rescue/gepa_rollouts"] == evo["rollouts"] and logs[2]["rescue/hard_prompts"] == 3
    assert logs[2]["rescue/templates_tried"] == evo["tried"] and "rescue/rescued" in logs[2]
    assert "rescue/gepa_rollouts" not in logs[1] and "rescue/gepa_rollouts" not in logs[3]
    saved = json.loads((tmp_path / "run" / "rollwise_run.json").read_text())
    assert saved["rescue"]["gepa_rollouts"] == rescue["gepa_rollouts"]
    assert saved["rescue"]["settings"]["reflection"] == "callable:Reflection"


@pytest.mark.parametrize("search", [dict(every=100), dict(proposer="none", every=2)],
                         ids=["no-evolution-due", "no-proposer"])
def test_restate_prefix_guides_hard_prompts_from_the_first_step_they_are_hard(tiny_path, tmp_path, search):
    from rollwise.llm.engine import run_grpo

    rows = [{**row, "question": f"Compute: {row['question']} ="} for row in ROWS]
    seen = []

    def record(completions, **kwargs):
        seen.append(list(completions))
        return never(completions)

    record.__name__ = "record"
    # no evolution within the run (none due, or no proposer at all): only the prefix guides
    result = run_grpo(_settings(tmp_path), tiny_path, rows, [], record,
                      addons=_rescue(prefix="restate", **search))
    rescue = result["rescue"]
    assert rescue["settings"]["prefix"] == "restate" and rescue["evolutions"] == []
    assert rescue["gepa_rollouts"] == 0 and result["rollouts"] == rescue["training_rollouts"] == 3 * 3 * 2
    assert rescue["proposer"] == rescue["settings"]["proposer"].replace("auto", "examples")
    assert rescue["guided_rollouts"] == 6  # steps 2 and 3: 3 hard groups x 1 guided row
    # the guided row of each group (its last) answers from its problem's restated equation
    for step in (1, 2):
        guided = seen[step][1::2]
        assert all(any(c.startswith(f"{i} + {i} = ") for i in range(3)) for c in guided), guided
    assert not any(c.startswith(f"{i} + {i} = ") for c in seen[0] for i in range(3))


def test_unreachable_reflection_endpoint_is_a_skip(tiny_path, tmp_path, spy_evolve):
    from rollwise.llm.engine import run_grpo

    result = run_grpo(_settings(tmp_path, steps=2), tiny_path, ROWS, [], never,
                      addons=_rescue(reflection="http://127.0.0.1:9"))
    (evo,) = result["rescue"]["evolutions"]
    assert evo["step"] == 2 and "127.0.0.1:9" in evo["skipped"] and evo["rollouts"] == 0
    assert result["rescue"]["template"] is None and result["rollouts"] == 2 * 3 * 2
    assert spy_evolve[0]["training"]


def test_rescue_needs_question_and_answer_columns(tiny_path, tmp_path):
    from rollwise.llm.engine import run_grpo

    rows = [{k: v for k, v in r.items() if k != "question"} for r in ROWS]
    with pytest.raises(ValueError, match=r"rescue needs the columns \['question'\]"):
        run_grpo(_settings(tmp_path), tiny_path, rows, [], never, addons=_rescue())


def test_policy_as_reflection_lm_in_a_run(tiny_path, tmp_path, spy_evolve, monkeypatch):
    from rollwise.llm.engine import run_grpo
    from rollwise.rescue import loop

    monkeypatch.setattr(loop, "REFLECTION_TOKENS", 8)  # a random model's reflection: keep it short
    result = run_grpo(_settings(tmp_path, steps=2), tiny_path, ROWS, [], never,
                      addons=_rescue(reflection="policy", proposer="reflection"))
    (evo,) = result["rescue"]["evolutions"]
    assert evo["step"] == 2 and evo["skipped"] is None and evo["rollouts"] >= 3
    assert evo["reflection_calls"] >= 1 and spy_evolve[0]["training"]


def test_resume_restores_bank_template_and_rescue_counters(tiny_path, tmp_path):
    from rollwise.llm.engine import run_grpo

    first = run_grpo(_settings(tmp_path, steps=2, save_steps=2), tiny_path, ROWS, [], never,
                     addons=_rescue(reflection=Reflection()))["rescue"]
    assert first["template"] is not None and first["guided_rollouts"] == 0
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert (checkpoint / "rollwise_selector.pt").is_file()
    assert not list(checkpoint.glob("optimizer*"))  # model-only checkpoints unless asked
    resumed = run_grpo(_settings(tmp_path, steps=3, save_steps=2, resume=True), tiny_path, ROWS, [],
                       never, addons=_rescue(reflection=Reflection()))
    rescue = resumed["rescue"]
    # step 3 is guided with the template evolved before the checkpoint; no new evolution (every 2)
    assert rescue["template"] == first["template"] and rescue["evolutions"] == first["evolutions"]
    assert rescue["gepa_rollouts"] == first["gepa_rollouts"] and rescue["guided_rollouts"] == 3
    assert rescue["hard_prompts"] == 3 and rescue["training_rollouts"] == 3 * 3 * 2


def test_save_optimizer_keeps_the_optimizer_state(tiny_path, tmp_path):
    from rollwise.llm.engine import run_grpo

    run_grpo(_settings(tmp_path, steps=1, save_steps=1, save_optimizer=True),
             tiny_path, ROWS, [], never)
    assert list((tmp_path / "run" / "checkpoint-1").glob("optimizer*"))


def test_rollout_budget_stops_training_and_counts_gepa(tiny_path, tmp_path):
    from rollwise.llm.engine import run_grpo

    plain = run_grpo(_settings(tmp_path, steps=5, max_rollouts=13), tiny_path, ROWS, [], never)
    assert plain["steps"] == 2 and plain["rollouts"] == 12 and plain["budget_stopped_at"] == 2
    # the evolution at step 2 spends g >= 3 rollouts: 12 + g + 6 > 20, so the run stops there
    result = run_grpo(_settings(tmp_path / "r", steps=5, max_rollouts=20), tiny_path, ROWS, [], never,
                      addons=_rescue(reflection=Reflection()))
    gepa = result["rescue"]["gepa_rollouts"]
    assert gepa >= 3 and result["steps"] == 2 and result["rollouts"] == 12 + gepa
    unlimited = run_grpo(_settings(tmp_path / "u", steps=3), tiny_path, ROWS, [], never)
    assert unlimited["steps"] == 3 and "budget_stopped_at" not in unlimited


def test_a_budget_stopped_run_is_evaluated_at_its_last_step(tiny_path, tmp_path):
    from rollwise.llm.engine import run_grpo

    settings = _settings(tmp_path, steps=6, max_rollouts=13, eval_steps=4, eval_prompts=2,
                         eval_generations=2)
    result = run_grpo(settings, tiny_path, ROWS, ROWS[:2], never)
    assert result["steps"] == 2
    assert [h["step"] for h in result["log_history"] if "eval_reward" in h] == [2]


def only_q0(prompts, completions, **kwargs):
    """q0 ('0 + 0 =') is solved by every rollout, the others never: q1 and q2 turn hard."""
    return [float(p.startswith("0 + 0")) for p in prompts]


def test_example_proposer_evolves_from_solved_rollouts_without_a_reflection_lm(tiny_path, tmp_path):
    from rollwise.llm.engine import run_grpo

    result = run_grpo(_settings(tmp_path, steps=3, save_steps=2), tiny_path, ROWS, [], only_q0,
                      addons=_rescue())
    rescue = result["rescue"]
    assert rescue["proposer"] == "examples" and rescue["settings"]["proposer"] == "auto"
    (evo,) = rescue["evolutions"]
    assert evo["step"] == 2 and evo["skipped"] is None and evo["hard"] == 2
    assert evo["reflection_calls"] == 0 and evo["tried"] >= 1 and evo["rollouts"] >= 2
    assert evo["mutations"] and evo["mutations"][0] == "first"
    assert 1 <= rescue["solved_examples"] <= 2 * 2  # q0's rollouts, at most per_prompt=2 kept
    saved = json.loads((tmp_path / "run" / "checkpoint-2" / "rollwise_rescue.json").read_text())
    assert {ex["pid"] for ex in saved["examples"]["examples"]} == {"q0"}
    # resumed from step 2: the store comes back (and keeps growing) with the template
    resumed = run_grpo(_settings(tmp_path, steps=3, save_steps=2, resume=True), tiny_path, ROWS, [],
                       only_q0, addons=_rescue())["rescue"]
    assert resumed["template"] == saved["template"] and resumed["evolutions"] == saved["evolutions"]
    assert resumed["solved_examples"] >= len(saved["examples"]["examples"])


def test_example_proposer_skips_while_nothing_is_solved(tiny_path, tmp_path):
    from rollwise.llm.engine import run_grpo

    result = run_grpo(_settings(tmp_path, steps=2), tiny_path, ROWS, [], never, addons=_rescue())
    (evo,) = result["rescue"]["evolutions"]
    assert evo["skipped"] == "no solved examples yet" and result["rescue"]["gepa_rollouts"] == 0


def test_every_process_adopts_the_main_processs_evolution(monkeypatch):
    """Several processes: a non-main process replaces its own evolution's outcome (record,
    template, GEPA rollouts) by the main process's, broadcast; one process keeps its own."""
    import accelerate.utils

    from rollwise.rescue.loop import RescueCallback

    main_payload = [{"step": 8, "template": "MAIN {problem}"}, "MAIN {problem}", 40]

    def fake_broadcast(payload, from_process=0):
        assert from_process == 0 and payload == [None, None, None]  # a non-main process sends nothing
        payload[:] = main_payload
        return payload

    monkeypatch.setattr(accelerate.utils, "broadcast_object_list", fake_broadcast)
    trainer = type("T", (), {})()
    trainer.template, trainer.gepa_rollouts = "OWN {problem}", 36
    trainer.accelerator = type("A", (), {"num_processes": 2, "is_main_process": False})()
    callback = object.__new__(RescueCallback)
    callback.trainer = trainer
    assert callback._agree({"step": 8, "template": "OWN {problem}"}) == main_payload[0]
    assert (trainer.template, trainer.gepa_rollouts) == ("MAIN {problem}", 40)
    trainer.accelerator.num_processes = 1  # alone: its own outcome stands, nothing is sent
    monkeypatch.setattr(accelerate.utils, "broadcast_object_list", None)
    assert callback._agree({"step": 16}) == {"step": 16}
