"""Rendering a rescue template around a problem (no dependencies: used by GEPA evolution and by
distillation inside the GRPO loop)."""

from __future__ import annotations

PLACEHOLDER = "{problem}"


def render_template(template: str, problem: str) -> str:
    """The prompt for ``problem``: substituted at ``{problem}``, else appended after a blank line.

    Plain replacement, not ``str.format``: evolved templates may contain other braces.
    """
    if PLACEHOLDER in template:
        return template.replace(PLACEHOLDER, problem)
    return f"{template.rstrip()}\n\n{problem}"


__all__ = ["PLACEHOLDER", "render_template"]
