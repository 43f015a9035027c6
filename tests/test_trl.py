"""TRL integration: real GRPO steps with a tiny random model; the SmolLM2 checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("trl")

from _support import save_tiny_llama  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import GRPOConfig  # noqa: E402

from rollwise import PromptPool, make_selector  # noqa: E402
from rollwise.integrations.trl import SELECTOR_FILE, RollwiseGRPOTrainer  # noqa: E402
from rollwise.metrics import expected_calibration_error  # noqa: E402


class Recorder:
    """Reward function that records which prompt each scored completion belongs to."""

    __name__ = "recorder"

    def __init__(self):
        self.calls = []

    def __call__(self, completions, id, **kwargs):  # noqa: A002 - TRL passes dataset columns
        rewards = [float(len(c) % 2) for c in completions]  # arbitrary, varies across samples
        self.calls.append((list(id), rewards))
        return rewards


def _spy(selector):
    log = {"select": [], "observe": []}
    select, observe = selector.select, selector.observe

    def spy_select(*a, **k):
        out = select(*a, **k)
        log["select"].append(out.copy())
        return out

    def spy_observe(indices, rewards):
        log["observe"].append((np.asarray(indices).copy(), np.asarray(rewards).copy()))
        return observe(indices, rewards)

    selector.select, selector.observe = spy_select, spy_observe
    return log


def _trainer(tiny, out, steps, selector=None, save_steps=100):
    path, ds = tiny
    pool = PromptPool.from_texts(ds["prompt"], ids=ds["id"], embedder="hashing")
    selector = selector or make_selector("gps", pool, batch_size=3, seed=0, grad_steps=2)
    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=6, num_generations=2,
                      max_completion_length=6, max_steps=steps, logging_steps=1,
                      save_steps=save_steps, report_to="none", use_cpu=True, seed=0,
                      learning_rate=1e-3)
    recorder = Recorder()
    trainer = RollwiseGRPOTrainer(model=path, reward_funcs=recorder, args=args,
                                  train_dataset=ds, selector=selector)
    return trainer, recorder


def test_selector_chooses_and_observes_every_step(tiny, tmp_path):
    trainer, recorder = _trainer(tiny, tmp_path, steps=3)
    log = _spy(trainer.selector)
    trainer.train()
    ids = tiny[1]["id"]
    assert len(log["select"]) == 3 and len(log["observe"]) == 3 and len(recorder.calls) == 3
    for chosen, (obs_idx, obs_rew), (scored_ids, rewards) in zip(
            log["select"], log["observe"], recorder.calls, strict=True):
        # the prompts generated for are exactly the selected ones, each num_generations times
        assert scored_ids == [ids[i] for i in chosen for _ in range(2)]
        np.testing.assert_array_equal(obs_idx, chosen)
        np.testing.assert_array_equal(obs_rew, np.reshape(rewards, (3, 2)))
    assert trainer.rollouts_spent == 3 * 3 * 2
    esr = [h["rollwise/esr"] for h in trainer.state.log_history if "rollwise/esr" in h]
    assert len(esr) == 3
    # what GPS read of its regime, per step in the metrics and per batch in the selection log
    share = [h["rollwise/predicted_share"] for h in trainer.state.log_history
             if "rollwise/predicted_share" in h]
    assert share == [0.0, 0.0, 0.0]  # the default's warm-up: every batch chosen at random
    cooldown = [h["rollwise/cooldown"] for h in trainer.state.log_history if "rollwise/cooldown" in h]
    assert cooldown == [0.25] * 3
    assert [r["regime"]["predicted_share"] for r in trainer.selection_log] == [0.0] * 3


def test_checkpoint_resume_restores_selector(tiny, tmp_path):
    full, _ = _trainer(tiny, tmp_path / "a", steps=2, save_steps=1)
    log = _spy(full.selector)
    full.train()
    assert (tmp_path / "a" / "checkpoint-1" / SELECTOR_FILE).exists()
    from rollwise.checkpoints import COMPLETE_FILE, last_whole_checkpoint

    assert (tmp_path / "a" / "checkpoint-1" / COMPLETE_FILE).exists()  # marked whole, last
    assert last_whole_checkpoint(tmp_path / "a") == tmp_path / "a" / "checkpoint-2"
    resumed, _ = _trainer(tiny, tmp_path / "a", steps=2, save_steps=100)
    log_resumed = _spy(resumed.selector)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-1"))
    assert len(log_resumed["select"]) == 1
    np.testing.assert_array_equal(log_resumed["select"][0], log["select"][1])
    assert resumed.rollouts_spent == full.rollouts_spent


def test_bad_configuration_is_rejected(tiny, tmp_path):
    path, ds = tiny
    pool = PromptPool.from_texts(ds["prompt"][:5], embedder="hashing")
    with pytest.raises(ValueError, match="selector"):
        _trainer(tiny, tmp_path, steps=1, selector=make_selector("uniform", pool, 3))
    pool = PromptPool.from_texts(ds["prompt"], embedder="hashing")
    with pytest.raises(ValueError, match="batch_size"):
        _trainer(tiny, tmp_path, steps=1, selector=make_selector("uniform", pool, 2))


def test_train_settings_validation(tmp_path):
    import json

    from rollwise.llm.engine import TrainSettings, run
    from rollwise.llm.tasks import get_task

    with pytest.raises(ValueError, match="num_generations"):
        TrainSettings(num_generations=1).validate()
    with pytest.raises(ValueError, match="strategy"):
        TrainSettings(strategy="nope").validate()
    with pytest.raises(ValueError, match="does not exist"):
        run(TrainSettings(model="./no/such/model"))
    with pytest.raises(ValueError, match="unknown task"):
        get_task("nope")
    (tmp_path / "p.json").write_text(json.dumps([{"problem": "1+1"}]))
    with pytest.raises(ValueError, match="answer"):
        get_task(str(tmp_path / "p.json"))


def test_smollm2_checkpoint_builds_and_generates(tmp_path):
    """The offline SmolLM2 GGUF converts to a trainable fp32 checkpoint that generates text."""
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rollwise.llm.models import smollm2

    path = smollm2(cache_dir=tmp_path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert getattr(model, "hf_quantizer", None) is None
    assert all(p.requires_grad and p.dtype.is_floating_point for p in model.parameters())
    tok = AutoTokenizer.from_pretrained(path)
    msgs = [{"role": "user", "content": "What is 2 + 3?"}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(text.strip()) > 0
    assert smollm2(cache_dir=tmp_path) == path  # built once, then reused
    # the converted checkpoint computes what transformers' own GGUF loading computes
    import torch

    from rollwise.llm.models import smollm2_gguf

    gguf = smollm2_gguf()
    direct = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
    with torch.no_grad():
        ours, theirs = model(**ids).logits, direct(**ids).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert int(ours[0, -1].argmax()) == int(theirs[0, -1].argmax())


def test_cli_train_rejects_bad_input_before_training(capsys, tmp_path):
    from rollwise.cli import main

    assert main(["train", "--num-generations", "1"]) == 2
    assert "--num-generations" in capsys.readouterr().err
    assert main(["train", "--model", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_selection_and_evaluation_logs(tiny, tmp_path):
    """Every generation batch is logged with what was chosen and how it did; an evaluation gives
    reward and truncation per level, the same figures the reward function returned."""
    path, ds = tiny
    ds = ds.map(lambda row, i: {"level": i % 2}, with_indices=True)
    trainer, recorder = _trainer((path, ds), tmp_path, steps=2)
    trainer.eval_dataset = ds
    log = _spy(trainer.selector)
    trainer.train()
    assert [r["indices"] for r in trainer.selection_log] == [c.tolist() for c in log["select"]]
    for record, (_, rewards) in zip(trainer.selection_log, log["observe"], strict=True):
        assert record["ids"] == [ds[i]["id"] for i in record["indices"]]
        assert record["level"] == [i % 2 for i in record["indices"]]
        np.testing.assert_allclose(record["success_rate"], rewards.mean(axis=1), atol=1e-4)
        assert len(record["predicted"]) == 3 and 0 <= record["truncation_rate"] <= 1
        assert 0 < record["completion_length"] <= 6
    # lengths as TRL itself logged them for the same batches (mean length; its clipped ratio
    # counts completions without a final EOS, ours those at the length limit, EOS or not)
    logged = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    assert len(logged) == len(trainer.selection_log)
    for record, h in zip(trainer.selection_log, logged, strict=True):
        assert record["completion_length"] == pytest.approx(h["completions/mean_length"])
        assert record["truncation_rate"] >= h["completions/clipped_ratio"] - 1e-9
    recorder.calls.clear()
    trainer.evaluate()
    scored = [(pid, r) for ids, rewards in recorder.calls for pid, r in zip(ids, rewards, strict=True)]
    level_of = dict(zip(ds["id"], ds["level"], strict=True))
    result = trainer.evaluation_log[-1]
    assert result["n"] == len(scored) > 0
    for level in (0, 1):
        expect = np.mean([r for pid, r in scored if level_of[pid] == level])
        assert result["levels"][str(level)]["reward"] == pytest.approx(expect)
        assert 0 <= result["levels"][str(level)]["truncation_rate"] <= 1
    assert "calibration" not in result  # a ready selector, embedder not given: unknown
    trainer.create_model_card(model_name="m")  # TRL's card names no base for a local checkpoint
    card = (tmp_path / "README.md").read_text()
    assert "[None]" not in card and f"`{path}`" in card and "rollwise" in card
    hub = "HuggingFaceTB/SmolLM2-135M-Instruct"
    trainer.base_model = hub
    trainer.create_model_card(model_name="m")
    assert f"[{hub}](https://huggingface.co/{hub})" in (tmp_path / "README.md").read_text()
    trainer._embedder = "hashing"  # as if given: the held-out calibration of GPS's predictions
    trainer.evaluate()
    cal = trainer.evaluation_log[-1]["calibration"]
    assert cal["prompts"] == len({pid for pid, _ in scored})
    # recomputed from the rewards the reward function returned and the selector's own predictions
    scored = [(pid, r) for ids, rewards in recorder.calls[-len(recorder.calls) // 2:]
              for pid, r in zip(ids, rewards, strict=True)]
    by_id: dict[str, list[float]] = {}
    for pid, r in scored:
        by_id.setdefault(pid, []).append(r)
    text_of = dict(zip(ds["id"], ds["prompt"], strict=True))
    rates = np.array([np.mean(v) for v in by_id.values()])
    raw = trainer.selector.predict_texts([text_of[p] for p in by_id], embedder="hashing")
    assert cal["mean_rate"] == pytest.approx(rates.mean())
    assert cal["mean_predicted"] == pytest.approx(raw.mean())
    assert cal["ece_raw"] == pytest.approx(expected_calibration_error(raw, rates))
    assert cal["ece_calibrated"] == pytest.approx(
        expected_calibration_error(trainer.selector.calibration().mean(raw), rates))


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_chat"), chat=True)


def test_selector_by_name_builds_the_pool_from_the_dataset(tiny_chat, tmp_path):
    """RollwiseGRPOTrainer(selector="gps") on a plain TRL set-up: conversational prompts, the
    pool built from the user messages, the batch size from the config."""
    path = tiny_chat
    rows = [{"prompt": [{"role": "system", "content": "be brief"},
                        {"role": "user", "content": f"{i} + {i} ="}], "answer": str(2 * i),
             "id": f"q{i}"} for i in range(10)]
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=6, num_generations=2,
                      max_completion_length=4, max_steps=1, report_to="none", use_cpu=True, seed=3)
    trainer = RollwiseGRPOTrainer(model=path, reward_funcs=Recorder(), args=args,
                                  train_dataset=Dataset.from_list(rows), selector="gps",
                                  selector_kwargs={"grad_steps": 1}, embedder="hashing")
    sel = trainer.selector
    assert sel.strategy == "gps" and sel.batch_size == 3 and sel.seed == 3 and sel.cfg.grad_steps == 1
    assert list(sel.pool.texts) == [f"{i} + {i} =" for i in range(10)]
    assert list(sel.pool.ids) == [f"q{i}" for i in range(10)]
    trainer.train()
    assert sel.step == 1
    with pytest.raises(ValueError, match="prompt_column"):
        RollwiseGRPOTrainer(model=path, reward_funcs=Recorder(), args=args,
                            train_dataset=Dataset.from_list(rows), prompt_column="question",
                            embedder="hashing")
    with pytest.raises(ValueError, match="unknown strategy"):
        RollwiseGRPOTrainer(model=path, reward_funcs=Recorder(), args=args,
                            train_dataset=Dataset.from_list(rows), selector="nope")


def test_trl_quickstart_example_runs(tiny_chat, tmp_path):
    """examples/trl: TRL's quick-start shape with one changed import line, on a tiny model."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).parents[1] / "examples" / "trl" / "grpo_quickstart.py"
    code = script.read_text().split('"""', 2)[2]  # after the module docstring
    assert [line for line in code.splitlines() if "rollwise" in line] == [
        "from rollwise.integrations.trl import RollwiseGRPOTrainer as GRPOTrainer  # the one changed line"]
    spec = importlib.util.spec_from_file_location("grpo_quickstart", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trainer = module.main(tiny_chat, str(tmp_path / "out"), steps=2)
    assert trainer.selector.strategy == "gps" and trainer.selector.step == 2
    assert len(trainer.selection_log) == 2


def test_shared_prompt_forward_trains_as_trl_does(tiny, tmp_path, monkeypatch):
    """Three steps with each group's prompt run once in the loss, against TRL's own pass: the same
    completions, rewards and selections, the same gradients up to float rounding (the loss itself
    is 0 at ratio 1 with zero-mean advantages and equal lengths, so the gradient norm is read)."""
    import rollwise.integrations.prefill as prefill

    taken = []
    shared = prefill.shared_prompt_logps

    def counting(*args, **kwargs):
        out = shared(*args, **kwargs)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(prefill, "shared_prompt_logps", counting)
    path, ds = tiny
    runs = {}
    for share in (False, True):
        args = GRPOConfig(output_dir=str(tmp_path / str(share)), per_device_train_batch_size=6,
                          num_generations=2, max_completion_length=6, max_steps=3,
                          logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
                          seed=0, learning_rate=1e-2, gradient_checkpointing=False)
        recorder = Recorder()
        trainer = RollwiseGRPOTrainer(model=path, reward_funcs=recorder, args=args,
                                      train_dataset=ds, selector="uniform", embedder="hashing",
                                      share_prompt_forward=share)
        trainer.train()
        norms = [h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h]
        runs[share] = (recorder.calls, [r["indices"] for r in trainer.selection_log], norms)
    assert taken and all(taken)  # the shared pass ran, every step (and only with the flag)
    assert runs[True][0] == runs[False][0] and runs[True][1] == runs[False][1]
    assert len(runs[True][2]) == 3 and any(abs(x) > 1e-4 for x in runs[False][2])
    assert np.allclose(runs[True][2], runs[False][2], rtol=1e-4, atol=1e-6)


def _refreshing_trainer(tiny, out, steps, save_steps=100, **extra):
    path, ds = tiny
    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=6, num_generations=2,
                      max_completion_length=6, max_steps=steps, logging_steps=1,
                      save_steps=save_steps, report_to="none", use_cpu=True, seed=0,
                      learning_rate=1e-2)
    return RollwiseGRPOTrainer(model=path, reward_funcs=Recorder(), args=args, train_dataset=ds,
                               selector="gps", selector_kwargs={"grad_steps": 2},
                               embedder=f"hf:{path}@1-mean", **{"embed_refresh_steps": 1, **extra})


def test_embed_refresh_re_embeds_the_pool_from_the_current_policy(tiny, tmp_path):
    """``embed_refresh_steps``: after every N steps the pool holds the current policy's pooled
    hidden states (at the embedder's layer and pooling); checkpoints keep them, and a resumed
    run selects as the uninterrupted one did."""
    from rollwise.embed import PolicyEmbedder
    from rollwise.integrations.trl import EMBEDDINGS_FILE

    trainer = _refreshing_trainer(tiny, tmp_path / "a", steps=2, save_steps=1)
    start = trainer.selector.pool.embeddings.copy()
    log = _spy(trainer.selector)
    trainer.train()
    assert [r["step"] for r in trainer.embedding_refreshes] == [1, 2]
    for r in trainer.embedding_refreshes:
        assert r["mean_cosine_to_previous"] < 1.0 and r["mean_centred_cosine_to_previous"] < 1.0
        assert r["displacement_over_spread"] > 0.0
    now = PolicyEmbedder(trainer.model, trainer.processing_class, layer=1).encode(
        list(tiny[1]["prompt"]))
    np.testing.assert_allclose(trainer.selector.pool.embeddings, now, atol=1e-5)
    assert not np.allclose(now, start, atol=1e-4)  # the policy moved (learning rate 1e-2)
    saved = np.load(tmp_path / "a" / "checkpoint-1" / EMBEDDINGS_FILE)
    assert not np.allclose(saved, start, atol=1e-4)

    resumed = _refreshing_trainer(tiny, tmp_path / "a", steps=2)
    log_resumed = _spy(resumed.selector)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-1"))
    np.testing.assert_array_equal(log_resumed["select"][0], log["select"][1])
    assert [r["step"] for r in resumed.embedding_refreshes] == [1, 2]


def test_embed_refresh_needs_the_policys_hf_embedder(tiny, tmp_path):
    path, ds = tiny
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=6, num_generations=2,
                      max_completion_length=4, max_steps=1, report_to="none", use_cpu=True)
    for embedder in ("hashing", None):
        with pytest.raises(ValueError, match="embed_refresh_steps.*'hf:' embedder"):
            RollwiseGRPOTrainer(model=path, reward_funcs=Recorder(), args=args, train_dataset=ds,
                                selector="gps", embedder=embedder, embed_refresh_steps=2)
    with pytest.raises(ValueError, match="embed_refresh_steps"):
        _refreshing_trainer(tiny, tmp_path, steps=1, embed_refresh_steps=0)
    other = save_tiny_llama(tmp_path / "narrow", hidden=16)  # not the policy: another width
    with pytest.raises(ValueError, match="embed_refresh_steps.*16 dimensions.*32"):
        RollwiseGRPOTrainer(model=path, reward_funcs=Recorder(), args=args, train_dataset=ds,
                            selector="gps", embedder=f"hf:{other}", embed_refresh_steps=2)
    from rollwise.llm.engine import TrainSettings

    with pytest.raises(ValueError, match="embed_refresh_steps.*--embedder policy"):
        TrainSettings(embedder="wordllama", embed_refresh_steps=5).validate()
    TrainSettings(embedder="policy", embed_refresh_steps=5).validate()
    TrainSettings(embedder="policy@16-body", embed_refresh_steps=5).validate()
    with pytest.raises(ValueError, match="embedder.*pooling"):
        TrainSettings(embedder="policy@16-max").validate()
    with pytest.raises(ValueError, match="embedder.*layer"):
        TrainSettings(embedder="policy@x").validate()


def test_cli_summary_line_reports_the_run_log_not_trls_batch_means():
    """81 held-out prompts x 4 samples in batches of 32: TRL's eval_reward averages 11 batch
    means (the last of 4 completions weighs 1/11); the line reports the run log's figures."""
    from rollwise.cli.train import summary_line
    from rollwise.integrations.trl import summarise_by_level

    rewards = [0.0] * 320 + [1.0] * 4  # the uneven last batch is all correct
    batches = [rewards[i:i + 32] for i in range(0, len(rewards), 32)]
    trl_mean = float(np.mean([np.mean(b) for b in batches]))
    record = summarise_by_level([(None, r, False) for r in rewards])
    assert record["n"] == 324 and record["reward"] == pytest.approx(4 / 324)
    assert abs(trl_mean - record["reward"]) > 0.07  # the two figures really differ here
    result = {"steps": 10, "rollouts": 320, "log_history": [{"eval_reward": trl_mean, "step": 10}],
              "evaluations": [{"step": 0, **summarise_by_level([(None, 0.0, False)] * 324)},
                              {"step": 10, **record}]}
    line = summary_line("gps", "out", result)
    assert "held-out accuracy 0.000 (step 0) -> 0.012 (step 10; n = 324 completions)" in line
    assert f"{trl_mean:.3f}" not in line
    assert "no held-out evaluation" in summary_line("gps", "out", {**result, "evaluations": []})
