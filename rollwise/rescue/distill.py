"""P²O distillation inside TRL's GRPO loop: template-guided successes trained as bare-prompt completions.

A group of a hard prompt (every rollout fails) has zero reward variance, so GRPO learns nothing
from it. :class:`RescueGRPOTrainer` generates the last ``guided_per_group`` rollouts of such a
group from the prompt wrapped in its rescue template, then hands TRL the *original* prompt's
tokens for those rows. Everything TRL computes afterwards (rewards, group advantages, the
reference and behaviour log-probabilities, the loss) therefore treats a guided completion as a
completion of the bare prompt: the policy is pushed towards producing it without the template,
and a guided success gives the group the variance it lacked.

Off-policy correction. A guided completion y was sampled from pi(.|template(x)), not pi(.|x).
The exact correction would weight its loss by pi(y|x) / pi(y|template(x)); for the prompts this
is for, that ratio is near zero precisely on the successes worth distilling (the bare policy
would not have produced them), and its variance is unbounded, so the signal would vanish. We
use no such weight: the behaviour log-probabilities are those of the current policy under the
*original* prompt (TRL's default: ``old_per_token_logps`` = the detached current log-probs, or
recomputed on ``prompt_ids`` = the original prompt when TRL needs them), so the PPO ratio starts
at 1 and TRL's ratio clipping (``epsilon``) bounds how far repeated updates on the same batch
(``num_iterations > 1``) move pi(y|x). The update is thus the advantage-weighted likelihood
gradient of guided samples under the bare prompt: biased on purpose (towards the guided
success distribution, as in P²O and other guidance methods), with clipping as the only brake.
Guided rows are at most ``guided_per_group < num_generations`` of a group, so every group keeps
on-policy rollouts.

A *response prefix* (:mod:`rollwise.rescue.prefixes`) guides by the start of the answer instead
of (or as well as) the prompt: a guided row is generated from the prompt followed by the prefix's
tokens, and its completion is the prefix followed by what the policy wrote, so the verifier
scores both and the policy is trained to write both after the bare prompt.

Only unguided rewards reach the selector and the hard-prompt bank: a template's success is not
the policy's. Guided rollouts are counted as cost (``rollouts_spent`` and ``guided_rollouts``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from accelerate.utils import gather_object

from rollwise.integrations.trl import CheckpointPart, RollwiseGRPOTrainer, prompt_text
from rollwise.metrics import effective_sample_ratio
from rollwise.rescue.bank import HardPromptBank
from rollwise.rescue.examples import SolvedExampleStore, has_nearest_marker, nearest_resolver
from rollwise.rescue.prefixes import PrefixRule
from rollwise.rescue.templates import render_template
from rollwise.validation import Interval

RESCUE_FILE = "rollwise_rescue.json"
RESCUE_STATE_VERSION = 2


def completion_text(completion: Any) -> str:
    """A completion as text (TRL hands conversational completions as message lists)."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content", "")) for m in completion if isinstance(m, Mapping))


def wrap_prompt(prompt: Any, template: str, problem: str | None = None) -> Any:
    """``prompt`` (text, or chat messages: the last user message) with its text rendered inside
    ``template``; with ``problem``, that text is replaced by ``template`` rendered around
    ``problem`` instead (the text GEPA scored the template on), so training samples guided rows
    from exactly the prompt the template was chosen for."""
    def render(text: str) -> str:
        return render_template(template, text if problem is None else problem)

    if isinstance(prompt, str):
        return render(prompt)
    messages = copy.deepcopy(list(prompt))
    for message in reversed(messages):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            message["content"] = render(message["content"])
            return messages
    raise ValueError("a conversational prompt needs a user message with text content to wrap")


class RescueGRPOTrainer(RollwiseGRPOTrainer):
    """:class:`RollwiseGRPOTrainer` that distils rescue templates into the policy on hard prompts.

    A chosen prompt is guided when ``bank.is_hard(pool id)`` and it has a template
    (``templates[pool id]``, else ``template``) that changes its prompt, or ``response_prefix``
    (a :data:`~rollwise.rescue.prefixes.PrefixRule` of the bare problem) gives it a prefix.
    ``bank`` and ``templates`` may be updated between steps (e.g. after
    :func:`rollwise.rescue.evolve_template`). ``problems`` maps pool ids to the bare problem text
    the templates are rendered around (as in template evolution: a template that restates the
    answer format is not doubled by the prompt's own instruction); without it, the template
    wraps the prompt's user text. ``guided_rows`` holds the last generation batch's guided mask
    (global rows, group-major). Logged: ``rescue/guided_rows``, ``rescue/guided_success`` (mean
    guided success) beside ``rescue/hard_bare_success`` (the mean success of the same groups'
    bare rollouts), ``rescue/hard`` (guided groups), ``rescue/solved_examples`` (the
    solved-example store's size, when it has one), and ``rollwise/esr`` over the batch as trained
    (guided rows included); ``rollwise/spearman`` is not logged, since guided groups have fewer
    bare rollouts.
    Not supported yet: vLLM, tools, environments, custom ``rollout_func``.
    """

    def __init__(self, *args: Any, bank: HardPromptBank, templates: Mapping[str, str] | None = None,
                 template: str | None = None, guided_per_group: int = 1,
                 problems: Mapping[str, str] | None = None,
                 examples: SolvedExampleStore | None = None,
                 response_prefix: PrefixRule | None = None, **kwargs: Any) -> None:
        if not isinstance(bank, HardPromptBank):
            raise TypeError(f"bank must be a HardPromptBank, got {type(bank).__name__}")
        if kwargs.get("budget_objective") is not None:
            raise ValueError("budget_objective: per-prompt budgets are not supported with the "
                             "rescue's guided groups")
        if examples is not None and not isinstance(examples, SolvedExampleStore):
            raise TypeError(f"examples must be a SolvedExampleStore or None, got {type(examples).__name__}")
        if response_prefix is not None and not callable(response_prefix):
            raise TypeError("response_prefix must be a callable problem -> prefix (or None), got "
                            f"{type(response_prefix).__name__}")
        for name, text in [("template", template), *((f"templates[{k!r}]", v)
                                                     for k, v in (templates or {}).items())]:
            if text is not None and (not isinstance(text, str) or not text.strip()):
                raise ValueError(f"{name} must be a non-empty string")
        super().__init__(*args, **kwargs)
        if not Interval(int, 1, self.num_generations - 1).is_valid(guided_per_group):
            raise ValueError(f"guided_per_group must be an int in [1, num_generations="
                             f"{self.num_generations}), got {guided_per_group!r}: every group keeps an "
                             "unguided rollout")
        unsupported = [name for name, on in [("use_vllm", self.use_vllm), ("tools", self.tools),
                                             ("rollout_func", self.rollout_func is not None),
                                             ("environment_factory", self.environment_factories is not None)]
                       if on]
        if unsupported:
            raise ValueError(f"RescueGRPOTrainer does not support {', '.join(unsupported)} yet")
        if problems is not None:
            missing = [pid for pid in self.selector.pool.ids if pid not in problems]
            if missing:
                raise ValueError(f"problems lacks {len(missing)} pool ids, e.g. {missing[0]!r}")
        self.bank, self.templates, self.template = bank, dict(templates or {}), template
        self.problems = None if problems is None else {
            pid: str(problems[pid]) for pid in self.selector.pool.ids}
        self.guided_per_group = guided_per_group
        self.examples = examples
        self.response_prefix = response_prefix
        self._row_prefixes: list[list[int] | None] | None = None  # during a guided generation
        self._completions: list[str] | None = None
        self.guided_rollouts = 0
        self.gepa_rollouts = 0  # spent by template evolution (RescueCallback), part of the run's cost
        self.evolutions: list[dict[str, Any]] = []  # what each template evolution did (RescueCallback)
        self.guided_rows: np.ndarray | None = None

    @property
    def total_rollouts(self) -> int:
        return self.rollouts_spent + self.gepa_rollouts

    def template_for(self, pid: str) -> str | None:
        """The template to guide ``pid`` with, or None when it is not hard or has none; its
        ``{examples:K}`` markers are filled with the stored solutions nearest to ``pid``."""
        if not self.bank.is_hard(pid):
            return None
        template = self.templates.get(pid, self.template)
        if template is None or self.examples is None or not has_nearest_marker(template):
            return template
        return self.example_resolver()(template, {"id": pid})

    def example_resolver(self) -> Callable[[str, Mapping[str, Any]], str]:
        """``resolve(template, row)`` for rows with a pool ``id``: nearest stored solutions by the
        pool's embeddings (see :func:`rollwise.rescue.examples.nearest_resolver`)."""
        if self.examples is None:
            raise RuntimeError("this trainer has no solved-example store")
        pool = self.selector.pool
        return nearest_resolver(self.examples, lambda row: pool.embeddings[pool.index_of(str(row["id"]))])

    def _changing_template(self, index: int, pid: str) -> str | None:
        """``template_for(pid)``, or None when it renders the row's prompt unchanged (e.g. the
        default seed template, problem + the task's own instruction): such rows would be plain
        rollouts withheld from the selector and the bank for nothing."""
        template = self.template_for(pid)
        if template is None:
            return None
        prompt = self.train_dataset[index]["prompt"]
        problem = None if self.problems is None else self.problems[pid]
        return None if wrap_prompt(prompt, template, problem) == prompt else template

    def _problem(self, index: int, pid: str) -> str:
        """The bare problem of a pool row: ``problems[pid]``, else its prompt's user text."""
        if self.problems is not None:
            return self.problems[pid]
        return prompt_text(self.train_dataset[index]["prompt"])

    def _guidance(self, index: int, pid: str) -> tuple[str | None, str | None]:
        """(template, response prefix) of a chosen row, each None where it does not apply; the
        row's group is guided when either does."""
        if not self.bank.is_hard(pid):
            return None, None
        prefix = None if self.response_prefix is None else self.response_prefix(self._problem(index, pid))
        return self._changing_template(index, pid), prefix or None

    # -- generation: template for sampling, original prompt for everything after ------------
    def _generate(self, prompts: list):
        if self._pending is None or not self.model.training:
            return super()._generate(prompts)
        chosen, n = self._pending[0], self.num_generations
        ids = [self.selector.pool.ids[int(i)] for i in chosen]
        guidance = [self._guidance(int(i), pid) for i, pid in zip(chosen, ids, strict=True)]
        guided = np.array([guidance[j // n] != (None, None) and j % n >= n - self.guided_per_group
                           for j in range(len(chosen) * n)])
        self.guided_rows = guided
        lo = self.accelerator.process_index * len(prompts)
        local = [j for j in range(len(prompts)) if guided[lo + j]]
        if not local:
            return super()._generate(prompts)
        sampled, prefixes = list(prompts), [None] * len(prompts)
        for j in local:
            pid = ids[(lo + j) // n]
            template, prefix = guidance[(lo + j) // n]
            if template is not None:
                sampled[j] = wrap_prompt(prompts[j], template,
                                         None if self.problems is None else self.problems[pid])
            if prefix is not None:
                prefixes[j] = self.processing_class(text=[prefix], add_special_tokens=False)["input_ids"][0]
        self._row_prefixes = prefixes if any(p is not None for p in prefixes) else None
        try:
            out = list(super()._generate(sampled))
        finally:
            self._row_prefixes = None
        original_ids, _, _ = self._tokenize_prompts([prompts[j] for j in local])
        prompt_ids = list(out[0])
        for j, row in zip(local, original_ids, strict=True):
            prompt_ids[j] = list(row)
        out[0] = prompt_ids
        return tuple(out)

    def _tokenize_prompts(self, prompts: list):
        prompt_ids, images, fields = super()._tokenize_prompts(prompts)
        if self._row_prefixes is not None:  # a prefixed row is generated on from its prefix ...
            prompt_ids = [list(ids) + (prefix or [])
                          for ids, prefix in zip(prompt_ids, self._row_prefixes, strict=True)]
        return prompt_ids, images, fields

    def _generate_single_turn(self, prompt_ids, *args: Any, **kwargs: Any):
        completion_ids, logprobs = super()._generate_single_turn(prompt_ids, *args, **kwargs)
        if self._row_prefixes is not None:  # ... and its completion holds the prefix: scored, trained
            completion_ids = [(prefix or []) + list(ids)
                              for ids, prefix in zip(completion_ids, self._row_prefixes, strict=True)]
        return completion_ids, logprobs

    # -- observation: unguided rewards only -------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # the batch's completions (every process's), for the solved-example store
        if self.examples is not None and self._pending is not None and self.model.training:
            self._completions = [completion_text(c) for c in gather_object(list(completions))]
        return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

    def _store_solutions(self, chosen: np.ndarray, success: np.ndarray) -> None:
        """Every verified success of the batch (guided ones too: a rescued prompt's solution is
        an example for its neighbours) goes to the solved-example store."""
        completions, self._completions = self._completions, None
        if self.examples is None or completions is None or len(completions) != success.size:
            return
        pool, n = self.selector.pool, self.num_generations
        for j in np.flatnonzero(success.ravel() >= 1.0):
            index = int(chosen[j // n])
            pid = pool.ids[index]
            problem = self._problem(index, pid)
            answer = self.train_dataset[index].get("answer")
            if completions[j].strip():
                self.examples.add(pid, problem, completions[j], pool.embeddings[index],
                                  step=int(self.state.global_step),
                                  answer=None if answer is None else str(answer))

    def _observe(self, rewards: np.ndarray) -> None:
        """Bank and selector see bare-prompt rewards: full groups in one call, the unguided part
        of guided groups in a second (their groups are smaller); the batch metrics count all."""
        chosen, predicted, _ = self._pending  # no per-prompt budgets here (refused at start)
        n, bare = self.num_generations, self.num_generations - self.guided_per_group
        guided = self.guided_rows if self.guided_rows is not None else np.zeros(rewards.size, dtype=bool)
        grouped, rescued = rewards.reshape(len(chosen), n), guided.reshape(len(chosen), n).any(axis=1)
        success = self._successes(grouped)
        ids = np.array([self.selector.pool.ids[int(i)] for i in chosen])
        for part, cols in ((~rescued, n), (rescued, bare)):
            if part.any():
                self.bank.observe(list(ids[part]), grouped[part, :cols])
                if self.accelerator.is_main_process:  # the selector that chooses
                    self.selector.observe(chosen[part], success[part, :cols])
        self._store_solutions(chosen, success)
        self.rollouts_spent += grouped.size
        self.guided_rollouts += int(guided.sum())
        metrics = self._metrics["train"]
        metrics["rollwise/esr"].append(effective_sample_ratio(success))
        metrics["rollwise/rollouts"] = [float(self.rollouts_spent)]  # cumulative, as the base
        metrics["rollwise/predicted_rate"].append(float(np.mean(predicted)))
        metrics["rescue/guided_rows"].append(float(guided.sum()))
        self._log_selection(chosen, predicted, success.mean(axis=1))
        metrics["rescue/hard"].append(float(rescued.sum()))
        if guided.any():  # the same groups' template-guided and bare rollouts, side by side
            metrics["rescue/guided_success"].append(float(success.ravel()[guided].mean()))
            metrics["rescue/hard_bare_success"].append(float(success[rescued, :bare].mean()))
        if self.examples is not None:
            metrics["rescue/solved_examples"].append(float(len(self.examples)))

    # -- checkpoints: the bank, the templates and the rescue's counters resume with the run ---
    def rescue_state(self) -> dict[str, Any]:
        return {"version": RESCUE_STATE_VERSION, "bank": self.bank.state_dict(), "template": self.template,
                "templates": dict(self.templates), "guided_rollouts": self.guided_rollouts,
                "gepa_rollouts": self.gepa_rollouts, "evolutions": copy.deepcopy(self.evolutions),
                "examples": None if self.examples is None else self.examples.state_dict()}

    def load_rescue_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`rescue_state` (also a version-1 state, saved before the solved-example
        store); checked whole first, so a bad state changes nothing."""
        keys = {"version", "bank", "template", "templates", "guided_rollouts", "gepa_rollouts", "evolutions"}
        version = state.get("version") if isinstance(state, Mapping) else None
        if version not in (1, RESCUE_STATE_VERSION):
            raise ValueError(f"rescue state version {version!r} is not 1 or {RESCUE_STATE_VERSION}")
        if version == RESCUE_STATE_VERSION:
            keys.add("examples")
        if set(state) != keys:
            raise ValueError(f"a rescue state needs exactly the keys {sorted(keys)}")
        template, templates = state["template"], state["templates"]
        if template is not None and not (isinstance(template, str) and template.strip()):
            raise ValueError("rescue state: template must be a non-empty string or null")
        if not isinstance(templates, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in templates.items()):
            raise ValueError("rescue state: templates must map ids to non-empty strings")
        counts = (state["guided_rollouts"], state["gepa_rollouts"])
        if not all(Interval(int, 0).is_valid(c) for c in counts):
            raise ValueError("rescue state: rollout counts must be ints >= 0")
        if not isinstance(state["evolutions"], list):
            raise ValueError("rescue state: evolutions must be a list")
        bank = HardPromptBank(**self.bank.config())
        bank.load_state_dict(state["bank"])  # raises on a bad bank before anything is replaced
        stored = state.get("examples") if self.examples is not None else None
        if stored is not None:  # likewise, on a scratch store first
            SolvedExampleStore(**self.examples.config()).load_state_dict(stored)
        self.bank, self.template, self.templates = bank, template, dict(templates)
        if stored is not None:  # in place: the template proposer holds this store
            self.examples.load_state_dict(stored)
        self.guided_rollouts, self.gepa_rollouts = counts
        self.evolutions = copy.deepcopy(state["evolutions"])

    def checkpoint_parts(self) -> dict[str, CheckpointPart]:
        return {**super().checkpoint_parts(), RESCUE_FILE: (self.rescue_state, self.load_rescue_state, True)}


__all__ = ["RESCUE_FILE", "RescueGRPOTrainer", "wrap_prompt"]
