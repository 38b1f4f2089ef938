"""Imputation evaluation: Li et al. 2022 metrics and the strict K-fold-over-genes protocol."""

from napari_casper.evaluate.metrics import METRICS, accuracy_score, score_genes
from napari_casper.evaluate.protocol import (
    METHODS,
    BenchmarkResult,
    resolve_method,
    run_benchmark,
    split_genes,
    summarise,
)

__all__ = [
    "METHODS",
    "METRICS",
    "BenchmarkResult",
    "accuracy_score",
    "resolve_method",
    "run_benchmark",
    "score_genes",
    "split_genes",
    "summarise",
]
