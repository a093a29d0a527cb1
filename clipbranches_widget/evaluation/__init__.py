"""Does refining beat nearest neighbours? A labelled evaluation in the paper's protocol.

- ``datasets``: labelled sets (digits, synthetic modes, CIFAR-10, user files);
- ``features``: offline HOG + colour image features;
- ``codes``: the code variants under test, each as a ``Catalogue``;
- ``protocol``: metrics, k-NN curves, learners and the simulated user;
- ``runner``: every simulated user over data sets and codes, in processes;
- ``report``: summary tables and the F1 plot.

Everything here imports only the engine and ``Session`` (never the widget).
``benchmarks/quality.py`` is the command that runs it and writes the tables
and the plot.
"""

from .codes import CODE_VARIANTS, GlobalQuantizer, fit_compressor, make_catalogue
from .datasets import (
    CIFAR_CLASSES,
    LabelledSet,
    cifar10_set,
    digits_set,
    load_labelled_file,
    synthetic_modes_set,
)
from .features import image_features
from .protocol import Learner, default_learners, fit_result_set, knn_curve, knn_prf, prf, simulate
from .report import check_accuracy, plot_f1, positives_to_beat, summarise
from .runner import run_evaluation

__all__ = [
    "CIFAR_CLASSES",
    "CODE_VARIANTS",
    "GlobalQuantizer",
    "LabelledSet",
    "Learner",
    "cifar10_set",
    "default_learners",
    "digits_set",
    "fit_compressor",
    "fit_result_set",
    "image_features",
    "knn_curve",
    "knn_prf",
    "load_labelled_file",
    "make_catalogue",
    "plot_f1",
    "positives_to_beat",
    "prf",
    "run_evaluation",
    "simulate",
    "summarise",
    "check_accuracy",
    "synthetic_modes_set",
]
