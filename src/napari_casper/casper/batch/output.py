"""Write a CasperImputer's predictions to disk: a chunked, resumable zarr table
(:func:`napari_casper.casper.batch.impute.impute_to_zarr`) or an ``.h5ad`` from a lazy dask matrix."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from napari_casper.casper.batch.impute import impute_to_zarr
from napari_casper.errors import CasperInputError
from napari_casper.io.stores import write_h5ad_atomic


def write_imputation(
    imputer,
    genes: Sequence[str],
    path: str | Path,
    *,
    spot_chunk: int = 50_000,
    gene_chunk: int = 256,
    obs: pd.DataFrame | None = None,
    obsm: dict | None = None,
    var: pd.DataFrame | None = None,
) -> Path:
    """Write ``imputer``'s predictions of ``genes`` to ``path`` (``.zarr`` or ``.h5ad``) in chunks.

    ``.zarr`` is a chunked, resumable SpatialData table; ``.h5ad`` is written from a lazy dask
    matrix. Only a few ``spot_chunk x gene_chunk`` blocks are in memory at a time. Refuses to
    overwrite. ``var`` adds columns to the genes' table (indexed by gene).
    """
    path = Path(path)
    if path.exists():
        raise CasperInputError(f"{path} already exists; choose another output path or delete it")
    if path.suffix.lower() == ".h5ad":
        return write_h5ad(imputer, genes, path, spot_chunk=spot_chunk, gene_chunk=gene_chunk, obs=obs, obsm=obsm, var=var)
    if path.suffix.lower() != ".zarr":
        raise CasperInputError(f"output {path} must end in .zarr or .h5ad")
    return impute_to_zarr(
        imputer, None, genes, path, spot_chunk=spot_chunk, gene_chunk=gene_chunk, obs=obs, obsm=obsm, var=var
    ).path


def write_h5ad(imputer, genes: Sequence[str], path: str | Path, *, spot_chunk: int = 50_000, gene_chunk: int = 256,
               obs: pd.DataFrame | None = None, obsm: dict | None = None, var: pd.DataFrame | None = None) -> Path:
    """Write imputed ``genes`` as an ``.h5ad`` from a lazy dask matrix (not resumable)."""
    import dask
    import dask.array as da

    path = Path(path)
    genes = [str(g) for g in genes]
    if imputer.state_cached:
        X = imputer.to_dask(genes, spot_chunk=spot_chunk, gene_chunk=gene_chunk)
    else:
        parts = [genes[g0 : g0 + gene_chunk] for g0 in range(0, len(genes), gene_chunk)]
        X = da.concatenate([da.from_delayed(dask.delayed(imputer.predict)(p), (imputer.n_spots, len(p)), np.float32) for p in parts], axis=1)
    obs_df = obs.copy() if obs is not None else pd.DataFrame(index=imputer.obs_names)
    obs_df.index = imputer.obs_names
    var_df = pd.DataFrame(index=pd.Index(genes, name=None))
    if var is not None:
        var_df = var_df.join(var)
    adata = AnnData(X=X, obs=obs_df, var=var_df, obsm=obsm or None)
    adata.uns["casper"] = {"centroids": imputer.model.centroids.method, "panel_genes": list(imputer.model.panel_genes),
                           "units": "normalised reference expression (imputed)"}
    with dask.config.set(scheduler="synchronous"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Writing zarr v2", category=UserWarning)
        return write_h5ad_atomic(adata, path)  # a run killed mid-write leaves no partial file at path
