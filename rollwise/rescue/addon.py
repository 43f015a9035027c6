"""P²O as a training add-on: its settings, and what it hands the GRPO engine.

``run(settings, addons=[P2ORescue(RescueSettings(...))])`` trains with a
:class:`~rollwise.rescue.distill.RescueGRPOTrainer` (hard prompts get template-guided rollouts,
distilled under the bare prompt) and a :class:`~rollwise.rescue.loop.RescueCallback` (evolves the
template with GEPA every ``every`` steps). The engine knows nothing of either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from rollwise.llm.engine import TrainSettings
from rollwise.rescue.prefixes import RESPONSE_PREFIXES
from rollwise.validation import Interval, OneOf, check_fields, setting


@dataclass
class RescueSettings:
    """How P²O mines hard prompts, evolves templates and guides rollouts (``rollwise train
    --rescue p2o --rescue-<field>``)."""

    every: int = setting(10, help="optimiser steps between template evolutions",
                         constraint=Interval(int, 1))
    guided: int = setting(1, help="template-guided rollouts per hard prompt's group "
                                  "(1..num_generations-1)", constraint=Interval(int, 1))
    proposer: str = setting("auto", help="where new templates come from: 'examples' (worked "
                                         "examples from the policy's own verified solutions, no "
                                         "LM), 'reflection' (a reflection LM writes them), 'auto' "
                                         "(reflection when --rescue-reflection names an endpoint "
                                         "or callable, else examples) or 'none' (no template "
                                         "search and no GEPA rollouts: the response prefix alone "
                                         "guides hard prompts)",
                            constraint=OneOf(("auto", "examples", "reflection", "none")))
    max_examples: int = setting(4, help="most worked examples in one template ('examples' proposer)",
                                constraint=Interval(int, 1))
    example_capacity: int = setting(256, help="verified solutions the example store keeps (the newest)",
                                    constraint=Interval(int, 1))
    reflection: Any = setting("policy", help="reflection LM ('reflection' proposer): 'policy' (the "
                                             "policy itself), an "
                                             "OpenAI-compatible URL, or (Python) a str -> str callable")
    max_metric_calls: int = setting(200, help="GEPA rollout budget per evolution",
                                    constraint=Interval(int, 1))
    max_hard: int = setting(16, help="hard prompts given to GEPA per evolution (the oldest)",
                            constraint=Interval(int, 1))
    seed_template: str | None = setting(None, help="first template GEPA starts from ('{problem}' "
                                                   "marks where the problem goes); none: the task's "
                                                   "instruction after the problem")
    prefix: str = setting("none", help="response prefix of guided rollouts: 'restate' starts the "
                                       "answer with the problem's equation restated ('8 - 7 = '), "
                                       "'none' leaves the start to the policy",
                          constraint=OneOf(tuple(RESPONSE_PREFIXES)))
    window: int = setting(2, help="failed groups in a row that make a prompt hard",
                          constraint=Interval(int, 1))
    threshold: float = setting(0.5, help="a reward at least this counts as a success",
                               constraint=Interval(float, 0, 1, closed="right"))

    def validate(self, num_generations: int | None = None) -> None:
        """Check every field (``guided`` against ``num_generations`` when given)."""
        check_fields(self, prefix="RescueSettings.")
        if num_generations is not None and self.guided >= num_generations:
            raise ValueError(f"RescueSettings.guided must be an int in 1..num_generations-1 = "
                             f"1..{num_generations - 1} (every group keeps a bare rollout), got "
                             f"{self.guided!r}")
        if self.proposer == "none" and self.prefix == "none":
            raise ValueError("RescueSettings.proposer='none' searches no template, so nothing would guide "
                             "a hard prompt: set RescueSettings.prefix (e.g. 'restate') or a proposer")
        if self.max_hard > self.max_metric_calls:
            raise ValueError(f"RescueSettings.max_hard={self.max_hard} exceeds max_metric_calls="
                             f"{self.max_metric_calls}: GEPA could not even score the seed template")
        reflection = self.reflection
        if not callable(reflection) and not (isinstance(reflection, str) and (
                reflection == "policy" or reflection.startswith(("http://", "https://")))):
            raise ValueError(f"RescueSettings.reflection must be 'policy', an http(s) URL or a "
                             f"callable, got {reflection!r}")
        template = self.seed_template
        if template is not None and (not isinstance(template, str) or not template.strip()):
            raise ValueError("RescueSettings.seed_template must be a non-empty string or None")

    @property
    def template_source(self) -> str:
        """The proposer ``auto`` stands for: reflection only when another LM is given (a policy
        reflecting on its own failures proposed nothing GEPA accepted at 135M)."""
        if self.proposer != "auto":
            return self.proposer
        return "examples" if self.reflection == "policy" else "reflection"

    def as_record(self) -> dict[str, Any]:
        """The settings as JSON values (a reflection callable is recorded by its type's name)."""
        record = asdict(self)
        if callable(self.reflection):
            record["reflection"] = f"callable:{type(self.reflection).__name__}"
        return record


class P2ORescue:
    """The P²O add-on for :func:`rollwise.llm.run` / :func:`rollwise.llm.run_grpo`.

    Training rows need ``question`` (the bare problem the templates wrap) and ``answer``; GEPA
    scores templates with the task's verifier (default :func:`rollwise.llm.tasks.verify_number`).
    Its record (``result["rescue"]``): the settings, training rollouts, evolutions, GEPA and guided
    rollouts, the template and the bank's hard and rescued prompts.
    """

    name = "rescue"

    def __init__(self, settings: RescueSettings | None = None) -> None:
        self.settings = settings if settings is not None else RescueSettings()
        if not isinstance(self.settings, RescueSettings):
            raise TypeError(f"settings must be a RescueSettings, got {type(self.settings).__name__}")
        self.settings.validate()
        self._callback: Any = None
        self._rows: list[dict[str, Any]] = []
        self._verify: Callable[[str, str], float] | None = None
        self._train: TrainSettings | None = None

    def check(self, settings: TrainSettings) -> None:
        self.settings.validate(settings.num_generations)

    def prepare(self, settings: TrainSettings, train_rows: list[dict[str, Any]],
                verify: Callable[[str, str], float] | None) -> tuple[type, dict[str, Any]]:
        from rollwise.llm.tasks import verify_number
        from rollwise.rescue.bank import HardPromptBank
        from rollwise.rescue.distill import RescueGRPOTrainer
        from rollwise.rescue.examples import SolvedExampleStore

        missing = sorted({c for row in train_rows for c in ("question", "answer") if c not in row})
        if missing:
            raise ValueError(f"train_rows: rescue needs the columns {missing} in every row")
        s = self.settings
        self._rows, self._verify, self._train = train_rows, verify or verify_number, settings
        self._callback = None
        bank = HardPromptBank(window=s.window, success_threshold=s.threshold)
        examples = SolvedExampleStore(s.example_capacity) if s.template_source == "examples" else None
        # no template until the first evolution scores one on the current policy; templates wrap
        # the bare question in training as in evolution
        return RescueGRPOTrainer, dict(bank=bank, guided_per_group=s.guided, examples=examples,
                                       problems={row["id"]: row["question"] for row in train_rows},
                                       response_prefix=RESPONSE_PREFIXES[s.prefix])

    def callbacks(self, trainer: Any) -> list[Any]:
        from rollwise.rescue.loop import RescueCallback

        s, train = self.settings, self._train
        if train is None:
            raise RuntimeError("P2ORescue.callbacks called before prepare")
        if s.template_source == "none":  # the prefix alone guides: nothing to evolve
            return []
        self._callback = RescueCallback(
            trainer, self._rows, self._verify, s.reflection, every=s.every,
            max_metric_calls=s.max_metric_calls, max_hard=s.max_hard, seed_template=s.seed_template,
            max_new_tokens=train.max_new_tokens, seed=train.seed, proposer=s.template_source,
            max_examples=s.max_examples)
        return [self._callback]

    def summary(self, trainer: Any) -> dict[str, Any]:
        from rollwise.rescue.loop import rescue_summary

        what = self._callback.summary() if self._callback is not None else rescue_summary(trainer, "none")
        return {"settings": self.settings.as_record(), "training_rollouts": trainer.rollouts_spent, **what}


__all__ = ["RescueSettings", "P2ORescue"]
