"""Per-spot uncertainty of a histology prediction: the expected absolute error, learned on held-out sections.

The retrieval head's neighbours (the training spots whose patches look most alike) disagree more
where a prediction is less certain: their standard deviation (the *spread*, per spot and gene) is
the raw sign. Alone it misses three things the errors on held-out sections show:

* a spot's error is shared across its genes: the spread averaged over a fixed set of genes (the
  *anchor* genes, the most expressed in training) says how heterogeneous the look-alikes of the
  spot are as a whole, and is far less noisy than one gene's spread;
* measured log-normalised expression is noisier where a spot holds fewer counts: the predicted
  level of the anchor genes (mean log-normalised expression, higher in richer spots) marks them;
* errors come in patches of tissue, not spot by spot: each sign averaged over the spot and its
  neighbours on the slide (the *nearby* terms, :func:`nearby_mean`) is less noisy than the spot's own.

:class:`ErrorModel` combines the signs (:data:`TERMS`) as ``log(|error| + floor) ~ sum of coef *
log(sign)``, fit by least squares on the errors of the leave-one-section-out models of training
(each predicts a training section it never saw, so every error is honest), and scaled so that its
mean is the mean absolute error there. The result is in the units of the prediction (log1p of
counts per 10,000): an expected absolute error per spot and gene. The spot terms are relative to
the slide's own mean, so a slide's overall shift cancels.

Measured on sections never trained on (``benchmarks/bench_histology_uncertainty.py``): Spearman with
the absolute error of the 50 most expressed genes, pooled over spots and genes; see docs/benchmarks.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: the most expressed training genes whose spread and level describe a spot as a whole
N_ANCHORS = 200
#: added to spreads before their logarithm (log1p units)
SPREAD_FLOOR = 1e-3
#: added to absolute errors before their logarithm (a zero error is not infinitely good)
ERROR_FLOOR = 1e-2
#: each held-out section contributes at most this many spots to the fit (memory: 4 heads are kept until one is chosen)
MAX_FIT_SPOTS = 2000
#: a spot's nearby spots lie within this many times the slide's median nearest-spot distance (1.6: the
#: 8 around a spot of a square grid, the 6 of a hexagonal one)
NEIGHBOUR_RADIUS = 1.6
#: the signs, in the order of the coefficients; "nearby" terms are averaged over the spot and the spots around it
TERMS = (
    "spread", "nearby spread", "spot spread", "nearby spot spread", "spot level",
    "nearby spot level", "gene spread",
)  # fmt: skip
#: the terms of models saved before the nearby terms (checkpoints without ``terms``)
LEGACY_TERMS = ("spread", "spot spread", "spot level", "gene spread")
#: columns of the spots x genes spread are turned into expected errors this many at a time
GENE_BLOCK = 2048


def anchor_genes(expression: np.ndarray, n: int = N_ANCHORS) -> np.ndarray:
    """Column indices of the ``n`` genes with the highest mean in ``expression`` (training spots x genes)."""
    mean = np.asarray(expression, dtype=np.float64).mean(axis=0)
    return np.sort(np.argsort(-mean, kind="stable")[: min(n, len(mean))])


def spot_terms(anchor_prediction: np.ndarray, anchor_spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(spot spread, spot level)``, each ``(n_spots,)`` over the anchor genes, relative to the slide's mean (1)."""
    spread = np.asarray(anchor_spread, dtype=np.float64).mean(axis=1)
    level = np.maximum(np.asarray(anchor_prediction, dtype=np.float64).mean(axis=1), SPREAD_FLOOR)
    return spread / max(float(spread.mean()), 1e-12), level / max(float(level.mean()), 1e-12)


def nearby_mean(coords: np.ndarray, radius: float = NEIGHBOUR_RADIUS):
    """``(n, n)`` sparse row-stochastic matrix: row ``i`` averages spot ``i`` and the spots within ``radius``
    times the median nearest-spot distance of ``coords`` (``(n, 2)``; fewer than two spots: the identity)."""
    from scipy import sparse
    from scipy.spatial import cKDTree

    xy = np.asarray(coords, dtype=np.float64)
    n = len(xy)
    rows, cols = np.arange(n), np.arange(n)
    if n > 1:
        tree = cKDTree(xy)
        nearest = tree.query(xy, k=2)[0][:, 1]
        step = float(np.median(nearest))
        if step > 0:
            pairs = tree.query_pairs(radius * step, output_type="ndarray")
            rows = np.concatenate([rows, pairs[:, 0], pairs[:, 1]])
            cols = np.concatenate([cols, pairs[:, 1], pairs[:, 0]])
    weights = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return sparse.diags(1.0 / np.asarray(weights.sum(axis=1)).ravel()) @ weights


def _log(values: np.ndarray, floor: float) -> np.ndarray:
    return np.log(np.maximum(values, 0.0) + floor)


def _spot_values(terms, spot_spread, spot_level, nearby) -> dict[str, np.ndarray]:
    """The per-spot terms among ``terms`` (log units)."""
    values = {"spot spread": spot_spread, "spot level": spot_level}
    out = {}
    for name, v in values.items():
        v = np.asarray(v, dtype=np.float64)
        if name in terms:
            out[name] = np.log(np.maximum(v, 1e-12))
        if f"nearby {name}" in terms:
            out[f"nearby {name}"] = np.log(np.maximum(nearby @ v, 1e-12))
    return out


def design(spread: np.ndarray, spot_spread: np.ndarray, spot_level: np.ndarray, nearby, terms=TERMS,
           rows: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """``(len(rows) * n_genes, len(terms))`` log terms of a ``(n_spots, n_genes)`` spread at spots whose
    surroundings ``nearby`` averages (:func:`nearby_mean`), at the spots ``rows`` (default all)."""
    spread = np.asarray(spread, dtype=np.float64)
    rows = np.arange(len(spread)) if rows is None else np.asarray(rows)
    g = spread.shape[1]
    spot = _spot_values(terms, spot_spread, spot_level, nearby)
    columns = []
    for name in terms:
        if name == "spread":
            columns.append(_log(spread[rows], SPREAD_FLOOR).ravel())
        elif name == "nearby spread":
            columns.append(_log(nearby[rows] @ spread, SPREAD_FLOOR).ravel())
        elif name == "gene spread":
            columns.append(np.tile(np.log(spread.mean(axis=0) + SPREAD_FLOOR), len(rows)))
        else:
            columns.append(np.repeat(spot[name][rows], g))
    return np.column_stack(columns)


@dataclass
class ErrorModel:
    """Expected absolute error per spot and gene from the retrieval spread (see the module docstring).

    Attributes
    ----------
    anchors
        Column indices (into the predictor's genes) of the anchor genes.
    coef
        One coefficient per term of ``terms``; ``intercept`` the constant (log units, scaled to mean error).
    fit_spearman
        Spearman correlation between the model and the absolute error on the data it was fit on (the
        leave-one-section-out predictions of training; for reference, not a held-out measurement).
    spread_spearman
        The same for the spread alone.
    terms
        The names of the terms (:data:`TERMS`; :data:`LEGACY_TERMS` for a model saved before the
        nearby terms).
    """

    anchors: np.ndarray
    coef: np.ndarray
    intercept: float
    fit_spearman: float = float("nan")
    spread_spearman: float = float("nan")
    terms: tuple[str, ...] = field(default=TERMS)

    @classmethod
    def fit(cls, anchors: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], terms=TERMS) -> ErrorModel:
        """Fit on held-out predictions: one :func:`fold_record` (made with the same ``terms``) per section
        predicted by a model that never saw it."""
        from scipy.stats import spearmanr
        from sklearn.linear_model import LinearRegression

        X = np.concatenate([f[0] for f in folds])
        y = np.concatenate([f[1] for f in folds])
        error = np.concatenate([f[2] for f in folds])
        spread = np.concatenate([f[3] for f in folds])
        regression = LinearRegression().fit(X, y)
        raw = np.exp(regression.predict(X))
        scale = float(error.mean() / max(raw.mean(), 1e-12))  # the mean expected error is the mean error
        model = cls(np.asarray(anchors, dtype=np.int64), regression.coef_.astype(np.float64), float(regression.intercept_ + np.log(scale)),
                    terms=tuple(terms))  # fmt: skip
        model.fit_spearman = float(spearmanr(raw, error)[0])
        model.spread_spearman = float(spearmanr(spread, error)[0])
        return model

    @property
    def needs_nearby(self) -> bool:
        return any(t.startswith("nearby ") for t in self.terms)

    def expected_error(self, spread: np.ndarray, spot_spread: np.ndarray, spot_level: np.ndarray, nearby=None, *,
                       inplace: bool = False) -> np.ndarray:  # fmt: skip
        """``(n_spots, n_genes)`` float32 expected absolute error from the ``(n_spots, n_genes)`` spread at
        spots whose surroundings ``nearby`` averages (:func:`nearby_mean`; needed only by a model
        with nearby terms). Computed as products of per-spot and per-gene factors, a block of genes
        at a time (no design matrix is built); ``inplace`` writes into a float32 ``spread``, for whole slides."""
        coef = dict(zip(self.terms, (float(v) for v in self.coef)))
        if self.needs_nearby and nearby is None:
            raise ValueError("this error model averages over neighbouring spots: pass nearby=nearby_mean(coords)")
        spread = np.asarray(spread, dtype=np.float32)
        gene = (spread.mean(axis=0, dtype=np.float64) + SPREAD_FLOOR) ** coef.get("gene spread", 0.0)
        spot_log = self.intercept + sum(coef[name] * v for name, v in _spot_values(self.terms, spot_spread, spot_level, nearby).items())
        spot = np.exp(spot_log) * np.ones(len(spread))
        out = spread if inplace else spread.copy()
        a, b = np.float32(coef.get("spread", 0.0)), np.float32(coef.get("nearby spread", 0.0))
        for start in range(0, out.shape[1], GENE_BLOCK):
            block = out[:, start : start + GENE_BLOCK]
            smoothed = None if b == 0 else np.asarray(nearby @ block, dtype=np.float32)  # before the in-place write
            block += np.float32(SPREAD_FLOOR)
            np.power(block, a, out=block)
            if smoothed is not None:
                np.maximum(smoothed, 0.0, out=smoothed)
                smoothed += np.float32(SPREAD_FLOOR)
                block *= np.power(smoothed, b, out=smoothed)
        out *= spot.astype(np.float32)[:, None]
        out *= gene.astype(np.float32)[None, :]
        return out

    def describe(self) -> str:
        terms = ", ".join(f"{name} {value:+.2f}" for name, value in zip(self.terms, self.coef))
        return f"expected absolute error from {terms} (log-log; fit on held-out training sections)"

    def to_payload(self) -> dict:
        return {
            "anchors": [int(i) for i in self.anchors], "coef": [float(v) for v in self.coef], "intercept": self.intercept,
            "fit_spearman": self.fit_spearman, "spread_spearman": self.spread_spearman, "terms": list(self.terms),
        }  # fmt: skip

    @classmethod
    def from_payload(cls, payload: dict) -> ErrorModel:
        return cls(
            np.asarray(payload["anchors"], dtype=np.int64), np.asarray(payload["coef"], dtype=np.float64),
            float(payload["intercept"]), float(payload.get("fit_spearman", np.nan)), float(payload.get("spread_spearman", np.nan)),
            tuple(payload.get("terms", LEGACY_TERMS)),
        )  # fmt: skip


def fold_record(prediction: np.ndarray, spread: np.ndarray, truth: np.ndarray, anchors: np.ndarray, coords: np.ndarray, *,
                max_spots: int = MAX_FIT_SPOTS, seed: int = 0, terms=TERMS):  # fmt: skip
    """What one held-out section gives :meth:`ErrorModel.fit`: the design, log error, error and spread
    at the anchor genes of ``(n_spots, n_genes)`` prediction, spread and measured truth at ``coords``
    (float32, at most ``max_spots`` seeded spots; the spot and nearby terms are computed over every
    spot of the section)."""
    prediction, spread, truth = (np.asarray(a, dtype=np.float64)[:, anchors] for a in (prediction, spread, truth))
    rows = np.arange(len(prediction))
    if len(rows) > max_spots:
        rows = np.sort(np.random.default_rng(seed).choice(len(rows), max_spots, replace=False))
    X = design(spread, *spot_terms(prediction, spread), nearby_mean(coords), terms, rows=rows)
    error = np.abs(prediction[rows] - truth[rows]).ravel()
    return X.astype(np.float32), np.log(error + ERROR_FLOOR).astype(np.float32), error.astype(np.float32), spread[rows].ravel().astype(np.float32)
