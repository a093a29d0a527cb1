"""CLIP embeddings of images and texts (open_clip): batched, images decoded in
parallel threads, L2-normalised float32.

torch and open_clip are imported only when an embedder is created, so users
with precomputed embeddings never need them.
"""

from __future__ import annotations

import difflib
import io
import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from .._validation import check_positive_int
from .torch_compat import ensure_torchvision
from .uris import read_bytes

__all__ = ["ClipEmbedder", "ImageReadError", "TINY_MODEL", "load_image", "register_tiny_model"]

log = logging.getLogger(__name__)

TINY_MODEL = "clipbranches-tiny"
_TINY_CONFIG = Path(__file__).with_name("model_configs") / f"{TINY_MODEL}.json"
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


class ImageReadError(OSError):
    """An image that could not be read or decoded; ``uri`` names it."""

    def __init__(self, uri, reason: str):
        super().__init__(f"could not read image {uri}: {reason}")
        self.uri = uri
        self.reason = reason


def import_open_clip():
    """open_clip, importable beside a CPU-only torch; a clear error without it."""
    try:
        ensure_torchvision()
        import open_clip
    except ImportError as exc:
        raise ImportError(
            "CLIP embedding needs torch and open_clip: install the 'clip' extra "
            "(pip install 'clipbranches-widget[clip]'), or use precomputed "
            f"embeddings with Catalogue.from_embeddings ({exc})"
        ) from exc
    return open_clip


def register_tiny_model() -> str:
    """Register a tiny CLIP config (~3.5 M params, 32x32 input) with open_clip.

    With ``pretrained=None`` its weights are random (seeded): for tests, demos
    and notebooks that must run offline in milliseconds. Returns its name.
    """
    open_clip = import_open_clip()
    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(_TINY_CONFIG)
    return TINY_MODEL


def load_image(image):
    """An RGB PIL image from a path, an http(s) URL, bytes or a PIL image.

    Raises ``ImageReadError`` (naming the image) for anything unreadable,
    including truncated files: every pixel is decoded here.
    """
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    uri = os.fspath(image) if isinstance(image, os.PathLike) else image
    try:
        if isinstance(uri, (bytes, bytearray)):
            fh, uri = io.BytesIO(uri), "<bytes>"
        elif isinstance(uri, str):
            # one reader with size, type and time limits: a FIFO or an endless
            # device is refused, a slow server cut off (see uris.py)
            fh = io.BytesIO(read_bytes(uri))
        else:
            raise ImageReadError(
                uri, f"expected a path, URL, bytes or PIL image, got {type(image).__name__}"
            )
        with fh, Image.open(fh) as img:
            img.load()
            return img.convert("RGB")
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(uri, "no such file") from None
    except UnidentifiedImageError:
        raise ImageReadError(uri, "not an image (unknown format)") from None
    except Exception as exc:  # decoding errors come in many types (OSError, SyntaxError, ...)
        raise ImageReadError(uri, f"{type(exc).__name__}: {exc}") from None


class ClipEmbedder:
    """Embed images and texts with an open_clip model.

    Parameters
    ----------
    model : str, default "ViT-B-32"
        An open_clip model name (``open_clip.list_models()``), an
        ``hf-hub:`` id, or ``TINY_MODEL`` (registered on demand).
    pretrained : str or None, default "laion2b_s34b_b79k"
        A pretrained tag of that model (downloaded once, then cached), a local
        checkpoint file (.pt/.bin/.safetensors), or None for random weights
        (seeded by ``seed``: the same weights in every process).
    device : str, default "cpu"
    batch_size : int, default 64
    num_workers : int or None
        Threads decoding and preprocessing images (default: CPU count, max 8).
    seed : int, default 0
        Seeds random weights when ``pretrained`` is None.
    threads : int or None
        torch intra-op threads (``torch.set_num_threads``, process-wide);
        None leaves torch's setting. On a machine busy with other work, fewer
        threads than cores avoids OpenMP threads waiting on each other.

    Attributes
    ----------
    model_, preprocess_, tokenizer_ : the open_clip objects
    n_features_ : int, embedding dimension
    """

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = "laion2b_s34b_b79k",
        *,
        device: str = "cpu",
        batch_size: int = 64,
        num_workers: int | None = None,
        seed: int = 0,
        threads: int | None = None,
    ):
        if not isinstance(model, str) or not model:
            raise ValueError(f"model: expected an open_clip model name, got {model!r}")
        if pretrained is not None and not isinstance(pretrained, (str, os.PathLike)):
            raise ValueError(
                f"pretrained: expected a tag, a checkpoint path or None, got {pretrained!r}"
            )
        check_positive_int("batch_size", batch_size)
        if num_workers is not None:
            check_positive_int("num_workers", num_workers)
        if threads is not None:
            check_positive_int("threads", threads)
        self.model = model
        self.pretrained = None if pretrained is None else os.fspath(pretrained)
        self.device = device
        self.batch_size = int(batch_size)
        self.num_workers = num_workers
        self.seed = int(seed)
        self.threads = threads
        self._load()

    # --- construction ---
    @property
    def spec(self) -> dict:
        """What recreates this embedder (stored in a catalogue's manifest)."""
        return {"model": self.model, "pretrained": self.pretrained, "seed": self.seed}

    @classmethod
    def from_spec(cls, spec: dict, **kwargs) -> ClipEmbedder:
        return cls(spec["model"], spec.get("pretrained"), seed=spec.get("seed", 0), **kwargs)

    def _load(self):
        open_clip = import_open_clip()
        import torch

        if self.threads is not None:
            torch.set_num_threads(int(self.threads))
        if self.model == TINY_MODEL:
            register_tiny_model()
        known = open_clip.list_models()
        if not self.model.startswith(("hf-hub:", "local-dir:")) and self.model not in known:
            close = difflib.get_close_matches(self.model, known, n=3)
            raise ValueError(
                f"model: unknown open_clip model {self.model!r}"
                + (f"; did you mean {', '.join(close)}?" if close else "")
                + " (open_clip.list_models() lists them all)"
            )
        pretrained = self._check_pretrained(open_clip)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)  # random weights are the same in every process
                model, _, preprocess = open_clip.create_model_and_transforms(
                    self.model, pretrained=pretrained, device=self.device
                )
        except Exception as exc:
            raise _load_error(self.model, self.pretrained, exc) from exc
        model.eval()
        self.model_ = model
        self.preprocess_ = preprocess
        self.tokenizer_ = open_clip.get_tokenizer(self.model)
        self.n_features_ = int(
            model.text_projection.shape[1]
            if getattr(model, "text_projection", None) is not None
            and hasattr(model.text_projection, "shape")
            else self._probe_dim()
        )
        if pretrained is None:
            log.warning(
                "ClipEmbedder(%r): random weights (pretrained=None); fine for tests, "
                "meaningless for search",
                self.model,
            )

    def _probe_dim(self) -> int:
        return int(self.embed_text(["a"]).shape[1])

    def _check_pretrained(self, open_clip):
        p = self.pretrained
        if p is None:
            return None
        looks_like_file = os.sep in p or p.endswith(_CHECKPOINT_SUFFIXES) or os.path.exists(p)
        if looks_like_file:
            if not os.path.isfile(p):
                raise FileNotFoundError(
                    f"pretrained: no checkpoint file at {p!r}; pass an "
                    "existing .pt/.safetensors file or a pretrained tag"
                )
            return p
        if self.model.startswith("hf-hub:"):
            return p
        tags = open_clip.list_pretrained_tags_by_model(self.model)
        if p not in tags:
            raise ValueError(
                f"pretrained: {p!r} is not a pretrained tag of {self.model!r}; "
                f"expected one of {tags or '[] (this model has none)'}, a local "
                "checkpoint file, or None for random weights"
            )
        return p

    # --- text ---
    def embed_text(self, texts, *, batch_size: int | None = None) -> np.ndarray:
        """(n, d) float32 L2-normalised embeddings of a list of strings."""
        import torch

        if isinstance(texts, str):
            raise TypeError("texts: expected a list of strings, got one string; wrap it: [text]")
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            bad = next(t for t in texts if not isinstance(t, str))
            raise TypeError(f"texts: expected strings, got {type(bad).__name__}")
        bs = self.batch_size if batch_size is None else check_positive_int("batch_size", batch_size)
        out = []
        with torch.inference_mode():
            for s in range(0, len(texts), bs):
                tokens = self.tokenizer_(texts[s : s + bs]).to(self.device)
                out.append(self._normalise(self.model_.encode_text(tokens)))
        return np.concatenate(out) if out else np.zeros((0, self.n_features_), np.float32)

    # --- images ---
    def preprocess(self, image):
        """Decode one image into the model's input tensor (ImageReadError if unreadable)."""
        return self.preprocess_(load_image(image))

    def embed_pixels(self, pixels) -> np.ndarray:
        """(b, d) float32 L2-normalised embeddings of a preprocessed (b, 3, h, w) batch."""
        import torch

        with torch.inference_mode():
            return self._normalise(self.model_.encode_image(pixels.to(self.device)))

    def embed_images(
        self,
        images,
        *,
        batch_size: int | None = None,
        errors: str = "raise",
        progress: bool = False,
    ) -> np.ndarray:
        """(n, d) float32 L2-normalised embeddings of paths, URLs or PIL images.

        ``errors="raise"``: an unreadable image raises ``ImageReadError``
        naming it. ``errors="skip"``: its row is NaN and a warning is logged
        (``Catalogue.build`` skips such images and lists them).
        """
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors: expected 'raise' or 'skip', got {errors!r}")
        if isinstance(images, (str, os.PathLike)):
            images = [images]
        images = list(images)
        X = np.full((len(images), self.n_features_), np.nan, np.float32)
        failures = []
        bar = _progress_bar(len(images), progress, "embedding")
        for positions, emb, failed in self.iter_batches(images, batch_size=batch_size):
            if failed and errors == "raise":
                raise failed[0][1]
            X[positions] = emb
            failures += failed
            if bar is not None:
                bar.update(len(positions) + len(failed))
        if bar is not None:
            bar.close()
        if failures:
            log.warning(
                "%d of %d images could not be read (rows left NaN); first: %s",
                len(failures),
                len(images),
                failures[0][1],
            )
        return X

    def iter_batches(self, images, *, batch_size: int | None = None, timings: dict | None = None):
        """Yield ``(positions, X, failures)`` per batch, in input order.

        ``positions`` (int64) index the images embedded into ``X``;
        ``failures`` is a list of ``(position, ImageReadError)``. The next
        batches are decoded by worker threads while the model runs.
        ``timings`` (optional dict) accumulates "decode_wait_s" (time the model
        waited for decoded images) and "model_s".
        """
        import torch

        bs = self.batch_size if batch_size is None else check_positive_int("batch_size", batch_size)
        images = list(images)
        workers = self.num_workers or min(8, os.cpu_count() or 1)
        timings = {} if timings is None else timings
        timings.setdefault("decode_wait_s", 0.0)
        timings.setdefault("model_s", 0.0)
        starts = iter(range(0, len(images), bs))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
            pending = deque()

            def submit():
                s = next(starts, None)
                if s is not None:
                    pending.append(
                        (
                            s,
                            [
                                pool.submit(self._decode_one, images[i])
                                for i in range(s, min(s + bs, len(images)))
                            ],
                        )
                    )

            for _ in range(2):  # decode ahead: keep the model fed
                submit()
            while pending:
                start, futures = pending.popleft()
                submit()
                t0 = time.perf_counter()
                decoded = [f.result() for f in futures]
                t1 = time.perf_counter()
                ok = [j for j, d in enumerate(decoded) if not isinstance(d, ImageReadError)]
                failures = [
                    (start + j, d) for j, d in enumerate(decoded) if isinstance(d, ImageReadError)
                ]
                if ok:
                    X = self.embed_pixels(torch.stack([decoded[j] for j in ok]))
                else:
                    X = np.zeros((0, self.n_features_), np.float32)
                timings["decode_wait_s"] += t1 - t0
                timings["model_s"] += time.perf_counter() - t1
                yield np.asarray(ok, np.int64) + start, X, failures

    def _decode_one(self, image):
        try:
            return self.preprocess(image)
        except ImageReadError as exc:
            return exc
        except Exception as exc:  # a preprocessing failure is still this image's fault
            return ImageReadError(image, f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _normalise(t) -> np.ndarray:
        X = t.float().cpu().numpy()
        norm = np.linalg.norm(X, axis=1, keepdims=True)
        return (X / np.maximum(norm, 1e-12)).astype(np.float32)

    def __repr__(self) -> str:
        return (
            f"ClipEmbedder(model={self.model!r}, pretrained={self.pretrained!r}, "
            f"device={self.device!r})"
        )


def _load_error(model: str, p: str | None, exc: Exception) -> Exception:
    """The error to raise when open_clip could not create ``model`` with weights ``p``."""
    what = f"ClipEmbedder({model!r}, pretrained={p!r})"
    if p is not None and os.path.isfile(p):
        return ValueError(
            f"{what}: could not load the checkpoint file ({type(exc).__name__}: "
            f"{exc}); expected open_clip weights for model {model!r}"
        )
    offline = any(
        os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    return RuntimeError(
        f"{what}: could not get the weights ({type(exc).__name__}: {exc}). "
        + (
            "HF_HUB_OFFLINE is set, so nothing is downloaded: "
            if offline
            else "They are downloaded from the Hugging Face hub on first use: "
        )
        + "run once with network access to cache them, or pass pretrained=<path to a "
        "local checkpoint file>, or pretrained=None for random weights (tests only)"
    )


def _progress_bar(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    return tqdm(total=total, desc=desc, unit="img", smoothing=0.1)
