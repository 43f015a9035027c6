"""P²O distillation in TRL's GRPO loop: real GRPO steps with a tiny random model on CPU."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("trl")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from trl import GRPOConfig  # noqa: E402

from rollwise import PromptPool, make_selector  # noqa: E402
from rollwise.rescue import HardPromptBank, RescueGRPOTrainer, render_template  # noqa: E402
from rollwise.rescue.distill import RESCUE_STATE_VERSION, wrap_prompt  # noqa: E402
from rollwise.rescue.examples import (  # noqa: E402
    EXAMPLES_HEADER,
    SolvedExampleStore,
    example_template,
)

TEMPLATE = "Think step by step: {problem} ?"
N_GEN = 2




class Rewards:
    """Reward function: by default arbitrary per completion; ``guided=True`` rewards guided rows only.

    Records, per call, the prompts TRL scored and the guided mask at that moment.
    """

    __name__ = "rewards"

    def __init__(self, guided: bool = False):
        self.guided, self.trainer, self.calls = guided, None, []

    def __call__(self, prompts, completions, **kwargs):
        mask = self.trainer.guided_rows.copy()
        if self.guided:
            rewards = [float(g) for g in mask]
        else:
            rewards = [float(len(c) % 2) for c in completions]
        self.calls.append({"prompts": list(prompts), "guided": mask, "rewards": np.array(rewards)})
        return rewards


def _hard_bank(ids):
    bank = HardPromptBank(window=1)
    bank.observe(list(ids), np.zeros((len(ids), 1)))
    return bank


def _trainer(tiny, out, bank, steps=1, rewards=None, lr=1e-3, **kw):
    path, ds = tiny
    pool = PromptPool.from_texts(ds["prompt"], ids=ds["id"], embedder="hashing")
    selector = make_selector("uniform", pool, batch_size=3, seed=0)
    args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=6, num_generations=N_GEN,
                      max_completion_length=6, max_steps=steps, logging_steps=1, save_steps=100,
                      report_to="none", use_cpu=True, seed=0, learning_rate=lr)
    rewards = rewards or Rewards()
    trainer = RescueGRPOTrainer(model=path, reward_funcs=rewards, args=args, train_dataset=ds,
                                selector=selector, bank=bank, **{"template": TEMPLATE, **kw})
    rewards.trainer = trainer
    return trainer, rewards


def _unpadded(ids, mask):
    return [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]


def _completion_logp(model, prompt_ids, completion_ids, completion_mask):
    """Summed log-probability of each completion given its (left-padded) prompt."""
    prompt_mask = (prompt_ids != model.config.pad_token_id).long()
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attn = torch.cat([prompt_mask, completion_mask], dim=1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attn).logits[:, prompt_ids.shape[1] - 1 : -1]
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)
    return (logp * completion_mask).sum(dim=1)


def _record_generated(trainer):
    """The prompt token ids the trainer generates from, appended as it generates."""
    generated = []
    generate = trainer._generate_single_turn

    def spy(prompt_ids, *args, **kwargs):
        generated.extend(list(p) for p in prompt_ids)
        return generate(prompt_ids, *args, **kwargs)

    trainer._generate_single_turn = spy
    return generated


def test_guided_rows_sample_under_template_and_carry_original_prompt(tiny, tmp_path):
    trainer, rewards = _trainer(tiny, tmp_path, _hard_bank(tiny[1]["id"]))
    generated = _record_generated(trainer)
    trainer.model.train()
    batch = trainer._generate_and_score_completions([tiny[1][0]] * 6)
    tok = trainer.processing_class
    prompts = rewards.calls[0]["prompts"]
    np.testing.assert_array_equal(trainer.guided_rows, [False, True] * 3)  # the last row of each group
    trained = _unpadded(batch["prompt_ids"], batch["prompt_mask"])
    for j, prompt in enumerate(prompts):
        original = tok(prompt)["input_ids"]
        assert trained[j] == original  # every row is trained as a completion of the bare prompt
        if trainer.guided_rows[j]:
            assert generated[j] == tok(render_template(TEMPLATE, prompt))["input_ids"] != original
        else:
            assert generated[j] == original
    assert trainer.guided_rollouts == 3 and trainer.rollouts_spent == 6


def test_problems_make_guided_rows_sample_the_template_around_the_bare_problem(tiny, tmp_path):
    ids = tiny[1]["id"]
    problems = {pid: f"problem {pid}" for pid in ids}
    trainer, rewards = _trainer(tiny, tmp_path, _hard_bank(ids), problems=problems)
    generated = _record_generated(trainer)
    trainer.model.train()
    batch = trainer._generate_and_score_completions([tiny[1][0]] * 6)
    tok = trainer.processing_class
    prompts = rewards.calls[0]["prompts"]
    trained = _unpadded(batch["prompt_ids"], batch["prompt_mask"])
    for j, prompt in enumerate(prompts):
        assert trained[j] == tok(prompt)["input_ids"]
        if trainer.guided_rows[j]:
            pid = ids[list(tiny[1]["prompt"]).index(prompt)]
            assert generated[j] == tok(render_template(TEMPLATE, problems[pid]))["input_ids"]


def test_rescue_state_round_trip_and_bad_state_changes_nothing(tiny, tmp_path):
    ids = tiny[1]["id"]
    trainer, _ = _trainer(tiny, tmp_path, _hard_bank(ids[:4]), templates={"q1": "Only q1: {problem}"})
    trainer.gepa_rollouts, trainer.guided_rollouts = 7, 3
    trainer.evolutions.append({"step": 2, "tried": 1})
    state = trainer.rescue_state()
    other, _ = _trainer(tiny, tmp_path / "b", HardPromptBank(window=1), template=None)
    for bad in ({**state, "gepa_rollouts": -1}, {**state, "template": " "}, {**state, "version": 9},
                {k: v for k, v in state.items() if k != "bank"},
                {**state, "bank": {**state["bank"], "entries": [{"id": 3}]}}):
        with pytest.raises(ValueError):
            other.load_rescue_state(bad)
        assert other.template is None and other.gepa_rollouts == 0 and len(other.bank) == 0
    other.load_rescue_state(state)
    assert other.rescue_state() == state
    assert other.bank.hard_ids() == list(ids[:4]) and other.template_for("q1") == "Only q1: {problem}"
    assert other.total_rollouts == other.rollouts_spent + 7


def test_a_template_that_renders_the_prompt_unchanged_guides_nothing(tiny, tmp_path):
    ids, prompts = tiny[1]["id"], tiny[1]["prompt"]
    problems = {pid: prompt[: -len(" =")] for pid, prompt in zip(ids, prompts, strict=True)}  # "i + i"
    trainer, _ = _trainer(tiny, tmp_path, _hard_bank(ids), template="{problem} =", problems=problems)
    trainer.model.train()
    trainer._generate_and_score_completions([tiny[1][0]] * 6)
    assert not trainer.guided_rows.any() and trainer.guided_rollouts == 0
    trainer.template = "Add: {problem} ="
    trainer._generate_and_score_completions([tiny[1][0]] * 6)
    assert trainer.guided_rows.sum() == 3


def test_problems_must_cover_the_pool(tiny, tmp_path):
    with pytest.raises(ValueError, match="problems lacks 11 pool ids"):
        _trainer(tiny, tmp_path, _hard_bank(["q0"]), problems={"q0": "x"})


def _example_store(tiny, ids):
    """Solved examples for the pool prompts ``ids`` (their pool embeddings, 'i + i = 2i')."""
    pool = PromptPool.from_texts(tiny[1]["prompt"], ids=tiny[1]["id"], embedder="hashing")
    store = SolvedExampleStore()
    for pid in ids:
        i = pool.index_of(pid)
        store.add(pid, tiny[1]["prompt"][i], f" {2 * i}. Answer: {2 * i}", pool.embeddings[i])
    return store


@pytest.mark.parametrize("kind", ["instruction", "examples", "prefix"])
def test_step_raises_guided_completion_logp_under_original_prompt(tiny, tmp_path, kind):
    # a template (or a response prefix) under which the (stand-in) policy succeeds where it fails
    # bare: guided rows are rewarded, bare ones not; one step must raise the guided completions'
    # log-probability under the bare prompt (with a prefix: of the prefix and what follows it)
    ids = tiny[1]["id"]
    extra = {"instruction": {}, "prefix": dict(template=None, response_prefix=lambda p: " so ="),
             "examples": dict(template=example_template([], nearest=2),
                              examples=_example_store(tiny, ids[6:]))}[kind]
    examples = kind == "examples"
    trainer, _ = _trainer(tiny, tmp_path, _hard_bank(ids[:6]) if examples else _hard_bank(ids),
                          rewards=Rewards(guided=True), lr=1e-2, **extra)
    prefix_ids = (trainer.processing_class(text=[" so ="], add_special_tokens=False)["input_ids"][0]
                  if kind == "prefix" else None)
    if examples:
        generated = _record_generated(trainer)
        trainer.selector = make_selector("uniform", trainer.selector.pool.subset(range(6)), batch_size=3,
                                         seed=0)
    batches = []
    generate_and_score = trainer._generate_and_score_completions

    def keep(inputs):
        batches.append(generate_and_score(inputs))
        return batches[-1]

    trainer._generate_and_score_completions = keep
    before = AutoModelForCausalLM.from_pretrained(tiny[0]).eval()
    trainer.train()
    batch, guided = batches[0], torch.as_tensor(trainer.guided_rows)
    assert guided.any() and (batch["advantages"][guided] > 0).all()
    args = (batch["prompt_ids"][guided], batch["completion_ids"][guided], batch["completion_mask"][guided])
    logp_before = _completion_logp(before, *args)
    logp_after = _completion_logp(trainer.model.eval(), *args)
    assert (logp_after > logp_before).all(), (logp_before, logp_after)
    if prefix_ids is not None:  # the trained completions start with the prefix
        assert all(row[: len(prefix_ids)] == prefix_ids for row in _unpadded(*args[1:]))
    if examples:  # guided rows were sampled with two solved examples near the prompt, not its own
        tok = trainer.processing_class
        shown = [tok.decode(generated[j]) for j in np.flatnonzero(trainer.guided_rows)]
        assert all(text.count("Solution:") == 2 and text.startswith(EXAMPLES_HEADER) for text in shown)


class CompletionRewards(Rewards):
    """Rewards as ``Rewards``, recording the completions TRL scored as well."""

    def __call__(self, prompts, completions, **kwargs):
        rewards = super().__call__(prompts, completions, **kwargs)
        self.calls[-1]["completions"] = list(completions)
        return rewards


def test_a_response_prefix_starts_guided_answers_scored_and_trained_under_the_bare_prompt(tiny, tmp_path):
    prefix = " answer ="
    # a rule that applies to some problems only: prompts of even numbers get the prefix
    rule = lambda problem: prefix if int(problem.split()[0]) % 2 == 0 else None  # noqa: E731
    trainer, rewards = _trainer(tiny, tmp_path, _hard_bank(tiny[1]["id"]), rewards=CompletionRewards(),
                                template=None, response_prefix=rule)
    generated = _record_generated(trainer)
    trainer.model.train()
    batch = trainer._generate_and_score_completions([tiny[1][0]] * 6)
    tok = trainer.processing_class
    prefix_ids = tok(text=[prefix], add_special_tokens=False)["input_ids"][0]
    call = rewards.calls[0]
    chosen = [int(p.split()[0]) for p in call["prompts"]]
    expected = [n % 2 == 0 and j % N_GEN == N_GEN - 1 for j, n in enumerate(chosen)]
    np.testing.assert_array_equal(trainer.guided_rows, expected)
    assert any(expected) and not all(expected)
    trained_prompts = _unpadded(batch["prompt_ids"], batch["prompt_mask"])
    completions = _unpadded(batch["completion_ids"], batch["completion_mask"])
    for j, prompt in enumerate(call["prompts"]):
        original = tok(prompt)["input_ids"]
        assert trained_prompts[j] == original  # trained as a completion of the bare prompt
        if expected[j]:
            assert generated[j] == original + prefix_ids  # generated on from the prefix
            assert completions[j][: len(prefix_ids)] == prefix_ids  # which the completion holds
            assert call["completions"][j].startswith(prefix)  # and the reward function scores
        else:
            assert generated[j] == original
            assert not call["completions"][j].startswith(prefix)
    assert trainer._row_prefixes is None  # nothing left behind for the next generation


def test_a_response_prefix_must_be_callable(tiny, tmp_path):
    with pytest.raises(TypeError, match="response_prefix"):
        _trainer(tiny, tmp_path, _hard_bank(["q0"]), response_prefix="Answer:")


def test_restate_expression():
    from rollwise.rescue.prefixes import RESPONSE_PREFIXES, restate_expression

    question = "State the final answer to the following arithmetic problem: 8 - 7 ="
    assert restate_expression(question) == "8 - 7 = "
    assert restate_expression(question + "\nGive the final answer on the last line.") == "8 - 7 = "
    for other in ("What is 8 - 7?", "Solve: x + 1 = 2 for x", "", "Compute: =", "  \n"):
        assert restate_expression(other) is None, other
    assert RESPONSE_PREFIXES["restate"] is restate_expression and RESPONSE_PREFIXES["none"] is None


def test_selector_and_bank_observe_only_unguided_rewards(tiny, tmp_path):
    ids = tiny[1]["id"]
    trainer, rewards = _trainer(tiny, tmp_path, _hard_bank(ids[:6]), steps=4)
    seen = {"selector": [], "bank": []}
    for name, obj in (("selector", trainer.selector), ("bank", trainer.bank)):
        observe = obj.observe

        def spy(keys, rew, _observe=observe, _log=seen[name]):
            _log.append((list(np.asarray(keys)), np.array(rew)))
            return _observe(keys, rew)

        obj.observe = spy
    trainer.train()
    assert len(rewards.calls) == 4
    assert any(c["guided"].any() for c in rewards.calls)  # some steps were guided
    for name, keys_of in (("selector", lambda c: list(trainer.selector.pool.ids[i] for i in c)),
                          ("bank", list)):
        observed = {}
        for keys, rew in seen[name]:
            for key, row in zip(keys_of(keys), rew, strict=True):
                observed.setdefault(key, []).append(row.tolist())
        expected = {}
        for call in rewards.calls:
            guided, rew = call["guided"].reshape(-1, N_GEN), call["rewards"].reshape(-1, N_GEN)
            for g in range(len(guided)):
                key = ids[[p for p in tiny[1]["prompt"]].index(call["prompts"][g * N_GEN])]
                expected.setdefault(key, []).append(rew[g][~guided[g]].tolist())
        assert observed == expected, name


def test_bad_configuration_is_rejected(tiny, tmp_path):
    bank = _hard_bank(["q0"])
    with pytest.raises(ValueError, match="guided_per_group"):
        _trainer(tiny, tmp_path, bank, guided_per_group=N_GEN)
    with pytest.raises(TypeError, match="HardPromptBank"):
        _trainer(tiny, tmp_path, {"q0": True})
    with pytest.raises(ValueError, match="template"):
        _trainer(tiny, tmp_path, bank, template=" ")


def test_wrap_prompt_text_and_chat():
    assert wrap_prompt("2+2", "Q: {problem}!") == "Q: 2+2!"
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2"}]
    wrapped = wrap_prompt(chat, "Q: {problem}!")
    assert wrapped[1]["content"] == "Q: 2+2!" and wrapped[0] == chat[0]
    assert chat[1]["content"] == "2+2"  # the dataset's row is not modified
    with pytest.raises(ValueError, match="user message"):
        wrap_prompt([{"role": "system", "content": "x"}], "{problem}")
    # with the bare problem, the template replaces the user text (no doubled instruction)
    chat = [{"role": "user", "content": "2+2\nAnswer with a number."}]
    assert wrap_prompt(chat, "{problem}\nAnswer with a number.", "2+2") == chat
    assert wrap_prompt("2+2 then stop", "Q: {problem}!", "2+2") == "Q: 2+2!"


def test_successes_feed_the_solved_example_store(tiny, tmp_path):
    def every_other(completions, **kwargs):
        return [float(j % 2) for j in range(len(completions))]

    store = SolvedExampleStore(capacity=64)
    trainer, _ = _trainer(tiny, tmp_path, HardPromptBank(window=1), template=None, examples=store,
                          rewards=every_other)
    completions = []
    calc = trainer._calculate_rewards

    def keep(inputs, prompts, comps, ids_list):
        completions.extend(zip([p for p in prompts], comps, strict=True))
        return calc(inputs, prompts, comps, ids_list)

    trainer._calculate_rewards = keep
    trainer.model.train()
    trainer._generate_and_score_completions([tiny[1][0]] * 6)
    solved = {(prompt, c) for j, (prompt, c) in enumerate(completions) if j % 2 and c.strip()}
    assert len(store) == len(solved) > 0
    pool = trainer.selector.pool
    for ex in store.examples:  # each success with its prompt's text and pool embedding
        i = pool.index_of(ex.pid)
        assert (ex.problem, ex.solution) in solved and ex.problem == tiny[1]["prompt"][i]
        assert store.nearest(pool.embeddings[i], 1)[0].pid == ex.pid  # stored with its embedding
    assert trainer.rescue_state()["examples"] == store.state_dict()


def test_template_for_fills_the_nearest_solved_examples(tiny, tmp_path):
    ids = tiny[1]["id"]
    store = _example_store(tiny, ids)
    trainer, _ = _trainer(tiny, tmp_path, _hard_bank(ids[:2]), template=example_template([], nearest=3),
                          examples=store)
    text = trainer.template_for("q0")
    pool = trainer.selector.pool
    nearest = store.nearest(pool.embeddings[0], 3, exclude=["q0"])
    assert text.count("Solution:") == 3 and all(ex.problem in text for ex in nearest)
    assert "0 + 0 =" not in text.split("Problem: {problem}")[0]  # not its own solution
    assert trainer.template_for("q5") is None  # not hard


def test_rescue_state_with_examples_round_trips_and_reads_version_1(tiny, tmp_path):
    ids = tiny[1]["id"]
    trainer, _ = _trainer(tiny, tmp_path, _hard_bank(ids[:2]), examples=_example_store(tiny, ids[2:5]))
    state = trainer.rescue_state()
    assert state["version"] == RESCUE_STATE_VERSION == 2
    store = SolvedExampleStore()
    other, _ = _trainer(tiny, tmp_path / "b", HardPromptBank(window=1), examples=store)
    bad = {**state, "examples": {**state["examples"], "added": -1}}
    with pytest.raises(ValueError):
        other.load_rescue_state(bad)
    assert len(other.examples) == 0 and len(other.bank) == 0
    other.load_rescue_state(state)
    assert other.rescue_state() == state
    assert other.examples is store and len(store) == 3  # in place: a proposer holding it sees them
    old = {k: v for k, v in state.items() if k != "examples"}
    third, _ = _trainer(tiny, tmp_path / "c", HardPromptBank(window=1), examples=SolvedExampleStore())
    third.load_rescue_state({**old, "version": 1})  # saved before the store existed
    assert third.bank.hard_ids() == list(ids[:2]) and len(third.examples) == 0
