"""One gene at a time from a spots x genes table, for fast gene switching on large sections.

A :class:`TableGenes` reads single gene columns of a table that annotates a spot element
(measured counts, CASPER predictions, histology predictions), in the element's spot order.
Sparse tables are converted to CSC once (at the first gene read), so a column is a slice;
dense, backed and dask tables are read column by column. Nothing holds more than the one gene being shown.

A :class:`GeneSwitcher` turns such a column into the data of one value layer (a Points
layer's feature up to :data:`~napari_casper.display.value_layers.POINTS_LIMIT` spots, a multiscale
raster above) so that switching the gene replaces the layer's data without rebuilding it. The
layer is named after the gene it shows and where it comes from (:func:`genes_layer_name`), and
its metadata names the units of the values (:attr:`TableGenes.units`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from napari_casper.display.value_layers import SpotGeometry, contrast_limits, value_layer
from napari_casper.errors import CasperInputError
from napari_casper.io.elements import METADATA_KEY, spot_rows

TRANSFORMS = ("auto", "log1p", "none")
GENES_PREFIX = "genes: "


def genes_layer_name(gene: str, source: str) -> str:
    """``genes: <gene> (<source>)``, e.g. ``genes: eve (cells/atlas)``: the Genes layer showing ``gene``."""
    return f"{GENES_PREFIX}{gene} ({source})"


class TableGenes:
    """Gene columns of ``table`` for the spots of one element, in the element's order.

    Parameters
    ----------
    table
        AnnData annotating spots (``obs[region_key]``, ``obs[instance_key]``).
    element
        Name of the spot element whose rows to take.
    instance_ids
        The element's spot ids in display order; spots without a table row read as NaN.
    transform
        ``"log1p"`` shows ``log1p(value)``; ``"none"`` the stored values; ``"auto"`` applies
        log1p when the table holds raw counts (:func:`napari_casper.casper.preprocess.detect_normalization`).
    layer
        Read ``table.layers[layer]`` (e.g. a prediction's ``"uncertainty"``) instead of ``X``.
    """

    def __init__(
        self,
        table,
        element: str,
        instance_ids,
        *,
        transform: str = "auto",
        layer: str | None = None,
    ) -> None:
        if transform not in TRANSFORMS:
            raise CasperInputError(f"unknown transform {transform!r}; choose one of {', '.join(TRANSFORMS)}.")
        ids = np.asarray(instance_ids)
        self._join = spot_rows(table, element, ids, missing="nan")
        if len(ids) and not self._join.present.any():
            raise CasperInputError(f"the table has no rows for spot element {element!r}; choose the table that annotates it.")
        self._identity = bool(
            len(ids) == table.n_obs and self._join.present.all() and np.array_equal(self._join.rows, np.arange(table.n_obs))
        )
        self.n_spots = len(ids)
        self.genes = [str(g) for g in table.var_names]
        self._column = {g: i for i, g in enumerate(self.genes)}
        self._lower = {g.lower(): i for i, g in reversed(list(enumerate(self.genes)))}
        if layer is not None and layer not in table.layers:
            raise CasperInputError(f"the table has no layer {layer!r} (it has {list(table.layers)}); choose X or one of those.")
        self._X = table.X if layer is None else table.layers[layer]
        if transform == "auto":
            from napari_casper.casper.preprocess import detect_normalization

            transform = "log1p" if detect_normalization(_sample_rows(self._X)) == "counts" else "none"
        self.transform = transform
        #: what the shown values are, for the colour bar
        self.units = _units(table, transform, layer)

    def resolve(self, gene: str) -> str:
        """The table's spelling of ``gene`` (exact, then case-insensitive)."""
        gene = str(gene).strip()
        if gene in self._column:
            return gene
        index = self._lower.get(gene.lower())
        if index is None:
            raise CasperInputError(f"gene {gene!r} is not in this table ({len(self.genes)} genes); pick one from the list.")
        return self.genes[index]

    def values(self, gene: str) -> np.ndarray:
        """``(n_spots,)`` float32 values of ``gene`` (NaN for spots without a row)."""
        j = self._column[self.resolve(gene)]
        X = self._X
        if sp.issparse(X) and not sp.isspmatrix_csc(X):  # once, on the first gene: columns become slices
            X = self._X = sp.csc_matrix(X)
        if sp.issparse(X):
            column = X[:, j].toarray().ravel()
        elif hasattr(X, "compute"):  # dask
            column = np.asarray(X[:, j].compute()).ravel()
        else:  # numpy, h5py/zarr-backed arrays
            column = np.asarray(X[:, j]).ravel()
        column = column.astype(np.float32, copy=False)
        if self.transform == "log1p":
            column = np.log1p(np.maximum(column, 0), dtype=np.float32)
        return self.in_spot_order(column)

    def in_spot_order(self, per_row: np.ndarray) -> np.ndarray:
        """A vector over the table's rows ``(n_obs,)`` in the element's spot order (NaN: no row)."""
        per_row = np.asarray(per_row, dtype=np.float32)
        return per_row if self._identity else self._join.gather(per_row)


def _units(table, transform: str, layer: str | None) -> str:
    if transform == "log1p":
        return f"log1p {layer}" if layer else "log1p counts"
    kind = str(table.uns.get("napari_casper", {}).get("kind", ""))
    what = "predicted log-normalised expression" if kind.endswith("predictions") else "values as stored"
    return f"{layer} of {what}" if layer else what


def _sample_rows(X, n: int = 2000):
    """At most ``n`` evenly spaced rows of ``X`` (enough to tell counts from normalised values)."""
    step = max(1, X.shape[0] // n)
    rows = X[::step]
    return rows.compute() if hasattr(rows, "compute") else rows


class GeneSwitcher:
    """Shows one gene of a :class:`TableGenes` on spot geometry, one layer, swapped in place.

    ``source`` says where the genes come from (``"cells/atlas"``: element / table); the layer is
    named :func:`genes_layer_name` of the gene shown and follows it.
    """

    def __init__(self, geometry: SpotGeometry, genes: TableGenes, source: str, *, colormap: str = "magma") -> None:
        if genes.n_spots != geometry.n_spots:
            raise CasperInputError(f"{genes.n_spots} table spots for {geometry.n_spots} displayed spots.")
        self.geometry = geometry
        self.genes = genes
        self.source = source
        self.colormap = colormap
        self.gene: str | None = None
        self.hover = None

    @property
    def is_raster(self) -> bool:
        return self.geometry.use_raster

    @property
    def name(self) -> str:
        """The layer name for the gene shown now."""
        return genes_layer_name(self.gene or "", self.source)

    def layer_tuple(self, gene: str) -> tuple:
        """Layer-data tuple for the first display (builds the raster pyramid once for large sets)."""
        self.gene = self.genes.resolve(gene)
        values = self.genes.values(self.gene)
        layer = value_layer(
            self.geometry,
            values,
            self.name,
            colormap=self.colormap,
            units=self.genes.units,
            extra_metadata={"gene": self.gene, "genes_source": self.source},
        )
        self.hover = layer[1]["metadata"][METADATA_KEY].get("hover")
        return layer

    def switch(self, gene: str) -> tuple[object, tuple[float, float]]:
        """``(layer data or per-spot values, contrast limits)`` for ``gene``.

        Raster layers get new multiscale data (napari then reads only the tile on screen);
        Points layers get the values for their ``value`` feature.
        """
        self.gene = self.genes.resolve(gene)
        values = self.genes.values(self.gene)
        limits = contrast_limits(values)
        if self.is_raster:
            if self.hover is not None:
                self.hover.values = values
            return self.geometry.value_levels(values), limits
        return values, limits


def table_genes(
    sdata, element: str, table_name: str, instance_ids, *, transform: str = "auto", layer: str | None = None
) -> TableGenes:
    """:class:`TableGenes` for table ``table_name`` (``X`` or its ``layer``) of ``sdata`` and spot element ``element``."""
    if table_name not in sdata.tables:
        raise CasperInputError(f"no table {table_name!r} in this object (it has {list(sdata.tables)}).")
    return TableGenes(sdata.tables[table_name], element, instance_ids, transform=transform, layer=layer)
