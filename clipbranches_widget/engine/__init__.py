"""The engine: plain arrays in, plain arrays out; no widget code here."""

from .boxes import Boxes
from .codes.learned import LearnedCompressor  # numpy at import; torch only inside fit
from .codes.pca import Compressor
from .learn.branches import DecisionBranchesClassifier
from .search.index import BoxIndex
from .search.scan import ScanResult, scan
from .search.seed import KnnSeeder
from .store.catalogue import Catalogue
from .subsets import default_feature_subsets

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
