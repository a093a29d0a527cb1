"""Command line: build a catalogue from images, or describe one.

clipbranches build SOURCE OUT [--model ViT-B-32 --pretrained laion2b_s34b_b79k]
clipbranches merge OUT PART [PART ...]
clipbranches info OUT [--json] [--verify]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .engine.store import format as storage
from .engine.store.catalogue import Catalogue

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipbranches", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="embed images with CLIP and write a catalogue (resumable)")
    b.add_argument(
        "source", help="a folder of images (recursive), or a .csv/.parquet table with a path column"
    )
    b.add_argument("out", help="the catalogue directory to write")
    b.add_argument(
        "--model",
        default="ViT-B-32",
        help="open_clip model name (default ViT-B-32; "
        "clipbranches-tiny: a tiny random model for tests)",
    )
    b.add_argument(
        "--pretrained",
        default="laion2b_s34b_b79k",
        help="pretrained tag or local checkpoint file; 'none' for random weights",
    )
    b.add_argument("--batch-size", type=int, default=64)
    b.add_argument("--workers", type=int, default=None, help="image decoding threads")
    b.add_argument("--path-column", default=None, help="the table's path column")
    b.add_argument(
        "--no-embeddings",
        action="store_true",
        help="keep only the 8-bit codes (k-NN then runs on decoded codes)",
    )
    b.add_argument(
        "--compressor",
        default="pca",
        help="'pca' (default), 'learned', or a compressor JSON file (shards of one "
        "catalogue share one fitted compressor)",
    )
    b.add_argument("--overwrite", action="store_true", help="rebuild an existing catalogue")
    b.add_argument("--no-progress", action="store_true")
    m = sub.add_parser("merge", help="concatenate catalogues built with one compressor")
    m.add_argument("out")
    m.add_argument("parts", nargs="+")
    m.add_argument("--overwrite", action="store_true")
    i = sub.add_parser("info", help="describe a catalogue")
    i.add_argument("path")
    i.add_argument("--json", action="store_true", help="print the manifest summary as JSON")
    i.add_argument(
        "--verify",
        action="store_true",
        help="hash every file against the manifest's checksums (open checks only "
        "what is cheap for large catalogues)",
    )
    return p


def _build(args) -> int:
    pretrained = None if args.pretrained.lower() in ("none", "random") else args.pretrained
    cat = Catalogue.build(
        args.source,
        model=args.model,
        pretrained=pretrained,
        out=args.out,
        batch_size=args.batch_size,
        num_workers=args.workers,
        path_column=args.path_column,
        keep_embeddings=not args.no_embeddings,
        compressor=args.compressor,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    failed = cat.failed
    done = cat.build_summary
    speed = (
        f" in {done['seconds']:.1f} s ({done['images_per_s']:.0f} images/s)"
        if done is not None and done["images"] > done["resumed"]
        else " (already built)"
        if done is None
        else " (resumed: nothing left to embed)"
    )
    print(
        f"{args.out}: {len(cat)} items{speed}"
        + (
            f", {len(failed)} unreadable images skipped (see {Path(args.out) / 'failed.jsonl'})"
            if failed
            else ""
        )
    )
    return 0


def _merge(args) -> int:
    cat = Catalogue.merge(args.parts, args.out, overwrite=args.overwrite)
    print(f"{args.out}: {len(cat)} items from {len(args.parts)} parts")
    return 0


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def _info(args) -> int:
    path = Path(args.path)
    m = storage.read_manifest(path)
    summary = {
        "path": str(path),
        "items": m["counts"]["items"],
        "failed": m["counts"].get("failed", 0),
        "model": m.get("model"),
        "pretrained": m.get("pretrained"),
        "code_dims": m["dims"]["code"],
        "embedding_dims": m["dims"]["embedding"],
        "embeddings": bool(m["files"].get("embeddings")),
        "uris": bool(m["files"].get("uris")),
        "compressor": m["compressor"].get("kind"),
        "created": m.get("created"),
        "format_version": m.get("version"),
        "identity": (m.get("identity") or {}).get("uuid"),
        "bytes": _size(path),
    }
    if args.verify:  # a changed file raises, naming it
        summary["verified"] = Catalogue.open(path, verify=False).verify()
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    width = max(map(len, summary))
    for k, v in summary.items():
        print(f"{k:<{width}}  {v}")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return {"build": _build, "merge": _merge, "info": _info}[args.command](args)
    except (ValueError, TypeError, OSError, RuntimeError, ImportError) as exc:
        # a clear one-line error for users; the traceback with CLIPBRANCHES_DEBUG=1
        if os.environ.get("CLIPBRANCHES_DEBUG"):
            raise
        print(f"clipbranches {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
