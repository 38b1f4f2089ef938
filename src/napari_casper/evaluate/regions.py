"""Region suggestions scored against a pathologist's label on every spot.

Tumour is a set of label values (by default invasive cancer and cancer in situ); a suggestion is
scored by the F1 of the spots it calls tumour. Two plain baselines give the scale:

* ``marker_otsu``: one marker (ERBB2) above Otsu's threshold of its log-normalised expression;
* ``two_means``: k-means (k = 2) on 20 principal components of the log-normalised expression, tumour
  being the cluster with the higher mean marker score.

:func:`simulate_strokes` plays the user of the few-strokes mode: a random share of the spots is
labelled with the pathologist's class, the rest is learned (:mod:`napari_casper.regions.learn`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: the label values counted as tumour in the HER2+ sections of ../shared/data/her2st_labels
TUMOUR_LABELS = ("invasive cancer", "cancer in situ")
#: labels a simulated user never marks (the pathologist could not decide)
UNMARKED_LABELS = ("undetermined",)


def f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    """F1 of boolean ``predicted`` against boolean ``truth`` (0 when neither has a positive)."""
    from sklearn.metrics import f1_score

    return float(f1_score(np.asarray(truth, bool), np.asarray(predicted, bool), zero_division=0.0))


def log_normalised(counts) -> np.ndarray:
    """Dense ``log1p(normalize_total(1e4))`` of raw counts (spots x genes)."""
    from napari_casper.casper.preprocess import normalize_matrix

    matrix, _ = normalize_matrix(counts, "auto")
    return np.asarray(matrix.toarray() if hasattr(matrix, "toarray") else matrix, dtype=float)


def marker_otsu(expression: np.ndarray, genes: Sequence[str], marker: str = "ERBB2") -> np.ndarray:
    """Spots whose ``marker`` is at or above Otsu's threshold (log-normalised ``expression``)."""
    from skimage.filters import threshold_otsu

    values = expression[:, list(genes).index(marker)]
    return values >= threshold_otsu(values)


def two_means(expression: np.ndarray, genes: Sequence[str], markers: Sequence[str], *, seed: int = 0) -> np.ndarray:
    """k-means (k = 2) on 20 principal components; tumour = the cluster with the higher mean marker z-score."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    components = PCA(n_components=min(20, min(expression.shape) - 1), random_state=seed).fit_transform(expression)
    cluster = KMeans(2, n_init=10, random_state=seed).fit_predict(components)
    index = [list(genes).index(g) for g in markers if g in genes]
    marker = expression[:, index]
    score = ((marker - marker.mean(axis=0)) / np.where(marker.std(axis=0) > 0, marker.std(axis=0), 1)).mean(axis=1)
    return cluster == np.argmax([score[cluster == c].mean() for c in (0, 1)])


def simulate_strokes(truth: Sequence[str], share: float, seed: int, *, visible: float = 0.02) -> np.ndarray:
    """``(n_spots,)`` labels a user might give: ``share`` of the spots, at random (``seed``), keep their class;
    the others, and any in :data:`UNMARKED_LABELS`, are None.

    As a user marks every kind of tissue they can see, each class covering at least ``visible`` of the
    spots gets at least two marked spots (topped up at random from that class); a class marked once
    and not visible is unmarked (one example cannot be learned from).
    """
    truth = np.asarray(truth, dtype=object)
    rng = np.random.default_rng(seed)
    markable = ~pd.Series(truth).isin(UNMARKED_LABELS).to_numpy()
    chosen = rng.choice(np.flatnonzero(markable), size=max(int(round(share * len(truth))), 2), replace=False)
    labels = np.full(len(truth), None, dtype=object)
    labels[chosen] = truth[chosen]
    for name in pd.unique(truth[markable]):
        of_class = np.flatnonzero(truth == name)
        marked = int((labels == name).sum())
        if marked >= 2:
            continue
        if len(of_class) >= max(2, visible * len(truth)):
            labels[rng.choice(np.setdiff1d(of_class, chosen), 2 - marked, replace=False)] = name
        else:
            labels[labels == name] = None
    return labels


def macro_f1(predicted: Sequence[str], truth: Sequence[str], classes: Sequence[str]) -> float:
    """F1 averaged over ``classes`` (each class against the rest), on every spot."""
    from sklearn.metrics import f1_score

    return float(f1_score(np.asarray(truth, object), np.asarray(predicted, object), labels=list(classes),
                          average="macro", zero_division=0.0))  # fmt: skip
