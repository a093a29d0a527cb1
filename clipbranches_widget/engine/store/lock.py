"""One writer per catalogue folder, and no leftovers of dead writers.

Every write of a catalogue folder (build, append, merge, save) holds an
exclusive ``fcntl.flock`` on the lock file ``.<name>.lock`` beside it. The
kernel drops the lock when its process dies, so a killed writer never blocks
the next one. A second writer waits for the first, then sees its result (a
build finds the catalogue built and opens it).

Holding the lock, a writer removes the temporaries a dead writer left:
``.<name>.old*`` (a swapped-out previous version), ``.<name>.saving*`` and
``.<name>.merging*``. ``.<name>.partial`` is kept: it is a resumable build.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from pathlib import Path

__all__ = ["LEFTOVER_TAGS", "lock_file", "output_lock", "remove_leftovers"]

log = logging.getLogger(__name__)

LEFTOVER_TAGS = ("old", "saving", "merging")


def lock_file(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def output_lock(out):
    """Hold the exclusive lock of the catalogue folder ``out`` (waiting for another writer)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file(out), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("%s is being written by another process: waiting for it to finish", out)
            fcntl.flock(fd, fcntl.LOCK_EX)
        remove_leftovers(out)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def remove_leftovers(out: Path) -> None:
    """Remove what dead writers of ``out`` left beside it (call with the lock held)."""
    prefixes = tuple(f".{out.name}.{tag}" for tag in LEFTOVER_TAGS)
    try:
        siblings = list(os.scandir(out.parent))
    except FileNotFoundError:
        return
    for entry in siblings:
        if entry.name in prefixes or entry.name.startswith(tuple(p + "-" for p in prefixes)):
            log.info("removing %s, left by an interrupted write", entry.path)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
