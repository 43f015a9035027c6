"""Hard-prompt rescue (P²O): mine the prompts the policy keeps failing, evolve prompt templates
(with GEPA) under which it solves them, and distil the template-guided successes into the policy
inside TRL's GRPO loop. Attached to training as an add-on:
``rollwise.llm.run(settings, addons=[P2ORescue(RescueSettings(...))])``.

``HardPromptBank``, ``render_template`` and the response prefixes need nothing beyond rollwise;
template evolution needs the ``rescue`` extra (``pip install 'rollwise[rescue]'``) and
distillation the ``trl`` extra, so both are imported lazily.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from rollwise.rescue.bank import HardPromptBank
from rollwise.rescue.prefixes import RESPONSE_PREFIXES, restate_expression
from rollwise.rescue.templates import render_template

_LAZY = {
    **dict.fromkeys(("EvolutionResult", "TemplateAdapter", "evolve_template"), "gepa_adapter"),
    **dict.fromkeys(("ReflectionLMError", "OpenAIReflectionLM", "make_reflection_lm"), "reflection"),
    "RescueGRPOTrainer": "distill",
    "RescueCallback": "loop",
    "RescueSettings": "addon",
    "P2ORescue": "addon",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"rollwise.rescue.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'rollwise.rescue' has no attribute {name!r}")


__all__ = ["HardPromptBank", "RESPONSE_PREFIXES", "render_template", "restate_expression",
           *sorted(_LAZY)]
