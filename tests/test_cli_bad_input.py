"""Bad input on the command line and at the library's edges: refused before any work, with one
clear line naming the flag or argument, and no output file left behind."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from _support import make, make_pool

import rollwise
from rollwise.cli import main

BENCH = ["bench", "--embedder", "hashing", "--seeds", "1", "--steps", "2", "--batch-size", "4",
         "--quiet"]


@pytest.fixture
def pool_file(tmp_path):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps([{"problem": f"compute {i} + {i}", "answer": str(2 * i)}
                                for i in range(60)]))
    return path


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the benchmark starts building its world."""
    import rollwise.sim

    def boom(*a, **k):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(rollwise.sim, "build_world", boom)


@pytest.mark.parametrize(("extra", "flag"), [
    (["--strategies", "mopps,gps"], "--target"),
    (["--strategies", "uniform,gps", "--target", "2"], "--target"),
    (["--strategies", "uniform,gps", "--target", "nan"], "--target"),
    (["--strategies", "uniform", "--k", "1"], "--k"),
])
def test_bench_refuses_before_work(extra, flag, pool_file, tmp_path, capsys, no_work):
    out = tmp_path / "out"
    assert main([*BENCH, "--pool", str(pool_file), "--out", str(out), *extra]) == 2
    assert flag in _error(capsys)
    assert not out.exists()


@pytest.mark.parametrize("case", ["same", "link", "out-holds-pool"])
def test_bench_refuses_inputs_it_would_misuse_or_replace(case, pool_file, tmp_path, capsys, no_work):
    """The same file (or a link to it) as pool and held-out would score training prompts as
    held-out; an --out folder holding the pool would be replaced, pool included."""
    argv = [*BENCH, "--strategies", "uniform"]
    pool = pool_file
    if case == "out-holds-pool":
        out = tmp_path / "res"
        out.mkdir()
        pool = out / "pool.json"
        pool.write_text(pool_file.read_text())
        argv += ["--pool", str(pool), "--out", str(out)]
    else:
        held = pool_file
        if case == "link":
            held = tmp_path / "held.json"
            held.symlink_to(pool_file)
        out = tmp_path / "out"
        argv += ["--pool", str(pool_file), "--heldout", str(held), "--out", str(out)]
    before = pool.read_bytes()
    assert main(argv) == 2
    err = _error(capsys)
    assert ("--pool and --heldout are the same file" in err if case != "out-holds-pool"
            else "holds the --pool file" in err)
    assert pool.read_bytes() == before and (case == "out-holds-pool" or not out.exists())


def test_bench_out_that_is_a_file(pool_file, tmp_path, capsys, no_work):
    out = tmp_path / "results.txt"
    out.write_text("keep me")
    assert main([*BENCH, "--pool", str(pool_file), "--out", str(out), "--strategies", "uniform"]) == 2
    assert "--out" in _error(capsys)
    assert out.read_text() == "keep me"


@pytest.fixture
def gps_state(tmp_path, pool_file):
    """A GPS selector saved over pool_file's prompts (hashing embedder)."""
    from rollwise.feedback.prompt_files import load_prompt_file

    ps = load_prompt_file(pool_file)
    pool = rollwise.PromptPool.from_texts(ps.texts, ids=ps.ids, embedder="hashing")
    sel = rollwise.make_selector("gps", pool, 4, seed=0)
    path = tmp_path / "sel.pt"
    sel.save(path)
    return path


@pytest.mark.parametrize("where", ["missing-folder", "directory"])
def test_allocate_out_checked_first(where, tmp_path, pool_file, gps_state, capsys, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the pool was embedded before --out was checked")

    monkeypatch.setattr(rollwise.PromptPool, "from_texts", boom)
    out = tmp_path / "no" / "such" / "x.jsonl" if where == "missing-folder" else tmp_path
    rc = main(["allocate", "--selector", str(gps_state), "--pool", str(pool_file), "--prompts",
               str(pool_file), "--per-prompt", "2", "--embedder", "hashing", "--out", str(out)])
    assert rc == 2 and "--out" in _error(capsys)
    assert not (tmp_path / "no").exists()


def test_selector_save_does_not_create_folders(tmp_path):
    sel = make("uniform", make_pool(10), 2)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sel.save(tmp_path / "no" / "such" / "x.pt")
    assert not (tmp_path / "no").exists()
    with pytest.raises(IsADirectoryError):
        sel.save(tmp_path)


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is empty"),
    (os.urandom(256), "not a torch file"),
])
def test_unreadable_selector_file_one_line(content, message, tmp_path):
    path = tmp_path / "sel.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        rollwise.load_selector(path, make_pool(10))
    assert "\n" not in str(err.value) and "weights_only" not in str(err.value)


def test_predict_texts_refuses_one_string():
    sel = make("gps", make_pool(10), 2)
    with pytest.raises(TypeError, match="texts"):
        sel.predict_texts("one prompt", embedder="hashing")


@pytest.mark.parametrize("rewards", [[[2.0, 0.0]], [[-1.0, 0.0]], [[float("nan"), 1.0]]])
def test_effective_sample_ratio_refuses_out_of_range(rewards):
    with pytest.raises(ValueError, match="rewards"):
        rollwise.effective_sample_ratio(np.array(rewards))


def test_train_missing_task_fails_before_the_model(tmp_path, capsys, monkeypatch):
    pytest.importorskip("trl")
    import rollwise.llm.models

    monkeypatch.setattr(rollwise.llm.models, "resolve_model",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("model first")))
    rc = main(["train", "--task", str(tmp_path / "nope.json"), "--output-dir", str(tmp_path / "o")])
    assert rc == 2 and "nope.json" in _error(capsys)


def test_bench_output_feeds_allocate(pool_file, tmp_path, capsys):
    """The path from training to allocation without code: bench saves the pool and the GPS
    selectors; allocate reads them back (same ids) and writes an allocation."""
    out = tmp_path / "bench"
    assert main([*BENCH, "--pool", str(pool_file), "--out", str(out),
                 "--strategies", "uniform,gps"]) == 0
    assert (out / "selectors" / "gps.pt").is_file() and not (out / "selectors" / "uniform.pt").exists()
    alloc = tmp_path / "alloc.jsonl"
    assert main(["allocate", "--selector", str(out / "selectors" / "gps.pt"), "--pool",
                 str(out / "pool.jsonl"), "--prompts", str(pool_file), "--per-prompt", "2",
                 "--embedder", "hashing", "--out", str(alloc)]) == 0
    rows = [json.loads(line) for line in alloc.read_text().splitlines()]
    assert len(rows) == 60 and sum(r["samples"] for r in rows) <= 120


def test_library_pool_and_file_pool_share_ids(pool_file):
    """A pool built in code from a file's texts and the file read by the CLI have the same ids
    (row numbers where the file has none), so a selector saved from code loads on the CLI."""
    from rollwise.feedback.prompt_files import load_prompt_file

    ps = load_prompt_file(pool_file)
    in_code = rollwise.PromptPool.from_texts(ps.texts, embedder="hashing")
    from_file = rollwise.PromptPool.from_texts(ps.texts, ids=ps.ids, embedder="hashing")
    assert in_code.fingerprint() == from_file.fingerprint()


def test_text_field_flag_and_its_advice(tmp_path, capsys):
    path = tmp_path / "odd.json"
    path.write_text(json.dumps([{"body": f"compute {i} + 1"} for i in range(40)]))
    out = tmp_path / "out"
    assert main([*BENCH, "--pool", str(path), "--out", str(out), "--strategies", "uniform"]) == 2
    assert "--text-field" in _error(capsys)
    assert main([*BENCH, "--pool", str(path), "--out", str(out), "--strategies", "uniform",
                 "--text-field", "body"]) == 0


def test_task_file_fields_by_name(tmp_path):
    from rollwise.llm.tasks import get_task

    path = tmp_path / "task.json"
    path.write_text(json.dumps([{"q": f"{i} + {i} = ?", "solution": str(2 * i)} for i in range(20)]))
    with pytest.raises(ValueError, match="--text-field"):
        get_task(str(path))
    with pytest.raises(ValueError, match="--answer-field"):
        get_task(str(path), text_field="q")
    task = get_task(str(path), text_field="q", answer_field="solution")
    rows = task.train + task.heldout
    assert len(rows) == 20 and all(r["answer"] == str(2 * int(r["question"].split()[0])) for r in rows)


@pytest.mark.parametrize("clash", ["--prompts", "--pool", "--selector"])
def test_allocate_out_that_is_an_input_is_refused(clash, tmp_path, pool_file, gps_state, capsys):
    """--out equal to an input would replace the user's file with the allocation."""
    prompts = tmp_path / "new.json"
    prompts.write_text(pool_file.read_text())
    inputs = {"--selector": gps_state, "--pool": pool_file, "--prompts": prompts}
    before = {flag: path.read_bytes() for flag, path in inputs.items()}
    rc = main(["allocate", "--selector", str(gps_state), "--pool", str(pool_file), "--prompts",
               str(prompts), "--per-prompt", "2", "--embedder", "hashing", "--out",
               os.path.relpath(inputs[clash])])
    err = _error(capsys)
    assert rc == 2 and "--out" in err and clash in err
    assert {flag: path.read_bytes() for flag, path in inputs.items()} == before


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if training resolves (loads) a model."""
    pytest.importorskip("trl")
    import rollwise.llm.models

    monkeypatch.setattr(rollwise.llm.models, "resolve_model",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("model loaded first")))


@pytest.mark.parametrize("earlier", ["rollwise_run.json", "checkpoint-20", "rollwise_selector.pt"])
def test_train_refuses_an_earlier_runs_folder(earlier, tmp_path, capsys, no_model):
    """An earlier run's folder is neither replaced nor mixed without --resume or --overwrite, and
    the refusal comes before the model is loaded."""
    out = tmp_path / "run"
    out.mkdir()
    target = out / earlier
    target.mkdir() if earlier.startswith("checkpoint") else target.write_text("earlier")
    rc = main(["train", "--output-dir", str(out)])
    err = _error(capsys)
    assert rc == 2 and "--output-dir" in err and "--resume" in err and "--overwrite" in err
    assert target.exists() and sorted(p.name for p in out.iterdir()) == [earlier]
    rc = main(["train", "--output-dir", str(out), "--resume", "--overwrite"])
    assert rc == 2 and "--overwrite" in _error(capsys)


def test_train_overwrite_lists_only_the_runs_own_files(tmp_path):
    pytest.importorskip("trl")
    from rollwise.llm.engine import TrainSettings, remove_earlier_run

    out = tmp_path / "run"
    (out / "checkpoint-5").mkdir(parents=True)
    for name in ("rollwise_run.json", "notes.txt"):
        (out / name).write_text("x")
    earlier = TrainSettings(output_dir=str(out), overwrite=True).check_output_dir()
    assert sorted(p.name for p in earlier) == ["checkpoint-5", "rollwise_run.json"]
    assert TrainSettings(output_dir=str(out), resume=True).check_output_dir() == []
    remove_earlier_run(earlier)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # the user's own file stays
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="--output-dir"):
        TrainSettings(output_dir=str(tmp_path / "afile")).check_output_dir()


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bench_out_written_whole_or_not_at_all(pool_file, tmp_path, capsys, monkeypatch):
    """An interrupted bench leaves an earlier --out byte for byte as it was (no new pool beside
    old selectors); a finished one replaces the run's files whole and keeps the report's notes."""
    from rollwise._io import NOTES_MARKER

    out = tmp_path / "bench"
    assert main([*BENCH, "--pool", str(pool_file), "--out", str(out),
                 "--strategies", "uniform,gps,gps-nodiv"]) == 0
    capsys.readouterr()
    summary = out / "summary.md"
    summary.write_text(summary.read_text() + f"\n{NOTES_MARKER}\nmy notes\n")
    before = _tree(out)
    import rollwise.sim.bench

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(rollwise.sim.bench, "run_benchmark", interrupted)
        rc = main([*BENCH, "--pool", str(pool_file), "--out", str(out), "--strategies", "uniform,gps",
                   "--k", "4", "--overwrite"])
    assert rc == 130 and "as it was" in _error(capsys)
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench", "pool.json"]  # nothing staged left
    (out / "mine.txt").write_text("keep")  # a user's file in the folder
    before = _tree(out)
    assert main([*BENCH, "--pool", str(pool_file), "--out", str(out),
                 "--strategies", "uniform,gps"]) == 2  # refused without --overwrite
    assert "--overwrite" in _error(capsys) and _tree(out) == before
    assert main([*BENCH, "--pool", str(pool_file), "--out", str(out),
                 "--strategies", "uniform,gps", "--overwrite"]) == 0
    assert (out / "mine.txt").read_text() == "keep"
    assert sorted(p.name for p in (out / "selectors").iterdir()) == ["gps.pt"]  # no stale gps-nodiv
    assert "my notes" in summary.read_text() and "gps-nodiv" not in (out / "results.json").read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_out_under_a_file_refused_before_work(pool_file, tmp_path, capsys, no_work):
    afile = tmp_path / "afile"
    afile.write_text("x")
    rc = main([*BENCH, "--pool", str(pool_file), "--out", str(afile / "sub")])
    err = _error(capsys)
    assert rc == 2 and err.startswith("rollwise bench: error: --out") and "is a file" in err


def test_os_errors_end_as_one_line(tmp_path, capsys, monkeypatch):
    """An OSError of any kind raised inside a command is one line, exit 2."""
    import rollwise.cli.bench

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(rollwise.cli.bench, "run", denied)
    rc = main([*BENCH, "--out", str(tmp_path / "o")])
    assert rc == 2 and _error(capsys) == f"rollwise bench: error: [Errno 13] Permission denied: '{tmp_path}'"


def test_train_unknown_budget_objective_is_argparses_error(tmp_path, capsys, no_model):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--output-dir", str(tmp_path / "o"), "--budgets", "bogus"])
    assert exc.value.code == 2 and "argument --budgets: invalid choice: 'bogus'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("extra", "flag"), [
    (["--seed", "-1"], "--seed"),
    (["--embedder", "bogus"], "--embedder"),
    (["--embedder", "sentence-transformers:"], "--embedder"),
    (["--report-to", "bogus"], "--report-to"),
    (["--report-to", "tensorboard,bogus"], "--report-to"),
    (["--max-sampling-rounds", "0"], "--max-sampling-rounds"),
    (["--max-sampling-rounds", "3"], "--max-sampling-rounds"),  # without dynamic sampling: no effect
    (["--strategy", "ds", "--prompts-per-step", "0"], "--prompts-per-step"),
    (["--rescue-prefix", "restate"], "--rescue-prefix"),  # without --rescue p2o: no effect
    (["--budgets", "groups", "--strategy", "uniform"], "--budgets"),  # no per-prompt predictions
    (["--budgets", "groups", "--strategy", "ds"], "--budgets"),
])
def test_train_settings_refused_before_the_model_naming_the_flag(extra, flag, tmp_path, capsys, no_model):
    rc = main(["train", "--output-dir", str(tmp_path / "o"), *extra])
    err = _error(capsys)
    assert rc == 2 and err.startswith(f"rollwise train: error: {flag}")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("budget", [["--budget", "1000000000000"], ["--per-prompt", "100000000"]])
def test_allocate_unbounded_budget_refused_before_work(budget, tmp_path, pool_file, gps_state, capsys,
                                                       monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the pool was embedded before the budget was checked")

    monkeypatch.setattr(rollwise.PromptPool, "from_texts", boom)
    out = tmp_path / "alloc.jsonl"
    rc = main(["allocate", "--selector", str(gps_state), "--pool", str(pool_file), "--prompts",
               str(pool_file), *budget, "--embedder", "hashing", "--out", str(out)])
    assert rc == 2 and "--budget" in _error(capsys) and not out.exists()


@pytest.mark.parametrize(("saved", "argv", "message"), [
    ("mopps", ["--strategy", "gps"], "--strategy"),
    ("gps", ["--strategy", "gps", "--task", "mixed"], "--task"),
])
def test_train_resume_mismatch_refused_before_the_model(saved, argv, message, tmp_path, capsys, no_model):
    """A --resume onto a run of another strategy or another pool is refused before the model
    loads, not after the first held-out evaluation."""
    from rollwise.llm.tasks import arithmetic

    out = tmp_path / "run"
    _checkpoint(out, 5, make(saved, make_pool(len(arithmetic().train)), 8))
    rc = main(["train", "--output-dir", str(out), "--resume", *argv])
    err = _error(capsys)
    assert rc == 2 and err.startswith("rollwise train: error: --resume") and message in err


def _checkpoint(out, step, selector, whole=True):
    """A checkpoint folder as a run leaves it (the model file a placeholder: nothing loads it)."""
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    selector.save(folder / "rollwise_selector.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if whole:
        (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def test_train_resume_without_a_checkpoint_names_the_folder(tmp_path, capsys, no_model):
    out = tmp_path / "run"
    out.mkdir()
    (out / "rollwise_run.json").write_text("{}")  # checkpoints removed, the log kept
    rc = main(["train", "--output-dir", str(out), "--resume"])
    err = _error(capsys)
    assert rc == 2 and "holds no whole checkpoint" in err and str(out) in err
    assert (out / "rollwise_run.json").read_text() == "{}"


def test_resume_skips_a_half_written_checkpoint(tmp_path, caplog):
    from rollwise.checkpoints import COMPLETE_FILE, last_whole_checkpoint
    from rollwise.llm.tasks import arithmetic

    out = tmp_path / "run"
    sel = make("gps", make_pool(len(arithmetic().train)), 8)
    whole = _checkpoint(out, 5, sel)
    _checkpoint(out, 10, sel, whole=False)  # killed while saving: no model file
    assert last_whole_checkpoint(out) == whole and "checkpoint-10" in caplog.text
    (whole / "trainer_state.json").write_text("")  # an empty file is not whole either
    assert last_whole_checkpoint(out) is None
    # where the trainer marks whole checkpoints, one with every file but no mark was cut short
    # (e.g. killed while writing its weights)
    marked = tmp_path / "marked"
    first = _checkpoint(marked, 5, sel)
    (first / COMPLETE_FILE).write_text("")
    _checkpoint(marked, 10, sel)
    assert last_whole_checkpoint(marked) == first


def test_resuming_a_finished_run_does_nothing_and_says_so(tmp_path, capsys, no_model):
    from rollwise.llm.tasks import arithmetic

    out = tmp_path / "run"
    _checkpoint(out, 20, make("gps", make_pool(len(arithmetic().train)), 8))
    log = {"steps": 20, "rollouts": 640, "evaluations": [{"step": 0, "n": 8, "reward": 0.25},
                                                         {"step": 20, "n": 8, "reward": 0.5}]}
    (out / "rollwise_run.json").write_text(json.dumps(log))
    before = sorted(p.name for p in out.rglob("*"))
    rc = main(["train", "--output-dir", str(out), "--resume", "--steps", "20"])
    printed = capsys.readouterr().out
    assert rc == 0 and "already trained 20 steps" in printed and "0.250 (step 0) -> 0.500" in printed
    assert sorted(p.name for p in out.rglob("*")) == before
    assert json.loads((out / "rollwise_run.json").read_text()) == log


def test_selector_and_pool_arguments_refused_at_construction():
    with pytest.raises(ValueError, match="candidate_ratio"):
        make("gps", make_pool(20), 4, candidate_ratio=float("inf"))
    with pytest.raises(ValueError, match="seed"):
        make("uniform", make_pool(20), 4, seed=2**70)
    with pytest.raises(ValueError, match="seed"):
        make("uniform", make_pool(20), 4, seed=-1)
    with pytest.raises(TypeError, match="real"):
        rollwise.PromptPool(np.ones((4, 3)) + 1j)


def test_a_folder_for_a_file_and_a_file_for_a_model_say_so(tmp_path, pool_file, capsys):
    rc = main(["allocate", "--selector", str(tmp_path), "--pool", str(pool_file), "--prompts",
               str(pool_file), "--per-prompt", "2", "--out", str(tmp_path / "a.jsonl")])
    err = _error(capsys)
    assert rc == 2 and "--selector" in err and "is a folder, not a file" in err
    pytest.importorskip("trl")
    from rollwise.llm.models import resolve_model

    with pytest.raises(ValueError, match="is a file"):
        resolve_model(str(pool_file))


def test_genselect_train_names_the_flag(tmp_path, capsys):
    pytest.importorskip("trl")
    rc = main(["genselect", "train", "--tasks", str(tmp_path / "t.jsonl"), "--steps", "0"])
    assert rc == 2 and _error(capsys).startswith("rollwise genselect: error: --steps")


def test_allocate_refuses_another_embedder_before_embedding(tmp_path, pool_file, gps_state, capsys,
                                                           monkeypatch):
    """A selector trained on hashing embeddings asked to allocate with another embedder: the
    error names --embedder and both embedders, and the pool is never embedded."""
    from _support import save_tiny_llama

    import rollwise.pool

    tiny = save_tiny_llama(tmp_path / "tiny")
    capsys.readouterr()
    monkeypatch.setattr(rollwise.pool.PromptPool, "from_texts",
                        classmethod(lambda *a, **k: (_ for _ in ()).throw(AssertionError("embedded"))))
    rc = main(["allocate", "--selector", str(gps_state), "--pool", str(pool_file), "--prompts",
               str(pool_file), "--per-prompt", "2", "--embedder", f"hf:{tiny}",
               "--out", str(tmp_path / "a.jsonl")])
    err = _error(capsys)
    assert rc == 2 and "--embedder" in err and "hashing" in err and f"hf:{tiny}" in err
    assert not (tmp_path / "a.jsonl").exists()


@pytest.mark.parametrize("embedder", ["hf:/no/such/checkpoint", "hf:", "bogus", "policy"])
def test_bench_refuses_a_bad_embedder_before_work(embedder, pool_file, tmp_path, capsys, no_work):
    rc = main([*BENCH, "--pool", str(pool_file), "--out", str(tmp_path / "o"),
               "--embedder", embedder])
    assert rc == 2 and "--embedder" in _error(capsys)


def test_allocate_compares_embedders_by_kind_not_by_checkpoint_location():
    from rollwise.cli.allocate import _kind

    assert _kind("hf:/a/model@16-mean#0123abcd") == _kind("hf:/elsewhere/model@16-mean#ffff0000")
    assert _kind("hf:/a/model@16-mean#0123abcd") != _kind("hf:/a/model@12-mean#0123abcd")
    assert _kind("wordllama-l2_supercat-256") != _kind("hashing-256-3-5")


def test_resume_from_a_damaged_selector_is_one_line(tmp_path, capsys, no_model):
    from rollwise.llm.tasks import arithmetic

    out = tmp_path / "run"
    folder = _checkpoint(out, 5, make("gps", make_pool(len(arithmetic().train)), 8))
    path = folder / "rollwise_selector.pt"
    path.write_bytes(path.read_bytes()[:200])  # truncated
    rc = main(["train", "--output-dir", str(out), "--resume"])
    err = _error(capsys)
    assert rc == 2 and "is damaged" in err and "checkpoint-5" in err


@pytest.mark.parametrize("flags", [[], ["--overwrite"]])
def test_train_keeps_a_users_readme(flags, tmp_path, capsys, no_model):
    out = tmp_path / "run"
    out.mkdir()
    (out / "README.md").write_text("my notes")
    rc = main(["train", "--output-dir", str(out), *flags])
    assert rc == 2 and "README.md" in _error(capsys)
    assert (out / "README.md").read_text() == "my notes"


def test_train_without_room_for_its_checkpoints_is_refused_before_the_model(tmp_path, capsys,
                                                                           monkeypatch):
    """A full disk is found before the model loads, not as a torch error at the first save."""
    import shutil
    from collections import namedtuple

    import rollwise.llm.engine as engine
    import rollwise.llm.models

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"0" * 1000)
    monkeypatch.setattr(rollwise.llm.models, "resolve_model", lambda name: str(model))
    monkeypatch.setattr(engine, "run_grpo", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("training started")))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 5000, 5000))
    rc = main(["train", "--output-dir", str(tmp_path / "run"), "--model", str(model)])
    err = _error(capsys)
    assert rc == 2 and "--output-dir" in err and "GB free" in err and "--save-steps" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_train_into_a_read_only_folder_is_refused(tmp_path, capsys, monkeypatch):
    import rollwise.llm.models

    monkeypatch.setattr(rollwise.llm.models, "resolve_model", lambda name: str(tmp_path))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    rc = main(["train", "--output-dir", str(ro / "run")])
    assert rc == 2 and "not writable" in _error(capsys)


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0: "
                 "PytorchStreamWriter failed writing file data/0: file write failed"),
    OSError(28, "No space left on device"),
    type("SafetensorError", (Exception,), {})("Error while serializing: IoError(Os { code: 28 })"),
])
def test_storage_failures_become_one_error_naming_the_folder(error):
    from rollwise.llm.engine import storage_error

    out = storage_error(error, "runs/x")
    assert isinstance(out, OSError) and "--output-dir 'runs/x': writing failed" in str(out)
    assert "\n" not in str(out)
    assert storage_error(RuntimeError("CUDA out of memory"), "runs/x") is None
    assert storage_error(ValueError("bad"), "runs/x") is None


def test_a_disk_that_fills_during_training_ends_in_one_error(tiny, tmp_path, monkeypatch):
    """torch.save failing mid-checkpoint (as on a full disk) is one OSError naming the folder,
    which the CLI prints as one line."""
    import torch

    from rollwise.llm.engine import TrainSettings, run_grpo

    real = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if "checkpoint-" in str(f):
            raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter "
                               "failed writing file data/0: file write failed")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "run"
    settings = TrainSettings(model="unused", output_dir=str(out), steps=1, save_steps=1,
                             prompts_per_step=2, num_generations=2, max_new_tokens=4,
                             embedder="hashing", strategy="uniform", eval_prompts=0,
                             save_optimizer=True)
    rows = [{"id": f"q{i}", "prompt": f"{i} + {i} =", "question": f"{i} + {i}",
             "answer": str(2 * i)} for i in range(4)]
    with pytest.raises(OSError, match=f"--output-dir '{out}': writing failed .*file write failed"):
        run_grpo(settings, tiny[0], rows, [], lambda completions, **kw: [0.0] * len(completions))


KILLED_MID_SAVE = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from rollwise.integrations import trl as rt
from rollwise.llm.engine import TrainSettings, run_grpo

real, saves = rt.atomic_write_json, []
def dying(path, obj, *a, **k):  # the second checkpoint dies while its parts are written
    if "checkpoint-2" in str(path):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, obj, *a, **k)
rt.atomic_write_json = dying
rows = [{{"id": f"q{{i}}", "prompt": f"{{i}} + {{i}} =", "question": f"{{i}} + {{i}}",
         "answer": str(2 * i)}} for i in range(4)]
settings = TrainSettings(model="unused", output_dir={out!r}, steps=3, save_steps=1,
                         prompts_per_step=2, num_generations=2, max_new_tokens=4,
                         embedder="hashing", strategy="uniform", eval_prompts=0)
run_grpo(settings, {model!r}, rows, [], lambda completions, **kw: [0.0] * len(completions))
"""


def test_sigkill_during_a_checkpoint_save_leaves_the_last_whole_one(tiny, tmp_path):
    """A run killed (SIGKILL) while writing checkpoint-2 leaves it unmarked; resume takes
    checkpoint-1, the last whole one."""
    import subprocess
    import sys
    from pathlib import Path

    from rollwise.checkpoints import COMPLETE_FILE, last_whole_checkpoint

    out = tmp_path / "run"
    code = KILLED_MID_SAVE.format(tests=str(Path(__file__).parent), out=str(out), model=tiny[0])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (out / "checkpoint-2").is_dir() and not (out / "checkpoint-2" / COMPLETE_FILE).exists()
    assert last_whole_checkpoint(out) == out / "checkpoint-1"


def test_bench_refuses_a_heldout_file_that_shares_pool_prompts(pool_file, tmp_path, capsys):
    rows = json.loads(pool_file.read_text())
    held = tmp_path / "held.json"
    held.write_text(json.dumps(rows[:3] + [{"problem": "new one", "answer": "1"}]))
    out = tmp_path / "out"
    rc = main([*BENCH, "--pool", str(pool_file), "--heldout", str(held), "--out", str(out),
               "--strategies", "uniform"])
    err = _error(capsys)
    assert rc == 2 and "share 3 prompt(s)" in err and not out.exists()
