"""Readers for precomputed embeddings: ``.npy`` shards with parquet/CSV metadata.

The layout clip-retrieval (``clip-retrieval inference``) writes::

    out/img_emb/img_emb_0.npy        (n0, d) float16/float32, row i <-> metadata row i
    out/img_emb/img_emb_1.npy
    out/metadata/metadata_0.parquet  image_path or url, caption, ...
    out/metadata/metadata_1.parquet

Shards are paired by their number. No torch needed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from .._validation import check_embeddings, describe

__all__ = [
    "clip_retrieval_items",
    "embedder_spec_of",
    "read_clip_retrieval",
    "read_embedding_shards",
]

_NUMBER = re.compile(r"(\d+)(?=\.[^.]+$)")


def _shard_number(path: Path) -> int:
    m = _NUMBER.search(path.name)
    if m is None:
        raise ValueError(
            f"shard {str(path)!r}: expected a file name ending in a number (e.g. img_emb_0.npy)"
        )
    return int(m.group(1))


def _numbered(folder: Path, patterns) -> dict[int, Path]:
    found = {}
    for pattern in patterns:
        for p in folder.glob(pattern):
            n = _shard_number(p)
            if n in found:
                raise ValueError(f"two shards numbered {n}: {found[n].name} and {p.name}")
            found[n] = p
    return found


def read_embedding_shards(files) -> np.ndarray:
    """Concatenate ``.npy`` embedding shards (in the given order) as float32."""
    parts = []
    for f in files:
        X = np.load(f, mmap_mode="r")
        if X.ndim != 2 or X.dtype.kind != "f":
            raise ValueError(f"{str(f)!r}: expected a 2-D float array, got {describe(X)}")
        if parts and X.shape[1] != parts[0].shape[1]:
            raise ValueError(
                f"{str(f)!r}: expected {parts[0].shape[1]} columns like the "
                f"previous shards, got {X.shape[1]}"
            )
        parts.append(X)
    if not parts:
        raise ValueError("expected at least one embedding shard, got none")
    return check_embeddings(np.concatenate(parts))


def read_clip_retrieval(folder, *, embeddings: str = "img_emb", metadata: str = "metadata"):
    """``(X, metadata)``: float32 (n, d) embeddings and a DataFrame (or None).

    ``folder`` holds ``img_emb/`` (``embeddings``) and optionally
    ``metadata/``; metadata shard k must have as many rows as embedding
    shard k.
    """
    folder = Path(folder)
    emb_dir = folder / embeddings
    if not emb_dir.is_dir():
        raise FileNotFoundError(
            f"{str(folder)!r}: expected a clip-retrieval output folder with "
            f"an {embeddings}/ folder of .npy shards; it has none"
        )
    shards = _numbered(emb_dir, ["*.npy"])
    if not shards:
        raise ValueError(f"{str(emb_dir)!r}: expected .npy embedding shards, found none")
    order = sorted(shards)
    X = read_embedding_shards([shards[k] for k in order])
    meta_dir = folder / metadata
    if not meta_dir.is_dir():
        return X, None
    metas = _numbered(meta_dir, ["*.parquet", "*.csv"])
    if sorted(metas) != order:
        raise ValueError(
            f"metadata shards {sorted(metas)} do not match embedding shards "
            f"{order} in {str(folder)!r}"
        )
    frames = []
    for k in order:
        p = metas[k]
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
        n_rows = np.load(shards[k], mmap_mode="r").shape[0]
        if len(df) != n_rows:
            raise ValueError(
                f"{p.name}: expected {n_rows} rows (one per embedding in "
                f"{shards[k].name}), got {len(df)}"
            )
        frames.append(df)
    return X, pd.concat(frames, ignore_index=True)


URI_COLUMNS = ("url", "image_path", "uri", "path")


def clip_retrieval_items(folder, *, uri_column: str | None = None):
    """``(X, uris or None, metadata or None)`` of a clip-retrieval output folder.

    ``uri_column``: the metadata column of the URIs (default: the first of
    "url", "image_path", "uri", "path" present).
    """
    X, meta = read_clip_retrieval(folder)
    if meta is None:
        return X, None, None
    if uri_column is not None and uri_column not in meta.columns:
        raise ValueError(
            f"uri_column: {uri_column!r} is not a metadata column; got {list(meta.columns)}"
        )
    col = uri_column or next((c for c in URI_COLUMNS if c in meta.columns), None)
    uris = None if col is None else meta[col].astype(str).to_numpy(object)
    return X, uris, meta


def embedder_spec_of(model: str | None, pretrained: str | None) -> dict | None:
    """The embedder spec of precomputed embeddings' model (None: no text queries)."""
    if model is None:
        return None
    if pretrained is None:
        raise ValueError(
            f"pretrained: expected the tag or checkpoint of {model!r} that "
            "made these embeddings (random weights would not match them)"
        )
    return {"model": model, "pretrained": pretrained, "seed": 0}
