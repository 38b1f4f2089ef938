"""ST spots read a block of rows at a time, for imputation with bounded memory.

A :class:`SpotSource` keeps the per-spot annotations in memory (obs, coordinates) but reads the
expression matrix only by row ranges: an ``.h5ad`` is opened backed (h5py), a table of a
SpatialData ``.zarr`` store is read from its zarr group (dense array or CSR, sliced on disk),
and an in-memory AnnData is sliced as is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from napari_casper.errors import CasperInputError, CasperUsageError


def check_spots(n_obs: int, var_names, where) -> None:
    """A :class:`CasperInputError` when spots cannot be imputed: none at all, or a gene named twice
    (which column would the model read?)."""
    names = pd.Index(np.asarray(var_names).astype(str))
    if n_obs == 0:
        raise CasperInputError(f"{where} has no spots (0 rows): there is nothing to impute; give a section with spots.")
    if not names.is_unique:
        repeated = names[names.duplicated()].unique().tolist()
        raise CasperInputError(
            f"{where} names gene(s) {', '.join(repeated[:5])} in more than one column: the model would read an "
            "arbitrary one of them. Keep one column per gene (sum or drop the duplicates) and run again."
        )


class SpotSource:
    """Spots x genes to impute from.

    Attributes
    ----------
    obs
        per-spot annotations (index: spot ids as strings).
    var_names
        gene names of the matrix columns.
    spatial
        ``obsm["spatial"]`` coordinates when present, else None.
    table_attrs
        the source table's ``spatialdata_attrs`` (region, region_key, instance_key) when it is
        a SpatialData table, else None.
    store, table
        the SpatialData store and table name it was read from (None for an ``.h5ad``/AnnData).
    """

    def __init__(self, X, obs: pd.DataFrame, var_names, *, spatial=None, table_attrs=None, store=None, table=None, closer=None):
        self._X = X
        self.obs = obs
        self.obs.index = self.obs.index.astype(str)
        self.var_names = pd.Index(np.asarray(var_names).astype(str))
        self.spatial = spatial
        self.table_attrs = table_attrs
        self.store = Path(store) if store is not None else None
        self.table = table
        self._closer = closer
        check_spots(len(obs), self.var_names, f"table {table!r} of {store}" if store is not None else "the spots")
        if X.shape != (len(obs), len(self.var_names)):
            raise CasperInputError(
                f"the expression matrix has shape {X.shape} but the table lists {len(obs)} spots and "
                f"{len(self.var_names)} genes: the file is inconsistent; rewrite it."
            )

    @property
    def n_obs(self) -> int:
        return len(self.obs)

    @property
    def n_vars(self) -> int:
        return len(self.var_names)

    @property
    def obs_names(self) -> pd.Index:
        return self.obs.index

    def rows(self, start: int, stop: int) -> AnnData:
        """Spots ``start:stop`` with every gene, the matrix read into memory."""
        X = self._X[start:stop]
        if hasattr(X, "to_memory"):
            X = X.to_memory()
        return AnnData(X=X, obs=pd.DataFrame(index=self.obs.index[start:stop]), var=pd.DataFrame(index=self.var_names))

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None


def spots_from_anndata(adata: AnnData) -> SpotSource:
    """A :class:`SpotSource` over an AnnData (in memory or backed)."""
    attrs = adata.uns.get("spatialdata_attrs")
    spatial = np.asarray(adata.obsm["spatial"]) if "spatial" in adata.obsm else None
    return SpotSource(adata.X, adata.obs.copy(), adata.var_names, spatial=spatial,
                      table_attrs=dict(attrs) if attrs else None)


def open_spots(path: str | Path, table: str | None = None) -> SpotSource:
    """Open ST spots from an ``.h5ad`` (backed) or a table of a SpatialData ``.zarr`` store.

    ``table`` names the store's table; by default the store's only table (tables written by
    batch imputation are not candidates).
    """
    import anndata as ad

    from napari_casper.io.stores import is_spatialdata_store

    path = Path(path)
    if not path.exists():
        raise CasperUsageError(f"input {path} does not exist: check the path.")
    if path.suffix.lower() == ".h5ad":
        if table is not None:
            raise CasperUsageError(f"--table names a table of a SpatialData store, but {path} is an .h5ad: drop --table.")
        from napari_casper.io.stores import unreadable_h5ad

        try:
            adata = ad.read_h5ad(path, backed="r")
        except Exception as err:  # noqa: BLE001 - any decoder failure means an unreadable file
            raise unreadable_h5ad(path, err, "spots ") from err
        try:
            check_spots(adata.n_obs, adata.var_names, path)
            source = spots_from_anndata(adata)
        except BaseException:
            adata.file.close()
            raise
        source._closer = adata.file.close
        return source
    if path.is_dir() and is_spatialdata_store(path):
        return _open_store_table(path, table)
    raise CasperInputError(
        f"{path} is neither an .h5ad file nor a SpatialData .zarr store: give the spots as one of those."
    )


def choose_table(store: Path, table: str | None) -> str:
    """The table to read from ``store``: ``table``, or the only source table there."""
    from napari_casper.casper.batch.store import read_manifest
    from napari_casper.io.stores import element_names_on_disk

    names = element_names_on_disk(store, "tables")
    if table is not None:
        if table not in names:
            raise CasperInputError(f"{store} has no table {table!r}; its tables are {names}. Pass one of them with --table.")
        return table
    candidates = [n for n in names if read_manifest(store / "tables" / n) is None]
    if len(candidates) != 1:
        raise CasperInputError(
            f"{store} has {len(candidates)} tables of measured spots ({candidates}): name the one to "
            "impute from with --table NAME."
        )
    return candidates[0]


def _open_store_table(store: Path, table: str | None) -> SpotSource:
    import zarr
    from anndata.io import read_elem, sparse_dataset

    name = choose_table(store, table)
    group = zarr.open_group(str(store / "tables" / name), mode="r")
    try:
        obs = read_elem(group["obs"])
        var = read_elem(group["var"])
        node = group["X"]
        X = sparse_dataset(node) if isinstance(node, zarr.Group) else node
        spatial = read_elem(group["obsm"]["spatial"]) if "obsm" in group and "spatial" in group["obsm"] else None
        attrs = read_elem(group["uns"]["spatialdata_attrs"]) if "uns" in group and "spatialdata_attrs" in group["uns"] else None
    except KeyError as err:
        raise CasperInputError(f"table {name!r} of {store} lacks {err}: it is not a readable AnnData table.") from err
    if attrs is not None:
        attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in attrs.items()}
    return SpotSource(X, obs, var.index, spatial=spatial, table_attrs=attrs, store=store, table=name)
