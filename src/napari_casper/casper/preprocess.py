"""Input checks, gene matching and normalisation for an ST panel and an scRNA reference.

Nothing here mutates the caller's AnnData: every function reads ``.X`` and returns new arrays.

Normalisation policy (``normalize="auto"``), decided per matrix:

* integer values (raw counts) -> ``normalize_total`` (1e4) + ``log1p``, except
* integer values whose per-cell totals are constant, or that are dense (< 5 % zeros) and bounded
  by 255 (rank-normalised data such as the published seqFISH/Tasic pair, 0..101) -> used as given;
* non-integer values with a maximum above 50 (CPM/TPM-like, not logged) -> ``log1p``;
* anything else (already log-normalised scRNA, relative in-situ intensities) -> used as given.

A matrix that carries ``uns["log1p"]`` (scanpy's marker) is never logged again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from napari_casper.errors import CasperInputError

#: fewest panel genes shared with the reference that CASPER accepts
MIN_SHARED_GENES = 5
NORMALIZE_CHOICES = ("auto", "counts", "log1p", "none")
_TARGET_SUM = 1e4


@dataclass
class GeneMatch:
    """Panel genes of the ST data matched to reference genes.

    ``st_genes[i]`` (the ST spelling) matches ``reference_genes[i]`` (the reference spelling).
    """

    st_genes: list[str]
    reference_genes: list[str]
    n_panel: int
    unmatched: list[str] = field(default_factory=list)
    case_insensitive: bool = False
    ambiguous: list[str] = field(default_factory=list)

    @property
    def n_matched(self) -> int:
        return len(self.st_genes)

    def summary(self) -> str:
        mode = "case-insensitive" if self.case_insensitive else "exact"
        text = f"{self.n_matched} of {self.n_panel} panel genes found in the reference ({mode} match)"
        if self.unmatched:
            shown = ", ".join(self.unmatched[:10]) + (" ..." if len(self.unmatched) > 10 else "")
            text += f"; not found: {shown}"
        if self.ambiguous:
            text += f"; {len(self.ambiguous)} left out as ambiguous (several reference genes differ only by case)"
        return text


def match_genes(
    st_genes: Sequence[str], reference_genes: Sequence[str], *, case_insensitive: bool = False
) -> GeneMatch:
    """Match panel gene names to reference gene names (exact, or case-insensitive on request).

    An exact match always wins; a panel gene whose case-insensitive match is ambiguous (several
    reference genes differ only by case, e.g. ``ald``/``Ald``) is left unmatched and listed in
    ``GeneMatch.ambiguous``. Raises :class:`CasperInputError` when no gene is shared.
    """
    st_genes = [str(g) for g in st_genes]
    reference_genes = [str(g) for g in reference_genes]
    ref_set = set(reference_genes)
    ambiguous: list[str] = []
    if case_insensitive:
        lookup: dict[str, list[str]] = {}
        for g in reference_genes:
            lookup.setdefault(g.lower(), []).append(g)
        pairs = []
        for g in st_genes:
            candidates = lookup.get(g.lower(), [])
            if g in ref_set:  # an exact match always wins
                pairs.append((g, g))
            elif len(candidates) == 1:
                pairs.append((g, candidates[0]))
            else:
                if len(candidates) > 1:
                    ambiguous.append(g)
                pairs.append((g, None))
    else:
        pairs = [(g, g if g in ref_set else None) for g in st_genes]
    matched = [(s, r) for s, r in pairs if r is not None]
    unmatched = [s for s, r in pairs if r is None]
    if not matched:
        hint = "" if case_insensitive else " (try the case-insensitive match)"
        raise CasperInputError(
            f"no ST panel gene is in the reference ({len(st_genes)} panel genes, e.g. "
            f"{st_genes[:3]}; reference genes e.g. {reference_genes[:3]}): check that both use the "
            f"same gene identifiers (symbols vs Ensembl ids) and species{hint}"
        )
    return GeneMatch(
        st_genes=[s for s, _ in matched],
        reference_genes=[r for _, r in matched],
        n_panel=len(st_genes),
        unmatched=unmatched,
        case_insensitive=case_insensitive,
        ambiguous=ambiguous,
    )


def check_values(X, what: str) -> None:
    """Raise :class:`CasperInputError` if ``X`` holds NaN, inf or negative values."""
    data = X.data if sp.issparse(X) else np.asarray(X)
    if data.size == 0:
        raise CasperInputError(f"{what} is empty; it needs at least one cell/spot and one gene")
    if not np.isfinite(data).all():
        n_bad = int((~np.isfinite(data)).sum())
        raise CasperInputError(
            f"{what} contains {n_bad} NaN or infinite values; remove or impute them first "
            "(e.g. replace missing measurements by 0)"
        )
    if data.min() < 0:
        raise CasperInputError(
            f"{what} contains negative values (min {float(data.min()):.3g}); CASPER needs counts or "
            "normalised non-negative expression, not scaled/centred data (use adata.raw or an "
            "unscaled layer)"
        )


def detect_normalization(X, *, already_logged: bool = False) -> str:
    """Decide how to normalise ``X`` (see the module docstring).

    Returns ``"counts"`` (normalize_total + log1p), ``"log1p"`` (log1p only) or ``"none"``.
    """
    if already_logged:
        return "none"
    data = X.data if sp.issparse(X) else np.asarray(X).ravel()
    if data.size == 0:
        return "none"
    sample = data[:: max(1, data.size // 200_000)]
    is_integer = bool(np.all(np.abs(sample - np.round(sample)) < 1e-6))
    if is_integer:
        totals = np.asarray(X.sum(axis=1)).ravel()
        totals = totals[totals > 0]
        if totals.size == 0:
            return "none"
        if float(totals.std() / totals.mean()) <= 0.05:
            return "none"  # every cell sums to the same total: already normalised
        n_values = X.shape[0] * X.shape[1]
        zero_fraction = 1.0 - np.count_nonzero(data) / n_values
        if zero_fraction < 0.05 and float(data.max()) <= 255:
            return "none"  # dense, small bounded integers: ranks or levels (e.g. seqFISH 0..101)
        return "counts"
    return "log1p" if float(sample.max()) > 50 else "none"


def normalize_matrix(X, mode: str = "auto", *, already_logged: bool = False) -> tuple[object, str]:
    """Return ``(normalised copy of X as float32, decision)``; ``X`` itself is left untouched.

    ``mode`` is one of ``"auto"``, ``"counts"``, ``"log1p"`` or ``"none"``; the decision is the
    mode that was applied. Sparse input stays sparse (CSR).
    """
    if mode not in NORMALIZE_CHOICES:
        raise CasperInputError(f"unknown normalize mode {mode!r}; choose one of {NORMALIZE_CHOICES}")
    decision = detect_normalization(X, already_logged=already_logged) if mode == "auto" else mode
    if sp.issparse(X):
        out = sp.csr_matrix(X, dtype=np.float32, copy=True)
    else:
        out = np.array(X, dtype=np.float32, copy=True)
    if decision == "counts":
        totals = np.asarray(out.sum(axis=1), dtype=np.float64).ravel()
        scale = np.divide(_TARGET_SUM, totals, out=np.zeros_like(totals), where=totals > 0)
        if sp.issparse(out):
            out = sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ out)
        else:
            out *= scale[:, None].astype(np.float32)
    if decision in ("counts", "log1p"):
        if sp.issparse(out):
            np.log1p(out.data, out=out.data)
        else:
            np.log1p(out, out=out)
    return out, decision


def dense(X) -> np.ndarray:
    """``X`` as a dense float32 numpy array."""
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)


@dataclass
class PreparedPair:
    """ST panel and reference after matching, checks and normalisation.

    Attributes
    ----------
    st_expression
        ``(n_spots, n_panel)`` float32, normalised ST values of the usable panel genes.
    panel_genes
        ST spelling of the usable panel genes (shared with the reference, not all-zero).
    panel_reference_genes
        reference spelling of the same genes, in the same order.
    reference_expression
        ``(n_cells, n_reference_genes)`` float32 (CSR if the input was sparse), normalised.
    reference_genes
        all reference gene names.
    report
        human-readable facts: genes matched/dropped, normalisation decisions.
    """

    st_expression: np.ndarray
    panel_genes: list[str]
    panel_reference_genes: list[str]
    reference_expression: object
    reference_genes: list[str]
    report: dict


def _is_logged(adata: AnnData) -> bool:
    return "log1p" in adata.uns


def prepare_st(
    st: AnnData, genes: Sequence[str], *, normalize: str = "auto"
) -> tuple[np.ndarray, str]:
    """Check and normalise the ST matrix and return ``(st[:, genes] dense float32, decision)``.

    Normalisation is decided on all of ``st``'s genes (library sizes over the whole panel);
    only the requested columns are copied and checked.
    """
    if normalize not in NORMALIZE_CHOICES:
        raise CasperInputError(f"unknown normalize mode {normalize!r}; choose one of {NORMALIZE_CHOICES}")
    index = {g: i for i, g in enumerate(map(str, st.var_names))}
    missing = [g for g in genes if g not in index]
    if missing:
        raise CasperInputError(
            f"the ST data lacks {len(missing)} panel genes the model was trained on "
            f"(e.g. {missing[:5]}); use ST data with the same panel"
        )
    X = st.X
    decision = (
        detect_normalization(X, already_logged=_is_logged(st)) if normalize == "auto" else normalize
    )
    cols = np.array([index[g] for g in genes], dtype=np.int64)
    if decision == "counts":
        check_values(X, "the ST expression matrix")
        totals = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    out = np.array(X[:, cols].toarray() if sp.issparse(X) else X[:, cols], dtype=np.float32)
    if decision != "counts":
        check_values(out, "the ST expression matrix")
    if decision == "counts":
        scale = np.divide(_TARGET_SUM, totals, out=np.zeros_like(totals), where=totals > 0)
        out *= scale[:, None].astype(np.float32)
    if decision in ("counts", "log1p"):
        np.log1p(out, out=out)
    return out, decision


def prepare_pair(
    st: AnnData,
    reference: AnnData,
    *,
    case_insensitive: bool = False,
    normalize: str = "auto",
    normalize_reference: str = "auto",
    min_shared: int = MIN_SHARED_GENES,
) -> PreparedPair:
    """Validate, match and normalise an ST panel against an scRNA reference.

    Raises :class:`CasperInputError` for NaN/inf/negative values, duplicated gene names, no shared
    genes, or fewer than ``min_shared`` usable shared genes. Panel genes that are zero in every
    spot or every reference cell are dropped (they carry no signal and cannot be standardised).
    """
    for adata, what in ((st, "ST"), (reference, "reference")):
        if adata.n_obs == 0 or adata.n_vars == 0:
            raise CasperInputError(f"the {what} data is empty ({adata.n_obs} x {adata.n_vars})")
        if not adata.var_names.is_unique:
            dup = adata.var_names[adata.var_names.duplicated()].unique().tolist()
            raise CasperInputError(
                f"the {what} data has duplicated gene names (e.g. {dup[:5]}); "
                "make them unique first (adata.var_names_make_unique())"
            )
    check_values(reference.X, "the reference expression matrix")
    match = match_genes(st.var_names, reference.var_names, case_insensitive=case_insensitive)
    st_X, st_decision = prepare_st(st, match.st_genes, normalize=normalize)
    ref_X, ref_decision = normalize_matrix(
        reference.X, normalize_reference, already_logged=_is_logged(reference)
    )
    ref_genes = [str(g) for g in reference.var_names]
    ref_index = {g: i for i, g in enumerate(ref_genes)}
    ref_cols = [ref_index[g] for g in match.reference_genes]
    ref_panel = dense(ref_X[:, ref_cols])
    keep = (st_X.max(axis=0) > st_X.min(axis=0)) & (ref_panel.max(axis=0) > ref_panel.min(axis=0))
    dropped = [g for g, k in zip(match.st_genes, keep) if not k]
    panel = [g for g, k in zip(match.st_genes, keep) if k]
    panel_ref = [g for g, k in zip(match.reference_genes, keep) if k]
    if len(panel) < min_shared:
        raise CasperInputError(
            f"only {len(panel)} usable panel genes are shared with the reference "
            f"({match.summary()}; {len(dropped)} constant/all-zero genes dropped); CASPER needs at "
            f"least {min_shared}: check gene identifiers or try the case-insensitive match"
        )
    report = {
        "gene_match": match.summary(),
        "n_panel": match.n_panel,
        "n_matched": match.n_matched,
        "n_used": len(panel),
        "dropped_constant_genes": dropped,
        "unmatched_genes": match.unmatched,
        "st_normalization": st_decision,
        "reference_normalization": ref_decision,
    }
    return PreparedPair(
        st_expression=np.ascontiguousarray(st_X[:, keep]),
        panel_genes=panel,
        panel_reference_genes=panel_ref,
        reference_expression=ref_X,
        reference_genes=ref_genes,
        report=report,
    )


def standardize(X: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None):
    """Per-gene z-scores ``(X - mean) / std`` (columns with zero spread get std 1).

    Returns ``(Z, mean, std)`` so the same transform can be reused at inference. ``X`` is not
    modified (``Z`` is a new float32 array).
    """
    Z = np.array(X, dtype=np.float32, copy=True)
    if mean is None:
        mean = Z.mean(axis=0, dtype=np.float64).astype(np.float32)
    if std is None:
        std = Z.std(axis=0, dtype=np.float64).astype(np.float32)
        std = np.where(std > 1e-8, std, 1.0).astype(np.float32)
    Z -= mean
    Z /= std
    return Z, mean, std
