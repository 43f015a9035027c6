"""One writer per output folder: an exclusive lock that two runs started into one folder meet.

Two ``rollwise train`` (or ``bench``) runs started into the same folder would both succeed and
leave it mixed: the checkpoints of one, the run log of the other. The lock is an advisory
``flock`` on a small file beside the outputs, holding the holder's pid. The kernel drops it when
its process ends, however it ends, so a lock left by a killed run is stale by construction and
never blocks; the file itself is removed on a normal exit. Where ``fcntl`` does not exist
(Windows) no lock is taken.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class FolderBusyError(OSError):
    """Another live process writes to the same output folder."""


def lock_path(folder: str | os.PathLike) -> Path:
    """The lock file of an output folder: beside it, so a folder that is replaced whole (``bench
    --out``) keeps its lock."""
    folder = Path(folder).resolve()
    return folder.parent / f".{folder.name}.rollwise-lock"


@contextmanager
def output_lock(flag: str, folder: str | os.PathLike) -> Iterator[None]:
    """Hold the output folder's lock for the block; raise :class:`FolderBusyError` naming
    ``flag``, the folder and the holder's pid if a live process holds it.

    Args:
        flag: the option that named the folder (for the message).
        folder: the output folder (it need not exist yet; its parent must).
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)  # the command creates the folder anyway
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FolderBusyError(f"{flag} {str(folder)!r} is being written by another rollwise "
                                  f"process (pid {holder}); wait for it or choose another "
                                  f"folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            try:
                os.unlink(path)  # still ours: the lock is held until the close below
            except OSError:
                pass
    finally:
        os.close(fd)
