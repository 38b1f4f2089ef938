"""SpatialData -> histology sections: the H&E image, its spots in image pixels, their counts.

Spot centres are brought into the image's pixel grid through the SpatialData transformations
(spots -> coordinate system -> inverse of the image's transformation), never by assuming that
both share one unit. Images stay lazy (dask); a multiscale image is read at full resolution for
patches and at a coarse level for tissue detection. Writing predictions back is
:mod:`napari_casper.histology.store`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from napari_casper.errors import CasperInputError
from napari_casper.histology.sections import HistologySection
from napari_casper.histology.tissue import TissueMask, detect_tissue
from napari_casper.io.elements import (
    affine_yx,
    annotating_tables,
    default_coordinate_system,
    element_levels,
    mean_scale,
    spot_element,
    spot_element_names,
    spot_positions,
    spot_rows,
)


@dataclass
class SlideImage:
    """An H&E image as the histology core reads it.

    Attributes
    ----------
    name
        Element (or layer) name.
    data
        ``(H, W, 3)`` channel-last array (dask for SpatialData images), full resolution.
    affine
        3x3 ``(y, x)`` affine from image pixels to ``coordinate_system``.
    coordinate_system
        Where ``affine`` leads.
    transformations
        Every transformation of the image element (given to elements written beside it);
        ``None`` for an image that does not come from SpatialData.
    levels
        Channel-last arrays of the pyramid, full resolution first (``[data]`` when single-scale).
    cache_key
        Identifies the image on disk (file or store element, with its size and modification time) for
        the embedding cache of a pretrained encoder; None for an image only in memory.
    """

    name: str
    data: object
    affine: np.ndarray
    coordinate_system: str = "global"
    transformations: dict | None = None
    levels: list = field(default_factory=list)
    cache_key: str | None = None

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=float)
        if not self.levels:
            self.levels = [self.data]

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in full-resolution pixels."""
        return int(self.data.shape[0]), int(self.data.shape[1])

    def pixels_from(self, xy: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """``(n, 2)`` ``(x, y)`` points of a frame with ``affine`` (to the coordinate system) in image pixels."""
        to_pixels = np.linalg.inv(self.affine) @ np.asarray(affine, dtype=float)
        yx1 = np.c_[np.asarray(xy, dtype=float)[:, ::-1], np.ones(len(xy))]
        return (yx1 @ to_pixels.T)[:, 1::-1]

    def detect_tissue(self, max_size: int = 1024, **options) -> TissueMask:
        """:func:`~napari_casper.histology.tissue.detect_tissue` on the coarsest level that still has
        ``max_size`` pixels on its longer side; the mask maps full-resolution pixels."""
        height, width = self.shape
        level = self.levels[0]
        for candidate in self.levels[1:]:
            if max(candidate.shape[:2]) >= max_size:
                level = candidate
        tissue = detect_tissue(level, max_size=max_size, **options)
        factor = level.shape[1] / width  # level pixels per full-resolution pixel
        return TissueMask(tissue.mask, tissue.scale * factor, (height, width), tissue.thresholds)


def _channel_last(level) -> object:
    """An xarray ``(c, y, x)`` image level as a ``(y, x, 3)`` uint8 dask array."""
    array = level.transpose("y", "x", "c").data[:, :, :3]
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):  # 0..1 or 0..255
        peak = float(array[::64, ::64].max())
        scale = 255.0 if peak <= 1.0 else 1.0
        return (array * scale).clip(0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        top = np.iinfo(array.dtype).max
        return (array // max(1, (top + 1) // 256)).clip(0, 255).astype(np.uint8)
    raise CasperInputError(f"image pixels of type {array.dtype} cannot be read as an H&E image; convert it to uint8 RGB.")


def rgb_image_names(sdata, coordinate_system: str | None = None) -> list[str]:
    """Images of ``sdata`` with 3 or 4 channels in ``coordinate_system`` (all when None)."""
    from spatialdata.transformations import get_transformation

    names = []
    for name, element in sdata.images.items():
        first = element_levels(element)[0]
        if first.sizes.get("c", 1) not in (3, 4):
            continue
        if coordinate_system is None or coordinate_system in get_transformation(element, get_all=True):
            names.append(name)
    return names


def element_cache_key(source, element: str) -> str | None:
    """A key naming image ``element`` of the file or store ``source`` as it is now (path, size, modification time
    of the element's folder in a store, else of the file); None without a source on disk."""
    if not source:
        return None
    path = Path(source)
    target = path / "images" / element if (path / "images" / element).is_dir() else path
    if not target.exists():
        return None
    stat = target.stat()
    return f"{path.resolve()}:{element}:{stat.st_mtime_ns}:{stat.st_size}"


def slide_image(sdata, image_name: str | None = None, coordinate_system: str | None = None, *, source=None) -> SlideImage:
    """The H&E image element ``image_name`` of ``sdata`` (default: the only RGB image) as a :class:`SlideImage`.

    ``source``: the file or store ``sdata`` was read from (default ``sdata.path``), for the slide's cache key."""
    from spatialdata.transformations import get_transformation

    cs = coordinate_system or default_coordinate_system(sdata)
    if image_name is None:
        names = rgb_image_names(sdata, cs)
        if not names:
            raise CasperInputError(
                f"no RGB (H&E) image element in coordinate system {cs!r} (images: {list(sdata.images)}): "
                "add the slide's H&E image to the SpatialData object, e.g. convert the section with its image."
            )
        image_name = names[0]
    if image_name not in sdata.images:
        raise CasperInputError(f"no image element named {image_name!r}; the object has images {list(sdata.images)}.")
    element = sdata.images[image_name]
    levels = element_levels(element)
    if levels[0].sizes.get("c", 1) not in (3, 4):
        raise CasperInputError(
            f"image {image_name!r} has {levels[0].sizes.get('c', 1)} channel(s); histology needs an RGB H&E image."
        )
    arrays = [_channel_last(level) for level in levels]
    return SlideImage(
        name=image_name,
        data=arrays[0],
        affine=affine_yx(element, cs),
        coordinate_system=cs,
        transformations=dict(get_transformation(element, get_all=True)),
        levels=arrays,
        cache_key=element_cache_key(source or getattr(sdata, "path", None), image_name),
    )


def spots_in_image(sdata, spots_name: str, slide: SlideImage, *, min_inside: float = 0.9) -> tuple[np.ndarray, float, pd.Index]:
    """Centres ``(n, 2)`` ``(x, y)`` of spot element ``spots_name`` in ``slide``'s pixels, the spot
    diameter in those pixels, and the spots' instance ids."""
    if spots_name not in spot_element_names(sdata):
        raise CasperInputError(
            f"no spot element named {spots_name!r}; spot elements are {spot_element_names(sdata)}."
        )
    xy, diameters, ids = spot_positions(sdata, spots_name)
    if len(xy) == 0:
        raise CasperInputError(f"spot element {spots_name!r} is empty.")
    spots_affine = affine_yx(spot_element(sdata, spots_name), slide.coordinate_system)
    pixels = slide.pixels_from(xy, spots_affine)
    diameter = float(np.median(diameters)) * mean_scale(np.linalg.inv(slide.affine) @ spots_affine)
    height, width = slide.shape
    inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < width) & (pixels[:, 1] >= 0) & (pixels[:, 1] < height)
    if inside.mean() < min_inside:
        raise CasperInputError(
            f"only {inside.mean():.0%} of the spots of {spots_name!r} fall on image {slide.name!r} "
            f"({width} x {height} px) in coordinate system {slide.coordinate_system!r}: the two elements are "
            "not aligned. Fix their transformations, or choose the image the spots were measured on."
        )
    return pixels, diameter, ids


def expression_table(sdata, spots_name: str, instance_ids: pd.Index, table_name: str | None = None):
    """The counts table annotating ``spots_name``, its rows in the order of ``instance_ids``."""
    names = annotating_tables(sdata, spots_name)
    if table_name is None:
        if not names:
            raise CasperInputError(
                f"spots {spots_name!r} have no expression table: training needs measured counts per spot. "
                "Choose a section that has a table annotating its spots, or use this slide for prediction only."
            )
        table_name = names[0]
    elif table_name not in names:
        raise CasperInputError(f"table {table_name!r} does not annotate spots {spots_name!r} (tables that do: {names}).")
    table = sdata.tables[table_name]
    return table[spot_rows(table, spots_name, instance_ids, missing="error", table_name=table_name).rows].copy()


def spot_table_pairs(sdata, coordinate_system: str | None = None) -> list[tuple[str, str]]:
    """``(spots, table)`` pairs of ``sdata`` usable for training: spot elements with a measured table."""
    from spatialdata.transformations import get_transformation

    pairs = []
    for spots in spot_element_names(sdata):
        if coordinate_system and coordinate_system not in get_transformation(spot_element(sdata, spots), get_all=True):
            continue
        pairs.extend((spots, table) for table in annotating_tables(sdata, spots))
    return pairs


def section_from_spatialdata(
    sdata,
    image_name: str | None = None,
    spots_name: str | None = None,
    table_name: str | None = None,
    coordinate_system: str | None = None,
    *,
    with_expression: bool = True,
    name: str | None = None,
    source=None,
) -> HistologySection:
    """A :class:`HistologySection` from a SpatialData object.

    Parameters
    ----------
    image_name, spots_name, table_name
        Elements to use; defaults: the only RGB image, the only spot element (circles or
        points), the table annotating it.
    coordinate_system
        Where image and spots meet (default ``"global"`` or the first one).
    with_expression
        Attach the counts table (required for training); ``False`` for an H&E-only slide.
    source
        The file or store ``sdata`` was read from (default ``sdata.path``): the section's cache key.
    """
    cs = coordinate_system or default_coordinate_system(sdata)
    slide = slide_image(sdata, image_name, cs, source=source)
    if spots_name is None:
        candidates = [s for s, _ in spot_table_pairs(sdata, cs)] if with_expression else spot_element_names(sdata)
        candidates = list(dict.fromkeys(candidates))
        if len(candidates) != 1:
            raise CasperInputError(
                f"{'no' if not candidates else 'several'} spot element(s) {'with an expression table ' if with_expression else ''}"
                f"in this object ({candidates}): name the one to use with spots_name=."
            )
        spots_name = candidates[0]
    coords, diameter, ids = spots_in_image(sdata, spots_name, slide)
    expression = expression_table(sdata, spots_name, ids, table_name) if with_expression else None
    return HistologySection(slide.data, coords, diameter, expression=expression, name=name or spots_name, cache_key=slide.cache_key)
