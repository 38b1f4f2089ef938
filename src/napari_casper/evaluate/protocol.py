"""Strict K-fold-over-genes protocol shared by every imputation method.

The panel genes measured in the spatial data *and* present in the reference (exact,
case-sensitive names) are shuffled with a seeded generator and split into ``n_folds``
folds. For each fold the held-out genes are **removed** from the spatial AnnData handed
to the method (:func:`hide_genes`: also no ``raw``, no embeddings or graphs over all
genes), so no spot shows them and nothing the method does (preprocessing, model
selection, early stopping) can see them; the method predicts them from the reference and
the predictions are scored against the measured values (:mod:`.metrics`).

Methods follow the contract in ``docs/architecture.md``::

    impute(st, reference, target_genes, *, seed=0) -> (n_spots, len(target_genes)) array

and are looked up by name in :data:`METHODS`, or passed in directly as callables. Heavy
optional dependencies (tangram) are imported inside the methods, when they run.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from napari_casper.casper.imputation import impute_with_casper
from napari_casper.errors import CasperInputError, PeerMethodFailed
from napari_casper.evaluate.baselines import impute_knn, impute_reference_mean, impute_tangram, impute_tangram_clusters
from napari_casper.evaluate.gimvi import impute_gimvi
from napari_casper.evaluate.metrics import METRICS, accuracy_score, is_constant, score_genes
from napari_casper.evaluate.ridge import impute_ridge
from napari_casper.evaluate.spage import impute_spage

ImputeFn = Callable[..., np.ndarray]

#: method name -> function implementing the imputation contract
METHODS: dict[str, ImputeFn] = {
    "casper": impute_with_casper,
    "knn": impute_knn,
    "ridge": impute_ridge,
    "spage": impute_spage,
    "gimvi": impute_gimvi,
    "tangram": impute_tangram,
    "tangram_clusters": impute_tangram_clusters,
    "mean": impute_reference_mean,
}
#: metrics summarised by mean and median in :attr:`BenchmarkResult.summary`
SUMMARY_METRICS: tuple[str, ...] = ("PCC", "SRCC", "SSIM", "RMSE", "JS")


def resolve_method(name: str) -> ImputeFn:
    """The imputation function registered under ``name`` in :data:`METHODS`.

    Raises
    ------
    CasperInputError
        Unknown name.
    """
    if name not in METHODS:
        raise CasperInputError(f"unknown imputation method {name!r}: choose from {', '.join(METHODS)}")
    return METHODS[name]


@dataclass(frozen=True)
class GeneSplit:
    """Which genes the protocol evaluates, and in which fold."""

    n_st_genes: int
    n_reference_genes: int
    shared: list[str]
    """ST genes also in the reference (exact, case-sensitive), in ST order."""
    constant: list[str]
    """Shared genes constant over spots: kept visible, never held out (PCC undefined)."""
    folds: list[list[str]]
    """Held-out genes of each fold."""

    @property
    def evaluated(self) -> list[str]:
        return [g for fold in self.folds for g in fold]

    def describe(self) -> str:
        return (
            f"{self.n_st_genes} ST genes, {self.n_reference_genes} reference genes, "
            f"{len(self.shared)} shared (exact case-sensitive match), "
            f"{len(self.constant)} constant over spots (not evaluated), "
            f"{len(self.evaluated)} evaluated in {len(self.folds)} folds"
        )


@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` measured."""

    per_gene: pd.DataFrame
    """One row per (method, gene): ``method, gene, fold`` and the metrics (see :mod:`.metrics`)."""
    summary: pd.DataFrame
    """One row per method: mean/median of each metric, AS, ``runtime_s`` (all folds), ``n_genes``."""
    runtimes: pd.DataFrame
    """One row per (method, fold): ``seconds`` of wall time of the method call."""
    split: GeneSplit
    notes: list[str] = field(default_factory=list)


def _check_unique(adata: AnnData, what: str) -> None:
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()].unique()[:5].tolist()
        raise CasperInputError(
            f"{what} has duplicated gene names (e.g. {dup}); make them unique first "
            "(anndata: adata.var_names_make_unique())"
        )


def split_genes(
    st: AnnData,
    reference: AnnData,
    *,
    n_folds: int = 10,
    seed: int = 0,
    genes_limit: int | None = None,
) -> GeneSplit:
    """Seeded K-fold split of the shared, non-constant ST genes.

    ``genes_limit`` keeps only that many evaluated genes (a seeded random subset); the
    others stay visible to every method but are never held out.
    """
    _check_unique(st, "the spatial data")
    _check_unique(reference, "the reference")
    ref_genes = set(reference.var_names)
    shared = [g for g in st.var_names if g in ref_genes]
    if not shared:
        folded = {g.lower() for g in reference.var_names}
        case_hits = sum(g.lower() in folded for g in st.var_names)
        hint = (
            f" ({case_hits} match when case is ignored: harmonise the case of gene names)"
            if case_hits
            else " (check that both use the same gene identifiers, e.g. symbols in both)"
        )
        raise CasperInputError(
            f"no gene names are shared between the spatial data ({st.n_vars} genes, e.g. "
            f"{list(st.var_names[:3])}) and the reference ({reference.n_vars} genes, e.g. "
            f"{list(reference.var_names[:3])}); names are matched exactly{hint}"
        )
    values = st[:, shared].X
    values = values.toarray() if sp.issparse(values) else np.asarray(values)
    constant_mask = is_constant(values)
    constant = [g for g, c in zip(shared, constant_mask) if c]
    candidates = [g for g, c in zip(shared, constant_mask) if not c]

    rng = np.random.default_rng(seed)
    order = [candidates[i] for i in rng.permutation(len(candidates))]
    if genes_limit is not None:
        if genes_limit < 1:
            raise CasperInputError(f"--genes-limit must be at least 1, got {genes_limit}")
        order = order[:genes_limit]
    if n_folds < 2 or n_folds > len(order):
        raise CasperInputError(
            f"cannot split {len(order)} evaluable genes into {n_folds} folds: use between 2 "
            f"and {len(order)} folds"
        )
    folds = [list(chunk) for chunk in np.array_split(np.array(order, dtype=object), n_folds)]
    return GeneSplit(
        n_st_genes=st.n_vars,
        n_reference_genes=reference.n_vars,
        shared=shared,
        constant=constant,
        folds=folds,
    )


def hide_genes(st: AnnData, held_out: Sequence[str]) -> AnnData:
    """A new AnnData holding ``st`` without ``held_out``, and nothing derived from them.

    Keeps ``X``, ``layers``, ``var`` and ``varm`` of the other genes, ``obs`` and
    ``obsm["spatial"]``. Drops ``raw`` (slicing would keep every gene there), other
    ``obsm`` entries and ``obsp`` (embeddings and graphs computed over all genes) and
    ``uns``. ``obs`` columns are kept as given: a per-spot column computed from all genes
    (e.g. total counts) is the caller's responsibility.
    """
    hidden = set(held_out)
    keep = [g for g in st.var_names if g not in hidden]
    view = st[:, keep]
    obsm = {"spatial": np.array(st.obsm["spatial"])} if "spatial" in st.obsm else None
    return AnnData(
        X=view.X.copy(),
        obs=st.obs.copy(),
        var=view.var.copy(),
        layers={name: layer.copy() for name, layer in view.layers.items()},
        varm={name: np.array(value) for name, value in view.varm.items()},
        obsm=obsm,
    )


def _accepts(func: ImputeFn, name: str) -> bool:
    """Whether ``func`` takes keyword ``name``, by name or through ``**options``."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters
    )


def run_benchmark(
    st: AnnData,
    reference: AnnData,
    methods: Sequence[str] | Mapping[str, ImputeFn] = ("knn", "mean"),
    *,
    n_folds: int = 10,
    seed: int = 0,
    label_key: str | None = None,
    genes_limit: int | None = None,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchmarkResult:
    """Score imputation methods with the strict K-fold-over-genes protocol.

    Parameters
    ----------
    st
        Spots x panel genes, as measured. Never modified.
    reference
        Cells x genes scRNA-seq reference. Never modified (checked after each call).
    methods
        Names in :data:`METHODS`, or ``{name: function}`` following the contract.
    n_folds, seed
        Number of gene folds and the seed of the gene shuffle; ``seed`` is also passed
        to every method, so a run is deterministic for a seed.
    label_key
        Reference ``obs`` column of cell labels, passed to methods that take
        ``label_key`` by name or through ``**options`` (``tangram_clusters``, ``casper``).
    genes_limit
        Evaluate only this many genes (seeded subset), for quick runs.
    method_options
        Extra keyword arguments per method name, e.g. ``{"tangram": {"num_epochs": 100}}``.
    progress
        Called with a one-line message after every method call.

    Returns
    -------
    :class:`BenchmarkResult`
    """
    if isinstance(methods, Mapping):
        funcs = dict(methods)
    else:
        funcs = {name: resolve_method(name) for name in methods}
    if not funcs:
        raise CasperInputError("no imputation method given")
    if label_key is not None and label_key not in reference.obs:
        raise CasperInputError(
            f"label column {label_key!r} is not in the reference's obs (columns: "
            f"{list(reference.obs.columns)})"
        )
    split = split_genes(st, reference, n_folds=n_folds, seed=seed, genes_limit=genes_limit)
    notes = [split.describe()]
    method_options = method_options or {}

    measured_all = st[:, split.evaluated].X
    measured_all = measured_all.toarray() if sp.issparse(measured_all) else np.asarray(measured_all)
    measured = pd.DataFrame(measured_all, columns=split.evaluated)
    ref_genes_before = reference.var_names.copy()

    tables, timings = [], []
    for name, func in funcs.items():
        kwargs = dict(method_options.get(name, {}))
        if label_key is not None and _accepts(func, "label_key"):
            kwargs.setdefault("label_key", label_key)
        for fold, held_out in enumerate(split.folds):
            visible = hide_genes(st, held_out)
            start = time.perf_counter()
            try:
                pred = func(visible, reference, list(held_out), seed=seed, **kwargs)
            except PeerMethodFailed as err:  # the peer's own failure on this fold: its genes score as missing
                pred = np.full((st.n_obs, len(held_out)), np.nan)
                notes.append(f"{name} fold {fold + 1}: {err}; its {len(held_out)} genes are scored as missing predictions")
            seconds = time.perf_counter() - start
            pred = np.asarray(pred, dtype=np.float64)
            if pred.shape != (st.n_obs, len(held_out)):
                raise RuntimeError(
                    f"method {name!r} returned shape {pred.shape}, expected "
                    f"{(st.n_obs, len(held_out))} (spots x target genes)"
                )
            if not reference.var_names.equals(ref_genes_before):
                raise RuntimeError(f"method {name!r} modified the reference's gene names")
            scores = score_genes(measured[held_out].to_numpy(), pred, held_out)
            scores.insert(0, "fold", fold)
            scores.insert(0, "method", name)
            tables.append(scores)
            timings.append({"method": name, "fold": fold, "seconds": seconds})
            if progress is not None:
                progress(
                    f"{name} fold {fold + 1}/{len(split.folds)}: {len(held_out)} genes, "
                    f"mean PCC {scores['PCC'].mean():.3f}, {seconds:.1f} s"
                )
    per_gene = pd.concat(tables, ignore_index=True)
    per_gene = per_gene[["method", "gene", "fold", *METRICS, "note"]]
    runtimes = pd.DataFrame(timings)
    summary = summarise(per_gene, runtimes)
    n_noted = int((per_gene["note"] != "").sum())
    if n_noted:
        notes.append(
            f"{n_noted} (method, gene) rows carry a conventional score (constant or missing "
            "prediction); see the note column of the per-gene table"
        )
    return BenchmarkResult(per_gene, summary, runtimes, split, notes)


def summarise(per_gene: pd.DataFrame, runtimes: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-method mean and median of :data:`SUMMARY_METRICS`, median MAPE, AS and runtime.

    Methods keep their order of first appearance in ``per_gene``.
    """
    order = list(dict.fromkeys(per_gene["method"]))
    grouped = per_gene.groupby("method", sort=False)
    means = grouped[list(SUMMARY_METRICS)].mean().loc[order]
    medians = grouped[list(SUMMARY_METRICS)].median().loc[order]
    summary = pd.DataFrame(index=pd.Index(order, name="method"))
    for metric in SUMMARY_METRICS:
        summary[f"{metric}_mean"] = means[metric]
        summary[f"{metric}_median"] = medians[metric]
    summary["MAPE_median"] = grouped["MAPE"].median().loc[order]
    summary["AS"] = accuracy_score(means)
    summary["n_genes"] = grouped.size().loc[order]
    if runtimes is not None and len(runtimes):
        summary["runtime_s"] = runtimes.groupby("method", sort=False)["seconds"].sum().loc[order]
    return summary.reset_index()
