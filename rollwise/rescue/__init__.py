"""Hard-prompt rescue (P²O): mine the prompts the policy keeps failing and evolve prompt templates
(with GEPA) under which it solves them.

``HardPromptBank`` needs nothing beyond rollwise; template evolution needs the ``rescue`` extra
(``pip install 'rollwise[rescue]'``), so it is imported lazily.
"""

from __future__ import annotations

from typing import Any

from rollwise.rescue.bank import HardPromptBank

_LAZY = {"EvolutionResult", "TransformersPolicy", "ReflectionLMError", "OpenAIReflectionLM",
         "TemplateAdapter", "evolve_template", "render_template", "make_reflection_lm"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from rollwise.rescue import gepa_adapter

        return getattr(gepa_adapter, name)
    raise AttributeError(f"module 'rollwise.rescue' has no attribute {name!r}")


__all__ = ["HardPromptBank", *sorted(_LAZY)]
