"""Per-gene imputation accuracy metrics of Li et al. 2022 (Nature Methods 19, 662-670).

Every metric compares, for one gene, the measured values over spots with the predicted
values over the same spots. Inputs are ``(n_spots, n_genes)`` arrays; every function
returns one value per gene (column).

Conventions (the places where Li et al.'s code leaves NaN or is silent):

- **Constant vectors.** PCC and SRCC are undefined when the measured or the predicted
  vector is constant (zero variance). They score 0 (an uninformative prediction), never
  NaN, and :func:`score_genes` writes a ``note`` saying so. A constant predictor such as
  the reference-mean baseline therefore scores PCC 0 on every gene: that is its point.
- **RMSE** is on per-gene z-scores (population standard deviation), so it is the
  identity ``sqrt(2 * (1 - PCC))``. A constant vector has no z-scores; it gets the
  identity's value at PCC 0, ``sqrt(2)``, so a constant predictor cannot beat an
  uncorrelated one on RMSE.
- **SSIM** is one global SSIM per gene (not windowed) on vectors divided by their
  maximum (when the maximum is positive), with ``L = 1``, ``C1 = 0.01**2``,
  ``C2 = 0.03**2``, ``C3 = C2 / 2``.
- **JS** is the Jensen-Shannon divergence (natural log, so in ``[0, ln 2]``) between
  the two vectors scaled to sum 1. Negative predictions are clipped to 0 first; an
  all-zero vector becomes the uniform distribution (as Li et al.'s ``fillna`` does).
- **MAPE** (mean absolute percentage error, over spots whose measured value is not 0)
  is meaningful only when prediction and measurement are in the same units: e.g. the
  seqFISH / Tasic pair, both rank-normalised to 0..101. Between in situ intensities and
  log-normalised scRNA-seq (the Drosophila pair) it measures the unit mismatch, not
  accuracy, so it is reported but never enters the accuracy score.
- **Missing prediction** (a gene the method did not predict, or predicted with a
  non-finite value): PCC 0, SRCC 0, SSIM 0, RMSE 1.5, JS 1, MAPE NaN, as in Li et al.

The **accuracy score** (AS) ranks methods on each metric's mean over genes (the best
method gets rank ``n_methods``), and averages ``rank / n_methods`` over PCC, SSIM, RMSE
and JS (Li et al.'s four). It lies in ``(0, 1]``; higher is better.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

#: metric name -> True when a larger value is better
HIGHER_IS_BETTER: dict[str, bool] = {
    "PCC": True,
    "SRCC": True,
    "SSIM": True,
    "RMSE": False,
    "JS": False,
    "MAPE": False,
}
#: score given to a gene the method did not predict (Li et al. 2022)
MISSING_SCORE: dict[str, float] = {
    "PCC": 0.0,
    "SRCC": 0.0,
    "SSIM": 0.0,
    "RMSE": 1.5,
    "JS": 1.0,
    "MAPE": float("nan"),
}
#: metrics reported for every gene, in table order
METRICS: tuple[str, ...] = ("PCC", "SRCC", "SSIM", "RMSE", "JS", "MAPE")
#: metrics that the accuracy score averages (Li et al. 2022)
AS_METRICS: tuple[str, ...] = ("PCC", "SSIM", "RMSE", "JS")

_SSIM_C1 = 0.01**2
_SSIM_C2 = 0.03**2
_SSIM_C3 = _SSIM_C2 / 2


def _as_2d(values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"expected a (n_spots, n_genes) array, got shape {arr.shape}")
    return arr


def _pair(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, p = _as_2d(true), _as_2d(pred)
    if t.shape != p.shape:
        raise ValueError(f"measured {t.shape} and predicted {p.shape} shapes differ")
    return t, p


def is_constant(values: np.ndarray) -> np.ndarray:
    """``(n_genes,)`` bool: True where a column has (numerically) zero variance."""
    arr = _as_2d(values)
    spread = arr.max(axis=0) - arr.min(axis=0)
    scale = np.maximum(np.abs(arr).max(axis=0), 1.0)
    return spread <= 1e-12 * scale


def _centred_unit(arr: np.ndarray) -> np.ndarray:
    """Columns centred and scaled to unit Euclidean norm (0 for constant columns)."""
    centred = arr - arr.mean(axis=0)
    norm = np.sqrt((centred**2).sum(axis=0))
    out = np.zeros_like(centred)
    ok = ~is_constant(arr)
    out[:, ok] = centred[:, ok] / norm[ok]
    return out


def pearson(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Pearson correlation per gene over spots; 0 where either column is constant."""
    t, p = _pair(true, pred)
    r = (_centred_unit(t) * _centred_unit(p)).sum(axis=0)
    return np.clip(r, -1.0, 1.0)


def spearman(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Spearman rank correlation per gene (Pearson on average ranks); 0 where constant."""
    t, p = _pair(true, pred)
    return pearson(rankdata(t, axis=0), rankdata(p, axis=0))


def rmse_zscore(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """RMSE between per-gene z-scores (population std); ``sqrt(2)`` where either is constant.

    Equals ``sqrt(2 * (1 - pearson(true, pred)))`` exactly.
    """
    t, p = _pair(true, pred)
    n = t.shape[0]
    # z-score = centred / population std = centred_unit * sqrt(n)
    zt, zp = _centred_unit(t) * np.sqrt(n), _centred_unit(p) * np.sqrt(n)
    rmse = np.sqrt(((zt - zp) ** 2).mean(axis=0))
    undefined = is_constant(t) | is_constant(p)
    rmse[undefined] = np.sqrt(2.0)
    return rmse


def _scale_max(arr: np.ndarray) -> np.ndarray:
    peak = arr.max(axis=0)
    scale = np.where(peak > 0, peak, 1.0)
    return arr / scale


def ssim(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """One global SSIM per gene on max-scaled vectors (Li et al. 2022's ``cal_ssim``)."""
    t, p = _pair(true, pred)
    t, p = _scale_max(t), _scale_max(p)
    mu_t, mu_p = t.mean(axis=0), p.mean(axis=0)
    sd_t, sd_p = t.std(axis=0), p.std(axis=0)
    cov = ((t - mu_t) * (p - mu_p)).mean(axis=0)
    luminance = (2 * mu_t * mu_p + _SSIM_C1) / (mu_t**2 + mu_p**2 + _SSIM_C1)
    contrast = (2 * sd_t * sd_p + _SSIM_C2) / (sd_t**2 + sd_p**2 + _SSIM_C2)
    structure = (cov + _SSIM_C3) / (sd_t * sd_p + _SSIM_C3)
    return luminance * contrast * structure


def _to_distribution(arr: np.ndarray) -> np.ndarray:
    clipped = np.clip(arr, 0.0, None)
    total = clipped.sum(axis=0)
    n = arr.shape[0]
    uniform = np.full_like(clipped, 1.0 / n)
    return np.where(total > 0, clipped / np.where(total > 0, total, 1.0), uniform)


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / q), 0.0)
    return terms.sum(axis=0)


def jensen_shannon(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (natural log) per gene between sum-1-scaled vectors."""
    t, p = _pair(true, pred)
    pt, pp = _to_distribution(t), _to_distribution(p)
    mid = (pt + pp) / 2
    return np.clip(0.5 * _kl(pt, mid) + 0.5 * _kl(pp, mid), 0.0, None)


def mape(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Mean absolute percentage error (as a fraction) over spots whose measured value != 0.

    Only meaningful when prediction and measurement share units; NaN for a gene that is
    0 in every spot.
    """
    t, p = _pair(true, pred)
    nonzero = t != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(nonzero, np.abs(t - p) / np.abs(np.where(nonzero, t, 1.0)), 0.0)
        return ratio.sum(axis=0) / nonzero.sum(axis=0)


def score_genes(
    true: np.ndarray, pred: np.ndarray, genes: Sequence[str] | None = None
) -> pd.DataFrame:
    """Every metric for every gene.

    Parameters
    ----------
    true, pred
        ``(n_spots, n_genes)`` measured and predicted values, same column order.
        A prediction column with any non-finite value counts as missing.
    genes
        Column names (default ``gene0``, ``gene1``, ...).

    Returns
    -------
    DataFrame with one row per gene: ``gene``, :data:`METRICS` columns and ``note``
    (empty, or why a value is conventional rather than computed).
    """
    t, p = _pair(true, pred)
    if not np.all(np.isfinite(t)):
        raise ValueError("measured values contain NaN or infinity")
    n_genes = t.shape[1]
    names = list(genes) if genes is not None else [f"gene{i}" for i in range(n_genes)]
    if len(names) != n_genes:
        raise ValueError(f"{len(names)} gene names for {n_genes} columns")

    missing = ~np.all(np.isfinite(p), axis=0)
    p = np.where(np.isfinite(p), p, 0.0)
    table = pd.DataFrame(
        {
            "gene": names,
            "PCC": pearson(t, p),
            "SRCC": spearman(t, p),
            "SSIM": ssim(t, p),
            "RMSE": rmse_zscore(t, p),
            "JS": jensen_shannon(t, p),
            "MAPE": mape(t, p),
        }
    )
    const_true, const_pred = is_constant(t), is_constant(p)
    notes = np.full(n_genes, "", dtype=object)
    notes[const_pred] = "constant prediction: PCC/SRCC undefined, scored 0"
    notes[const_true] = "constant measurement: PCC/SRCC undefined, scored 0"
    notes[missing] = "missing prediction: scored as in Li et al. 2022"
    for metric, value in MISSING_SCORE.items():
        table.loc[missing, metric] = value
    table["note"] = notes
    return table


def accuracy_score(means: pd.DataFrame, metrics: Sequence[str] = AS_METRICS) -> pd.Series:
    """Li et al.'s accuracy score per method.

    Parameters
    ----------
    means
        One row per method (index = method name), one column per metric holding that
        method's mean over genes.
    metrics
        Metrics to average over (default :data:`AS_METRICS`).

    Returns
    -------
    Series (index = method): mean over ``metrics`` of ``rank / n_methods``, where on each
    metric the best method has rank ``n_methods`` and ties share their average rank.
    """
    n_methods = len(means)
    if n_methods == 0:
        return pd.Series(dtype=float, name="AS")
    fractions = []
    for metric in metrics:
        values = means[metric].to_numpy(dtype=float)
        oriented = values if HIGHER_IS_BETTER[metric] else -values
        fractions.append(rankdata(oriented) / n_methods)
    return pd.Series(np.mean(fractions, axis=0), index=means.index, name="AS")
