"""Small I/O helpers: atomic writes, so a crash never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[str], None],
                 make_parents: bool = False) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it into place.

    The parent directory must exist unless ``make_parents`` (for a program's own output and
    cache folders): a mistyped user path fails instead of creating folders wherever it points."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a directory, not a file")
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str, make_parents: bool = False) -> None:
    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, _write, make_parents)


NOTES_MARKER = "<!-- notes: written by hand, kept when the script redraws this file -->"


def atomic_write_report(path: str | os.PathLike, text: str, make_parents: bool = False) -> None:
    """Write a generated Markdown report atomically, keeping the hand-written notes of the file it
    replaces (everything from :data:`NOTES_MARKER` on) below the new text."""
    notes = ""
    if os.path.isfile(path):
        old = Path(path).read_text(encoding="utf-8")
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER):]
    body = text if not notes else text.rstrip("\n") + "\n\n" + notes
    atomic_write_text(path, body, make_parents=make_parents)


@contextmanager
def staged_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A result folder written whole or not at all: the block writes its files into a hidden
    sibling of ``path`` (created with the parents ``path`` needs); when the block ends, each
    entry moves into ``path`` by rename, replacing the entry of the same name (a sub-folder as a
    whole, so an earlier run's files are never mixed with this one's). If the block fails or is
    interrupted, the sibling is removed and ``path`` is exactly as it was. Reports already in
    ``path`` are copied in first, so :func:`atomic_write_report` keeps their hand-written notes."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        if out.is_dir():
            for report in out.glob("*.md"):
                shutil.copy2(report, stage / report.name)
        yield stage
        out.mkdir(exist_ok=True)
        for entry in sorted(stage.iterdir()):
            target = out / entry.name
            if target.is_dir() and not target.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=f".{entry.name}.old-", dir=out))
                os.replace(target, old / entry.name)
                os.replace(entry, target)
                shutil.rmtree(old)
            else:
                os.replace(entry, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def atomic_write_json(path: str | os.PathLike, obj: Any, make_parents: bool = False) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", make_parents)


def check_output_file(flag: str, path: str | os.PathLike,
                      inputs: dict[str, str | os.PathLike] | None = None) -> None:
    """Fail before any work if ``path`` cannot take an output file (``flag`` names it) or is one
    of the command's ``inputs`` (``{flag: path}``), which writing would replace."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{flag}: {str(p)!r} is a directory; give a file name")
    if not p.parent.is_dir():
        raise ValueError(f"{flag}: folder {str(p.parent)!r} does not exist")
    for other, given in (inputs or {}).items():
        q = Path(given)
        if p.resolve() == q.resolve() or (p.exists() and q.exists() and p.samefile(q)):
            raise ValueError(f"{flag}: {str(p)!r} is also the {other} input; writing it would "
                             f"replace that file: give another output path")


def check_output_dir(flag: str, path: str | os.PathLike) -> None:
    """Fail before any work if ``path`` cannot be (or become) an output folder."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{flag}: {str(p)!r} is a file; give a folder for the outputs")
    for parent in p.absolute().parents:  # the nearest existing ancestor must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{flag}: {str(parent)!r} is a file, so {str(p)!r} cannot be "
                                 "created; give a folder for the outputs")
            break
