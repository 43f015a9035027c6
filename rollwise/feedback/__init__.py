"""Framework-free feedback: prompt files in, and the selection hub that turns groups finishing in
any order into selector updates. Imports nothing above the core; names load on first use, so
reading a prompt file does not import torch."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "HubConfig": "rollwise.feedback.hub",
    "SelectionHub": "rollwise.feedback.hub",
    "observation_batches": "rollwise.feedback.hub",
    "PromptSet": "rollwise.feedback.prompt_files",
    "load_prompt_file": "rollwise.feedback.prompt_files",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rollwise.feedback' has no attribute {name!r}")
