"""Trust per imputed gene and conformal intervals per spot, calibrated on genes hidden honestly in training.

Training's validation run keeps a few panel genes (the validation genes) out of every loss; the
model selected there predicts them, hidden, at every spot, and their measured values say how
good such a prediction is. That is the only honest accuracy training has, and both estimates
here are calibrated on it (:func:`calibrate`); nothing is learned from the genes being imputed.

**Trust** (expected Pearson r of a gene's prediction with what the spots would measure) rests
on three per-gene signs that need no measurement of the gene (:func:`gene_signs`):

* ``agreement``: the smaller of two correlations, over the spots, between the prediction and a
  prediction made from only half of the panel (two complementary halves, three random splits):
  a gene the panel pins down is predicted alike from either half;
* ``reference_accuracy``: the model run on reference cells (their own centroid excluded), whose
  every gene is measured: its Pearson r there;
* ``spread``: the prediction's standard deviation over the spots over the gene's standard
  deviation over the reference cells, at most 1 (a gene predicted flat is rarely predicted well).

The three signs are correlation-like; their mean is a gene's score, and the expected r is the
score shifted by the median difference between the validation genes' honest r and their score
(the median: one validation gene the reference misleads, e.g. a Drosophila gene at r 0.2 whose
signs are all high, would shift every gene's trust).

**Intervals** are in the units of the measured gene standardised over the spots (a z-score:
the prediction is only ever comparable to a measurement up to offset and scale). For a gene of
trust ``t`` and standardised prediction ``p`` at a spot of difficulty ``u`` the interval is
``t * p +/- q * sqrt(1 - t^2) * u``; ``u`` is how badly the spot's own panel genes are predicted
when hidden (:func:`spot_difficulty`, mean 1), and ``q`` is the conformal quantile of
``|z - t p| / (sqrt(1 - t^2) u)`` over the validation genes and spots at the chosen level (split
conformal prediction, as TISSUE, Sun et al. 2024, calibrates on measured genes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: the nominal coverage of the intervals
LEVEL = 0.9
#: panel genes are hidden in this many groups to measure each spot's difficulty
DIFFICULTY_GROUPS = 5
#: random half-panel splits behind ``agreement``
HALF_SPLITS = 3
#: trust signs are computed on at most this many spots (a per-gene statistic; a seeded subset)
SIGN_SPOTS = 4000
#: the signs, in the order of :attr:`Calibration.sign_mean`
SIGNS = ("agreement", "reference_accuracy", "spread")


def pearson_columns(a: np.ndarray, b: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Pearson r of each column of ``a`` with the same column of ``b`` (0 where either is constant),
    computed in ``dtype`` (None: the inputs' own)."""
    a = np.asarray(a, dtype=dtype)
    b = np.asarray(b, dtype=dtype)
    a = a - a.mean(0)
    b = b - b.mean(0)
    denominator = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num((a * b).sum(0) / denominator)


def standardise_columns(values: np.ndarray) -> np.ndarray:
    """Each column to mean 0 and standard deviation 1 over the rows (constant columns to 0)."""
    values = np.asarray(values, dtype=np.float64)
    std = values.std(axis=0)
    return (values - values.mean(axis=0)) / np.where(std > 0, std, 1.0)


@dataclass
class Calibration:
    """What the validation genes, hidden, taught about accuracy (see the module docstring).

    Attributes
    ----------
    genes
        the validation genes (reference names): never loss targets in the validation run.
    pcc
        their Pearson r at every training spot, predicted hidden.
    signs
        ``(len(genes), 3)`` their trust signs (:data:`SIGNS`).
    sign_mean, sign_std, slope, intercept
        expected r = ``intercept + slope * mean((signs - sign_mean) / sign_std)``; as fit, the
        signs are used as they are (mean 0, std 1, slope 1) and only ``intercept`` is fit (the
        median of the validation genes' honest r minus their score).
    quantile
        the conformal quantile of the normalised residual at :attr:`level`.
    level
        the intervals' nominal coverage.
    reference_accuracy
        the final model's ``reference_accuracy`` sign for every reference gene (filled after training).
    reference_std
        every reference gene's standard deviation over the reference cells.
    """

    genes: list[str]
    pcc: np.ndarray
    signs: np.ndarray
    sign_mean: np.ndarray
    sign_std: np.ndarray
    slope: float
    intercept: float
    quantile: float
    level: float = LEVEL
    reference_accuracy: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    reference_std: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def trust(self, signs: np.ndarray) -> np.ndarray:
        """Expected Pearson r (clipped to [-0.99, 0.99]) of genes with these signs ``(G, 3)``."""
        score = np.nanmean((np.asarray(signs, dtype=np.float64) - self.sign_mean) / self.sign_std, axis=1)
        return np.clip(self.intercept + self.slope * np.nan_to_num(score), -0.99, 0.99)

    def interval(
        self, prediction: np.ndarray, trust: np.ndarray, difficulty: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` ``(n, G)`` bounds, in standardised units of each gene (see the module docstring)."""
        centre, scale = _centre_and_scale(prediction, trust, difficulty)
        return centre - self.quantile * scale, centre + self.quantile * scale

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        arrays = ("pcc", "signs", "sign_mean", "sign_std", "reference_accuracy", "reference_std")
        return cls(**{k: (np.asarray(v, dtype=np.float64) if k in arrays else v) for k, v in data.items()})


def _centre_and_scale(prediction, trust, difficulty):
    trust = np.asarray(trust, dtype=np.float64)
    centre = trust * standardise_columns(prediction)
    scale = np.sqrt(1.0 - trust**2)[None, :] * np.asarray(difficulty, dtype=np.float64)[:, None]
    return centre, scale


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile: the ``ceil((n + 1) level) / n`` empirical quantile of ``scores``."""
    scores = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    n = len(scores)
    rank = min(n, int(np.ceil((n + 1) * level)))
    return float(scores[rank - 1])


def fit(
    genes: list[str], pcc: np.ndarray, signs: np.ndarray, truth: np.ndarray, prediction: np.ndarray,
    difficulty: np.ndarray, level: float = LEVEL,
) -> Calibration:
    """A :class:`Calibration` from the validation genes: honest ``pcc``, their ``signs``, and their
    measured (``truth``) and predicted values ``(n, G)`` at spots of ``difficulty``."""
    signs = np.asarray(signs, dtype=np.float64)
    # the signs are correlation-like already: their mean is the score, and only its level is fit (a
    # slope or a per-sign scale fit to a dozen validation genes moved more with chance than with them),
    # robustly: a mean let one misled gene move every gene's trust from one training to the next
    mean, std, slope = np.zeros(signs.shape[1]), np.ones(signs.shape[1]), 1.0
    score = signs.mean(axis=1)
    pcc = np.asarray(pcc, dtype=np.float64)
    intercept = float(np.median(pcc - score))
    calibration = Calibration(list(genes), pcc, signs, mean, std, slope, intercept, quantile=float("nan"), level=level)
    trust = calibration.trust(signs)
    centre, scale = _centre_and_scale(prediction, trust, difficulty)
    calibration.quantile = conformal_quantile(np.abs(standardise_columns(truth) - centre) / scale, level)
    return calibration


# -- the model's side: predictions with genes hidden, signs, difficulty ------------------------------------


def _state(model, z: np.ndarray, hidden: list[str], exclude=None):
    """Head-averaged attention ``(n, C)`` and hidden state ``(n, D)`` of the z-scored profiles ``z``
    with the panel genes ``hidden`` masked."""
    import torch

    net = model.network.eval()
    mask = torch.ones(len(model.panel_genes))
    for gene in hidden:
        mask[model.panel_genes.index(gene)] = 0.0
    attentions, states = [], []
    with torch.no_grad():
        cache = net.encode_centroids(torch.as_tensor(model.centroid_panel()), mask)
        for start in range(0, len(z), 16384):
            rows = torch.as_tensor(np.asarray(z[start : start + 16384], dtype=np.float32))
            part = None if exclude is None else exclude[start : start + 16384]
            attention, state = net.attend(rows, mask, cache, part)
            attentions.append(attention.mean(0))
            states.append(state)
    return torch.cat(attentions), torch.cat(states)


def _decode(model, attention, state, gene_idx: np.ndarray) -> np.ndarray:
    import torch

    from napari_casper.casper.network import standardize_profiles

    with torch.no_grad():
        profiles = torch.as_tensor(model.centroids.expression[:, np.asarray(gene_idx, dtype=np.int64)])
        profiles_z, profiles_std = standardize_profiles(profiles)
        return model.network.decode(attention, state, profiles, profiles_z, profiles_std).numpy()


def predict_hidden(model, z: np.ndarray, hidden: list[str], gene_idx: np.ndarray, exclude=None) -> np.ndarray:
    """Predictions ``(n, G)`` of the reference columns ``gene_idx`` for the z-scored profiles ``z``,
    with the panel genes ``hidden`` masked out of every profile and centroid (as in training);
    ``exclude`` (a tensor of one centroid per row, or None) is left out of each row's attention."""
    attention, state = _state(model, z, list(hidden), exclude)
    return _decode(model, attention, state, gene_idx)


def spot_difficulty(model, z: np.ndarray, *, hidden: list[str] = (), seed: int = 0) -> np.ndarray:
    """How badly each spot's own panel genes are predicted when hidden (:data:`DIFFICULTY_GROUPS`
    groups), as the mean absolute residual of standardised values, scaled to mean 1. The panel
    genes ``hidden`` stay hidden throughout and are not scored."""
    hidden = list(hidden)
    position = {g: i for i, g in enumerate(model.panel_genes)}
    genes = [g for g in model.panel_genes if g not in set(hidden)]
    panel = np.array([position[g] for g in genes])
    z = np.asarray(z, dtype=np.float32)
    groups = np.array_split(np.random.default_rng(seed).permutation(len(genes)), min(DIFFICULTY_GROUPS, len(genes)))
    measured = standardise_columns(z[:, panel])
    reconstructed = np.zeros_like(measured)
    for idx in groups:
        columns = model.centroids.gene_indices([model.panel_reference_genes[panel[i]] for i in idx])
        reconstructed[:, idx] = standardise_columns(predict_hidden(model, z, hidden + [genes[i] for i in idx], columns))
    r = float(np.mean(pearson_columns(reconstructed, measured)))
    residual = np.abs(measured - r * reconstructed).mean(axis=1)
    return residual / max(float(residual.mean()), 1e-12)


def sign_spots(n_spots: int, seed: int = 0, limit: int = SIGN_SPOTS) -> np.ndarray:
    """The seeded subset of at most ``limit`` rows (spots, or reference cells) a per-gene statistic is computed on."""
    if n_spots <= limit:
        return np.arange(n_spots)
    return np.sort(np.random.default_rng(seed).choice(n_spots, limit, replace=False))


def gene_signs(
    model, z: np.ndarray, gene_idx: np.ndarray, *, hidden: list[str] = (), reference_accuracy: np.ndarray,
    reference_std: np.ndarray, seed: int = 0,
) -> np.ndarray:
    """``(G, 3)`` trust signs (:data:`SIGNS`) of the reference columns ``gene_idx`` at the spots ``z``
    (panel genes ``hidden`` stay hidden throughout); ``reference_accuracy`` and ``reference_std`` are
    those of the same genes."""
    z = np.asarray(z)[sign_spots(len(z), seed)]
    hidden = list(hidden)
    full = predict_hidden(model, z, hidden, gene_idx)
    visible = [g for g in model.panel_genes if g not in set(hidden)]
    rng = np.random.default_rng(seed)
    agreement = []
    for _ in range(HALF_SPLITS):
        order = rng.permutation(len(visible))
        halves = [[visible[i] for i in order[: len(order) // 2]], [visible[i] for i in order[len(order) // 2 :]]]
        # each half-panel prediction hides the other half too
        parts = [predict_hidden(model, z, hidden + other, gene_idx) for other in halves]
        agreement.append(np.minimum(pearson_columns(parts[0], full), pearson_columns(parts[1], full)))
    reference_std = np.asarray(reference_std, dtype=np.float64)
    spread = np.minimum(full.std(axis=0, dtype=np.float64) / np.where(reference_std > 0, reference_std, 1.0), 1.0)
    return np.column_stack([np.mean(agreement, axis=0), reference_accuracy, spread])


def reference_accuracy(model, reference_expression, gene_idx: np.ndarray, *, hidden: list[str] = (), max_cells: int = 2000, seed: int = 0) -> np.ndarray:
    """The model's Pearson r on reference cells (a seeded subset of at most ``max_cells``) for the
    columns ``gene_idx``, each cell's own centroid excluded when every cell is a centroid."""
    import torch

    from napari_casper.casper.preprocess import dense
    from napari_casper.casper.reference_cells import ReferenceCells

    cells = ReferenceCells(model, reference_expression, torch.device("cpu"))
    rows = sign_spots(cells.n_cells, seed, max_cells)
    exclude = None if cells.own_centroid is None else cells.own_centroid[torch.as_tensor(rows)]
    attention, state = _state(model, cells.panel[torch.as_tensor(rows)].numpy(), list(hidden), exclude)
    expression = cells.expression[rows]
    expression = expression.tocsc() if hasattr(expression, "tocsc") else expression  # column slices below
    out = np.zeros(len(gene_idx))
    for start in range(0, len(gene_idx), 512):
        idx = np.asarray(gene_idx[start : start + 512])
        out[start : start + len(idx)] = pearson_columns(_decode(model, attention, state, idx), dense(expression[:, idx]))
    return out


def reference_spread(reference_expression, gene_idx: np.ndarray) -> np.ndarray:
    """Each column's standard deviation over the reference cells (sparse or dense)."""
    import scipy.sparse as sp

    columns = reference_expression[:, np.asarray(gene_idx)]
    if sp.issparse(columns):
        columns = columns.tocsc()
        mean = np.asarray(columns.mean(axis=0)).ravel()
        square = np.asarray(columns.multiply(columns).mean(axis=0)).ravel()
        return np.sqrt(np.maximum(square - mean**2, 0.0))
    return np.asarray(columns, dtype=np.float64).std(axis=0)


def calibrate(model, z: np.ndarray, validation: np.ndarray, reference_expression, *, level: float = LEVEL, seed: int = 0) -> Calibration:
    """Calibrate trust and intervals on the validation genes (panel positions ``validation``) of the
    model selected by the validation run, at the z-scored training spots ``z``."""
    hidden = [model.panel_genes[i] for i in validation]
    genes = [model.panel_reference_genes[i] for i in validation]
    columns = model.centroids.gene_indices(genes)
    truth = np.asarray(z)[:, validation]
    prediction = predict_hidden(model, z, hidden, columns)
    accuracy = reference_accuracy(model, reference_expression, columns, hidden=hidden, seed=seed)
    spread = reference_spread(reference_expression, columns)
    signs = gene_signs(model, z, columns, hidden=hidden, reference_accuracy=accuracy, reference_std=spread, seed=seed)
    difficulty = spot_difficulty(model, z, hidden=hidden, seed=seed)
    return fit(genes, pearson_columns(prediction, truth), signs, truth, prediction, difficulty, level)


def complete(calibration: Calibration, model, reference_expression) -> Calibration:
    """Fill the final model's ``reference_accuracy`` and the reference spread of every reference gene."""
    every = np.arange(len(model.centroids.genes))
    calibration.reference_accuracy = reference_accuracy(model, reference_expression, every).astype(np.float64)
    calibration.reference_std = reference_spread(reference_expression, every).astype(np.float64)
    return calibration
