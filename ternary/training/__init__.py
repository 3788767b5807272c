"""Training the byte-level model: corpora, the loop, evaluation in bits per byte, sampling."""

from ternary.training.data import DataError, load_corpus, split_corpus, training_windows
from ternary.training.evaluation import evaluate_bits_per_byte
from ternary.training.loop import TrainingStopped, TrainOptions, TrainSummary, train, train_step
from ternary.training.sampling import sample_bytes

__all__ = [
    "DataError",
    "TrainOptions",
    "TrainSummary",
    "TrainingStopped",
    "evaluate_bits_per_byte",
    "load_corpus",
    "sample_bytes",
    "split_corpus",
    "train",
    "train_step",
    "training_windows",
]
