"""The engine: plain arrays in, plain arrays out; no widget code here."""

from .boxes import Boxes
from .branches import DecisionBranchesClassifier, default_feature_subsets
from .catalogue import Catalogue
from .compress import Compressor
from .index import BoxIndex
from .learned import LearnedCompressor  # numpy at import; torch only inside fit
from .scan import ScanResult, scan
from .seed import KnnSeeder

__all__ = [
    "BoxIndex",
    "Boxes",
    "Catalogue",
    "Compressor",
    "DecisionBranchesClassifier",
    "KnnSeeder",
    "LearnedCompressor",
    "ScanResult",
    "default_feature_subsets",
    "scan",
]
