"""Input checks, gene matching and the package's one normalisation, for an ST panel and an scRNA reference.

Nothing here mutates the caller's AnnData: every function reads ``.X`` and returns new arrays.

:func:`normalize_matrix` is the only place values are normalised: CASPER, the baselines
(:mod:`napari_casper.evaluate.baselines`), the histology targets and the region statistics all
call it, so every method of a benchmark sees identically normalised input. Raw counts become
``log1p`` of counts per :data:`TARGET_SUM` (scanpy's ``normalize_total`` + ``log1p``).

Normalisation policy (``normalize="auto"``), decided per matrix:

* integer values (raw counts) -> ``normalize_total`` (:data:`TARGET_SUM`) + ``log1p``, except
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
#: fewest spots (ST) and cells (reference) CASPER accepts: expression has to vary between them
MIN_OBSERVATIONS = 10
NORMALIZE_CHOICES = ("auto", "counts", "log1p", "none")
#: library size every cell/spot of raw counts is scaled to before ``log1p`` (counts per 10,000,
#: scanpy's and Seurat's usual choice). Fixed rather than each data set's median total so that
#: values are comparable between data sets and methods; CASPER z-scores every gene afterwards,
#: which removes the ``log(TARGET_SUM)`` offset, leaving only the pseudocount's relative weight.
TARGET_SUM = 1e4


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


def normalize_matrix(
    X, mode: str = "auto", *, already_logged: bool = False, log: bool = True, columns=None
) -> tuple[object, str]:
    """The package's one normalisation: ``(normalised float32 copy of X, decision)``.

    ``mode`` is one of ``"auto"`` (:func:`detect_normalization`), ``"counts"`` (scanpy
    ``normalize_total`` to :data:`TARGET_SUM`, then ``log1p``), ``"log1p"`` or ``"none"``; the
    decision is the mode that was applied. ``log=False`` skips the ``log1p`` (library-size
    normalisation only, as Tangram wants its input). ``columns`` (indices) selects columns of
    the result; library sizes are still taken over all of ``X``. ``X`` itself is left untouched.
    Sparse input stays sparse (CSR).
    """
    if mode not in NORMALIZE_CHOICES:
        raise CasperInputError(f"unknown normalize mode {mode!r}; choose one of {NORMALIZE_CHOICES}")
    decision = detect_normalization(X, already_logged=already_logged) if mode == "auto" else mode
    if columns is not None and decision != "counts":
        X = X[:, np.asarray(columns, dtype=np.int64)]  # the other columns are never needed
    if sp.issparse(X):
        out = sp.csr_matrix(X, dtype=np.float32, copy=True)
    else:
        out = np.array(X, dtype=np.float32, copy=True)
    if decision == "counts" or (decision == "log1p" and log):
        import scanpy as sc

        adata = AnnData(out)  # a private wrapper of the copy: scanpy works in place on it
        if decision == "counts":
            sc.pp.normalize_total(adata, target_sum=TARGET_SUM)
        if log:
            sc.pp.log1p(adata)
        out = adata.X
    if columns is not None and decision == "counts":
        out = out[:, np.asarray(columns, dtype=np.int64)]
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

    Normalisation (:func:`normalize_matrix`) is decided on all of ``st``'s genes (library sizes
    over the whole panel); unless the values are counts, only the requested columns are copied.
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
    if decision == "counts":  # library sizes need every gene
        check_values(X, "the ST expression matrix")
        out, _ = normalize_matrix(X, decision, columns=cols)
    else:  # only the panel columns are read
        panel = X[:, cols]
        check_values(panel, "the ST expression matrix")
        out, _ = normalize_matrix(panel, decision)
    return dense(out), decision


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
    for adata, what, unit in ((st, "ST", "spot"), (reference, "reference", "cell")):
        if adata.n_obs == 0 or adata.n_vars == 0:
            raise CasperInputError(f"the {what} data is empty ({adata.n_obs} x {adata.n_vars})")
        if adata.n_obs < MIN_OBSERVATIONS:
            raise CasperInputError(
                f"the {what} data has only {adata.n_obs} {unit}{'s' if adata.n_obs != 1 else ''}: CASPER learns from how "
                f"genes vary between {unit}s and needs at least {MIN_OBSERVATIONS}; give the whole section / reference"
            )
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
    varies_st = st_X.max(axis=0) > st_X.min(axis=0)
    varies_ref = ref_panel.max(axis=0) > ref_panel.min(axis=0)
    for varies, what, count in ((varies_st, "ST data", f"{st.n_obs} spots"), (varies_ref, "reference", f"{reference.n_obs} cells")):
        if match.n_matched >= min_shared and int(varies.sum()) < min_shared:
            raise CasperInputError(
                f"{match.n_matched} panel genes are shared with the reference, but only {int(varies.sum())} of them vary "
                f"over the {count} of the {what} (the others are constant, e.g. all zero): CASPER needs at least "
                f"{min_shared} genes that vary; check that the {what} holds the expression of distinct spots/cells"
            )
    keep = varies_st & varies_ref
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


def scaler_from_arrays(mean, std):
    """A fitted sklearn ``StandardScaler`` with these statistics (as saved in a checkpoint)."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    scaler.mean_ = np.asarray(mean, dtype=np.float32)
    scaler.scale_ = np.asarray(std, dtype=np.float32)
    scaler.var_ = scaler.scale_.astype(np.float64) ** 2
    scaler.n_features_in_ = scaler.mean_.shape[0]
    scaler.n_samples_seen_ = 0
    return scaler


def standardize(X: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None):
    """Per-gene z-scores ``(X - mean) / std`` by sklearn's ``StandardScaler`` (constant columns get std 1).

    Statistics are fitted on ``X`` unless both ``mean`` and ``std`` are given. Returns
    ``(Z, mean, std)`` (float32) so the same transform can be reused at inference. ``X`` is not
    modified (``Z`` is a new float32 array).
    """
    X = np.asarray(X, dtype=np.float32)
    if mean is None or std is None:
        from sklearn.preprocessing import StandardScaler

        fitted = StandardScaler().fit(X)
        mean = fitted.mean_ if mean is None else mean
        std = fitted.scale_ if std is None else std
    scaler = scaler_from_arrays(mean, std)
    return scaler.transform(X, copy=True), scaler.mean_, scaler.scale_
