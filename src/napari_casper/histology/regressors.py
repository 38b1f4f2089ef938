"""Closed-form predictors from spot features to expression: ridge (alpha by CV) and top-k retrieval.

Both are used twice: on handcrafted features they are the baselines, on the learned embedding
(optionally concatenated with handcrafted features) they are the model's prediction heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_casper.casper.preprocess import standardize

#: ridge penalties tried by cross-validation (features are z-scored first)
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-1, 5, 13))


@dataclass
class Standardizer:
    """Per-column z-scoring with statistics from the training rows (constant columns -> 0).

    The fitted form of :func:`napari_casper.casper.preprocess.standardize`.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> Standardizer:
        _, mean, std = standardize(X)
        return cls(mean, std)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return standardize(X, self.mean, self.std)[0]


@dataclass
class RidgeRegressor:
    """Multi-output ridge regression on z-scored features; one penalty for all genes.

    Attributes
    ----------
    x_scaler
        Feature standardisation (training statistics).
    coef
        ``(n_features, n_genes)`` weights; ``intercept`` ``(n_genes,)``.
    alpha
        Penalty chosen by cross-validation; ``cv_mse`` the mean standardised validation MSE per alpha.
    """

    x_scaler: Standardizer
    coef: np.ndarray
    intercept: np.ndarray
    alpha: float
    cv_mse: dict

    def predict(self, X: np.ndarray) -> np.ndarray:
        """``(n_spots, n_genes)`` float32 predictions."""
        return (self.x_scaler(X) @ self.coef + self.intercept).astype(np.float32)


def _ridge_path(X: np.ndarray, Y: np.ndarray, alphas) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ridge solutions for every alpha from one SVD: ``[(coef, intercept), ...]``."""
    x_mean, y_mean = X.mean(axis=0), Y.mean(axis=0)
    U, s, Vt = np.linalg.svd(X - x_mean, full_matrices=False)
    UtY = U.T @ (Y - y_mean)
    out = []
    for alpha in alphas:
        coef = Vt.T @ ((s / (s * s + alpha))[:, None] * UtY)
        out.append((coef, y_mean - x_mean @ coef))
    return out


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
    """Fit ridge regression ``Y ~ X`` choosing alpha by cross-validation.

    Parameters
    ----------
    X
        ``(n_spots, n_features)`` features (z-scored inside).
    Y
        ``(n_spots, n_genes)`` targets (log-normalised expression).
    groups
        Section label per spot. With two or more sections the folds leave one section out
        (spatially honest); otherwise ``n_folds`` random folds.
    alphas
        Candidate penalties; the one with the lowest mean validation MSE of per-gene
        standardised targets wins.
    max_cv_genes
        The penalty is chosen on at most this many genes (evenly spaced columns; the mean
        standardised MSE barely changes, and 15k-gene panels stay fast).
    """
    scaler = Standardizer.fit(X)
    Xs = scaler(X).astype(np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    y_std = Y.std(axis=0)
    y_std = np.where(y_std > 1e-8, y_std, 1.0)
    if groups is not None and len(np.unique(groups)) >= 2:
        folds = [np.asarray(groups) == g for g in np.unique(groups)]
    else:
        rng = np.random.default_rng(seed)
        fold_id = rng.permutation(len(Xs)) % max(2, min(n_folds, len(Xs)))
        folds = [fold_id == f for f in np.unique(fold_id)]
    cols = np.unique(np.linspace(0, Y.shape[1] - 1, min(max_cv_genes, Y.shape[1])).astype(int))
    Ycv = Y[:, cols]
    mse = np.zeros(len(alphas))
    for val in folds:
        path = _ridge_path(Xs[~val], Ycv[~val], alphas)
        for a, (coef, intercept) in enumerate(path):
            err = (Xs[val] @ coef + intercept - Ycv[val]) / y_std[cols]
            mse[a] += float((err * err).mean()) / len(folds)
    best = int(np.argmin(mse))
    coef, intercept = _ridge_path(Xs, Y, [alphas[best]])[0]
    return RidgeRegressor(
        x_scaler=scaler,
        coef=coef.astype(np.float32),
        intercept=intercept.astype(np.float32),
        alpha=float(alphas[best]),
        cv_mse={float(a): float(m) for a, m in zip(alphas, mse)},
    )


def cosine_topk(query: np.ndarray, bank: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(n_query, k)`` of the ``k`` most cosine-similar bank rows, and their similarities."""
    q = np.asarray(query, dtype=np.float32)
    b = np.asarray(bank, dtype=np.float32)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-8)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-8)
    sim = q @ b.T
    k = min(k, b.shape[0])
    idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(sim, idx, axis=1)
    order = np.argsort(-top, axis=1)
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(top, order, axis=1)


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
        Bound on ``rows x k x genes`` held at once (memory).

    Returns
    -------
    ``(prediction, spread)``, both ``(n_query, n_genes)`` float32; ``spread`` is the weighted
    standard deviation of the neighbours' expression (an uncertainty per spot and gene).
    """
    idx, sim = cosine_topk(query, bank, k)
    if temperature is None:
        weights = np.full(sim.shape, 1.0 / sim.shape[1], dtype=np.float32)
    else:
        logits = (sim - sim.max(axis=1, keepdims=True)) / float(temperature)
        weights = np.exp(logits)
        weights /= weights.sum(axis=1, keepdims=True)
    Y = np.asarray(bank_expression, dtype=np.float32)
    n, k_eff = idx.shape
    pred = np.empty((n, Y.shape[1]), dtype=np.float32)
    spread = np.empty_like(pred)
    rows = max(1, chunk_values // max(1, k_eff * Y.shape[1]))
    for start in range(0, n, rows):
        sl = slice(start, start + rows)
        neigh = Y[idx[sl]]  # (r, k, g)
        w = weights[sl][:, :, None]
        mean = (w * neigh).sum(axis=1)
        var = (w * (neigh - mean[:, None, :]) ** 2).sum(axis=1)
        pred[sl], spread[sl] = mean, np.sqrt(var)
    return pred, spread
