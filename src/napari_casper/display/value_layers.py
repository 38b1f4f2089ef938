"""Per-spot values (a predicted gene, an attention weight, uncertainty) as napari layer data.

Pure numpy; no napari import. Small spot sets become Points layers (pickable, drawn at the
spot diameter, ``features`` = the spot id and its value only, so hovering reads both at once);
large ones a multiscale raster Image layer built once from a :class:`SpotPyramid`, so switching
the gene it shows only re-reads the tile on screen (napari recolours 100k points in ~1 s).
Zoomed in, the raster's finer levels draw every spot as a round disc. Cells drawn as labels or
polygons get their values on their own shapes (:mod:`napari_casper.display.cell_raster`). A raster carries a
:class:`SpotHover` in its metadata: the spot id and value under a world position (the GUI puts
it into the layer's status line). Every continuous layer's metadata names the ``units`` of its
values (:func:`value_units`), which the GUI shows beside the layer's colour bar.
Layer names are predictable: ``<method>:<gene>`` (``casper:Penk``, ``histology:Penk``),
``histology uncertainty:<gene>``, ``casper attention:<centroid>``, ``casper dominant centroid``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from napari_casper.display.hover_text import format_value
from napari_casper.display.spot_raster import SpotPyramid, SpotRaster
from napari_casper.io.elements import METADATA_KEY, mean_scale

#: above this many spots, value layers are rasters instead of Points
POINTS_LIMIT = 20_000
#: the methods whose predicted genes become value layers (the first word of the layer names)
PREDICTING_METHODS = ("casper", "histology")
ATTENTION_PREFIX = "casper attention:"
DOMINANT_NAME = "casper dominant centroid"


def gene_layer_name(gene: str, method: str) -> str:
    """``<method>:<gene>``: the layer showing ``method``'s prediction of ``gene`` (one of :data:`PREDICTING_METHODS`)."""
    if method not in PREDICTING_METHODS:
        raise ValueError(f"method must be one of {PREDICTING_METHODS}, not {method!r}")
    return f"{method}:{gene}"


def interval_layer_name(gene: str) -> str:
    """``casper 90% width:<gene>``: the layer showing the width of CASPER's per-spot 90 % interval for ``gene``."""
    return f"casper 90% width:{gene}"


def uncertainty_layer_name(gene: str, method: str) -> str:
    """``<method> uncertainty:<gene>``: the layer showing the uncertainty of ``method``'s prediction of ``gene``."""
    if method not in PREDICTING_METHODS:
        raise ValueError(f"method must be one of {PREDICTING_METHODS}, not {method!r}")
    return f"{method} uncertainty:{gene}"


def attention_layer_name(centroid: str) -> str:
    return f"{ATTENTION_PREFIX}{centroid}"


#: what the values of a layer are, by the start of its name (the longest match wins)
UNITS_BY_PREFIX = {
    "casper:": "predicted log-normalised expression",
    "histology:": "predicted log-normalised expression",
    "casper held-out:": "predicted log-normalised expression",
    "measured:": "measured log-normalised expression",
    "difference:": "predicted minus measured (z-scores)",
    "histology uncertainty:": "expected absolute error (same units)",
    "casper uncertainty:": "uncertainty (log-normalised expression)",
    ATTENTION_PREFIX: "attention weight",
}


def value_units(name: str) -> str:
    """The units of a value layer named ``name`` (e.g. ``casper:Penk`` -> predicted log-normalised expression)."""
    matches = [prefix for prefix in UNITS_BY_PREFIX if name.startswith(prefix)]
    return UNITS_BY_PREFIX[max(matches, key=len)] if matches else "value"


#: contrast limits of longer vectors are estimated on an evenly spaced subsample of this size
CONTRAST_SAMPLE = 100_000


def contrast_limits(values: np.ndarray) -> tuple[float, float]:
    """1st-99th percentile of the finite values (a flat vector gets a unit-wide window).

    Vectors longer than :data:`CONTRAST_SAMPLE` are subsampled with a fixed stride (the
    percentiles of 1M values cost ~25 ms, a tenth of a gene switch's budget).
    """
    values = np.asarray(values)
    if values.size > CONTRAST_SAMPLE:
        values = values[:: values.size // CONTRAST_SAMPLE]
    finite = values.astype(float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(finite, [1, 99])
    if hi <= lo:
        hi = lo + 1.0
    return (float(lo), float(hi))


@dataclass
class SpotGeometry:
    """Where the spots are: ``(n, 2)`` (y, x) data coordinates, sizes and the layer affine."""

    yx: np.ndarray
    size: np.ndarray
    affine: np.ndarray
    element: str
    coordinate_system: str
    #: the spots' ids (the element's instance ids); ``None``: their positions 0..n-1
    ids: np.ndarray | None = None
    #: ``"labels"`` or ``"polygons"`` when the spots are the centres of cells drawn as such (values are
    #: then drawn on the cells' shapes, read from ``sdata``); None for circles and points
    cells: str | None = None
    sdata: object = field(default=None, repr=False)
    _pyramid: SpotPyramid | None = field(default=None, repr=False)
    _cell_raster: object = field(default=None, repr=False)

    @classmethod
    def from_points_kwargs(cls, data: np.ndarray, kwargs: dict) -> SpotGeometry:
        meta = kwargs.get("metadata", {}).get(METADATA_KEY, {})
        size = np.broadcast_to(np.asarray(kwargs.get("size", 1.0), dtype=float), (len(data),)).copy()
        ids = meta.get("instance_ids")
        return cls(
            yx=np.asarray(data, dtype=float),
            size=size,
            affine=np.asarray(kwargs.get("affine", np.eye(3)), dtype=float),
            element=meta.get("element", ""),
            coordinate_system=meta.get("coordinate_system", "global"),
            ids=None if ids is None or len(ids) != len(data) else np.asarray(ids),
            cells=meta.get("cells"),
            sdata=meta.get("sdata"),
        )

    @property
    def spot_ids(self) -> np.ndarray:
        return np.arange(self.n_spots) if self.ids is None else np.asarray(self.ids)

    @property
    def n_spots(self) -> int:
        return len(self.yx)

    @property
    def draws_cells(self) -> bool:
        """Values are drawn on the cells' own shapes (labels or polygons), not on discs."""
        return self.cells is not None and self.sdata is not None and self.ids is not None

    @property
    def use_raster(self) -> bool:
        return self.draws_cells or self.n_spots > POINTS_LIMIT

    def cell_raster(self):
        """The cells as a label image (:class:`~napari_casper.display.cell_raster.CellRaster`; built on first use)."""
        if self._cell_raster is None:
            from napari_casper.display.cell_raster import CellRaster
            from napari_casper.io.elements import affine_yx

            if self.cells == "labels":
                element = self.sdata.labels[self.element]
                raster = CellRaster.from_labels(element, affine_yx(element, self.coordinate_system), self.spot_ids)
            else:
                shapes = self.sdata.shapes[self.element]
                raster = CellRaster.from_polygons(shapes, affine_yx(shapes, self.coordinate_system), self.spot_ids)
            self._cell_raster = raster
        return self._cell_raster

    def value_levels(self, values: np.ndarray) -> list:
        """Multiscale raster data showing ``values`` (one per spot): on the cells, or on spot discs."""
        return self.cell_raster().levels(values) if self.draws_cells else self.pyramid().levels(values)

    def raster_affine(self) -> np.ndarray:
        """The world affine of the finest level of :meth:`value_levels`."""
        return self.cell_raster().affine if self.draws_cells else self.affine @ self.pyramid().affine_yx()

    def hover(self, values: np.ndarray):
        """What names the spot (or cell) under the mouse and its value, for a raster's status line."""
        if self.draws_cells:
            from napari_casper.display.cell_raster import CellHover

            return CellHover(self.cell_raster(), self.spot_ids, values)
        return SpotHover(self, values)

    def pyramid(self) -> SpotPyramid:
        """The multiscale spot raster in data coordinates (built on first use, then reused)."""
        if self._pyramid is None:
            data_diameter = self.size / max(mean_scale(self.affine), 1e-12)
            self._pyramid = SpotPyramid(self.yx[:, ::-1], data_diameter)
        return self._pyramid

    def raster(self) -> SpotRaster:
        """The pyramid's precomputed level: which spot covers each pixel, in data coordinates."""
        return self.pyramid().base


class SpotHover:
    """The spot under a world position and its value, for a raster layer's status line.

    ``values`` is the vector shown (replaced when the layer shows another gene). Finding the
    spot is a look-up in a few grid cells (:class:`~napari_casper.display.spot_raster.SpotGrid`),
    well under a millisecond at a million spots.
    """

    def __init__(self, geometry: SpotGeometry, values: np.ndarray) -> None:
        self.geometry = geometry
        self.values = np.asarray(values, dtype=np.float32)
        self._inverse = np.linalg.inv(geometry.affine)

    def spot_at(self, world_yx) -> int:
        """Position (0..n-1) of the spot covering the world point ``(y, x)``; -1 if none."""
        y, x = (self._inverse @ np.array([float(world_yx[-2]), float(world_yx[-1]), 1.0]))[:2]
        return self.geometry.pyramid().grid.at(x, y)

    def describe(self, world_yx) -> str:
        """``spot: <id>, value: <value>`` for the spot under ``world_yx``; empty off the spots."""
        spot = self.spot_at(world_yx)
        if spot < 0:
            return ""
        return f"spot: {self.geometry.spot_ids[spot]}, value: {format_value(self.values[spot])}"


def value_layer(
    geometry: SpotGeometry,
    values: np.ndarray,
    name: str,
    *,
    colormap: str = "magma",
    extra_metadata: dict | None = None,
    units: str | None = None,
) -> tuple:
    """Layer-data tuple showing ``values`` ``(n_spots,)`` on the spots.

    Points layer (``features``: ``spot`` id and ``value``) up to :data:`POINTS_LIMIT` spots, a
    multiscale raster Image layer (NaN off spots; a :class:`SpotHover` in its metadata) above it.
    Spots that are the centres of cells drawn as labels or polygons (``geometry.cells``) are drawn
    on the cells' own shapes instead, whatever their number (:mod:`napari_casper.display.cell_raster`).
    ``units`` (default: :func:`value_units` of ``name``) go into the metadata for the colour bar.
    """
    values = np.asarray(values, dtype=np.float32)
    meta = {
        METADATA_KEY: {
            "element": geometry.element,
            "kind": "values",
            "coordinate_system": geometry.coordinate_system,
            "units": units or value_units(name),
        }
    }
    meta[METADATA_KEY].update(extra_metadata or {})
    limits = contrast_limits(values)
    if geometry.use_raster:
        levels = geometry.value_levels(values)
        meta[METADATA_KEY]["hover"] = geometry.hover(values)
        kwargs = {
            "name": name,
            "affine": geometry.raster_affine(),
            "colormap": colormap,
            "contrast_limits": limits,
            "multiscale": True,
            "metadata": meta,
        }
        return (levels, kwargs, "image")
    kwargs = {
        "name": name,
        "affine": geometry.affine,
        "size": geometry.size,
        "features": pd.DataFrame({"spot": geometry.spot_ids, "value": values}),
        "face_color": "value",
        "face_colormap": colormap,
        "face_contrast_limits": limits,
        "border_width": 0,
        "metadata": meta,
    }
    return (geometry.yx, kwargs, "points")


def categorical_layer(geometry: SpotGeometry, labels: np.ndarray, categories: list[str], name: str) -> tuple:
    """Points layer-data tuple coloured by a category per spot (e.g. the dominant centroid)."""
    codes = np.asarray(labels)
    colours = category_colours(categories)
    frame = pd.DataFrame({"spot": geometry.spot_ids, "category": pd.Categorical([categories[i] for i in codes], categories=categories)})
    kwargs = {
        "name": name,
        "affine": geometry.affine,
        "size": geometry.size,
        "features": frame,
        "face_color": colours[codes],
        "border_width": 0,
        "metadata": {
            METADATA_KEY: {
                "element": geometry.element,
                "kind": "categories",
                "legend": dict(zip(categories, [tuple(c) for c in colours.tolist()])),
            }
        },
    }
    return (geometry.yx, kwargs, "points")


def category_colours(categories: list[str]) -> np.ndarray:
    """``(n_categories, 4)`` RGBA, distinct hues (tab20 cycled, then golden-angle hues)."""
    import colorsys

    tab20 = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
        "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
        "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
    ]  # fmt: skip
    colours = []
    for i in range(len(categories)):
        if i < len(tab20):
            hexa = tab20[i].lstrip("#")
            colours.append([int(hexa[j : j + 2], 16) / 255 for j in (0, 2, 4)] + [1.0])
        else:
            colours.append(list(colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65, 0.95)) + [1.0])
    return np.asarray(colours, dtype=float).reshape(-1, 4)
