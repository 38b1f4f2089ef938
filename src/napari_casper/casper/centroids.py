"""Reference centroids: mean expression profiles over the whole reference transcriptome.

Three granularities:

* ``"label"``: one centroid per value of a user-named ``obs`` column (cell types);
* ``"leiden"``: one per Leiden cluster (HVGs -> PCA -> neighbours -> Leiden, resolution exposed);
* ``"cells"``: every reference cell is its own centroid (finest; attention over cells then acts as a
  learned soft nearest-neighbour search). Used by default when the reference is small enough.

Centroids are computed on the *normalised* reference (see :mod:`napari_casper.casper.preprocess`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from napari_casper.casper.preprocess import dense
from napari_casper.errors import CasperInputError

CENTROID_METHODS = ("auto", "label", "leiden", "cells")
#: with ``method="auto"`` and no label column, references up to this many cells use every cell
MAX_CELL_CENTROIDS = 5000


@dataclass
class Centroids:
    """Reference centroids.

    Attributes
    ----------
    labels
        ``n_centroids`` names (cell type, ``"leiden_<k>"`` or cell id).
    expression
        ``(n_centroids, n_genes)`` float32 mean normalised expression over the whole transcriptome.
    genes
        the ``n_genes`` reference gene names (columns of ``expression``).
    sizes
        ``(n_centroids,)`` number of reference cells in each centroid.
    method
        ``"label:<column>"``, ``"leiden:<resolution>"`` or ``"cells"``.
    """

    labels: list[str]
    expression: np.ndarray
    genes: list[str]
    sizes: np.ndarray
    method: str

    @property
    def n_centroids(self) -> int:
        return len(self.labels)

    def gene_indices(self, genes) -> np.ndarray:
        index = {g: i for i, g in enumerate(self.genes)}
        missing = [g for g in genes if g not in index]
        if missing:
            raise CasperInputError(
                f"{len(missing)} requested genes are not in the reference (e.g. {missing[:5]}); "
                "only reference genes can be imputed"
            )
        return np.array([index[g] for g in genes], dtype=np.int64)


def _group_means(X, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of the rows of ``X`` within each group; returns (unique groups, means, sizes)."""
    uniques, codes = np.unique(groups, return_inverse=True)
    indicator = sp.csr_matrix(
        (np.ones(len(codes), dtype=np.float32), (codes, np.arange(len(codes)))),
        shape=(len(uniques), len(codes)),
    )
    sizes = np.asarray(indicator.sum(axis=1)).ravel()
    sums = indicator @ X
    means = dense(sums) / sizes[:, None].astype(np.float32)
    return uniques, means.astype(np.float32), sizes.astype(np.int64)


def _knn_transformer(n_neighbors: int):
    """Exact kNN (sklearn) whose graph comes back as ``csr_matrix``.

    scanpy 1.11 calls ``getnnz`` on the neighbour graph, which the ``csr_array`` that current
    sklearn/pynndescent return no longer has (AttributeError above 4096 cells).
    """
    from sklearn.neighbors import KNeighborsTransformer

    class _CsrMatrixKNN(KNeighborsTransformer):
        def transform(self, X):
            return sp.csr_matrix(super().transform(X))

        def fit_transform(self, X, y=None):
            return self.fit(X).transform(X)

    return _CsrMatrixKNN(n_neighbors=n_neighbors, mode="distance")


def leiden_clusters(
    X,
    *,
    resolution: float = 1.0,
    n_top_genes: int = 2000,
    n_pcs: int = 30,
    n_neighbors: int = 15,
    seed: int = 0,
) -> np.ndarray:
    """Leiden cluster label per cell of a normalised (log) matrix ``X`` (n_cells, n_genes)."""
    import scanpy as sc

    adata = AnnData(sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, np.float32))
    n_genes = adata.n_vars
    if n_genes > n_top_genes:
        sc.pp.highly_variable_genes(adata, n_top_genes=n_top_genes, flavor="seurat")
        adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    n_comps = int(max(2, min(n_pcs, adata.n_obs - 1, adata.n_vars - 1)))
    sc.pp.pca(adata, n_comps=n_comps, random_state=seed)
    sc.pp.neighbors(adata, transformer=_knn_transformer(min(n_neighbors, adata.n_obs - 1)))
    sc.tl.leiden(
        adata,
        resolution=resolution,
        random_state=seed,
        flavor="igraph",
        n_iterations=2,
        directed=False,
    )
    return adata.obs["leiden"].astype(str).to_numpy()


def check_label_column(values: pd.Series, label_key: str, obs: pd.DataFrame | None = None) -> None:
    """A :class:`CasperInputError` when ``values`` are measurements or ids rather than cell-type labels:
    a column of fractional numbers, or one in which most labels name a single cell."""
    n = len(values)
    candidates = [] if obs is None else [
        c for c in obs.columns
        if c != label_key and not pd.api.types.is_float_dtype(obs[c]) and 1 < obs[c].nunique() <= max(2, n // 2)
    ]
    fix = f"choose a column of cell types{f' (e.g. {candidates[:3]})' if candidates else ''}, or leave it empty for Leiden clusters"
    if pd.api.types.is_float_dtype(values):
        numbers = values.to_numpy(dtype=float)
        if not np.all(np.isclose(numbers, np.round(numbers))):
            raise CasperInputError(
                f"label column {label_key!r} holds fractional numbers ({values.nunique()} distinct values over {n} cells), "
                f"not cell-type labels: every value would become a one-cell 'cell type'; {fix}"
            )
    n_labels = int(values.nunique())
    singletons = int((values.value_counts() == 1).sum())
    if n >= 10 and n_labels > n // 2 and singletons > n_labels // 2:
        raise CasperInputError(
            f"label column {label_key!r} has {n_labels} distinct values for {n} cells ({singletons} of them name a single "
            f"cell): it looks like a per-cell id or measurement, not cell types; {fix}"
        )


def compute_centroids(
    reference_expression,
    genes,
    *,
    obs: pd.DataFrame | None = None,
    label_key: str | None = None,
    method: str = "auto",
    resolution: float = 1.0,
    seed: int = 0,
    cell_names=None,
) -> Centroids:
    """Centroids of a normalised reference ``(n_cells, n_genes)``.

    Parameters
    ----------
    reference_expression
        normalised reference matrix (dense or sparse), cells x genes.
    genes
        reference gene names (columns).
    obs, label_key
        cell annotations and the column naming cell types; required for ``method="label"``.
    method
        ``"auto"`` (label column if given, else every cell up to ``MAX_CELL_CENTROIDS`` cells,
        else Leiden), ``"label"``, ``"leiden"`` or ``"cells"``.
    resolution
        Leiden resolution (higher -> more, smaller clusters).
    """
    if method not in CENTROID_METHODS:
        raise CasperInputError(f"unknown centroid method {method!r}; choose one of {CENTROID_METHODS}")
    n_cells = reference_expression.shape[0]
    genes = [str(g) for g in genes]
    if method == "auto":
        if label_key is not None:
            method = "label"
        else:
            method = "cells" if n_cells <= MAX_CELL_CENTROIDS else "leiden"
    if method == "label":
        if label_key is None or obs is None or label_key not in obs.columns:
            available = [] if obs is None else list(obs.columns)
            raise CasperInputError(
                f"label column {label_key!r} is not in the reference obs (available: {available}); "
                "name an existing column or leave it empty to use Leiden clusters"
            )
        values = obs[label_key]
        if values.isna().any():
            raise CasperInputError(
                f"label column {label_key!r} has {int(values.isna().sum())} missing values; "
                "fill or drop those cells first"
            )
        check_label_column(values, label_key, obs)
        labels, expr, sizes = _group_means(reference_expression, values.astype(str).to_numpy())
        desc = f"label:{label_key}"
    elif method == "leiden":
        clusters = leiden_clusters(reference_expression, resolution=resolution, seed=seed)
        uniq, expr, sizes = _group_means(reference_expression, clusters)
        order = np.argsort(uniq.astype(int)) if all(u.isdigit() for u in uniq) else np.arange(len(uniq))
        labels = np.array([f"leiden_{u}" for u in uniq[order]])
        expr, sizes = expr[order], sizes[order]
        desc = f"leiden:{resolution:g}"
    else:
        expr = dense(reference_expression)
        labels = np.asarray(
            [str(c) for c in cell_names] if cell_names is not None else [f"cell_{i}" for i in range(n_cells)]
        )
        sizes = np.ones(n_cells, dtype=np.int64)
        desc = "cells"
    if len(labels) < 2:
        raise CasperInputError(
            f"the reference gives only {len(labels)} centroid(s) ({desc}); attention needs at least 2: "
            "use another label column, a higher Leiden resolution, or method='cells'"
        )
    return Centroids(
        labels=[str(x) for x in labels],
        expression=np.ascontiguousarray(expr, dtype=np.float32),
        genes=genes,
        sizes=np.asarray(sizes),
        method=desc,
    )
