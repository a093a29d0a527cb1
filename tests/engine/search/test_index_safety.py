"""Issue 16, the index: stale indexes refused, no leftovers, normal permissions, kill -9."""

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from clipbranches_widget.engine.boxes import Boxes
from clipbranches_widget.engine.search.index import BoxIndex
from clipbranches_widget.engine.search.scan import scan
from clipbranches_widget.engine.search.searcher import Searcher


def test_one_changed_row_is_refused_never_wrong(tmp_path, rng):
    n = 10_000
    codes = rng.integers(0, 100, (n, 32), dtype=np.uint8)
    BoxIndex.build(codes, tmp_path / "idx", subsets=[(0, 1, 2, 3)], progress=False)
    # a row the old 4,096-row sample skipped: the old fingerprint did not change
    sampled = set(np.linspace(0, n - 1, 4096).astype(np.int64).tolist())
    row = next(i for i in range(n) if i not in sampled)
    changed = codes.copy()
    changed[row, :4] = 200
    boxes = Boxes.from_bounds([{0: (200, 200), 1: (200, 200), 2: (200, 200), 3: (200, 200)}], 32)
    assert scan(changed, boxes).ids.tolist() == [row]
    with pytest.raises(ValueError, match="differ"):
        BoxIndex.open(tmp_path / "idx", changed)
    with pytest.raises(FileExistsError, match="does not match"):
        BoxIndex.build(changed, tmp_path / "idx", subsets=[(0, 1, 2, 3)], progress=False)
    stale = BoxIndex.open(tmp_path / "idx", codes)
    with pytest.raises(ValueError, match="fingerprint"):
        Searcher(changed, index=stale)
    fresh = BoxIndex.build(
        changed, tmp_path / "idx", subsets=[(0, 1, 2, 3)], overwrite=True, progress=False
    )
    assert fresh.search(boxes, path="index").ids.tolist() == [row]


def test_leftovers_of_killed_builds_are_removed(tmp_path, rng):
    codes = rng.integers(0, 256, (1_000, 32), dtype=np.uint8)
    dead = tmp_path / ".idx.building-999999999-1"
    (dead).mkdir()
    np.save(dead / "order.npy", np.zeros((1, 1000), np.uint32))
    old = tmp_path / ".idx.old-abc123"
    (old / "previous").mkdir(parents=True)
    (old / "previous" / "order.npy").write_bytes(b"x" * 100)
    BoxIndex.build(codes, tmp_path / "idx", subsets=[(0, 1)], progress=False)
    assert sorted(os.listdir(tmp_path)) == ["idx"]


def test_a_live_build_folder_is_left_alone(tmp_path, rng):
    codes = rng.integers(0, 256, (1_000, 32), dtype=np.uint8)
    live = tmp_path / ".idx.building-1-1"
    live.mkdir()
    old = tmp_path / ".idx.old-xyz"
    old.mkdir()
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another build holds it
        BoxIndex.build(codes, tmp_path / "idx", subsets=[(0, 1)], progress=False)
        # the live build's folder and the .old- it may be swapping stay
        assert sorted(os.listdir(tmp_path)) == [".idx.building-1-1", ".idx.old-xyz", "idx"]
    finally:
        os.close(fd)
    BoxIndex.build(codes, tmp_path / "idx", subsets=[(0, 1)], overwrite=True, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["idx"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_index_folder_gets_normal_permissions(tmp_path, rng, umask):
    codes = rng.integers(0, 256, (500, 32), dtype=np.uint8)
    previous = os.umask(umask)
    try:
        idx = BoxIndex.build(codes, tmp_path / "idx", subsets=[(0, 1)], progress=False)
    finally:
        os.umask(previous)
    assert (idx.path.stat().st_mode & 0o777) == 0o777 & ~umask
    for f in idx.path.iterdir():
        assert (f.stat().st_mode & 0o777) == 0o666 & ~umask, f


CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from clipbranches_widget.engine.search.index import BoxIndex
    codes = np.load(sys.argv[1])
    print("go", flush=True)
    BoxIndex.build(codes, sys.argv[2], subsets=[tuple(range(j, j + 4)) for j in range(0, 28, 2)],
                   block_size=16, overwrite=True, progress=False)
    print("done", flush=True)
    """
)


def test_kill_9_during_build_leaves_previous_index_or_none(tmp_path):
    rng = np.random.default_rng(0)
    subsets = [tuple(range(j, j + 4)) for j in range(0, 28, 2)]
    old = rng.integers(0, 256, (300_000, 32), dtype=np.uint8)
    new = rng.integers(0, 256, (300_000, 32), dtype=np.uint8)
    np.save(tmp_path / "new.npy", new)
    target = tmp_path / "idx"
    BoxIndex.build(old, target, subsets=subsets, block_size=16, progress=False)
    boxes = Boxes.from_bounds([{0: (0, 90), 1: (10, 100), 2: (0, 120), 3: (50, 200)}], 32)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    outcomes = set()
    t_end = time.monotonic() + 18
    for delay in (0.0, 0.15, 0.4, 0.8):
        if time.monotonic() > t_end:
            break
        child = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "new.npy"), str(target)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout.readline().strip() == "go"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        # the previous index, the new one complete, or none: never a broken one
        for codes, name in ((old, "previous"), (new, "new")):
            try:
                idx = BoxIndex.open(target, codes)
            except FileNotFoundError:
                outcomes.add("none")
                continue
            except ValueError as exc:
                assert "differ" in str(exc)  # the other codes' index: not this one
                continue
            outcomes.add(name)
            ref = scan(codes, boxes)
            res = idx.search(boxes, path="index")
            np.testing.assert_array_equal(res.ids, ref.ids)
        # the next build cleans what the killed one left
        BoxIndex.build(old, target, subsets=subsets, block_size=16, overwrite=True, progress=False)
        assert sorted(os.listdir(tmp_path)) == ["child.py", "idx", "new.npy"]
    assert outcomes <= {"previous", "new", "none"} and outcomes
