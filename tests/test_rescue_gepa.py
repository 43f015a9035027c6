"""GEPA template evolution for hard-prompt rescue: the real gepa engine with deterministic
stand-in LMs (needs the rescue extra; the bank's own tests are in test_rescue.py)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("gepa")  # the third-party extra; rollwise's own modules import plainly

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
