"""The one way this package writes a file or a folder: never half of one.

Every writer goes through a temporary sibling (same folder, so the final
``os.replace`` is atomic on POSIX) that is fsynced first. A crash leaves the
old version or the new one, never a third thing; the temporary name is
unique per process and thread, so concurrent writers never share one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
from pathlib import Path

__all__ = [
    "atomic_file",
    "process_alive",
    "recover_dir",
    "replace_dir",
    "sweep_temps",
    "temp_sibling",
    "write_bytes",
    "write_text",
]

_OWNER = re.compile(r"\.(?P<tag>[a-z]+)-(?P<pid>\d+)-(?P<tid>\d+)\Z")


def temp_sibling(path: Path, tag: str = "tmp") -> Path:
    """A unique hidden name beside ``path`` for this process and thread."""
    path = Path(path)
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{threading.get_ident()}")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (whoever owns it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _dead_siblings(path: Path, tag: str):
    """Siblings ``.<name>.<tag>-<pid>-<tid>`` whose writing process has died."""
    prefix = f".{path.name}.{tag}-"
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(path.parent):
            if entry.name.startswith(prefix):
                m = _OWNER.search(entry.name[len(path.name) + 1 :])
                if m and m["tag"] == tag and not process_alive(int(m["pid"])):
                    yield Path(entry.path)


def sweep_temps(path) -> None:
    """Remove the temporaries a killed writer of ``path`` left (its pid is dead)."""
    for tmp in _dead_siblings(Path(path), "tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_file(path, mode: str = "wb", *, sweep: bool = True):
    """``with atomic_file(p) as f: f.write(...)``: ``p`` appears whole or not at all.

    ``sweep`` first removes what killed writers of ``p`` left; writers of many
    files in one folder (resumable chunks) turn it off, since it lists the folder.
    """
    path = Path(path)
    if sweep:
        sweep_temps(path)
    tmp = temp_sibling(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_bytes(path, data: bytes) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)


def write_text(path, text: str, encoding: str = "utf-8") -> None:
    write_bytes(path, text.encode(encoding))


def replace_dir(ready: Path, dest: Path) -> None:
    """Swap the finished folder ``ready`` in for ``dest`` (which may not exist).

    Two renames: ``dest`` moves aside into ``.<dest>.old-<pid>-<tid>/``,
    ``ready`` moves in, the old copy is removed. A crash between the renames
    leaves ``dest`` missing: ``recover_dir`` (called by every opener and by
    the next swap) puts the previous copy back, so a reader sees the previous
    state or the new one, never a third thing.
    """
    ready, dest = Path(ready), Path(dest)
    recover_dir(dest)
    if not dest.exists():
        os.replace(ready, dest)
        return
    old = temp_sibling(dest, "old")
    old.mkdir()
    os.replace(dest, old / "previous")
    os.replace(ready, dest)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(dest) -> bool:
    """Finish what a swap killed between its renames left: True if ``dest`` was restored.

    With ``dest`` missing, the previous copy parked by a dead process moves
    back; with ``dest`` present, parked copies of dead processes are removed.
    """
    dest = Path(dest)
    restored = False
    for old in sorted(_dead_siblings(dest, "old")):
        previous = old / "previous"
        if not dest.exists() and previous.is_dir():
            os.replace(previous, dest)
            restored = True
        shutil.rmtree(old, ignore_errors=True)
    return restored
