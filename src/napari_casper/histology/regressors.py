"""Closed-form predictors from spot features to expression: ridge (alpha by CV) and top-k retrieval.

Both are used twice: on handcrafted features they are the baselines, on the learned embedding
(optionally concatenated with handcrafted features) they are the model's prediction heads.
The estimators are scikit-learn's (``StandardScaler``, ``Ridge`` chosen by ``GridSearchCV``,
``NearestNeighbors``); a fitted ridge is kept as plain arrays as well, so checkpoints hold no
pickled objects (:meth:`RidgeRegressor.to_arrays` / :meth:`RidgeRegressor.from_arrays`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, KFold, LeaveOneGroupOut
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from napari_casper.casper.preprocess import scaler_from_arrays

#: ridge penalties tried by cross-validation (features are z-scored first)
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-1, 5, 13))


def _ridge_pipeline(alpha: float = 1.0) -> Pipeline:
    # the SVD solver is exact for every penalty, also the tiny ones on collinear features
    return make_pipeline(StandardScaler(), Ridge(alpha=alpha, solver="svd"))


@dataclass
class RidgeRegressor:
    """Multi-output ridge regression on z-scored features; one penalty for all genes.

    Attributes
    ----------
    pipeline
        Fitted ``StandardScaler`` (training statistics) + ``Ridge`` (float32 weights).
    alpha
        Penalty chosen by cross-validation; ``cv_mse`` the mean standardised validation MSE per alpha.
    """

    pipeline: Pipeline
    alpha: float
    cv_mse: dict = field(default_factory=dict)

    @property
    def coef(self) -> np.ndarray:
        """``(n_features, n_genes)`` weights on z-scored features."""
        return self.pipeline[-1].coef_.T

    @property
    def intercept(self) -> np.ndarray:
        """``(n_genes,)``."""
        return self.pipeline[-1].intercept_

    def predict(self, X: np.ndarray, columns=None) -> np.ndarray:
        """``(n_spots, n_genes)`` float32 predictions (``columns``: only those gene indices)."""
        if columns is None:
            return self.pipeline.predict(X).astype(np.float32)
        ridge = self.pipeline[-1]
        z = self.pipeline[0].transform(X)
        return (z @ ridge.coef_[columns].T + ridge.intercept_[columns]).astype(np.float32)

    def to_arrays(self) -> dict:
        """Plain arrays (and the penalty) that :meth:`from_arrays` rebuilds the regressor from."""
        scaler = self.pipeline[0]
        return {"x_mean": scaler.mean_, "x_std": scaler.scale_, "coef": self.coef, "intercept": self.intercept, "alpha": float(self.alpha)}

    @classmethod
    def from_arrays(cls, x_mean, x_std, coef, intercept, alpha: float) -> RidgeRegressor:
        """The regressor whose :meth:`to_arrays` gave these (``coef`` ``(n_features, n_genes)``)."""
        pipeline = _ridge_pipeline(float(alpha))
        pipeline.steps[0] = (pipeline.steps[0][0], scaler_from_arrays(x_mean, x_std))
        ridge = pipeline[-1]
        ridge.coef_ = np.ascontiguousarray(np.asarray(coef, dtype=np.float32).T)
        ridge.intercept_ = np.asarray(intercept, dtype=np.float32)
        ridge.n_features_in_ = ridge.coef_.shape[1]
        return cls(pipeline, float(alpha))


def fit_ridge(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    alphas=DEFAULT_ALPHAS,
    n_folds: int = 5,
    seed: int = 0,
    max_cv_genes: int = 1000,
) -> RidgeRegressor:
    """Fit ridge regression ``Y ~ X`` choosing alpha by cross-validation (sklearn ``GridSearchCV``).

    Parameters
    ----------
    X
        ``(n_spots, n_features)`` features (z-scored inside, per training fold).
    Y
        ``(n_spots, n_genes)`` targets (log-normalised expression).
    groups
        Section label per spot. With two or more sections the folds leave one section out
        (spatially honest); otherwise ``n_folds`` shuffled folds.
    alphas
        Candidate penalties; the one with the lowest mean validation MSE of per-gene
        standardised targets wins (the smallest on ties).
    max_cv_genes
        The penalty is chosen on at most this many genes (evenly spaced columns; the mean
        standardised MSE barely changes, and 15k-gene panels stay fast).
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if groups is not None and len(np.unique(groups)) >= 2:
        cv, groups = LeaveOneGroupOut(), np.asarray(groups)
    else:
        cv, groups = KFold(max(2, min(n_folds, len(X))), shuffle=True, random_state=seed), None
    cols = np.unique(np.linspace(0, Y.shape[1] - 1, min(max_cv_genes, Y.shape[1])).astype(int))
    Ycv = StandardScaler(with_mean=False).fit_transform(Y[:, cols])  # every gene weighs the same
    search = GridSearchCV(
        _ridge_pipeline(), {"ridge__alpha": [float(a) for a in alphas]}, cv=cv, scoring="neg_mean_squared_error", refit=False
    )
    search.fit(X, Ycv, groups=groups)
    mse = -search.cv_results_["mean_test_score"]
    best = float(alphas[int(np.argmin(mse))])
    pipeline = _ridge_pipeline(best).fit(X, Y)
    scaler, ridge = pipeline[0], pipeline[-1]
    scaler.mean_, scaler.scale_ = scaler.mean_.astype(np.float32), scaler.scale_.astype(np.float32)
    ridge.coef_, ridge.intercept_ = ridge.coef_.astype(np.float32), ridge.intercept_.astype(np.float32)
    return RidgeRegressor(pipeline, best, {float(a): float(m) for a, m in zip(alphas, mse)})


def cosine_topk(query: np.ndarray, bank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(n_query, k)`` of the ``k`` most cosine-similar bank rows, and their similarities."""
    bank = np.asarray(bank, dtype=np.float32)
    k = min(k, bank.shape[0])
    neighbours = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(bank)
    distance, idx = neighbours.kneighbors(np.asarray(query, dtype=np.float32))
    return idx, (1.0 - distance).astype(np.float32)


def _allowed_threads() -> int:
    """Threads the caller allows BLAS (``threadpoolctl``; :func:`~napari_casper.histology.fit.limited_threads` sets it)."""
    from threadpoolctl import threadpool_info

    counts = [int(lib["num_threads"]) for lib in threadpool_info() if lib.get("user_api") == "blas"]
    return max(1, min(counts)) if counts else 1


def retrieve(
    query: np.ndarray,
    bank: np.ndarray,
    bank_expression: np.ndarray,
    *,
    k: int = 50,
    temperature: float | None = None,
    chunk_values: int = 20_000_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and weighted std of the expression of the ``k`` most similar bank spots.

    Parameters
    ----------
    query, bank
        ``(n_query, d)`` and ``(n_bank, d)`` features compared by cosine similarity.
    bank_expression
        ``(n_bank, n_genes)`` expression of the bank spots.
    temperature
        ``None``: equal weights (BLEEP-style mean); else weights ``softmax(similarity / temperature)``.
    chunk_values
        Bound on ``rows x genes`` held at once per intermediate (memory).

    Returns
    -------
    ``(prediction, spread)``, both ``(n_query, n_genes)`` float32; ``spread`` is the weighted
    standard deviation of the neighbours' expression (an uncertainty per spot and gene).
    Blocks of rows run side by side on as many threads as BLAS is allowed (1.8x on 2 cores).
    """
    idx, sim = cosine_topk(query, bank, k)
    if temperature is None:
        weights = np.full(sim.shape, 1.0 / sim.shape[1], dtype=np.float32)
    else:
        logits = (sim - sim.max(axis=1, keepdims=True)) / float(temperature)
        weights = np.exp(logits)
        weights /= weights.sum(axis=1, keepdims=True)
    from scipy import sparse

    # the neighbours' weights as a sparse (rows x bank) matrix: the weighted mean and second moment are two
    # sparse-dense products (no rows x k x genes gather); var = E[y^2] - mean^2, in float64
    Y = np.asarray(bank_expression, dtype=np.float64)
    Y2 = Y * Y
    n, k_eff = idx.shape
    pred = np.empty((n, Y.shape[1]), dtype=np.float32)
    spread = np.empty_like(pred)
    rows = max(1, chunk_values // max(1, Y.shape[1]))

    def block(start: int) -> None:  # scipy's sparse product releases the GIL: blocks run side by side
        sl = slice(start, min(start + rows, n))
        m = sl.stop - sl.start
        W = sparse.csr_matrix(
            (weights[sl].astype(np.float64).ravel(), idx[sl].ravel(), np.arange(0, m * k_eff + 1, k_eff)),
            shape=(m, Y.shape[0]),
        )
        mean = W @ Y
        pred[sl] = mean
        spread[sl] = np.sqrt(np.maximum(W @ Y2 - mean * mean, 0.0))

    starts = range(0, n, rows)
    workers = min(len(starts), _allowed_threads())
    if workers <= 1:
        for start in starts:
            block(start)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers, thread_name_prefix="retrieve") as pool:
            list(pool.map(block, starts))
    return pred, spread
