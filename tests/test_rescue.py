"""Hard-prompt rescue: the hard-prompt bank and GEPA template evolution (real engine, stand-in LMs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _support import hyper_for

import rollwise
from rollwise.embed import HashingEmbedder
from rollwise.rescue import HardPromptBank

FAIL = np.zeros((1, 4))
SOLVE = np.array([[0.0, 1.0, 0.0, 0.0]])


# ---- the bank ---------------------------------------------------------------------------------
def test_hard_after_window_failed_groups_only():
    bank = HardPromptBank(window=3)
    for _ in range(2):
        bank.observe(["a"], FAIL)
    assert bank.hard_ids() == [] and bank.history("a") == [0.0, 0.0]
    bank.observe(["a"], FAIL)
    assert bank.hard_ids() == ["a"] and bank.hard_ids("observed") == ["a"]
    # a success in the window breaks the streak: two failures then a success is not hard
    bank.observe(["b", "c"], np.zeros((2, 4)))
    bank.observe(["b", "c"], np.zeros((2, 4)))
    bank.observe(["b"], SOLVE)
    bank.observe(["c"], FAIL)
    assert bank.hard_ids() == ["a", "c"]
    assert "b" not in bank and bank.history("b") == []
    assert bank.history("a") == [0.0, 0.0, 0.0]  # only the last `window` groups are kept
    bank.observe(["a"], FAIL)
    assert bank.history("a") == [0.0, 0.0, 0.0]


def test_success_threshold_decides_what_counts_as_solved():
    partial = np.array([[0.6, 0.6]])
    strict, lenient = HardPromptBank(window=1, success_threshold=0.9), HardPromptBank(window=1)
    strict.observe(["p"], partial)
    lenient.observe(["p"], partial)
    assert strict.hard_ids() == ["p"] and lenient.hard_ids() == []


def test_rescue_is_a_hard_prompt_later_solved_on_its_own():
    bank = HardPromptBank(window=2)
    bank.observe(["a", "b"], np.zeros((2, 3)))
    bank.observe(["a", "b"], np.zeros((2, 3)))
    bank.observe(["c"], np.zeros((1, 3)))  # on a streak, not hard yet
    bank.observe(["a", "c"], np.array([[1.0, 0, 0], [1.0, 0, 0]]))
    assert bank.rescued == ["a"]  # c was never hard: solving it is no rescue
    assert bank.hard_ids() == ["b"] and not bank.is_hard("a")
    bank.mark_rescued("b")
    assert bank.rescued == ["a", "b"] and bank.hard_ids() == []
    with pytest.raises(ValueError, match="not hard"):
        bank.mark_rescued("c")
    # failing again makes it hard again; the rescue record stays
    bank.observe(["a"], FAIL)
    bank.observe(["a"], FAIL)
    assert bank.hard_ids() == ["a"] and bank.rescued == ["a", "b"]


def test_capacity_evicts_the_oldest_added():
    bank = HardPromptBank(capacity=3, window=1)
    for pid in ["p0", "p1", "p2"]:
        bank.observe([pid], FAIL)
    bank.observe(["p0"], FAIL)  # observing again does not refresh its age
    bank.observe(["p3"], FAIL)
    assert bank.hard_ids() == ["p1", "p2", "p3"] and len(bank) == 3 and bank.evicted == 1
    bank.observe(["p4", "p5"], np.zeros((2, 2)))
    assert bank.hard_ids() == ["p3", "p4", "p5"] and bank.evicted == 3
    # a solved prompt leaves without evicting anyone
    bank.observe(["p9"], SOLVE)
    assert len(bank) == 3 and bank.evicted == 3
    # the rescued record is bounded too
    for pid in ["p3", "p4", "p5"]:
        bank.mark_rescued(pid)
    for pid in ["q0", "q1"]:
        bank.observe([pid], FAIL)
        bank.observe([pid], SOLVE)
    assert bank.rescued == ["p5", "q0", "q1"]


def _pool(n: int = 12) -> rollwise.PromptPool:
    texts = [f"What is {i} + {3 * i}? Think step by step." for i in range(n)]
    return rollwise.PromptPool(HashingEmbedder(dim=32).encode(texts), ids=[f"q{i}" for i in range(n)],
                               texts=texts)


@pytest.mark.parametrize("name", ["gps", "mopps"])
def test_predicted_mining_uses_the_selectors_predictions(name):
    pool = _pool()
    sel = rollwise.make_selector(name, pool, 4, seed=0, **hyper_for(name))
    rng = np.random.default_rng(0)
    for _ in range(3):
        idx = sel.select()
        rates = np.where(idx % 3 == 0, 0.0, 0.9)
        sel.observe(idx, (rng.random((4, 4)) < rates[:, None]).astype(float))
    indices = np.arange(len(pool))
    ids = [f"q{i}" for i in indices]
    pred = sel.predict(indices)
    threshold = float(np.median(pred))
    expected = [pid for pid, p in zip(ids, pred, strict=True) if p < threshold]
    assert 0 < len(expected) < len(ids)
    bank = HardPromptBank(window=2, predicted_threshold=threshold)
    bank.observe([expected[0]], FAIL)  # an observed prompt keeps its observations
    new = bank.mine_predicted(sel, indices, ids)
    assert new == expected[1:]
    assert bank.hard_ids("predicted") == expected[1:] and bank.hard_ids("observed") == []
    assert not bank.is_hard(expected[0]) and bank.history(expected[0]) == [0.0]
    assert bank.mine_predicted(sel, indices, ids) == []  # already known
    # an observed success drops a predicted-hard prompt without calling it a rescue
    bank.observe([expected[1]], SOLVE)
    assert expected[1] not in bank.hard_ids() and bank.rescued == []
    # window failures turn a predicted-hard prompt into an observed one
    bank.observe([expected[2]], FAIL)
    assert bank.hard_ids("predicted")[0] == expected[2]
    bank.observe([expected[2]], FAIL)
    assert expected[2] in bank.hard_ids("observed")


def test_mopps_predicts_the_failing_prompts_hard():
    pool = _pool(6)
    sel = rollwise.make_selector("mopps", pool, 6, seed=0)
    fail = np.array([0, 3])
    rewards = np.ones((6, 8))
    rewards[fail] = 0.0
    for _ in range(3):
        sel.observe(np.arange(6), rewards)
    bank = HardPromptBank(predicted_threshold=0.3)
    assert bank.mine_predicted(sel, np.arange(6), [f"q{i}" for i in range(6)]) == ["q0", "q3"]


def test_state_round_trip_and_file(tmp_path):
    bank = HardPromptBank(capacity=4, window=2, success_threshold=0.7, predicted_threshold=0.2)
    bank.observe(["a", "b", "c"], np.zeros((3, 2)))
    bank.observe(["a", "b"], np.zeros((2, 2)))
    bank.observe(["b"], np.ones((1, 2)))
    bank.mine_predicted(_Const([0.1, 0.5]), [0, 1], ["d", "e"])
    bank.observe(["x", "y"], np.zeros((2, 2)))  # evicts a
    state = bank.state_dict()
    json.dumps(state)  # JSON-serialisable
    other = HardPromptBank(capacity=4, window=2, success_threshold=0.7, predicted_threshold=0.2)
    other.load_state_dict(state)
    assert other.state_dict() == state
    assert other.hard_ids() == bank.hard_ids() == ["d"] and other.rescued == ["b"] and other.evicted == 1
    assert other.history("c") == [0.0]
    # the snapshot does not move with the bank
    bank.observe(["c"], FAIL)
    assert state["entries"][0]["rates"] == [0.0] and other.hard_ids() == ["d"]
    path = tmp_path / "bank.json"
    bank.save(path)
    loaded = HardPromptBank.load(path)
    assert loaded.state_dict() == bank.state_dict() and loaded.hard_ids() == ["c", "d"]
    (tmp_path / "other.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a hard-prompt bank"):
        HardPromptBank.load(tmp_path / "other.json")
    # both continue identically
    for b in (bank, loaded):
        b.observe(["x", "z"], np.zeros((2, 2)))
    assert loaded.state_dict() == bank.state_dict()


class _Const:
    def __init__(self, values):
        self.values = np.asarray(values, dtype=float)

    def predict(self, indices):
        return self.values[np.asarray(indices)]


def _snapshot(bank):
    return json.dumps(bank.state_dict())


@pytest.mark.parametrize("kwargs, err", [
    (dict(capacity=0), ValueError), (dict(capacity=2.0), TypeError), (dict(window=0), ValueError),
    (dict(window=True), TypeError), (dict(success_threshold=1.5), ValueError),
    (dict(success_threshold=0.0), ValueError), (dict(predicted_threshold=-0.1), ValueError),
    (dict(predicted_threshold="low"), TypeError),
])
def test_bad_constructor_arguments(kwargs, err):
    name = next(iter(kwargs))
    with pytest.raises(err, match=name):
        HardPromptBank(**kwargs)


@pytest.mark.parametrize("ids, rewards, err", [
    ("ab", np.zeros((2, 2)), TypeError),
    (["a", "b"], np.zeros((3, 2)), ValueError),
    (["a", "a"], np.zeros((2, 2)), ValueError),
    (["a", 3], np.zeros((2, 2)), TypeError),
    (["a", ""], np.zeros((2, 2)), TypeError),
    (["a", "b"], np.zeros(2), ValueError),
    (["a", "b"], np.zeros((2, 0)), ValueError),
    (["a", "b"], [[0.0, np.nan], [0.0, 0.0]], ValueError),
    (["a", "b"], [["x", "y"], ["z", "w"]], TypeError),
])
def test_bad_observations_change_nothing(ids, rewards, err):
    bank = HardPromptBank(window=1)
    bank.observe(["a"], FAIL)
    before = _snapshot(bank)
    with pytest.raises(err):
        bank.observe(ids, rewards)
    assert _snapshot(bank) == before


def test_bad_predicted_mining_changes_nothing():
    bank = HardPromptBank(predicted_threshold=0.5)
    before = _snapshot(bank)
    with pytest.raises(TypeError, match="selector"):
        bank.mine_predicted(object(), [0], ["a"])
    with pytest.raises(ValueError, match="ids"):
        bank.mine_predicted(_Const([0.1, 0.1]), [0, 1], ["a"])
    with pytest.raises(ValueError, match="indices"):
        bank.mine_predicted(_Const([0.1, 0.1]), [[0, 1]], ["a", "b"])
    with pytest.raises(ValueError, match="predict"):
        bank.mine_predicted(_Const([np.nan, 0.1]), [0, 1], ["a", "b"])
    sel = rollwise.make_selector("mopps", _pool(4), 2, seed=0)
    with pytest.raises(ValueError):  # the selector rejects an index outside its pool
        bank.mine_predicted(sel, [0, 9], ["a", "b"])
    assert _snapshot(bank) == before


def test_bad_state_changes_nothing():
    bank = HardPromptBank(capacity=3, window=1)
    bank.observe(["a"], FAIL)
    good = bank.state_dict()
    before = _snapshot(bank)
    bad_states = [
        "state", {**good, "version": 99}, {k: v for k, v in good.items() if k != "rescued"},
        {**good, "config": {**good["config"], "window": 2}},
        {**good, "entries": [{"id": "a", "rates": [0.0, 0.0], "source": "observed", "predicted": None}]},
        {**good, "entries": [{"id": "a", "rates": [0.0], "source": "guessed", "predicted": None}]},
        {**good, "entries": [{"id": f"p{i}", "rates": [0.0], "source": None, "predicted": None}
                             for i in range(4)]},
        {**good, "rescued": ["a", "a"]}, {**good, "evicted": -1},
    ]
    for state in bad_states:
        with pytest.raises((TypeError, ValueError)):
            bank.load_state_dict(state)
        assert _snapshot(bank) == before


# ---- GEPA template evolution (real gepa engine, deterministic stand-in LMs) ----------------------
gepa_adapter = pytest.importorskip("rollwise.rescue.gepa_adapter")
from rollwise.llm.tasks import verify_number  # noqa: E402
from rollwise.rescue import reflection  # noqa: E402
from rollwise.rescue.gepa_adapter import (  # noqa: E402
    DEFAULT_TEMPLATE,
    TemplateAdapter,
    evolve_template,
    render_template,
)
from rollwise.rescue.reflection import OpenAIReflectionLM, ReflectionLMError, make_reflection_lm  # noqa: E402

PHRASE = "Add the numbers carefully."
ROWS = [{"id": f"s{i}", "question": f"What is {10 + i} + {7 * i}?", "answer": str(10 + 8 * i)}
        for i in range(5)]
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused


class SumPolicy:
    """Solves 'What is a + b?' exactly when the prompt contains PHRASE, else is off by one."""

    def __init__(self):
        self.prompts: list[str] = []

    def __call__(self, prompts):
        import re

        self.prompts += prompts
        out = []
        for p in prompts:
            a, b = map(int, re.search(r"What is (\d+) \+ (\d+)\?", p).groups())
            out.append(f"Let me add.\nAnswer: {a + b + (0 if PHRASE in p else 1)}")
        return out


class PhraseReflection:
    """Proposes a template with PHRASE, but only after reading the seed and failure feedback."""

    def __init__(self):
        self.prompts: list[str] = []

    def __call__(self, prompt):
        self.prompts.append(prompt)
        assert "Incorrect. The reference answer is" in prompt and "What is" in prompt
        return f"Here is a better instruction:\n```\n{PHRASE}\n{{problem}}\nEnd with 'Answer: <number>'.\n```"


def test_gepa_evolves_a_template_that_beats_the_seed():
    policy, reflection = SumPolicy(), PhraseReflection()
    res = evolve_template(ROWS, policy, verify_number, reflection, max_metric_calls=40, seed=0)
    assert res.skipped is None and res.tried[0] == (DEFAULT_TEMPLATE, 0.0) and res.seed_score == 0.0
    assert PHRASE in res.best_template and "{problem}" in res.best_template
    assert res.best_score == 1.0 > res.seed_score
    assert len(reflection.prompts) >= 1 and res.reflection_calls == len(reflection.prompts)
    assert DEFAULT_TEMPLATE in reflection.prompts[0]  # GEPA reflected on the seed template
    # every completion GEPA asked for is counted, and matches GEPA's own metric-call count
    assert res.rollouts_spent == len(policy.prompts) == res.metric_calls
    assert res.rollouts_spent >= len(ROWS) * 2  # seed and the evolved template on the whole set
    assert policy.prompts[0] == render_template(DEFAULT_TEMPLATE, ROWS[0]["question"])


def test_budget_of_one_full_evaluation_scores_only_the_seed():
    policy, reflection = SumPolicy(), PhraseReflection()
    res = evolve_template(ROWS, policy, verify_number, reflection, max_metric_calls=len(ROWS))
    assert res.best_template == DEFAULT_TEMPLATE and res.tried == [(DEFAULT_TEMPLATE, 0.0)]
    assert res.rollouts_spent == len(ROWS) == len(policy.prompts) and reflection.prompts == []


def test_wall_time_limit_stops_evolution():
    policy, reflection = SumPolicy(), PhraseReflection()
    res = evolve_template(ROWS, policy, verify_number, reflection, max_metric_calls=1000, wall_time_s=1e-9)
    assert res.rollouts_spent == len(ROWS) and reflection.prompts == []


def test_render_template_placeholder_or_preamble():
    assert render_template("Q: {problem} (think)", "2+2") == "Q: 2+2 (think)"
    assert render_template("You are careful.\n", "2+2") == "You are careful.\n\n2+2"
    assert render_template("{problem} as {json: 1}", "x") == "x as {json: 1}"  # other braces stay


def test_reflective_dataset_carries_the_reference_answer():
    adapter = TemplateAdapter(SumPolicy(), verify_number)
    batch = adapter.evaluate(ROWS[:2], {"template": "{problem}"}, capture_traces=True)
    assert batch.scores == [0.0, 0.0] and batch.num_metric_calls == 2 and adapter.rollouts == 2
    records = adapter.make_reflective_dataset({"template": "{problem}"}, batch, ["template"])["template"]
    assert records[0]["Feedback"].startswith(f"Incorrect. The reference answer is {ROWS[0]['answer']}")
    assert str(int(ROWS[0]["answer"]) + 1) in records[0]["Feedback"]
    good = adapter.evaluate(ROWS[:1], {"template": PHRASE + " {problem}"}, capture_traces=True)
    assert good.scores == [1.0] and adapter.rollouts == 3
    assert adapter.make_reflective_dataset({}, good, ["template"])["template"][0]["Feedback"] == "Correct."


def test_policy_as_reflection_lm():
    seen = []

    def policy(prompts):
        seen.extend(prompts)
        return ["reply"] * len(prompts)

    lm = make_reflection_lm("policy", policy)
    assert lm("reflect on this") == "reply" and seen == ["reflect on this"]
    assert lm([{"role": "user", "content": "as messages"}]) == "reply" and seen[-1] == "as messages"
    with pytest.raises(ValueError, match="policy"):
        make_reflection_lm("policy", None)
    with pytest.raises(ValueError, match="reflection_lm"):
        make_reflection_lm("gpt-something", policy)
    with pytest.raises(TypeError, match="reflection_lm"):
        make_reflection_lm(3, policy)


def test_unreachable_endpoint_is_a_clear_error():
    lm = OpenAIReflectionLM(UNREACHABLE, timeout=5)
    assert lm.endpoint == UNREACHABLE + "/v1/chat/completions"
    with pytest.raises(ReflectionLMError, match="127.0.0.1:9.*unreachable"):
        lm("propose a template")
    with pytest.raises(ReflectionLMError, match="unreachable"):
        lm.ping()


def test_unreachable_endpoint_skips_evolution_without_spending(caplog):
    policy = SumPolicy()
    with caplog.at_level("WARNING", logger="rollwise.rescue.gepa_adapter"):
        res = evolve_template(ROWS, policy, verify_number, UNREACHABLE, max_metric_calls=40)
    assert res.skipped is not None and "unreachable" in res.skipped
    assert res.best_template == DEFAULT_TEMPLATE and res.rollouts_spent == 0 and policy.prompts == []
    assert "template evolution skipped" in caplog.text
    with pytest.raises(ReflectionLMError, match="unreachable"):
        evolve_template(ROWS, policy, verify_number, UNREACHABLE, max_metric_calls=40, on_unreachable="raise")


def test_reflection_failure_mid_run_stops_instead_of_burning_rollouts():
    calls = []

    def dying(prompt):
        calls.append(prompt)
        raise ReflectionLMError("endpoint went away")

    policy = SumPolicy()
    res = evolve_template(ROWS, policy, verify_number, dying, max_metric_calls=500, minibatch_size=2)
    assert res.skipped == "endpoint went away" and len(calls) == 1 and res.reflection_calls == 1
    assert res.best_template == DEFAULT_TEMPLATE
    assert res.rollouts_spent == len(ROWS) + 2 == len(policy.prompts)  # seed on all, one minibatch
    with pytest.raises(ReflectionLMError, match="went away"):
        evolve_template(ROWS, SumPolicy(), verify_number, dying, max_metric_calls=500, on_unreachable="raise")


def test_openai_endpoint_request_and_reply(monkeypatch):
    """The request is an OpenAI chat completion; the reply's content comes back (no network: the
    opener is replaced)."""
    sent = {}

    class Reply:
        def __init__(self, body):
            self.body = body

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return self.body

    def fake_urlopen(request, timeout):
        sent.update(url=request.full_url, body=json.loads(request.data),
                    auth=request.get_header("Authorization"))
        return Reply(json.dumps({"choices": [{"message": {"content": "```new```"}}]}).encode())

    monkeypatch.setattr(reflection.urllib.request, "urlopen", fake_urlopen)
    lm = OpenAIReflectionLM("https://example.org/v1/", model="m", api_key="k", temperature=0.0)
    assert lm("hello") == "```new```" and lm.calls == 1
    assert sent["url"] == "https://example.org/v1/chat/completions" and sent["auth"] == "Bearer k"
    assert sent["body"]["model"] == "m" and sent["body"]["messages"] == [{"role": "user", "content": "hello"}]
    monkeypatch.setattr(reflection.urllib.request, "urlopen", lambda r, timeout: Reply(b"{\"oops\": 1}"))
    with pytest.raises(ReflectionLMError, match="not a chat completion"):
        lm("hello")


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(hard_rows=[]), ValueError, "hard_rows"),
    (dict(hard_rows=[{"question": "q"}]), ValueError, "hard_rows"),
    (dict(policy="smollm2"), TypeError, "policy"),
    (dict(verify=None), TypeError, "verify"),
    (dict(seed_template="  "), ValueError, "seed_template"),
    (dict(max_metric_calls=4), ValueError, "max_metric_calls"),
    (dict(max_metric_calls=40.0), TypeError, "max_metric_calls"),
    (dict(wall_time_s=0), ValueError, "wall_time_s"),
    (dict(minibatch_size=0), ValueError, "minibatch_size"),
    (dict(on_unreachable="ignore"), ValueError, "on_unreachable"),
    (dict(reflection_lm="not a url"), ValueError, "reflection_lm"),
    (dict(valset=[1, 2]), ValueError, "valset"),
])
def test_evolve_template_rejects_bad_arguments_before_any_rollout(kwargs, err, match):
    policy = SumPolicy()
    args = dict(hard_rows=ROWS, policy=policy, verify=verify_number, reflection_lm=PhraseReflection(),
                max_metric_calls=40)
    with pytest.raises(err, match=match):
        evolve_template(**{**args, **kwargs})
    assert policy.prompts == []


def test_transformers_policy_generates_one_completion_per_prompt(tmp_path):
    """A tiny random checkpoint through the batched HF path: shapes, determinism, evolve_template."""
    pytest.importorskip("transformers")
    from _support import save_tiny_llama

    from rollwise.llm.generation import TransformersPolicy

    save_tiny_llama(tmp_path, hidden=16, intermediate=32, layers=1)
    policy = TransformersPolicy(str(tmp_path), max_new_tokens=4, batch_size=2, device="cpu")
    prompts = ["1 + 1 =", "a much longer prompt: 12 + 30 =", "7 + 0 ="]
    out = policy(prompts)
    assert len(out) == 3 and all(isinstance(o, str) for o in out)
    assert policy(prompts) == out  # greedy: deterministic, and batching does not mix prompts up
    assert policy(prompts[1:2]) == out[1:2]
    with pytest.raises(TypeError, match="prompts"):
        policy("1 + 1 =")
    with pytest.raises(ValueError, match="max_new_tokens"):
        TransformersPolicy(str(tmp_path), max_new_tokens=0)
    res = evolve_template(ROWS[:2], policy, verify_number, "policy", max_metric_calls=6)
    assert res.rollouts_spent == res.metric_calls >= 2 and res.tried[0][0] == DEFAULT_TEMPLATE
    # sampling: seeded per call, and the caller's RNG stream is left where it was
    import torch

    sampler = TransformersPolicy(str(tmp_path), max_new_tokens=6, temperature=1.0, seed=3, device="cpu")
    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    first = sampler(prompts * 4)
    assert torch.equal(torch.rand(3), expected_next)
    assert sampler(prompts * 4) == first and sampler.calls == 2
    assert len(set(first)) > 3  # twelve samples of three prompts: not all identical per prompt
