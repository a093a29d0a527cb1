"""Risky work run in a forked child, so that a crash, a hang or a kill -9
never takes the test process with it.

``python hostile_child.py`` is a small server: it imports the library once,
then for every JSON command on stdin forks one child per job, prints the
children's pids, waits for them and prints their wait statuses. Forking a
process that has imported (but never run) torch and numba is cheap and safe,
so a test can start dozens of children, kill them after a random delay, and
still stay within seconds. The tests talk to it through ``Forker``
(conftest.py); the jobs are the functions in ``JOBS`` below, each taking
plain JSON arguments and returning plain JSON.

The comparison helpers (``snapshot``, ``index_state``) are imported by the
tests as well: what a catalogue folder holds, as plain values, so "equals an
uninterrupted run" is one ``==``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from clipbranches_widget import Catalogue, ClipBranches
from clipbranches_widget.engine.boxes import Boxes
from clipbranches_widget.engine.search.index import BoxIndex
from clipbranches_widget.engine.search.scan import scan
from clipbranches_widget.engine.store import format as storage
from clipbranches_widget.engine.store.embed import ClipEmbedder, register_tiny_model
from clipbranches_widget.export import export_results
from clipbranches_widget.thumbnails import Thumbnailer, full_image

# ---------------------------------------------------------------- comparisons


def _digest(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(a)).tobytes()).hexdigest()[:16]


def snapshot(path) -> dict | str:
    """What the catalogue at ``path`` holds, or ``"absent"`` when there is none.

    Raises when the folder holds something that is neither (a damaged one).
    """
    path = Path(path)
    if not (path / storage.MANIFEST).exists():
        return "absent"
    cat = Catalogue.open(path)
    return {
        "n": len(cat),
        "codes": _digest(cat.codes),
        "embeddings": None if cat.embeddings is None else _digest(cat.embeddings),
        "uris": None if cat.uris is None else [str(u) for u in cat.uris],
        "failed": sorted((f["uri"], f["reason"][:40]) for f in cat.failed),
    }


SUBSETS = [tuple(range(j, j + 4)) for j in range(0, 28, 4)]
BOXES = [{0: (0, 90), 1: (10, 100), 2: (0, 120), 3: (50, 200)}, {8: (30, 255), 9: (0, 128)}]


def index_state(path, codes) -> str | list:
    """``"absent"``, or the ids the index at ``path`` finds (checked against a scan)."""
    try:
        idx = BoxIndex.open(path, codes)
    except FileNotFoundError:
        return "absent"
    boxes = Boxes.from_bounds(BOXES, codes.shape[1])
    got = idx.search(boxes, path="index").ids.tolist()
    assert got == scan(codes, boxes).ids.tolist(), "the index disagrees with a scan"
    return got


# ---------------------------------------------------------------- jobs


_EMBEDDER = []


def _embedder():
    """The tiny model, made once in the helper before it forks (seconds saved per
    child). One torch thread (OMP_NUM_THREADS=1 too): no thread pool exists at
    the fork, so the children may run the model."""
    if not _EMBEDDER:
        import torch

        torch.set_num_threads(1)
        _EMBEDDER.append(ClipEmbedder(register_tiny_model(), None, batch_size=4, num_workers=1))
    return _EMBEDDER[0]


def build(source, out, chunk_size=8):
    cat = Catalogue.build(
        source, out=out, embedder=_embedder(), batch_size=4, chunk_size=chunk_size, progress=False
    )
    return len(cat)


def append_images(path, source):
    cat = Catalogue.open(path, embedder=_embedder())
    return cat.append(source, batch_size=4, chunk_size=8, progress=False)


def append_embeddings(path, npy, uri_prefix):
    cat = Catalogue.open(path)
    X = np.load(npy)
    return cat.append(embeddings=X, uris=[f"{uri_prefix}{i}" for i in range(len(X))])


def merge(parts, out):
    return len(Catalogue.merge(parts, out, block_rows=64))


def save(path, out, overwrite=False):
    return len(Catalogue.open(path).save(out, overwrite=overwrite, block_rows=64))


def index_build(npy, out):
    codes = np.load(npy)
    BoxIndex.build(codes, out, subsets=SUBSETS, block_size=16, overwrite=True, progress=False)
    return True


def images_pipeline(folder, out, export_to):
    """Build a catalogue of every file in ``folder``, then thumbnail, open full
    size and export each; returns what happened to each file."""
    import logging

    logging.disable(logging.WARNING)  # thousands of expected "could not read"
    files = sorted(str(p) for p in Path(folder).iterdir())
    cat = Catalogue.build(
        files, out=out, embedder=_embedder(), batch_size=8, chunk_size=64, progress=False
    )
    built = {str(u) for u in cat.uris}
    failed = {f["uri"]: f["reason"] for f in cat.failed}
    thumbs = Thumbnailer(64)
    per_file = {}
    for f in files:
        thumb, problem = thumbs.try_get(f)
        try:
            full_image(f, max_side=128)
            full = ""
        except OSError as e:
            full = str(e)
        per_file[f] = {
            "built": f in built,
            "build_error": failed.get(f, ""),
            "thumb": thumb is not None,
            "thumb_error": problem,
            "full_error": full,
        }
    # export every built item, one folder each: a refusal must name the file
    frame = {"id": [], "uri": []}
    for i, u in enumerate(cat.uris):
        frame["id"].append(i)
        frame["uri"].append(str(u))
    import pandas as pd

    for i, u in zip(frame["id"], frame["uri"]):
        df = pd.DataFrame({"id": [i], "uri": [u]})
        target = Path(export_to) / f"e{i}"
        try:
            export_results(df, target, cat)
            per_file[u]["export"] = "ok"
        except (OSError, ValueError) as e:
            per_file[u]["export"] = str(e)
    return per_file


def open_catalogue(path):
    """Open and read every field; returns a snapshot or the error's text."""
    try:
        cat = Catalogue.open(path)
        got = {
            "n": len(cat),
            "codes": _digest(np.asarray(cat.codes)),
            "embeddings": None if cat.embeddings is None else _digest(np.asarray(cat.embeddings)),
            "uris": None if cat.uris is None else [str(u) for u in np.asarray(cat.uris)],
            "failed": cat.failed,
            "compressor": cat.compressor.to_dict() is not None,
            "identity": {k: type(v).__name__ for k, v in cat.identity.items()},
            "decoded": _digest(np.round(cat.compressor.inverse_transform(cat.codes[:4]), 3)),
        }
        return {"ok": got}
    except Exception as e:  # noqa: BLE001 - classified by the test
        return {"error": f"{type(e).__name__}: {e}"}


def widget_save(path, out):
    cat = Catalogue.open(path)
    w = ClipBranches(cat)
    w._session.search([0, 1])
    w._session.label(list(range(0, 20, 2)), 1)
    w._session.label(list(range(1, 20, 2)), -1)
    w.save(out)
    return True


def die_at(job, kwargs, nth, calls=("replace", "rename", "fsync")):
    """Run the job ``job``, exiting at once (no cleanup, as kill -9) just before
    the ``nth`` call of one of the ``os`` functions ``calls`` (0: never);
    returns how many calls a full run made."""
    count = [0]
    for name in calls:
        real = getattr(os, name)

        def wrapper(*args, _real=real, **kw):
            count[0] += 1
            if count[0] == nth:
                os._exit(137)
            return _real(*args, **kw)

        setattr(os, name, wrapper)
    JOBS[job](**kwargs)
    return count[0]


JOBS = {
    f.__name__: f
    for f in (
        build,
        append_images,
        append_embeddings,
        merge,
        save,
        index_build,
        images_pipeline,
        open_catalogue,
        widget_save,
        die_at,
    )
}


def _run(job: dict) -> int:
    os.dup2(2, 1)  # stdout is the protocol: a job never writes there
    try:
        value = JOBS[job["func"]](**job.get("kwargs", {}))
        out = {"ok": True, "value": value}
    except Exception as e:  # noqa: BLE001 - reported to the test as data
        out = {"ok": False, "error": f"{type(e).__name__}: {e}", "tb": traceback.format_exc()}
    if job.get("result"):
        tmp = job["result"] + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, default=str)
        os.replace(tmp, job["result"])
    return 0


def _wait(pids, kill_after, timeout) -> tuple[list, bool]:
    """Wait for our children (kill -9 them after ``kill_after`` s, or after
    ``timeout`` s as hung); a pid is only signalled before it is reaped."""
    start = time.monotonic()
    statuses, killed, hang = {}, False, False
    while len(statuses) < len(pids):
        for pid in pids:
            if pid not in statuses:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    statuses[pid] = status
        elapsed = time.monotonic() - start
        late = elapsed > timeout
        if (kill_after is not None and elapsed >= kill_after and not killed) or late:
            for pid in pids:
                if pid not in statuses:
                    os.kill(pid, signal.SIGKILL)
            killed, hang = True, hang or late
            if late:
                timeout = float("inf")
        time.sleep(0.002)
    return [statuses[p] for p in pids], hang


def serve() -> None:
    from PIL import Image

    # one forward pass before any fork: torch's lazy initialisation is then done
    # once, not in every child (the decode threads are joined when it returns)
    _embedder().embed_images([Image.new("RGB", (32, 32))])
    for line in sys.stdin:
        cmd = json.loads(line)
        pids = []
        for job in cmd["jobs"]:
            pid = os.fork()
            if pid == 0:
                code = 70
                try:
                    code = _run(job)
                finally:
                    os._exit(code)
            pids.append(pid)
        statuses, hang = _wait(pids, cmd.get("kill_after"), cmd.get("timeout", 60.0))
        print(json.dumps({"statuses": statuses, "hang": hang}), flush=True)


if __name__ == "__main__":
    serve()
