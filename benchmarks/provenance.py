"""What produced a result file: the exact command and the commit it ran at."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path


def provenance() -> dict[str, str | None]:
    """``{"command": ..., "commit": ...}`` for this process; the commit gains ``+changes`` when
    tracked files differ from it, and is None outside a git checkout."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += "+changes"
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(root)
    except ValueError:
        pass
    return {"command": shlex.join(["python", str(script), *sys.argv[1:]]), "commit": commit}
