"""Baseline imputation methods: reference mean, SpaGE-like kNN, Tangram (tangram-sc).

Each follows the imputation-method contract of ``docs/architecture.md``::

    impute(st, reference, target_genes, *, seed=0) -> (n_spots, len(target_genes)) array

Neither input AnnData is modified. Genes are matched by exact, case-sensitive name.

Scales. Every method normalises with CASPER's own function,
:func:`napari_casper.casper.preprocess.normalize_matrix` (``"auto"``: the rule of
:func:`~napari_casper.casper.preprocess.detect_normalization`), so a benchmark feeds all methods
identically normalised input: raw counts (integers whose per-cell totals vary, and not dense
small integers such as ranks) become ``log1p`` of counts per
:data:`~napari_casper.casper.preprocess.TARGET_SUM` (1e4) for the kNN and mean baselines;
Tangram gets them normalised to the same library size but not logged, as its maintainers
advise. So the Drosophila reference (already log-normalised), the BDTNP atlas (in situ
intensities 0..2.4) and the seqFISH / Tasic pair (dense integer ranks 0..101, under 1 %
zeros: not logged again) are all used as shipped.
``preprocessing="none"`` forces as-is; ``"counts"`` forces the counts path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from napari_casper.casper.preprocess import dense, normalize_matrix
from napari_casper.errors import CasperInputError

Preprocessing = Literal["auto", "counts", "none"]


# --------------------------------------------------------------------------- helpers


def expression_of(
    adata: AnnData, genes: Sequence[str], *, preprocessing: Preprocessing, log: bool
) -> np.ndarray:
    """Dense ``(n_obs, len(genes))`` float64 values of ``genes``, normalised as CASPER normalises.

    Library sizes are taken over *all* genes of ``adata``, then the columns are selected.
    """
    if preprocessing not in ("auto", "counts", "none"):
        raise CasperInputError(
            f"preprocessing must be 'auto', 'counts' or 'none', got {preprocessing!r}"
        )
    values, _ = normalize_matrix(
        adata.X, preprocessing, already_logged="log1p" in adata.uns, log=log,
        columns=adata.var_names.get_indexer(list(genes)),
    )
    return dense(values).astype(np.float64)


def check_targets(reference: AnnData, target_genes: Sequence[str]) -> list[str]:
    targets = list(target_genes)
    if not targets:
        raise CasperInputError("no target genes given: name at least one gene to impute")
    absent = [g for g in targets if g not in reference.var_names]
    if absent:
        raise CasperInputError(
            f"{len(absent)} target genes are not in the reference (e.g. {absent[:5]}); "
            "a gene can only be imputed if the scRNA-seq reference measures it "
            "(names match exactly, case-sensitively)"
        )
    return targets


def shared_genes(st: AnnData, reference: AnnData) -> list[str]:
    ref = set(reference.var_names)
    shared = [g for g in st.var_names if g in ref]
    if not shared:
        raise CasperInputError(
            f"no gene names are shared between the spatial data (e.g. {list(st.var_names[:3])}) "
            f"and the reference (e.g. {list(reference.var_names[:3])}); names are matched "
            "exactly and case-sensitively, so harmonise identifiers first"
        )
    return shared


def varying_shared_expression(
    st: AnnData, reference: AnnData, *, preprocessing: Preprocessing, unusable: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Log-normalised values of the genes shared by ``st`` and ``reference`` at the spots and at
    the cells, each standardised per gene within its own data set, genes constant in either left
    out (their z-scores are undefined); also the shared genes before that. ``unusable`` ends the
    error raised when every shared gene is constant (what the method cannot do then)."""
    shared = shared_genes(st, reference)
    spots = expression_of(st, shared, preprocessing=preprocessing, log=True)
    cells = expression_of(reference, shared, preprocessing=preprocessing, log=True)
    keep = (spots.std(axis=0) > 0) & (cells.std(axis=0) > 0)
    if not keep.any():
        raise CasperInputError(
            f"all {len(shared)} shared genes are constant in the spatial data or the {unusable}; share more genes"
        )
    return StandardScaler().fit_transform(spots[:, keep]), StandardScaler().fit_transform(cells[:, keep]), shared


# --------------------------------------------------------------------------- reference mean


def impute_reference_mean(
    st: AnnData,
    reference: AnnData,
    target_genes: Sequence[str],
    *,
    seed: int = 0,
    preprocessing: Preprocessing = "auto",
) -> np.ndarray:
    """Trivial baseline: every spot gets the reference's mean expression of the gene.

    The prediction is constant over spots, so its PCC and SRCC are undefined and score 0
    (see :mod:`napari_casper.evaluate.metrics`): any method that has learnt a spatial
    pattern must beat it. It still sets a floor for SSIM, JS and MAPE. ``seed`` is unused.

    Returns
    -------
    ``(st.n_obs, len(target_genes))`` float array.
    """
    targets = check_targets(reference, target_genes)
    means = expression_of(reference, targets, preprocessing=preprocessing, log=True).mean(axis=0)
    return np.tile(means, (st.n_obs, 1))


# --------------------------------------------------------------------------- SpaGE-like kNN


def impute_knn(
    st: AnnData,
    reference: AnnData,
    target_genes: Sequence[str],
    *,
    seed: int = 0,
    k: int = 50,
    weighted: bool = False,
    preprocessing: Preprocessing = "auto",
    chunk_size: int = 2048,
) -> np.ndarray:
    """SpaGE-like kNN: each spot averages its ``k`` most similar reference cells.

    Similarity is the cosine between a spot's and a cell's z-scored values of the genes
    shared by ``st`` and ``reference`` (each data set z-scored per gene over its own
    spots or cells; genes constant in either, e.g. all zero, are dropped first because
    their z-scores are undefined). The prediction is the neighbours' mean reference
    expression of each target gene (``weighted=True``: weighted by the positive part of
    the cosine similarity). Deterministic; ``seed`` is unused.

    Returns
    -------
    ``(st.n_obs, len(target_genes))`` float array, in reference units.
    """
    targets = check_targets(reference, target_genes)
    spots, cells, _ = varying_shared_expression(
        st, reference, preprocessing=preprocessing, unusable="reference, so spots cannot be compared with cells"
    )
    search = NearestNeighbors(n_neighbors=min(k, reference.n_obs), metric="cosine", algorithm="brute")
    distance, neighbours = search.fit(cells).kneighbors(spots)
    if weighted:
        weights = np.clip(1.0 - distance, 0.0, None)  # cosine similarity, positive part
        weights /= np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    else:
        weights = np.full(neighbours.shape, 1.0 / neighbours.shape[1])
    target_values = expression_of(reference, targets, preprocessing=preprocessing, log=True)
    out = np.empty((st.n_obs, len(targets)))
    for start in range(0, st.n_obs, chunk_size):  # bounds the (spots, k, targets) gather
        rows = slice(start, start + chunk_size)
        out[rows] = np.einsum("sk,skg->sg", weights[rows], target_values[neighbours[rows]])
    return out


# --------------------------------------------------------------------------- Tangram


def _import_tangram():
    try:
        import tangram
    except ImportError as err:
        raise CasperInputError(
            "the Tangram baseline needs the optional tangram-sc package, which is not "
            f"importable ({err}); install it with: pip install napari-casper[all]"
        ) from err
    return tangram


def _leiden_labels(reference: AnnData, *, seed: int, resolution: float, preprocessing: Preprocessing) -> np.ndarray:
    """Leiden cluster labels of the reference cells (CASPER's own clustering).

    Counts are normalised and logged first (the same count detection as the baselines);
    :func:`napari_casper.casper.centroids.leiden_clusters` does the rest (2000 highly variable
    genes, PCA, 15-NN graph, Leiden).
    """
    from napari_casper.casper.centroids import leiden_clusters

    values, _ = normalize_matrix(reference.X, preprocessing, already_logged="log1p" in reference.uns)
    return leiden_clusters(values, resolution=resolution, seed=seed)


def _tangram(
    st: AnnData,
    reference: AnnData,
    target_genes: Sequence[str],
    *,
    seed: int,
    mode: Literal["cells", "clusters"],
    labels: np.ndarray | None,
    num_epochs: int,
    learning_rate: float,
    density_prior: str,
    device: str,
    preprocessing: Preprocessing,
) -> np.ndarray:
    tg = _import_tangram()
    targets = check_targets(reference, target_genes)
    training = shared_genes(st, reference)
    genes = list(dict.fromkeys(training + targets))
    # Tangram lowercases gene names in place and matches them case-insensitively
    # (tangram #113); give it private lowercase tokens on fresh AnnData objects instead,
    # so the caller's objects are never touched and "Ama" / "ama" cannot collide.
    token = {gene: f"g{i}" for i, gene in enumerate(genes)}
    sc_values = expression_of(reference, genes, preprocessing=preprocessing, log=False)
    ad_sc = AnnData(sp.csr_matrix(sc_values.astype(np.float32)))
    ad_sc.var_names = [token[g] for g in genes]
    ad_sc.obs_names = [f"c{i}" for i in range(reference.n_obs)]
    cluster_label = None
    if mode == "clusters":
        cluster_label = "label"
        ad_sc.obs[cluster_label] = np.asarray(labels).astype(str)
    sp_values = expression_of(st, training, preprocessing=preprocessing, log=False)
    ad_sp = AnnData(sp_values.astype(np.float32))
    ad_sp.var_names = [token[g] for g in training]
    ad_sp.obs_names = [f"s{i}" for i in range(st.n_obs)]

    tg.pp_adatas(ad_sc, ad_sp, genes=[token[g] for g in training])
    # pp_adatas stores the training genes in set order (varies with hash seed): fix it
    kept = set(ad_sc.uns["training_genes"])
    ordered = [token[g] for g in training if token[g] in kept]
    if not ordered:
        raise CasperInputError(
            "Tangram has no training gene: every shared gene is zero in the spatial data "
            "or in the reference"
        )
    ad_sc.uns["training_genes"] = ordered
    ad_sp.uns["training_genes"] = ordered

    # tangram-sc seeds numpy only when random_state is truthy, so seed 0 would not be
    # reproducible: seed the global generators here and restore numpy's state after.
    import torch

    np_state = np.random.get_state()
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        ad_map = tg.map_cells_to_space(
            ad_sc,
            ad_sp,
            mode=mode,
            cluster_label=cluster_label,
            num_epochs=num_epochs,
            learning_rate=learning_rate,
            density_prior=density_prior,
            device=device,
            random_state=seed,
            verbose=False,
        )
    finally:
        np.random.set_state(np_state)
    ad_ge = tg.project_genes(ad_map, ad_sc, cluster_label=cluster_label)
    projected = ad_ge.X.toarray() if sp.issparse(ad_ge.X) else np.asarray(ad_ge.X)
    # targets that are zero in every reference cell were filtered out by Tangram
    columns = ad_ge.var_names.get_indexer([token[g] for g in targets])
    out = np.zeros((st.n_obs, len(targets)))
    found = columns >= 0
    out[:, found] = projected[:, columns[found]]
    return out


def impute_tangram(
    st: AnnData,
    reference: AnnData,
    target_genes: Sequence[str],
    *,
    seed: int = 0,
    num_epochs: int = 500,
    learning_rate: float = 0.1,
    density_prior: str = "rna_count_based",
    device: str = "cpu",
    preprocessing: Preprocessing = "auto",
) -> np.ndarray:
    """Tangram (tangram-sc) in ``cells`` mode: map every reference cell onto the spots.

    The mapping is trained on the genes shared by ``st`` and ``reference`` only (held-out
    genes are not in ``st``), then ``project_genes`` transfers the targets. Tangram holds
    a dense cells x spots matrix: use :func:`impute_tangram_clusters` for large data.
    Needs the optional ``tangram-sc`` package (``pip install napari-casper[all]``).

    Returns
    -------
    ``(st.n_obs, len(target_genes))`` float array.
    """
    return _tangram(
        st,
        reference,
        target_genes,
        seed=seed,
        mode="cells",
        labels=None,
        num_epochs=num_epochs,
        learning_rate=learning_rate,
        density_prior=density_prior,
        device=device,
        preprocessing=preprocessing,
    )


def impute_tangram_clusters(
    st: AnnData,
    reference: AnnData,
    target_genes: Sequence[str],
    *,
    seed: int = 0,
    label_key: str | None = None,
    leiden_resolution: float = 1.0,
    num_epochs: int = 500,
    learning_rate: float = 0.1,
    density_prior: str = "rna_count_based",
    device: str = "cpu",
    preprocessing: Preprocessing = "auto",
) -> np.ndarray:
    """Tangram in ``clusters`` mode: map cluster profiles (the scalable path).

    Clusters are ``reference.obs[label_key]``, or, when ``label_key`` is None, Leiden
    clusters of the reference (:func:`napari_casper.casper.centroids.leiden_clusters` at
    ``leiden_resolution``, seeded). Otherwise as :func:`impute_tangram`.

    Returns
    -------
    ``(st.n_obs, len(target_genes))`` float array.
    """
    if label_key is None:
        labels = _leiden_labels(reference, seed=seed, resolution=leiden_resolution, preprocessing=preprocessing)
    elif label_key not in reference.obs:
        raise CasperInputError(
            f"label column {label_key!r} is not in the reference's obs (columns: "
            f"{list(reference.obs.columns)}); pass an existing column or none for Leiden"
        )
    else:
        labels = reference.obs[label_key].to_numpy()
    return _tangram(
        st,
        reference,
        target_genes,
        seed=seed,
        mode="clusters",
        labels=labels,
        num_epochs=num_epochs,
        learning_rate=learning_rate,
        density_prior=density_prior,
        device=device,
        preprocessing=preprocessing,
    )
