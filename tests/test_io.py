"""Atomic writes and generated reports that keep their hand-written notes."""

from __future__ import annotations

import pytest

from rollwise._io import NOTES_MARKER, atomic_write_report, atomic_write_text


def test_report_keeps_the_notes_below_the_marker(tmp_path):
    path = tmp_path / "r.md"
    atomic_write_report(path, "# table v1\n")
    assert path.read_text() == "# table v1\n"
    notes = f"{NOTES_MARKER}\n## Notes\nwhy the numbers are what they are\n"
    path.write_text(path.read_text() + "\n" + notes)
    atomic_write_report(path, "# table v2\n| a |\n")
    assert path.read_text() == "# table v2\n| a |\n\n" + notes
    atomic_write_report(path, "# table v3\n")  # again: the notes are not doubled
    assert path.read_text().count(NOTES_MARKER) == 1 and path.read_text().startswith("# table v3")


def test_atomic_write_needs_the_parent_unless_asked(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "missing" / "f.txt", "x")
    assert not (tmp_path / "missing").exists()
    atomic_write_text(tmp_path / "missing" / "f.txt", "x", make_parents=True)
    assert (tmp_path / "missing" / "f.txt").read_text() == "x"
