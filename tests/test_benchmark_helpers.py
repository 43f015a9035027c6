"""The real-model benchmark's helpers, on hand-made runs: every published figure passes through
them (rollouts to a target, the summary object, paired differences, family shares)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
gps_smollm2 = pytest.importorskip("gps_smollm2")


def _run(acc, rollouts=(0, 100, 200), total=200, levels=None):
    return {"eval_accuracy": list(acc), "eval_rollouts": list(rollouts), "rollouts": total,
            "selected_levels": levels or [[0, 1]], "eval_levels": [{}], "esr": [0.5]}


def test_rollouts_to_reach_interpolates_between_evaluations():
    reach = gps_smollm2.rollouts_to_reach
    assert reach([0, 100, 200], [0.1, 0.2, 0.4], 0.3) == pytest.approx(150.0)
    assert reach([0, 100, 200], [0.1, 0.2, 0.4], 0.05) == 0.0  # already there at the start
    assert reach([0, 100, 200], [0.1, 0.2, 0.4], 0.2) == pytest.approx(100.0)
    assert reach([0, 100, 200], [0.1, 0.2, 0.4], 0.5) is None
    assert reach([0, 160, 480], [0.0, 0.3, 0.1], 0.1) == pytest.approx(160 / 3)  # first crossing


def test_summary_targets_are_uniform_and_ds_means():
    data = {"args": {"task": "arithmetic"}, "runs": {
        "uniform": {"0": _run([0.0, 0.1, 0.2]), "1": _run([0.0, 0.2, 0.4])},   # mean final 0.3
        "ds": {"0": _run([0.0, 0.3, 0.5], (0, 300, 600), 600)},                 # mean final 0.5
        "gps": {"0": _run([0.0, 0.3, 0.6]), "1": _run([0.0, 0.1, 0.2])},
    }}
    s = gps_smollm2.summarise(data)
    assert s["task"] == "arithmetic" and s["seeds"] == [0, 1] and s["rollouts_per_arm"] == 200
    assert s["gps"]["final_heldout"] == [0.6, 0.2]
    assert s["gps"]["rollouts_to_uniform_final"] == [pytest.approx(100.0), None]
    assert s["gps"]["rollouts_to_ds_final"] == [pytest.approx(100 + 100 * 0.2 / 0.3), None]
    assert s["ds"]["rollouts_to_uniform_final"] == [pytest.approx(300.0)]
    assert s["ds"]["rollouts"] == [600] and s["gps"]["rollouts"] == [200, 200]
    assert set(s["gps"]) == {"final_heldout", "rollouts_to_uniform_final", "rollouts_to_ds_final",
                             "rollouts"}
    no_ds = gps_smollm2.summarise({"runs": {"uniform": data["runs"]["uniform"]}})
    assert no_ds["uniform"]["rollouts_to_ds_final"] == [None, None]


def test_ds_summary_has_exactly_its_keys_and_counts_rounds(tmp_path):
    logged = _run([0.0, 0.2, 0.3], (0, 150, 300), 300)
    logged["ds_log"] = [{"rounds": 1, "realised_keep_rate": 0.5, "predicted_keep_rate": 0.4,
                         "surplus": 1}, {"rounds": 2, "realised_keep_rate": 0.3,
                                         "predicted_keep_rate": None, "surplus": 0}]
    old = _run([0.0, 0.1, 0.4], (0, 300, 600), 600, levels=[[0]] * 5)  # 5 rounds, 1 step
    data = {"args": {"task": "mixed", "steps": 2, "prompts_per_step": 8, "num_generations": 4,
                     "max_new_tokens": 32, "learning_rate": 2e-5, "eval_steps": 1,
                     "eval_prompts": 10},
            "runs": {"ds": {"0": old}, "gps+ds": {"0": logged}}}
    assert gps_smollm2.is_ds_comparison(data)
    s = gps_smollm2.ds_summary(data)
    assert set(s) == {"model", "task", "seeds", "ds", "gps+ds", "greso+ds", "mopps+ds"}
    assert s["task"] == "mixed" and s["seeds"] == [0]
    assert s["gps+ds"] == {"final_heldout": [0.3], "rollouts": [300], "rounds_per_step": [1.5]}
    assert s["ds"]["rounds_per_step"] == [5.0] and s["mopps+ds"]["rollouts"] == []
    data["summary"] = s
    text = gps_smollm2.ds_markdown(data)
    assert "| gps+ds | 1 | 0.300 |" in text and "| 0.50 | 1.50 | 0.40 | 0.40 | 0.50 |" in text
    assert not gps_smollm2.is_ds_comparison({"runs": {"ds": {}, "gps": {}}})


def test_paired_differences_by_hand():
    runs = {"gps": {"0": _run([0, 0.30]), "1": _run([0, 0.20]), "2": _run([0, 0.25])},
            "uniform": {"0": _run([0, 0.10]), "1": _run([0, 0.15]), "2": _run([0, 0.20]),
                        "3": _run([0, 0.90])}}
    rows = gps_smollm2.paired_against({"runs": runs}, "gps")
    d = [0.20, 0.05, 0.05]  # seed 3 has no GPS run: not paired
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    t = mean / (sd / math.sqrt(3))
    # two-sided p of Student's t with 2 degrees of freedom: 1 - t / sqrt(2 + t^2)
    p = 1 - t / math.sqrt(2 + t * t)
    assert rows[-1] == f"| gps - uniform | 3 | {mean:+.3f} ± {sd / math.sqrt(3):.3f} | {p:.2f} |"


def test_family_shares_of_the_mixed_pool():
    fam = gps_smollm2.families()
    letters = [lv for lv, f in fam.items() if f == "letter_counting"]
    equations = [lv for lv, f in fam.items() if f == "simple_equations"]
    run = _run([0, 0], levels=[[letters[0]] * 3 + [equations[1]], [letters[2]] * 4])
    shares = gps_smollm2.family_shares(run)  # 7 of 8 letters, 1 of 8 equations; pool half and half
    assert shares == {"letter_counting": pytest.approx(1.75), "simple_equations": pytest.approx(0.25)}
    levels = {str(letters[0]): {"n": 30, "reward": 0.2}, str(letters[1]): {"n": 10, "reward": 0.6},
              str(equations[0]): {"n": 20, "reward": 0.0}}
    acc = gps_smollm2.family_accuracy(levels)
    assert acc["letter_counting"] == pytest.approx((30 * 0.2 + 10 * 0.6) / 40)
    assert acc["simple_equations"] == 0.0
    # the mixed task's summary adds each seed's smallest share ratio to the arm's keys
    s = gps_smollm2.summarise({"args": {"task": "mixed"}, "runs": {"gps": {"0": run}}})
    assert s["task"] == "mixed" and s["gps"]["min_family_share_ratio"] == [pytest.approx(0.25)]


def test_accuracy_at_a_budget_interpolates():
    at = gps_smollm2.accuracy_at
    assert at([0, 736, 1472], [0.02, 0.13, 0.25], 640) == pytest.approx(0.02 + 0.11 * 640 / 736)
    assert at([0, 160, 320], [0.0, 0.1, 0.2], 320) == 0.2
    assert at([0, 160, 320], [0.0, 0.1, 0.2], 0) == 0.0
    assert at([0, 160, 320], [0.0, 0.1, 0.2], 321) is None


def test_budgets_comparison_uses_the_seeds_every_arm_has():
    budgets_smollm2 = pytest.importorskip("budgets_smollm2")
    data = {"runs": {
        "uniform": {"0": _run([0.0, 0.1, 0.2]), "1": _run([0.0, 0.2, 0.4]), "3": _run([0, 0, 0.9])},
        "gps": {"0": _run([0.0, 0.3, 0.6]), "1": _run([0.0, 0.1, 0.2])},
        "gps/variance": {"0": _run([0.0, 0.1, 0.35]), "1": _run([0.0, 0.4, 0.4]),
                         "2": _run([0.0, 0.0, 0.0])},
        "ds": {"0": _run([0.0, 0.5, 0.9], (0, 300, 600), 600)},
    }}
    out = budgets_smollm2.compare(data)
    assert out["seeds"] == [0, 1] and out["uniform_final_mean"] == pytest.approx(0.3)
    s = out["summary"]
    assert set(s) == {"rollouts_per_arm", "uniform", "gps", "gps/variance"}
    assert set(s["gps"]) == {"final_heldout", "rollouts_to_uniform_final"}
    assert s["rollouts_per_arm"] == 200
    assert s["gps/variance"]["final_heldout"] == [0.35, 0.4]
    assert s["gps/variance"]["rollouts_to_uniform_final"] == [pytest.approx(180.0),
                                                              pytest.approx(75.0)]
    assert s["gps"]["rollouts_to_uniform_final"] == [pytest.approx(100.0), None]
    assert "gps/variance` - `gps`: -0.025" in budgets_smollm2.markdown(out, "x.json")
    del data["runs"]["gps/variance"]
    with pytest.raises(SystemExit, match="gps/variance"):
        budgets_smollm2.compare(data)


SCRIPTS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_benchmark_script_imports_and_answers_help(name, monkeypatch, capsys):
    """Each script's imports resolve and its command line parses ``--help``: a module moved
    inside the package breaks the reproduce commands here, not months later."""
    import importlib

    module = importlib.import_module(name)
    if hasattr(module, "main"):
        monkeypatch.setattr(sys, "argv", [f"{name}.py", "--help"])
        with pytest.raises(SystemExit) as done:
            module.main()
        assert done.value.code == 0
        assert "usage" in capsys.readouterr().out


class _Parsed(Exception):
    """Raised right after a benchmark's arguments parsed: the run itself is not wanted."""


def _readme_commands() -> list[str]:
    """Every command in benchmarks/README.md's code blocks, continuation lines joined, comments
    dropped."""
    import re

    text = (Path(__file__).resolve().parents[1] / "benchmarks" / "README.md").read_text()
    commands = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith(("python benchmarks/", "rollwise ")):
                commands.append(line)
    return commands


@pytest.mark.parametrize("command", _readme_commands())
def test_every_reproduce_command_parses(command, monkeypatch):
    """Each reproduce command in benchmarks/README.md parses with today's scripts (the run is
    stopped right after parsing): a renamed flag or arm breaks it here."""
    import argparse
    import importlib
    import shlex

    words = shlex.split(command)
    real_parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        real_parse(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    if words[0] == "rollwise":
        from rollwise.cli import build_parser

        with pytest.raises(_Parsed):
            build_parser().parse_args(words[1:])
        return
    name = Path(words[1]).stem
    module = importlib.import_module(name)
    monkeypatch.setattr(sys, "argv", [words[1], *words[2:]])
    with pytest.raises(_Parsed):
        module.main()


def test_arm_names_carry_embedder_and_budgets():
    """``STRATEGY[@EMBEDDER][/BUDGET_OBJECTIVE]`` arms become run settings; a combination that
    cannot run is refused by name before any run."""
    import argparse

    args = argparse.Namespace(runs="runs/x", steps=20, task="mixed", prompts_per_step=8,
                              num_generations=4, max_new_tokens=32, learning_rate=2e-5,
                              eval_steps=5, eval_prompts=100, threads=1)
    s = gps_smollm2.arm_settings("gps@policy/variance", 3, args)
    assert (s.strategy, s.embedder, s.budgets, s.seed) == ("gps", "policy", "variance", 3)
    assert Path(s.output_dir) == Path("runs/x/gps@policy+variance/seed3")
    plain = gps_smollm2.arm_settings("uniform", 0, args)
    assert (plain.embedder, plain.budgets) == ("wordllama", None)
    for bad, words in (("gps/nope", "budgets"), ("uniform/variance", "per-prompt predictions"),
                       ("gps@nope", "embedder"), ("gpz", "strategy")):
        with pytest.raises(SystemExit, match=words):
            gps_smollm2.arm_settings(bad, 0, args)
