"""One writer per output folder (rollwise._lock), with real second processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from rollwise._lock import FolderBusyError, lock_path, output_lock
from rollwise.cli import main

pytest.importorskip("fcntl")

HOLD = textwrap.dedent("""
    import sys, time
    from rollwise._lock import output_lock
    with output_lock("--out", sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)
""")


@pytest.fixture
def holder(tmp_path):
    """A second process holding the lock of tmp_path / "out"; killed (SIGKILL) at the end."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield out, proc
    proc.kill()
    proc.wait()


def test_a_second_process_is_refused_and_a_killed_holder_does_not_block(holder):
    out, proc = holder
    with pytest.raises(FolderBusyError, match=rf"--out .*out.* another rollwise process \(pid {proc.pid}\)"):
        with output_lock("--out", out):
            pass
    proc.send_signal(signal.SIGKILL)  # killed mid-run: its lock file stays, its lock does not
    proc.wait()
    assert lock_path(out).exists()
    with output_lock("--out", out):
        assert lock_path(out).read_text().strip() != str(proc.pid)
    assert not lock_path(out).exists()  # removed on a normal exit


def test_train_and_bench_refuse_a_folder_another_run_writes(holder, tmp_path, capsys, monkeypatch):
    import rollwise.llm.models
    import rollwise.sim

    def boom(*a, **k):
        raise AssertionError("work started while another run held the folder")

    monkeypatch.setattr(rollwise.llm.models, "resolve_model", boom)
    monkeypatch.setattr(rollwise.sim, "build_world", boom)
    out, proc = holder
    assert main(["train", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--output-dir" in err and f"pid {proc.pid}" in err
    assert main(["bench", "--strategies", "uniform", "--seeds", "1", "--steps", "2",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and f"pid {proc.pid}" in err
    assert not out.exists()
