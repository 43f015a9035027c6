"""verl 0.9.1 integration: verl's own trainer code builds and drives rollwise's classes on a CPU.

The trainer is verl's real ``PPOTrainerSync`` (``__init__`` builds the replay buffer from config,
``_init_dataloader`` the datasets, ``_next_train_batch``/``prepare_step``/``_save_checkpoint``/
``_load_checkpoint`` are verl's). What needs GPUs is replaced: the agent loop manager writes
trajectories into TransferQueue the way ``AgentLoopWorkerTQ`` does (``AgentLoopOutput.as_dict()``
plus the prompt's fields, keys ``{uid}_{session_id}_{index}``), and TransferQueue itself is an
in-process stand-in for the kv calls the trainer and buffer make. ``ROLLWISE_TEST_RAY=1`` runs
one scenario against the real TransferQueue on a local Ray instead (slow: it starts Ray).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("verl")

import torch  # noqa: E402
import transfer_queue  # noqa: E402
from _support import TINY_GPS  # noqa: E402
from omegaconf import OmegaConf, open_dict  # noqa: E402
from tensordict import NonTensorData, NonTensorStack, TensorDict  # noqa: E402
from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput  # noqa: E402
from verl.trainer.ppo.v1 import PPOTrainerSync  # noqa: E402
from verl.trainer.ppo.v1.replay_buffer import ReplayBufferAsync  # noqa: E402
from verl.utils.dataset.rl_dataset import get_dataset_class  # noqa: E402
from verl.utils.tensordict_utils import list_of_dict_to_tensordict  # noqa: E402

from rollwise.integrations import verl as rv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N_PROMPTS, B, N = 24, 4, 4


def _load_example(name: str):
    path = ROOT / "examples" / "verl" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"verl_example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Parquet files written by the example's own preprocessing (problem-file path)."""
    import json

    prep = _load_example("prepare_data")
    d = tmp_path_factory.mktemp("verl_data")
    problems = [{"id": f"p{i:02d}", "question": f"What is {i} + {3 * i % 7}?", "answer": str(i + 3 * i % 7)}
                for i in range(N_PROMPTS + 4)]
    src = d / "problems.jsonl"
    src.write_text("\n".join(json.dumps(p) for p in problems))
    rows = [{"id": p["id"], "question": p["question"], "answer": p["answer"], "level": 0.0,
             "prompt": [{"role": "system", "content": "Be brief."},
                        {"role": "user", "content": p["question"]}]} for p in problems]
    prep.write_parquet(prep.to_verl_rows(rows[:N_PROMPTS], "train", "rollwise/math"), d / "train.parquet")
    prep.write_parquet(prep.to_verl_rows(rows[N_PROMPTS:], "test", "rollwise/math"), d / "test.parquet")
    return d


@pytest.fixture(scope="module")
def base_config(data_dir, tmp_path_factory):
    """verl's ppo_trainer.yaml composed by Hydra with the overrides of examples/verl."""
    import datasets
    import verl
    from hydra import compose, initialize_config_dir

    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache / "hf"))
        kw = "+trainer.v1.sampler.sampler_kwargs"
        overrides = [
            "trainer.use_v1=True",
            "algorithm.adv_estimator=grpo",
            f"data.train_files={data_dir / 'train.parquet'}",
            f"data.val_files={data_dir / 'test.parquet'}",
            f"data.train_batch_size={B}",
            "data.dataloader_num_workers=0",
            f"actor_rollout_ref.rollout.n={N}",
            "data.custom_cls.path=pkg://rollwise.integrations.verl",
            "data.custom_cls.name=RollwiseDataset",
            "trainer.v1.sampler.custom_sampler.path=pkg://rollwise.integrations.verl",
            "trainer.v1.sampler.custom_sampler.name=RollwiseReplayBuffer",
            f"{kw}.strategy=gps",
            f"{kw}.seed=3",
            f"{kw}.embedder=hashing",
            f"{kw}.embedding_cache={cache / 'emb'}",
            f"{kw}.id_column=extra_info.prompt_id",
            f"{kw}.poll_interval=0.01",
            f"{kw}.hyper={{{','.join(f'{k}:{v}' for k, v in TINY_GPS.items())}}}",
            f"{kw}.train_batch_size=${{data.train_batch_size}}",
            f"{kw}.filter_groups=${{algorithm.filter_groups}}",
            f"{kw}.sync_refill_failed_groups=${{trainer.v1.sampler.sync_refill_failed_groups}}",
        ]
        cfg_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
        with initialize_config_dir(config_dir=cfg_dir, version_base=None):
            cfg = compose(config_name="ppo_trainer", overrides=overrides)
        yield cfg


@pytest.fixture
def config(base_config, tmp_path):
    cfg = copy.deepcopy(base_config)
    cfg.trainer.default_local_dir = str(tmp_path / "ckpt")
    return cfg


class FakeTQ:
    """In-process stand-in for TransferQueue 0.1.11's kv API (kv_put, kv_batch_put,
    kv_batch_get, kv_list, kv_clear) with the semantics the v1 trainer and buffer rely on."""

    def __init__(self):
        self.tags: dict[str, dict[str, dict]] = defaultdict(dict)
        self.rows: dict[str, dict[str, dict]] = defaultdict(dict)

    @staticmethod
    def _row(td: TensorDict, i: int) -> dict:
        out = {}
        for k in td.keys():
            v = td.get(k)
            if isinstance(v, NonTensorStack):
                out[k] = v.tolist()[i]
            elif isinstance(v, NonTensorData):
                out[k] = v.data
            else:
                out[k] = v[i]
        return out

    def kv_put(self, key, partition_id, fields=None, tag=None):
        self.tags[partition_id].setdefault(key, {}).update(tag or {})
        if fields is not None:
            self.rows[partition_id].setdefault(key, {}).update(dict(fields))

    def kv_batch_put(self, keys, partition_id, fields=None, tags=None):
        for i, key in enumerate(keys):
            self.tags[partition_id].setdefault(key, {}).update(tags[i] if tags else {})
            if fields is not None:
                self.rows[partition_id].setdefault(key, {}).update(self._row(fields, i))

    def kv_batch_get(self, keys, partition_id, select_fields=None):
        rows = [self.rows[partition_id][k] for k in keys]
        names = select_fields if select_fields is not None else list(rows[0])
        names = [names] if isinstance(names, str) else names
        missing = {f for r in rows for f in names if f not in r}
        if missing:  # TransferQueue raises ValueError when a field is empty for some key
            raise ValueError(f"fields {sorted(missing)} are empty for some keys")
        return list_of_dict_to_tensordict([{f: r[f] for f in names} for r in rows])

    def kv_list(self, partition_id=None):
        if partition_id is None:
            return {p: dict(t) for p, t in self.tags.items()}
        return {partition_id: dict(self.tags.get(partition_id, {}))}

    def kv_clear(self, keys, partition_id):
        for k in [keys] if isinstance(keys, str) else keys:
            self.tags[partition_id].pop(k, None)
            self.rows[partition_id].pop(k, None)

    def install(self, mp):
        for name in ("kv_put", "kv_batch_put", "kv_batch_get", "kv_list", "kv_clear"):
            mp.setattr(transfer_queue, name, getattr(self, name))


def reward_of(pid: str, j: int, step: int) -> float:
    """Deterministic Bernoulli rewards: prompt-specific success rate, fresh draw per step."""
    rate = (zlib.crc32(pid.encode()) % 7) / 6.0
    u = zlib.crc32(f"{pid}:{j}:{step}".encode()) / 2**32
    return float(u < rate)


class FakeRollout:
    """Stands in for AgentLoopManagerTQ: puts each prompt's n rollouts into TransferQueue as
    AgentLoopWorkerTQ does, in a shuffled order, then marks the group finished (or failed)."""

    def __init__(self, n=N, reward=reward_of, defer=False, seed=0):
        self.n, self.reward, self.defer = n, reward, defer
        self.rng = np.random.default_rng(seed)
        self.submitted: list[TensorDict] = []
        self.waiting: list[dict] = []
        self.truth: dict[str, tuple[str, list[float]]] = {}  # uid -> (prompt id, rewards by rollout)
        self.fail_rollouts: dict[int, set[int]] = {}  # k-th finished prompt -> rollouts that fail
        self.finished = 0

    def generate_sequences(self, batch: TensorDict) -> None:
        self.submitted.append(batch)
        prompts = []
        for i in range(len(batch)):
            prompt = {}
            for k, v in batch.items():
                if isinstance(v, torch.Tensor):
                    prompt[k] = v[i]
                elif isinstance(v, NonTensorStack):
                    prompt[k] = v[i].data
                elif isinstance(v, NonTensorData):
                    prompt[k] = v.data
            prompts.append(prompt)
        self.waiting.extend(prompts)
        if not self.defer:
            self.finish()

    def finish(self, count: int | None = None) -> list[str]:
        """Finish the first ``count`` waiting prompts (all by default); returns their uids."""
        count = len(self.waiting) if count is None else count
        done, self.waiting = self.waiting[:count], self.waiting[count:]
        keys, fields, tags, statuses = [], [], [], []
        for prompt in done:
            uid, pid, step = prompt["uid"], prompt[rv.ID_FIELD], int(prompt["global_steps"])
            n = int(prompt.pop(rv.ROLLOUT_N_FIELD, self.n))  # as verl's _run_prompt reads it
            failing = self.fail_rollouts.get(self.finished, set())
            self.finished += 1
            rewards = []
            for s in range(n):
                if s in failing:
                    continue
                r = self.reward(pid, s, step)  # None: not scored during rollout
                if r is not None:
                    rewards.append(r)
                out = AgentLoopOutput(prompt_ids=[1, 2, 3], response_ids=[4, 5, 6 + s][: 1 + s % 3],
                                      response_mask=[1] * (1 + s % 3), reward_score=r, num_turns=2,
                                      metrics=AgentLoopMetrics())
                field = out.as_dict()
                field.update(prompt)
                field["session_id"] = s
                keys.append(f"{uid}_{s}_0")
                fields.append(field)
                tags.append({"status": "success", "global_steps": step})
            self.truth[uid] = (pid, rewards)
            statuses.append((uid, "failure" if failing else "finished"))
        order = self.rng.permutation(len(keys))  # rollouts of all groups interleaved
        if keys:
            transfer_queue.kv_batch_put(keys=[keys[i] for i in order], partition_id="train",
                                        fields=list_of_dict_to_tensordict([fields[i] for i in order]),
                                        tags=[tags[i] for i in order])
        for j in self.rng.permutation(len(statuses)):
            uid, status = statuses[j]
            transfer_queue.kv_put(key=uid, partition_id="train", tag={"status": status})
        return [u for u, _ in statuses]


class _NoWorkers:
    def save_checkpoint(self, *args, **kwargs):
        pass

    def load_checkpoint(self, *args, **kwargs):
        pass


def make_trainer(config, rollout, cls=PPOTrainerSync):
    """verl's trainer object, with the CPU part of ``init()``: the datasets and the dataloader."""
    trainer = cls(config)  # PPOTrainer.__init__ builds the replay buffer from config
    trainer.tokenizer, trainer.processor = None, None  # RLHFDataset needs none without filtering
    trainer._init_dataloader()
    trainer.agent_loop_manager = rollout
    trainer.actor_rollout_wg = _NoWorkers()
    trainer.global_steps = 0
    return trainer


class Recorder:
    """Wraps the bound selector: every select (ids served by verl) and observe call, in order."""

    def __init__(self, hub):
        self.hub, self.events = hub, []
        sel = hub.selector
        orig_select, orig_observe = sel.select, sel.observe
        ids = hub.pool.ids

        def select(candidates=None, **kwargs):
            out = orig_select(candidates, **kwargs)
            in_flight = {ids[i] for i in hub._in_flight}  # served, rewards not seen yet
            self.events.append(("select", [ids[i] for i in out], in_flight))
            return out

        def observe(indices, rewards):
            idx = np.asarray(indices)
            assert len(set(idx.tolist())) == idx.size, "observe got repeated prompts"
            self.events.append(("observe", [(ids[i], tuple(np.asarray(r).tolist()))
                                            for i, r in zip(idx, rewards, strict=True)]))
            return orig_observe(indices, rewards)

        sel.select, sel.observe = select, observe

    def observed(self):
        return [p for e in self.events if e[0] == "observe" for p in e[1]]


def step(trainer, metrics_out=None):
    """One PPOTrainer.step with parameter_sync_step=1, minus the GPU work after sampling."""
    trainer.global_steps += 1
    trainer.prepare_step()
    batch, metrics = trainer.replay_buffer.sample(global_steps=trainer.global_steps, partition_id="train",
                                                  batch_size=trainer.config.data.train_batch_size)
    if metrics_out is not None:
        metrics_out.append(metrics)
    transfer_queue.kv_clear(keys=batch.keys, partition_id=batch.partition_id)  # fit(): cleanup
    return batch


def served_ids(batch: TensorDict) -> list[str]:
    return [str(x) for x in batch[rv.ID_FIELD]]


@pytest.fixture
def tq_fake(monkeypatch):
    fake = FakeTQ()
    fake.install(monkeypatch)
    return fake


# ---- tests -----------------------------------------------------------------------------------
def test_verl_builds_both_classes_from_its_config(config, tq_fake):
    assert get_dataset_class(config.data) is rv.RollwiseDataset
    trainer = make_trainer(config, FakeRollout())
    buf = trainer.replay_buffer
    assert type(buf) is rv.RollwiseReplayBuffer
    assert buf.rollwise_config.train_batch_size == B  # interpolated from data.train_batch_size
    assert buf.rollwise_config.hyper == TINY_GPS and buf.filter_groups_metric is None
    assert type(trainer.train_dataset) is rv.RollwiseDataset and trainer.train_dataset.hub is buf.hub
    assert trainer.val_dataset.hub is None  # the validation split is a plain RLHFDataset
    hub = buf.hub
    assert hub.selector.batch_size == B and hub.selector.strategy == "gps"
    assert list(hub.pool.ids) == [f"p{i:02d}" for i in range(N_PROMPTS)]
    # the pool embeds the user turn only, not the shared system prompt
    assert hub.pool.texts[5] == "What is 5 + 1?"

    # the async trainers get the async variant of the same configured class
    cfg = copy.deepcopy(config)
    cfg.trainer.v1.trainer_mode = "colocate_async"
    stub = type("Stub", (), {"config": cfg, "trainer_mode": "colocate_async",
                             "_add_prompts_to_generate": lambda self, n: n})()
    abuf = PPOTrainerSync._build_replay_buffer(stub)
    assert type(abuf) is rv.RollwiseReplayBufferAsync and isinstance(abuf, ReplayBufferAsync)
    assert rv.current_hub() is abuf.hub


def test_sync_steps_choose_before_rollout_and_observe_exact_groups(config, tq_fake):
    rollout = FakeRollout()
    trainer = make_trainer(config, rollout)
    rec = Recorder(trainer.replay_buffer.hub)
    metrics, batches = [], []
    for _ in range(3):
        batches.append(step(trainer, metrics))

    selects = [e for e in rec.events if e[0] == "select"]
    kinds = [e[0] for e in rec.events]
    assert kinds[:1] == ["select"] and kinds.count("select") == 3
    for t, batch in enumerate(rollout.submitted):
        ids = served_ids(batch)
        assert ids == selects[t][1]  # verl dispatched exactly the selector's choice, in order
        # each served row is the row of that prompt id (mapped by id, not by position)
        assert [e["prompt_id"] for e in batch["extra_info"]] == ids
        assert len(set(batch["uid"])) == B
    # observations: step t's groups, before step t+1's selection, each exactly once
    truth = {uid: (pid, tuple(r)) for uid, (pid, r) in rollout.truth.items()}
    for t in range(2):
        before = rec.events.index(selects[t + 1])
        obs = [p for e in rec.events[:before] if e[0] == "observe" for p in e[1]]
        want = [truth[u] for b in rollout.submitted[: t + 1] for u in b["uid"]]
        assert Counter(obs) == Counter(want)
    for batch in batches:
        assert len(batch.keys) == B * N
    assert metrics[-1]["rollwise/observed_groups"] == 3 * B
    # the trained batch's figures, recomputed from the rewards the fake agent loop wrote
    last = [rollout.truth[u][1] for u in {k.split("_")[0] for k in batches[-1].keys}]
    assert metrics[-1]["rollwise/batch_success_rate"] == pytest.approx(np.mean([np.mean(r) for r in last]))
    assert metrics[-1]["rollwise/batch_effective_ratio"] == pytest.approx(
        np.mean([min(r) < max(r) for r in last]))


def test_dapo_evicted_and_failed_groups_are_observed_once(config, tq_fake):
    cfg = copy.deepcopy(config)
    cfg.algorithm.filter_groups.enable = True  # verl: gen_batch_size=1, refills on eviction
    cfg.trainer.v1.sampler.sync_refill_failed_groups = True

    def reward(pid, s, t):  # a third of the prompts never succeed, one always does
        k = int(pid[1:])
        return 0.0 if k % 3 == 0 else 1.0 if k == 1 else float((k + s + t) % 2)

    rollout = FakeRollout(reward=reward, seed=1)
    rollout.fail_rollouts = {0: {1}, 5: {0, 1, 2, 3}}  # one rollout lost; a whole group lost
    trainer = make_trainer(cfg, rollout)
    buf = trainer.replay_buffer
    assert buf.filter_groups_metric == "reward" and buf.gen_batch_size == 1
    rec = Recorder(buf.hub)
    metrics = []
    for _ in range(3):
        batch = step(trainer, metrics)
        tags = {k.split("_")[0] for k in batch.keys}
        assert len(tags) == B  # a full batch of informative groups was trained on
    # a fetch that needs a new selection applies what the last step saw (one served from prompts
    # already queued need not: rewards are applied in batches, before the next selection)
    buf.hub.take(len(buf.hub._queue) + 1)

    # the group that lost a rollout shares its observe call with whole groups
    calls = [{len(r) for _, r in e[1]} for e in rec.events if e[0] == "observe"]
    assert any(sizes == {N, N - 1} for sizes in calls)
    observed = Counter(rec.observed())
    expected = Counter((pid, tuple(r)) for pid, r in rollout.truth.values() if r)
    assert observed == expected  # every group with a reward, whatever verl did with it
    assert any(len(r) == N - 1 for _, r in observed)  # the group that lost a rollout: k = 3
    assert all(len(r) in (N, N - 1) for _, r in observed)
    assert buf.hub.counters["empty_groups"] >= 1  # the group with no trajectory at all
    evicted = sum(m.get("training/filter_groups/evicted_samples", 0) for m in metrics)
    assert evicted > 0
    # no selection (first fetch or refill) picked a prompt whose group was still in flight
    selects = [e for e in rec.events if e[0] == "select"]
    assert len(selects) > 3 and any(e[2] for e in selects)
    assert all(not set(e[1]) & e[2] for e in selects)


def test_async_rewards_of_step_t_arrive_after_step_t_plus_1_is_chosen(config, tq_fake):
    cfg = copy.deepcopy(config)
    cfg.trainer.v1.trainer_mode = "colocate_async"
    rollout = FakeRollout(defer=True, seed=2)
    trainer = make_trainer(cfg, rollout)
    buf = trainer.replay_buffer
    assert isinstance(buf, rv.RollwiseReplayBufferAsync)
    rec = Recorder(buf.hub)

    trainer.global_steps = 1
    trainer.prepare_step()  # step 1's prompts (gen_batch_size=1: four fetches)
    first = served_ids(rollout.submitted[0])  # one submission of B prompts
    assert len(first) == B
    trainer.global_steps = 2
    trainer.prepare_step()  # step 2 chosen while step 1 is still generating
    second = served_ids(rollout.submitted[1])
    assert len(second) == B and not set(first) & set(second)  # in-flight prompts excluded
    assert rec.observed() == []

    rollout.finish(B + 2)  # step 1's groups and two of step 2's finish, in shuffled order
    batch, _ = buf.sample(global_steps=2, partition_id="train", batch_size=B)
    transfer_queue.kv_clear(keys=batch.keys, partition_id="train")
    assert rec.observed() == []  # queued, applied before the next choice
    trainer.global_steps = 3
    trainer.prepare_step()
    truth = rollout.truth
    seen = Counter(rec.observed())
    assert seen == Counter((pid, tuple(r)) for pid, r in truth.values())  # incl. 2 not yet trained
    assert len(seen) == B + 2
    third = served_ids(rollout.submitted[2])
    still_running = set(second) - {pid for pid, _ in truth.values()}
    assert not still_running & set(third)

    rollout.finish()
    batch, _ = buf.sample(global_steps=3, partition_id="train", batch_size=B)
    trainer.prepare_step()
    assert Counter(rec.observed()) == Counter((pid, tuple(r)) for pid, r in rollout.truth.values())


def test_checkpoint_round_trip_makes_the_same_selections(config, tq_fake, monkeypatch):
    cfg = copy.deepcopy(config)
    cfg.trainer.save_freq = 2
    rollout_a = FakeRollout()
    run_a = make_trainer(cfg, rollout_a)
    for t in range(1, 5):
        step(run_a)
        if t == 2:
            run_a._save_checkpoint()  # verl's own: actor (stub), data.pt, tracker file
    picks_a = [served_ids(b) for b in rollout_a.submitted]
    predict_a = run_a.replay_buffer.hub.selector.predict()
    saved = torch.load(Path(cfg.trainer.default_local_dir) / "global_step_2" / "data.pt", weights_only=False)
    state = saved["dataset_state"]
    assert state["selector"]["step"] == 1 and len(state["pending"]) == B  # step 2 seen, not yet applied

    FakeTQ().install(monkeypatch)  # a new process: empty TransferQueue, new trainer objects
    rollout_b = FakeRollout()
    run_b = make_trainer(cfg, rollout_b)
    run_b._load_checkpoint()  # verl's own resume: global_steps from the tracker, data.pt
    assert run_b.global_steps == 2
    step(run_b)
    step(run_b)
    assert [served_ids(b) for b in rollout_b.submitted] == picks_a[2:]
    np.testing.assert_array_equal(run_b.replay_buffer.hub.selector.predict(), predict_a)

    # without the checkpoint the same two steps choose differently: the test can fail
    FakeTQ().install(monkeypatch)
    rollout_c = FakeRollout()
    run_c = make_trainer(cfg, rollout_c)
    run_c.global_steps = 2
    step(run_c)
    step(run_c)
    assert [served_ids(b) for b in rollout_c.submitted] != picks_a[2:]


def _budgeted(config):
    cfg = copy.deepcopy(config)
    kw = cfg.trainer.v1.sampler.sampler_kwargs
    with open_dict(kw):  # what +trainer.v1.sampler.sampler_kwargs.budget_objective=... adds
        kw.budget_objective, kw.budget_k_max = "variance", 8
        kw.rollout_n = "${actor_rollout_ref.rollout.n}"
        kw.hyper = {**dict(kw.hyper), "warmup_steps": 0}
    return cfg


def test_budgets_give_each_prompt_its_rollouts_through_verl(config, tq_fake, monkeypatch):
    """Per-prompt budgets: verl's dataloader carries __rollout_n__ per row, the agent loop (the
    fake, reading it as verl's does) rolls out that many, the buffer samples the unequal groups
    whole and the selector observes each exactly once; a resume repeats the counts."""
    cfg = _budgeted(config)
    cfg.trainer.save_freq = 2
    rollout = FakeRollout()
    trainer = make_trainer(cfg, rollout)
    assert trainer.replay_buffer.rollwise_config.rollout_n == N
    rec = Recorder(trainer.replay_buffer.hub)
    batches = []
    for t in range(1, 5):
        batches.append(step(trainer))
        if t == 2:
            trainer._save_checkpoint()
    sizes = [[int(k) for k in b[rv.ROLLOUT_N_FIELD]] for b in rollout.submitted]
    assert all(sum(k) == B * N and min(k) >= 2 and max(k) <= 8 for k in sizes)
    assert any(len(set(k)) > 1 for k in sizes), "the budgets never differed between prompts"
    for batch, k in zip(batches, sizes, strict=True):
        assert len(batch.keys) == sum(k)  # every group sampled whole
    truth = Counter((pid, tuple(r)) for pid, r in rollout.truth.values())
    assert sorted(len(r) for _, r in rollout.truth.values()) == sorted(x for k in sizes for x in k)
    observed = Counter(rec.observed())
    assert observed <= truth and sum(observed.values()) == 3 * B  # steps 1-3 seen before step 4

    FakeTQ().install(monkeypatch)
    resumed = FakeRollout()
    run_b = make_trainer(cfg, resumed)
    run_b._load_checkpoint()
    step(run_b)
    step(run_b)
    assert [[int(k) for k in b[rv.ROLLOUT_N_FIELD]] for b in resumed.submitted] == sizes[2:]
    assert [served_ids(b) for b in resumed.submitted] == [served_ids(b) for b in rollout.submitted[2:]]


def _dapo(config, sizing=None):
    cfg = copy.deepcopy(config)
    cfg.algorithm.filter_groups.enable = True
    cfg.algorithm.filter_groups.max_inflight_gen_batches = 3  # room for refills beyond a batch
    kw = cfg.trainer.v1.sampler.sampler_kwargs
    with open_dict(kw):
        kw.rollout_n = "${actor_rollout_ref.rollout.n}"
        if sizing is not None:
            kw.ds_sizing = sizing
    return cfg


def _dapo_reward(pid, s, t):  # a third never solved, the rest solved 1 in 2
    k = int(pid[1:])
    return 0.0 if k % 3 == 0 else float((k + s + t) % 2)


def test_dapo_refills_are_sized_from_the_predictions(config, tq_fake, monkeypatch):
    """Under DAPO a refill rolls out the prompts the missing groups need given the predicted
    chances: confident chances, fewer prompts than verl's twice-the-evicted; doubtful ones, more.
    Every step still trains a full batch of informative groups."""
    dispatched = {}
    for name, chance in (("confident", 0.99), ("doubtful", 0.2), ("verl", None)):
        FakeTQ().install(monkeypatch)
        rollout = FakeRollout(reward=_dapo_reward, seed=1)
        trainer = make_trainer(_dapo(config, "verl" if chance is None else None), rollout)
        hub = trainer.replay_buffer.hub
        assert hub.group_size == (None if chance is None else N)
        if chance is not None:
            monkeypatch.setattr(hub.selector, "informative_chance",
                                lambda idx, k, c=chance: np.full(len(idx), c))
        metrics = []
        for _ in range(3):
            batch = step(trainer, metrics)
            assert len({k.split("_")[0] for k in batch.keys}) == B
            assert all(min(rollout.truth[u][1]) < max(rollout.truth[u][1])
                       for u in {k.split("_")[0] for k in batch.keys})
        dispatched[name] = sum(len(b) for b in rollout.submitted) - 3 * B  # refills only
        if chance is not None:
            assert sum(m["rollwise/ds_refill_prompts"] for m in metrics) == dispatched[name]
    assert dispatched["confident"] < dispatched["verl"] < dispatched["doubtful"]


def test_dapo_refill_size_by_hand(config, tq_fake, monkeypatch):
    trainer = make_trainer(_dapo(config), FakeRollout())
    hub = trainer.replay_buffer.hub
    monkeypatch.setattr(hub.selector, "informative_chance", lambda idx, k: np.full(len(idx), 0.5))
    # 2 missing, nothing in flight, chances 1/2: the fewest m with P(Binomial(m, 1/2) >= 2) >= 0.9
    assert hub.refill_size(asked=4, missing=2, in_flight=0, slots=20) == 7
    assert hub.refill_size(asked=4, missing=2, in_flight=0, slots=5) == 5  # verl's cap on flight
    hub.take(3)
    assert hub.refill_size(asked=4, missing=2, in_flight=3, slots=20) == 4  # 3 of 7 already flying
    # the floor: if every group in flight comes back informative the batch still fills
    monkeypatch.setattr(hub.selector, "informative_chance", lambda idx, k: np.full(len(idx), 1.0))
    assert hub.refill_size(asked=4, missing=3, in_flight=0, slots=20) == 3
    assert hub.refill_size(asked=4, missing=3, in_flight=3, slots=20) == 0


@pytest.mark.parametrize("dapo, overrides, match", [
    (True, {"strategy": "uniform", "hyper": {}, "ds_sizing": "predicted"},
     "ds_sizing='predicted' needs a strategy"),
    (False, {"ds_sizing": "predicted"}, "needs filter_groups"),
    (True, {"ds_fill_confidence": 1.0}, "ds_fill_confidence"),
    (True, {"ds_sizing": "full"}, "ds_sizing must be one of"),
])
def test_dapo_sizing_options_are_checked(config, tq_fake, dapo, overrides, match):
    cfg = _dapo(config) if dapo else copy.deepcopy(config)
    for key, value in overrides.items():
        OmegaConf.update(cfg, f"trainer.v1.sampler.sampler_kwargs.{key}", value, merge=False,
                         force_add=True)
    with pytest.raises(ValueError, match=match):
        make_trainer(cfg, FakeRollout())


def test_rewards_outside_unit_interval_need_a_threshold(config, tq_fake, monkeypatch):
    signed = lambda pid, s, t: 2.0 * reward_of(pid, s, t) - 1.0  # noqa: E731  (math_dapo style)
    trainer = make_trainer(config, FakeRollout(reward=signed))
    with pytest.raises(ValueError, match="success_threshold"):
        step(trainer)

    FakeTQ().install(monkeypatch)  # a fresh run
    cfg = copy.deepcopy(config)
    OmegaConf.update(cfg, "trainer.v1.sampler.sampler_kwargs.success_threshold", 0.5, force_add=True)
    rollout = FakeRollout(reward=signed)
    trainer = make_trainer(cfg, rollout)
    rec = Recorder(trainer.replay_buffer.hub)
    step(trainer)
    step(trainer)
    want = Counter((pid, tuple(float(x > 0) for x in r)) for pid, r in list(rollout.truth.values())[:B])
    assert Counter(rec.observed()) == want


def test_configuration_errors_are_explicit(config, tq_fake):
    cfg = copy.deepcopy(config)
    cfg.data.dataloader_num_workers = 2
    with pytest.raises(ValueError, match="dataloader_num_workers=0"):
        make_trainer(cfg, FakeRollout())

    cfg = copy.deepcopy(config)
    OmegaConf.update(cfg, "trainer.v1.sampler.sampler_kwargs.strategy_name", "gps", force_add=True)
    with pytest.raises(ValueError, match="unknown rollwise sampler_kwargs"):
        make_trainer(cfg, FakeRollout())

    cfg = copy.deepcopy(config)
    cfg.trainer.v1.sampler.sampler_kwargs.id_column = "extra_info.split"  # not unique
    with pytest.raises(ValueError, match="must be unique"):
        make_trainer(cfg, FakeRollout())

    # a colocated reward model scores after sampling: no reward in TransferQueue yet
    trainer = make_trainer(config, FakeRollout(reward=lambda pid, s, t: None))
    with pytest.raises(RuntimeError, match="rule-based reward"):
        step(trainer)

    cfg = copy.deepcopy(config)
    cfg.trainer.v1.sampler.custom_sampler.path = None  # verl's own buffer, our dataset
    rv._set_current_hub(None)
    with pytest.raises(RuntimeError, match="RollwiseReplayBuffer"):
        make_trainer(cfg, FakeRollout())


@pytest.mark.parametrize("script", ["run_gps_1node.sh", "run_gps_multinode.sh"])
def test_launch_scripts_are_valid_verl_configs(script, tmp_path):
    """Run the example script with stand-ins for python3/ray that record the arguments, then let
    Hydra compose verl's config from them, verl validate it and load rollwise's classes."""
    import shutil
    import subprocess

    import verl
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python3").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGS_OUT"\n')
    # ray job submit runs its entrypoint (what follows "--") on the cluster
    (shim / "ray").write_text('#!/bin/sh\nwhile [ "$1" != "--" ]; do shift; done\nshift\nexec "$@"\n')
    for exe in ("python3", "ray"):
        (shim / exe).chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "ARGS_OUT": str(tmp_path / "args"),
           "DATA": str(tmp_path / "data")}
    env.pop("NNODES", None)
    if "multi" in script:
        env["NNODES"] = "4"
    subprocess.run(["bash", str(ROOT / "examples" / "verl" / script), "trainer.total_epochs=1"],
                   check=True, env=env)
    args = (tmp_path / "args").read_text().splitlines()
    overrides = args[args.index("verl.trainer.main_ppo") + 1:]
    cfg_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=cfg_dir, version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    OmegaConf.resolve(cfg)  # as verl's TaskRunner does
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    assert cfg.trainer.use_v1 and cfg.data.dataloader_num_workers == 0
    assert get_dataset_class(cfg.data) is rv.RollwiseDataset
    stub = type("Stub", (), {"config": cfg, "trainer_mode": cfg.trainer.v1.trainer_mode,
                             "_add_prompts_to_generate": lambda self, n: n})()
    buf = PPOTrainerSync._build_replay_buffer(stub)
    assert type(buf) is rv.RollwiseReplayBuffer
    rc = buf.rollwise_config
    assert (rc.strategy, rc.id_column, rc.hyper) == ("gps", "extra_info.prompt_id",
                                                      {"target": 0.5, "diversity": 0.1})
    assert rc.train_batch_size == cfg.data.train_batch_size and rc.filter_groups["enable"] is False
    assert cfg.trainer.total_epochs == 1 and cfg.trainer.nnodes == (4 if "multi" in script else 1)
    assert os.path.exists(cfg.reward.custom_reward_function.path)
    reward = _load_example("reward")
    assert reward.compute_score("rollwise/arithmetic", "3 + 4 = 7\nAnswer: 7", "7") == 1.0
    assert reward.compute_score("rollwise/arithmetic", "Answer: 8", "7") == 0.0


@pytest.mark.skipif(os.environ.get("ROLLWISE_TEST_RAY") != "1", reason="set ROLLWISE_TEST_RAY=1 (starts Ray)")
def test_real_transfer_queue(config):
    """The sync scenario against the real TransferQueue (SimpleStorage on a local Ray)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        transfer_queue.init(OmegaConf.create({"backend": {"SimpleStorage": {
            "num_data_storage_units": 1, "total_storage_size": 10000}}}))
        rollout = FakeRollout()
        trainer = make_trainer(config, rollout)
        rec = Recorder(trainer.replay_buffer.hub)
        batches = [step(trainer) for _ in range(3)]
        trainer.replay_buffer.hub.take(1)
        selects = [e[1] for e in rec.events if e[0] == "select"]
        assert [served_ids(b) for b in rollout.submitted] == selects[:3]
        assert all(len(b.keys) == B * N for b in batches)
        assert Counter(rec.observed()) == Counter((p, tuple(r)) for p, r in rollout.truth.values())
    finally:
        transfer_queue.close()
        ray.shutdown()
