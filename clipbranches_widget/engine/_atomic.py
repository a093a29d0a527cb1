"""The one way this package writes a file or a folder: never half of one.

Every writer goes through a temporary sibling (same folder, so the final
``os.replace`` is atomic on POSIX) that is fsynced first. A crash leaves the
old version or the new one, never a third thing; the temporary name is
unique per process and thread, so concurrent writers never share one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

__all__ = ["atomic_file", "write_bytes", "write_text", "replace_dir", "temp_sibling"]


def temp_sibling(path: Path, tag: str = "tmp") -> Path:
    """A unique hidden name beside ``path`` for this process and thread."""
    path = Path(path)
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{threading.get_ident()}")


@contextlib.contextmanager
def atomic_file(path, mode: str = "wb"):
    """``with atomic_file(p) as f: f.write(...)``: ``p`` appears whole or not at all."""
    path = Path(path)
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

    Two renames: ``dest`` moves aside, ``ready`` moves in, the old copy is
    removed. Between the renames a crash leaves ``dest`` missing and the new
    copy complete at ``ready``; callers that resume look there.
    """
    ready, dest = Path(ready), Path(dest)
    if not dest.exists():
        os.replace(ready, dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    os.replace(dest, old / "previous")
    os.replace(ready, dest)
    shutil.rmtree(old, ignore_errors=True)
