"""Which training checkpoint a resume can trust: whole ones only.

A run killed while it saves (SIGKILL, Ctrl-C, a full disk) leaves a ``checkpoint-N`` folder
with some of its files, or with a truncated one. :class:`~rollwise.integrations.trl.
RollwiseGRPOTrainer` writes :data:`COMPLETE_FILE` into a checkpoint after everything else, so a
checkpoint with it is whole and one without it, in a folder where any checkpoint has it, was
cut short. Checkpoints from before the marker existed are judged by their files: the trainer's
state, the selector and the model weights, each there and not empty.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

COMPLETE_FILE = "rollwise_checkpoint_complete"  # written last: the checkpoint is whole
CHECKPOINT_FILES = ("trainer_state.json", "rollwise_selector.pt")
MODEL_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
               "adapter_model.safetensors")


def _there(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _has_files(checkpoint: Path) -> bool:
    return (all(_there(checkpoint / n) for n in CHECKPOINT_FILES)
            and any(_there(checkpoint / n) for n in MODEL_FILES))


def checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The ``checkpoint-N`` folders in ``folder``, newest (largest N) first."""
    found = [(int(p.name.removeprefix("checkpoint-")), p) for p in Path(folder).glob("checkpoint-*")
             if p.is_dir() and p.name.removeprefix("checkpoint-").isdigit()]
    return [p for _, p in sorted(found, reverse=True)]


def last_whole_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The newest whole checkpoint in ``folder`` (None if there is none); newer ones that were
    not completely written are skipped with a warning."""
    found = checkpoints(folder)
    marked = any((p / COMPLETE_FILE).is_file() for p in found)
    for path in found:
        if _has_files(path) and (not marked or (path / COMPLETE_FILE).is_file()):
            return path
        log.warning("--resume: skipping %s: a checkpoint that was not completely written", path)
    return None


def checkpoint_step(checkpoint: Path) -> int:
    """The optimiser step a checkpoint was saved at (its ``trainer_state.json``)."""
    try:
        return int(json.loads((checkpoint / "trainer_state.json").read_text())["global_step"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"--resume: {str(checkpoint)!r} has an unreadable trainer_state.json "
                         f"({err})") from err
