"""TRL's vLLM path (``use_vllm=True``, server mode) with the vLLM backend stubbed (vLLM needs a
GPU): the selector's choice is made before generation, so the server is asked for exactly the
chosen prompts, in order, once each, and with per-prompt budgets for each of a prompt's groups."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("trl")

import trl.trainer.grpo_trainer as grpo_module  # noqa: E402
from trl import GRPOConfig  # noqa: E402

from rollwise import PromptPool, make_selector  # noqa: E402
from rollwise.integrations.trl import RollwiseGRPOTrainer  # noqa: E402

G, B = 2, 3


class FakeServer:
    """Stands in for ``trl.generation.vllm_generation.VLLMGeneration`` in server mode: like it,
    it reads the unique prompts as every ``num_generations``-th row of the batch and returns
    ``num_generations`` completions for each (random token ids)."""

    asked: list[list[list[int]]] = []  # unique prompts of every generate call
    syncs = 0

    def __init__(self, model, accelerator, processing_class, **kwargs):
        self.mode = kwargs["mode"]
        self.max_len = kwargs["max_completion_length"]
        self.rng = np.random.default_rng(0)
        self.vocab = processing_class.vocab_size

    def sync_weights(self):
        FakeServer.syncs += 1

    def generate(self, prompts, images, num_generations, profiler=None):
        unique = prompts[::num_generations]
        FakeServer.asked.append([list(p) for p in unique])
        completions = [self.rng.integers(5, self.vocab, size=self.max_len).tolist()
                       for _ in unique for _ in range(num_generations)]
        logprobs = [[[-1.0] for _ in c] for c in completions]
        return prompts, completions, logprobs, None


def _trainer(tiny, out, monkeypatch, **kwargs):
    monkeypatch.setattr(grpo_module, "VLLMGeneration", FakeServer)
    FakeServer.asked, FakeServer.syncs = [], 0
    path, ds = tiny
    pool = PromptPool.from_texts(ds["prompt"], ids=ds["id"], embedder="hashing")
    selector = make_selector("mopps", pool, batch_size=B, seed=0)
    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=B * G, num_generations=G,
                      max_completion_length=6, max_steps=3, logging_steps=1, save_strategy="no",
                      report_to="none", use_cpu=True, seed=0, learning_rate=1e-3, use_vllm=True,
                      vllm_mode="server", vllm_importance_sampling_correction=False)
    trainer = RollwiseGRPOTrainer(model=path, reward_funcs=lambda completions, **kw:
                                  [float(len(c) % 2) for c in completions], args=args,
                                  train_dataset=ds, selector=selector, **kwargs)
    return trainer


def _asked_ids(trainer, tiny):
    """The dataset rows of the prompts the server was asked for, per generate call."""
    tok = trainer.processing_class
    by_text = {text: i for i, text in enumerate(tiny[1]["prompt"])}
    return [[by_text[tok.decode(p, skip_special_tokens=True).strip()] for p in call]
            for call in FakeServer.asked]


def test_vllm_server_generates_exactly_the_selected_prompts(tiny, tmp_path, monkeypatch):
    trainer = _trainer(tiny, tmp_path, monkeypatch)
    trainer.train()
    chosen = [r["indices"] for r in trainer.selection_log]
    assert len(chosen) == 3 and FakeServer.syncs >= 1
    assert _asked_ids(trainer, tiny) == chosen


def test_vllm_server_with_budgets_gets_each_group_of_a_prompt(tiny, tmp_path, monkeypatch):
    trainer = _trainer(tiny, tmp_path, monkeypatch, budget_objective="rollouts", budget_max_groups=3)
    trainer.train()
    want = [[i for i, g in zip(r["indices"], r["groups"], strict=True) for _ in range(g)]
            for r in trainer.selection_log]
    assert _asked_ids(trainer, tiny) == want
    assert any(len(set(call)) < len(call) for call in want)  # a prompt with several groups
