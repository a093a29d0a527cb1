"""Make torchvision importable beside a CPU-only torch.

Every torchvision wheel on PyPI is a CUDA build. Beside the CPU build of the
same torch release its C++ extension fails to load, and then its import stops
at ``torch.library.register_fake("torchvision::nms")`` because that operator
was never defined. open_clip only needs torchvision's image transforms, which
are pure Python, so defining the two operator schemas that the import
registers fake kernels for is enough. Where torchvision imports natively
(matching wheels, conda, a source build) nothing here changes anything.

Imported by the CLIP embedder's module, but torch and torchvision only when
the embedder calls ``ensure_torchvision``.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["ensure_torchvision"]

log = logging.getLogger(__name__)

# the schemas torchvision's C++ extension would define (torchvision/csrc/ops/nms.cpp)
_MISSING_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
)
# kept alive for the life of the process: a Library removes its definitions
# when it is garbage collected
_library = None


def ensure_torchvision() -> bool:
    """Import torchvision; define its missing NMS op schemas first if needed.

    Returns True when the schemas had to be defined (now or by an earlier
    call), False when torchvision imported natively.
    """
    global _library
    if _library is not None:
        return True
    try:
        import torchvision  # noqa: F401

        return False
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        reason = str(exc)
    # the failed import left half-initialised modules behind; drop them so the
    # retry runs torchvision's __init__ from the start
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    import torch

    _library = torch.library.Library("torchvision", "DEF")
    for schema in _MISSING_SCHEMAS:
        _library.define(schema)
    import torchvision  # noqa: F401,F811

    log.debug(
        "torchvision's C++ ops did not load (%s); defined %d op schemas so that its "
        "Python transforms import",
        reason,
        len(_MISSING_SCHEMAS),
    )
    return True
