"""Values drawn on the cells' own shapes: labels looked up by id, polygons drawn once, hover, levels."""

from __future__ import annotations

import dask.array as da
import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import Polygon

from napari_casper.display.cell_raster import (
    COARSEST_SIDE,
    CellHover,
    CellRaster,
    LabelLookup,
    coarsened,
    draw_polygons,
)
from napari_casper.errors import CasperInputError


@pytest.mark.parametrize("offset", [0, 10**12])  # small ids use a table, huge ones a sorted search
def test_label_lookup_finds_each_spot_and_nothing_else(offset):
    rng = np.random.default_rng(0)
    ids = rng.choice(np.arange(1, 5000), size=300, replace=False) + offset
    lookup = LabelLookup(ids)
    labels = np.concatenate([ids, [0, offset + 5001, offset + 10**9]]).reshape(-1, 1)
    positions = lookup.positions(labels).ravel()
    np.testing.assert_array_equal(positions[:300], np.arange(300))
    assert (positions[300:] == -1).all()


def test_labels_levels_carry_each_cells_value_and_nan_elsewhere():
    labels = np.zeros((3000, 2500), dtype=np.int32)
    labels[100:200, 300:450] = 7
    labels[2000:2600, 1000:1100] = 3
    labels[5:10, 5:10] = 99  # a label the table does not annotate
    affine = np.array([[0.5, 0, 10.0], [0, 0.5, -4.0], [0, 0, 1]])
    raster = CellRaster([da.from_array(labels, chunks=512)], affine, LabelLookup([3, 7]))
    levels = raster.levels(np.array([1.5, -2.0]))
    assert [lv.shape for lv in levels] == [(3000, 2500), (1500, 1250), (750, 625)]
    assert max(levels[-1].shape) <= COARSEST_SIDE
    full = np.asarray(levels[0])
    assert np.allclose(full[labels == 3], 1.5) and np.allclose(full[labels == 7], -2.0)
    assert np.isnan(full[(labels != 3) & (labels != 7)]).all()
    window = levels[0][100:120, 300:310]
    assert window.shape == (20, 10) and np.allclose(window, -2.0)
    coarse = np.asarray(levels[2])
    assert set(np.unique(coarse[np.isfinite(coarse)])) == {np.float32(1.5), np.float32(-2.0)}  # both cells survive
    # hover: world (y, x) of pixel (150, 400) is (10 + 75, -4 + 200)
    assert raster.position_at((85.0, 196.0)) == 1
    assert raster.position_at((10.0 + 0.5 * 2300, -4.0 + 0.5 * 1050)) == 0
    assert raster.position_at((0.0, 0.0)) == -1 and raster.position_at((1e6, 0)) == -1
    hover = CellHover(raster, np.array([3, 7]), np.array([1.5, -2.0]))
    assert hover.describe((85.0, 196.0)) == "cell: 7, value: -2"
    assert hover.describe((10.0 + 0.5 * 7, -4.0 + 0.5 * 7)) == ""  # label 99: no row in the table
    with pytest.raises(CasperInputError, match="one per cell"):
        raster.levels(np.zeros(3))


def test_a_large_lazy_labels_image_is_read_once_for_its_overview():
    """A 9000 x 7000 labels image: the levels finer than 2048 px stay lazy views, the overview is numpy."""
    labels = da.zeros((9000, 7000), dtype=np.int32, chunks=1024)
    levels = coarsened([labels])
    assert [lv.shape for lv in levels] == [(9000, 7000), (4500, 3500), (2250, 1750), (1125, 875), (563, 438)]
    assert [type(lv).__name__ for lv in levels] == ["Array", "Array", "Array", "ndarray", "ndarray"]


def test_polygons_are_filled_with_their_own_values():
    squares = [Polygon([(x, y), (x + 8, y), (x + 8, y + 8), (x, y + 8)]) for x, y in [(0, 0), (20, 0), (0, 30), (40, 40)]]
    shapes = gpd.GeoDataFrame(geometry=squares, index=[11, 12, 13, 14])
    spot_ids = np.array([14, 12, 11])  # spot order differs from the element's; cell 13 has no row
    scale = np.array([[2.0, 0, 100.0], [0, 2.0, 50.0], [0, 0, 1]])  # element -> world (y, x)
    raster = CellRaster.from_polygons(shapes, scale, spot_ids)
    levels = raster.levels(np.array([4.0, 2.0, 1.0]))
    full = np.asarray(levels[0])
    assert np.isfinite(full).mean() > 0.05
    for (x, y), value in [((4, 4), 1.0), ((24, 4), 2.0), ((44, 44), 4.0), ((4, 34), np.nan), ((14, 14), np.nan)]:
        world = (100.0 + 2.0 * y, 50.0 + 2.0 * x)  # the affine maps element (y, x) to world (y, x)
        row, col = np.rint((np.linalg.inv(raster.affine) @ [*world, 1.0])[:2]).astype(int)
        np.testing.assert_equal(full[row, col], np.float32(value))
        hover = CellHover(raster, spot_ids, np.array([4.0, 2.0, 1.0])).describe(world)
        assert hover == ("" if np.isnan(value) else f"cell: {spot_ids[[4.0, 2.0, 1.0].index(value)]}, value: {value:.4g}")


def test_draw_polygons_places_pixels_on_the_rings():
    ring = np.array([[10.0, 20.0], [30.0, 20.0], [30.0, 60.0], [10.0, 60.0]])  # x 10..30, y 20..60
    image, to_rings = draw_polygons([ring], [5], side=400)
    rows, cols = np.nonzero(image == 5)
    corners = to_rings @ np.array([[rows.min(), rows.max()], [cols.min(), cols.max()], [1, 1]])
    np.testing.assert_allclose(corners[0], [20, 60], atol=0.2)  # y
    np.testing.assert_allclose(corners[1], [10, 30], atol=0.2)  # x
