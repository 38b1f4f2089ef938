"""Per-spot uncertainty of a histology prediction: the expected absolute error, learned on held-out sections.

The retrieval head's neighbours (the training spots whose patches look most alike) disagree more
where a prediction is less certain: their standard deviation (the *spread*, per spot and gene) is
the raw sign. Alone it misses two things the errors on held-out sections show:

* a spot's error is shared across its genes: the spread averaged over a fixed set of genes (the
  *anchor* genes, the most expressed in training) says how heterogeneous the look-alikes of the
  spot are as a whole, and is far less noisy than one gene's spread;
* measured log-normalised expression is noisier where a spot holds fewer counts: the predicted
  level of the anchor genes (mean log-normalised expression, higher in richer spots) marks them.

:class:`ErrorModel` combines the signs as ``log(|error| + floor) ~ a log(spread) + b log(spot spread)
+ c log(spot level) + d log(gene's mean spread)``, fit by least squares on the errors of the
leave-one-section-out models of training (each predicts a training section it never saw, so every
error is honest), and scaled so that its mean is the mean absolute error there. The result is in
the units of the prediction (log1p of counts per 10,000): an expected absolute error per spot and
gene. The spot terms are relative to the slide's own mean, so a slide's overall shift cancels.

Measured on sections never trained on (``benchmarks/bench_histology_uncertainty.py``): Spearman with
the absolute error of the 50 most expressed genes, pooled over spots and genes, HER2 C4 0.274 with
the spread alone, higher with this model; see docs/benchmarks.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the most expressed training genes whose spread and level describe a spot as a whole
N_ANCHORS = 200
#: added to spreads before their logarithm (log1p units)
SPREAD_FLOOR = 1e-3
#: added to absolute errors before their logarithm (a zero error is not infinitely good)
ERROR_FLOOR = 1e-2
#: each held-out section contributes at most this many spots to the fit (memory: 4 heads are kept until one is chosen)
MAX_FIT_SPOTS = 2000
#: names of the coefficients, in order
TERMS = ("spread", "spot spread", "spot level", "gene spread")


def anchor_genes(expression: np.ndarray, n: int = N_ANCHORS) -> np.ndarray:
    """Column indices of the ``n`` genes with the highest mean in ``expression`` (training spots x genes)."""
    mean = np.asarray(expression, dtype=np.float64).mean(axis=0)
    return np.sort(np.argsort(-mean, kind="stable")[: min(n, len(mean))])


def spot_terms(anchor_prediction: np.ndarray, anchor_spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(spot spread, spot level)``, each ``(n_spots,)`` over the anchor genes, relative to the slide's mean (1)."""
    spread = np.asarray(anchor_spread, dtype=np.float64).mean(axis=1)
    level = np.maximum(np.asarray(anchor_prediction, dtype=np.float64).mean(axis=1), SPREAD_FLOOR)
    return spread / max(float(spread.mean()), 1e-12), level / max(float(level.mean()), 1e-12)


def design(spread: np.ndarray, spot_spread: np.ndarray, spot_level: np.ndarray) -> np.ndarray:
    """``(n_spots * n_genes, 4)`` log terms (:data:`TERMS`) of a ``(n_spots, n_genes)`` spread."""
    spread = np.asarray(spread, dtype=np.float64)
    n, g = spread.shape
    gene = np.log(spread.mean(axis=0) + SPREAD_FLOOR)
    return np.column_stack([
        np.log(spread + SPREAD_FLOOR).ravel(),
        np.repeat(np.log(np.maximum(spot_spread, 1e-12)), g),
        np.repeat(np.log(np.maximum(spot_level, 1e-12)), g),
        np.tile(gene, n),
    ])  # fmt: skip


@dataclass
class ErrorModel:
    """Expected absolute error per spot and gene from the retrieval spread (see the module docstring).

    Attributes
    ----------
    anchors
        Column indices (into the predictor's genes) of the anchor genes.
    coef
        The four coefficients of :data:`TERMS`; ``intercept`` the constant (log units, scaled to mean error).
    fit_spearman
        Spearman correlation between the model and the absolute error on the data it was fit on (the
        leave-one-section-out predictions of training; for reference, not a held-out measurement).
    spread_spearman
        The same for the spread alone.
    """

    anchors: np.ndarray
    coef: np.ndarray
    intercept: float
    fit_spearman: float = float("nan")
    spread_spearman: float = float("nan")

    @classmethod
    def fit(cls, anchors: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> ErrorModel:
        """Fit on held-out predictions: one :func:`fold_record` per section predicted by a model that never saw it."""
        from scipy.stats import spearmanr
        from sklearn.linear_model import LinearRegression

        X = np.concatenate([f[0] for f in folds])
        y = np.concatenate([f[1] for f in folds])
        error = np.concatenate([f[2] for f in folds])
        spread = np.concatenate([f[3] for f in folds])
        regression = LinearRegression().fit(X, y)
        raw = np.exp(regression.predict(X))
        scale = float(error.mean() / max(raw.mean(), 1e-12))  # the mean expected error is the mean error
        model = cls(np.asarray(anchors, dtype=np.int64), regression.coef_.astype(np.float64), float(regression.intercept_ + np.log(scale)))
        model.fit_spearman = float(spearmanr(raw, error)[0])
        model.spread_spearman = float(spearmanr(spread, error)[0])
        return model

    def expected_error(self, spread: np.ndarray, spot_spread: np.ndarray, spot_level: np.ndarray, *, inplace: bool = False) -> np.ndarray:
        """``(n_spots, n_genes)`` float32 expected absolute error from the ``(n_spots, n_genes)`` spread
        (products of per-spot and per-gene factors: no design matrix is built; ``inplace`` writes into a
        float32 ``spread``, for whole slides)."""
        a, b, c, d = (float(v) for v in self.coef)
        spread = np.asarray(spread, dtype=np.float32)
        gene = (spread.mean(axis=0, dtype=np.float64) + SPREAD_FLOOR) ** d
        spot = np.exp(self.intercept) * np.maximum(spot_spread, 1e-12) ** b * np.maximum(spot_level, 1e-12) ** c
        out = spread if inplace else spread.copy()
        out += np.float32(SPREAD_FLOOR)
        np.power(out, np.float32(a), out=out)
        out *= spot.astype(np.float32)[:, None]
        out *= gene.astype(np.float32)[None, :]
        return out

    def describe(self) -> str:
        terms = ", ".join(f"{name} {value:+.2f}" for name, value in zip(TERMS, self.coef))
        return f"expected absolute error from {terms} (log-log; fit on held-out training sections)"

    def to_payload(self) -> dict:
        return {
            "anchors": [int(i) for i in self.anchors], "coef": [float(v) for v in self.coef], "intercept": self.intercept,
            "fit_spearman": self.fit_spearman, "spread_spearman": self.spread_spearman,
        }  # fmt: skip

    @classmethod
    def from_payload(cls, payload: dict) -> ErrorModel:
        return cls(
            np.asarray(payload["anchors"], dtype=np.int64), np.asarray(payload["coef"], dtype=np.float64),
            float(payload["intercept"]), float(payload.get("fit_spearman", np.nan)), float(payload.get("spread_spearman", np.nan)),
        )  # fmt: skip


def fold_record(prediction: np.ndarray, spread: np.ndarray, truth: np.ndarray, anchors: np.ndarray, *,
                max_spots: int = MAX_FIT_SPOTS, seed: int = 0):  # fmt: skip
    """What one held-out section gives :meth:`ErrorModel.fit`: the design, log error, error and spread
    at the anchor genes of ``(n_spots, n_genes)`` prediction, spread and measured truth (float32, at
    most ``max_spots`` seeded spots; the spot terms are relative to every spot of the section)."""
    prediction, spread, truth = (np.asarray(a, dtype=np.float64)[:, anchors] for a in (prediction, spread, truth))
    spot_spread, spot_level = spot_terms(prediction, spread)
    if len(prediction) > max_spots:
        rows = np.sort(np.random.default_rng(seed).choice(len(prediction), max_spots, replace=False))
        prediction, spread, truth, spot_spread, spot_level = (a[rows] for a in (prediction, spread, truth, spot_spread, spot_level))
    error = np.abs(prediction - truth).ravel()
    X = design(spread, spot_spread, spot_level)
    return X.astype(np.float32), np.log(error + ERROR_FLOOR).astype(np.float32), error.astype(np.float32), spread.ravel().astype(np.float32)
