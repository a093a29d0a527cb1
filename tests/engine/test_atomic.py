"""The one atomic writer: whole files or none, and what killed writers leave is undone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from clipbranches_widget.engine import _atomic


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "f.json"
    _atomic.write_text(target, "old")
    with pytest.raises(RuntimeError), _atomic.atomic_file(target) as f:
        f.write(b"half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["f.json"]


def test_temporaries_of_dead_writers_are_swept_and_live_ones_kept(tmp_path):
    target = tmp_path / "s.json"
    dead = tmp_path / f".s.json.tmp-{_dead_pid()}-7"
    live = tmp_path / f".s.json.tmp-{os.getpid()}-99"
    other = tmp_path / f".t.json.tmp-{_dead_pid()}-7"  # another file's: not ours to touch
    for p in (dead, live, other):
        p.write_bytes(b"x")
    _atomic.write_text(target, "new")
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, other.name, "s.json"])


def test_a_swap_killed_between_its_renames_is_rolled_back(tmp_path):
    dest = tmp_path / "idx"
    parked = tmp_path / f".idx.old-{_dead_pid()}-1" / "previous"
    parked.mkdir(parents=True)
    (parked / "a").write_text("previous")
    assert not dest.exists()
    assert _atomic.recover_dir(dest) is True
    assert (dest / "a").read_text() == "previous" and os.listdir(tmp_path) == ["idx"]


def test_replace_dir_swaps_and_leaves_nothing_beside(tmp_path):
    dest, ready = tmp_path / "c", tmp_path / "ready"
    dest.mkdir()
    (dest / "v").write_text("1")
    ready.mkdir()
    (ready / "v").write_text("2")
    _atomic.replace_dir(ready, dest)
    assert (dest / "v").read_text() == "2" and os.listdir(tmp_path) == ["c"]
