"""Cells drawn as labels or polygons, coloured by one value per cell (a gene, an attention weight).

When a table annotates a labels element (Xenium, CosMx segmentation) or polygons (MERSCOPE cells,
Visium HD bins), a value per cell is shown on the cells' own shapes, not on discs at their centres.
A :class:`CellRaster` knows where the cells are as a label image -- the labels element's own levels
(read lazily, tile by tile), or the polygons drawn once into a label image -- and which spot each
label is (:class:`LabelLookup`). :meth:`CellRaster.levels` turns a value per spot into multiscale
float levels that napari reads only for the tile on screen (NaN off the cells), so showing another
gene swaps lazy levels and costs nothing up front. :class:`CellHover` gives the cell and its value
under the mouse.

Pure numpy (polygons are filled by :mod:`napari_casper.display.polygon_fill`); no napari import.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_casper.display.hover_text import format_value
from napari_casper.errors import CasperInputError

#: label ids up to this use a dense id -> spot table (4 bytes per id); larger ids a sorted search
DENSE_LOOKUP_LIMIT = 1 << 26
#: the coarsest level's longest side, pixels (levels halve until they reach it)
COARSEST_SIDE = 1024
#: a single-scale labels image is read once into its first coarse level at most this side (pixels)
OVERVIEW_SIDE = 2048
#: polygons are drawn at this many pixels across the median cell (within the side limits below)
PIXELS_PER_CELL = 8
POLYGON_SIDE_RANGE = (2048, 8192)


class LabelLookup:
    """Which spot (0..n-1) each label id is; -1 for the background and labels without a spot."""

    def __init__(self, label_ids) -> None:
        ids = np.asarray(label_ids, dtype=np.int64)
        self.n_spots = len(ids)
        self._top = int(ids.max()) if len(ids) else 0
        self._dense = self._top <= DENSE_LOOKUP_LIMIT and (len(ids) == 0 or ids.min() >= 0)
        if self._dense:
            self._table = np.full(self._top + 2, -1, dtype=np.int32)  # the last entry: ids above the top
            self._table[ids] = np.arange(len(ids), dtype=np.int32)
        else:
            self._order = np.argsort(ids, kind="stable").astype(np.int32)
            self._sorted = ids[self._order]

    def positions(self, labels: np.ndarray) -> np.ndarray:
        """int32 spot position per label in ``labels`` (any shape), -1 where no spot."""
        labels = np.asarray(labels)
        if self._dense:
            return self._table[np.clip(labels, 0, self._top + 1)]
        flat = labels.astype(np.int64).ravel()
        where = np.searchsorted(self._sorted, flat)
        where = np.minimum(where, max(len(self._sorted) - 1, 0))
        hit = (self._sorted[where] == flat) if len(self._sorted) else np.zeros(flat.shape, bool)
        return np.where(hit, self._order[where], -1).astype(np.int32).reshape(labels.shape)


class CellRaster:
    """Cells as a multiscale label image (finest first) with the affine of its finest level.

    ``sources`` are (y, x) arrays of label ids (numpy or dask), finest first; coarser levels are
    added down to :data:`COARSEST_SIDE` (:func:`coarsened`). Level ``k`` is the finest
    subsampled ``2**k`` times, napari's multiscale convention. ``affine`` maps finest-level pixel
    (row, col) to the world (y, x) the layer is drawn in.
    """

    def __init__(self, sources: list, affine: np.ndarray, lookup: LabelLookup) -> None:
        if not sources:
            raise CasperInputError("no label image to draw the cells on.")
        self.sources = coarsened(sources)
        self.affine = np.asarray(affine, dtype=float)
        self.lookup = lookup
        self._inverse = np.linalg.inv(self.affine)

    @property
    def n_spots(self) -> int:
        return self.lookup.n_spots

    @classmethod
    def from_labels(cls, element, affine: np.ndarray, spot_ids) -> CellRaster:
        """The levels of labels element ``element`` (a DataArray or multiscale DataTree) whose
        labels are the spots ``spot_ids`` (their label ids, in spot order)."""
        from napari_casper.io.elements import element_levels

        levels = [level.transpose("y", "x").data for level in element_levels(element)]
        return cls(levels, affine, LabelLookup(spot_ids))

    @classmethod
    def from_polygons(cls, shapes, affine: np.ndarray, spot_ids) -> CellRaster:
        """Polygon element ``shapes`` drawn into a label image (label = spot position + 1); ``affine``
        is the element's own (element coordinates -> world)."""
        rings, owners, _ = polygon_rings(shapes)
        positions = pd.Index(spot_ids).get_indexer(pd.Index(owners))
        keep = positions >= 0
        rings = [ring for ring, kept in zip(rings, keep) if kept]
        image, to_element = draw_polygons(rings, positions[keep] + 1)
        lookup = LabelLookup(np.arange(1, len(spot_ids) + 1))
        return cls([image], np.asarray(affine, dtype=float) @ to_element, lookup)

    def levels(self, values: np.ndarray) -> list[CellLevel]:
        """napari multiscale data showing ``values`` ``(n_spots,)`` on the cells: finest first."""
        values = np.asarray(values, dtype=np.float32)
        if values.shape != (self.n_spots,):
            raise CasperInputError(f"expected {self.n_spots} values (one per cell), got shape {values.shape}.")
        padded = np.append(values, np.float32(np.nan))  # position -1 reads the NaN at the end
        return [CellLevel(source, self.lookup, padded) for source in self.sources]

    def position_at(self, world_yx) -> int:
        """Spot position of the cell under world point ``(y, x)``; -1 off the cells."""
        row, col = (self._inverse @ np.array([float(world_yx[-2]), float(world_yx[-1]), 1.0]))[:2]
        r, c = int(np.floor(row + 0.5)), int(np.floor(col + 0.5))
        height, width = self.sources[0].shape[-2:]
        if not (0 <= r < height and 0 <= c < width):
            return -1
        return int(self.lookup.positions(np.asarray(self.sources[0][r, c]))[()])


class CellLevel:
    """One level of a :class:`CellRaster` as a read-only float32 array napari can slice (NaN off cells)."""

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, source, lookup: LabelLookup, padded: np.ndarray) -> None:
        self.source = source
        self.lookup = lookup
        self.padded = padded
        self.shape = tuple(source.shape[-2:])
        self.size = self.shape[0] * self.shape[1]
        chunks = getattr(source, "chunksize", None)
        if chunks is not None:
            self.chunks = tuple(chunks)  # napari widens the tile it asks for to whole chunks

    def __getitem__(self, key) -> np.ndarray:
        labels = np.asarray(self.source[key])
        return self.padded[self.lookup.positions(labels)]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:, :]
        return out if dtype is None else out.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]


class CellHover:
    """The cell under a world position and its value, for a cell layer's status line."""

    def __init__(self, raster: CellRaster, spot_ids, values: np.ndarray) -> None:
        self.raster = raster
        self.spot_ids = np.asarray(spot_ids)
        self.values = np.asarray(values, dtype=np.float32)

    def describe(self, world_yx) -> str:
        """``cell: <id>, value: <value>`` for the cell under ``world_yx``; empty off the cells."""
        position = self.raster.position_at(world_yx)
        if position < 0:
            return ""
        return f"cell: {self.spot_ids[position]}, value: {format_value(self.values[position])}"


def coarsened(levels: list) -> list:
    """``levels`` (finest first) extended by halving until the coarsest side is at most
    :data:`COARSEST_SIDE`. Coarse levels of a large lazy image are read once, in bands, from the
    first that is at most :data:`OVERVIEW_SIDE` on a side; finer added levels stay lazy views."""
    levels = list(levels)
    while max(levels[-1].shape[-2:]) > COARSEST_SIDE:
        last = levels[-1]
        if isinstance(last, np.ndarray):
            levels.append(np.ascontiguousarray(last[::2, ::2]))
            continue
        stride = 2
        while max(last.shape[-2:]) / stride > OVERVIEW_SIDE:
            stride *= 2
        for step in range(1, int(np.log2(stride))):
            levels.append(last[:: 2**step, :: 2**step])  # lazy: read only for the tile on screen
        levels.append(_read_strided(last, stride))
    return levels


def _read_strided(source, stride: int, band_rows: int = 2048) -> np.ndarray:
    """``source[::stride, ::stride]`` as numpy, reading ``band_rows`` full-resolution rows at a time."""
    height = source.shape[-2]
    bands = [np.asarray(source[top : top + band_rows : stride, ::stride]) for top in range(0, height, band_rows)]
    return np.ascontiguousarray(np.concatenate(bands, axis=0))


def polygon_rings(shapes) -> tuple[list[np.ndarray], list, int]:
    """The exterior ring of every polygon (each part of a multipolygon), as (n, 2) x, y arrays
    without the closing vertex; the instance id of each; the number of holes left out.

    shapely's array functions do the work in C (a Python loop over 36k cells held the GIL ~0.35 s in
    a worker, which stalls the GUI thread waiting for it)."""
    import shapely

    geometries = np.asarray(shapes.geometry.values, dtype=object)
    parts, owner_index = shapely.get_parts(geometries, return_index=True)  # a multipolygon's parts; None: none
    keep = ~shapely.is_empty(parts)
    parts, owner_index = parts[keep], owner_index[keep]
    coords, ring_index = shapely.get_coordinates(shapely.get_exterior_ring(parts), return_index=True)
    ends = np.cumsum(np.bincount(ring_index, minlength=len(parts)))
    rings = [ring[:-1] for ring in np.split(coords, ends[:-1])]  # without the closing vertex
    owners = np.asarray(shapes.index)[owner_index].tolist()
    return rings, owners, int(shapely.get_num_interior_rings(parts).sum())


def polygon_side(rings: list[np.ndarray], extent: float) -> int:
    """The longest side of the label image for ``rings`` spanning ``extent``: :data:`PIXELS_PER_CELL`
    across the median cell."""
    sizes = np.array([np.ptp(ring, axis=0).max() for ring in rings[:: max(1, len(rings) // 2000)]])
    median = float(np.median(sizes)) if len(sizes) else extent
    wanted = PIXELS_PER_CELL * extent / max(median, 1e-12)
    return int(np.clip(wanted, *POLYGON_SIDE_RANGE))


def draw_polygons(rings: list[np.ndarray], labels, *, side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fill each ring ((n, 2) x, y) with its label into an int32 image whose longer side is ``side``
    pixels (default: :func:`polygon_side`); also the 3x3 affine from image (row, col) to the rings'
    (y, x) coordinates."""
    from napari_casper.display.polygon_fill import fill_polygon_array

    if not rings:
        return np.zeros((1, 1), dtype=np.int32), np.eye(3)
    every = np.vstack(rings)
    lo, hi = every.min(axis=0), every.max(axis=0)
    extent = float((hi - lo).max())
    pixel = max(extent / (side or polygon_side(rings, extent)), 1e-9)
    shape = tuple(int(np.ceil(v)) + 1 for v in ((hi - lo) / pixel)[::-1])  # (rows, cols)
    sizes = [len(ring) for ring in rings]
    image = fill_polygon_array(((every - lo) / pixel)[:, ::-1], sizes, labels, shape)  # (row, col) vertices
    # pixel (r, c) sits at (y, x) = lo[::-1] + pixel * (r, c)
    to_element = np.array([[pixel, 0.0, lo[1]], [0.0, pixel, lo[0]], [0.0, 0.0, 1.0]])
    return image, to_element
