"""clipbranches-widget: interactive CLIP image search refined by decision branches."""

from .engine import (
    Boxes,
    BoxIndex,
    Catalogue,
    Compressor,
    DecisionBranchesClassifier,
    KnnSeeder,
    LearnedCompressor,
    ScanResult,
    scan,
)
from .session import Results, Session

__version__ = "0.1.0"

__all__ = [
    "BoxIndex",
    "Boxes",
    "Catalogue",
    "ClipBranches",
    "Compressor",
    "DecisionBranchesClassifier",
    "KnnSeeder",
    "LearnedCompressor",
    "Results",
    "ScanResult",
    "Session",
    "scan",
]


def __getattr__(name):
    # the widget pulls in anywidget/ipywidgets: import it only when asked for
    if name == "ClipBranches":
        from .widget import ClipBranches

        return ClipBranches
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
