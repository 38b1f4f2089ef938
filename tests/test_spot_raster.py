"""SpotRaster: the pixel -> spot map behind instant gene switching."""

from __future__ import annotations

import numpy as np
import pytest

from napari_casper.display.spot_raster import SpotRaster
from napari_casper.errors import CasperInputError
from napari_casper.io.samples import load_drosophila_atlas


def pixel_centres_world(raster: SpotRaster, rows, cols):
    affine = raster.affine_yx()
    yx = np.c_[rows, cols, np.ones(len(rows))] @ affine.T
    return yx[:, 1], yx[:, 0]  # x, y


def test_every_covered_pixel_lies_within_its_spot():
    atlas = load_drosophila_atlas()
    coords = atlas.obsm["spatial"]
    raster = SpotRaster.build(coords, 6.0, pixel_size=0.75)
    rows, cols = np.nonzero(raster.index_map >= 0)
    x, y = pixel_centres_world(raster, rows, cols)
    spot = raster.index_map[rows, cols]
    dist = np.hypot(x - coords[spot, 0], y - coords[spot, 1])
    assert dist.max() <= 3.0 + 1e-9
    # and every spot owns some pixels
    assert len(np.unique(spot)) == len(coords)


def test_render_reproduces_values_and_nan_background():
    atlas = load_drosophila_atlas()
    coords = atlas.obsm["spatial"]
    eve = atlas[:, "eve"].X.ravel()
    raster = SpotRaster.build(coords, 6.0)
    image = raster.render(eve)
    covered = raster.index_map >= 0
    np.testing.assert_array_equal(image[covered], eve[raster.index_map[covered]].astype(np.float32))
    assert np.isnan(image[~covered]).all()
    # the pixel under a spot centre belongs to that spot, unless another centre is nearer to
    # the pixel (projected 3-D cells can nearly coincide): the nearest centre wins
    col = ((coords[:, 0] - raster.origin[0]) / raster.pixel_size).astype(int)
    row = ((coords[:, 1] - raster.origin[1]) / raster.pixel_size).astype(int)
    owner = raster.index_map[row, col]
    assert (owner == np.arange(len(coords))).mean() > 0.97
    x, y = pixel_centres_world(raster, row, col)
    d_owner = np.hypot(x - coords[owner, 0], y - coords[owner, 1])
    d_self = np.hypot(x - coords[:, 0], y - coords[:, 1])
    assert (d_owner <= d_self + 1e-9).all()
    np.testing.assert_array_equal(image[row, col], eve[owner].astype(np.float32))


def test_wrong_number_of_values():
    raster = SpotRaster.build(np.array([[0.0, 0.0], [10.0, 0.0]]), 4.0)
    with pytest.raises(CasperInputError, match="expected 2 values"):
        raster.render(np.ones(3))


def test_grid_finds_the_spot_under_a_point_and_the_spots_in_a_window():
    from napari_casper.display.spot_raster import SpotGrid

    coords = load_drosophila_atlas().obsm["spatial"]
    grid = SpotGrid(coords, np.full(len(coords), 3.0))
    for i in range(0, len(coords), 97):
        hit = grid.at(*coords[i])
        assert hit >= 0 and np.hypot(*(coords[hit] - coords[i])) <= np.hypot(*(coords - coords[i]).T).min() + 1e-9
    assert grid.at(*(coords.min(axis=0) - 10)) == -1
    x0, y0 = np.median(coords, axis=0)
    inside = grid.within(x0, x0 + 30, y0, y0 + 30)
    truth = np.flatnonzero((coords[:, 0] > x0 - 3) & (coords[:, 0] < x0 + 33) & (coords[:, 1] > y0 - 3) & (coords[:, 1] < y0 + 33))
    assert set(truth) <= set(inside.tolist())


def test_pyramid_levels_agree_and_fine_levels_draw_round_discs():
    from napari_casper.display.spot_raster import SpotPyramid

    atlas = load_drosophila_atlas()
    coords = atlas.obsm["spatial"]
    pyramid = SpotPyramid(coords, 6.0)
    assert pyramid.n_fine >= 2 and pyramid.pixel_size(0) <= 6.0 / 16 + 1e-9
    levels = pyramid.levels(atlas[:, "eve"].X.ravel())
    base = pyramid.base_level
    step = 2**base
    h, w = levels[base].shape
    fine = levels[0][: h * step : 1, : w * step]
    np.testing.assert_array_equal(np.asarray(levels[base]), fine[::step, ::step])  # napari's level convention
    # every covered fine pixel lies in its spot's disc
    index = pyramid.index(0, slice(0, 800), slice(0, 1000))
    rows, cols = np.nonzero(index >= 0)
    spot = index[rows, cols]
    x = pyramid.centre[0] + cols * pyramid.pixel_size(0)
    y = pyramid.centre[1] + rows * pyramid.pixel_size(0)
    assert np.hypot(x - coords[spot, 0], y - coords[spot, 1]).max() <= 3.0 + 1e-9
    # a lone disc at the finest level fills pi/4 of its bounding box
    lone = SpotPyramid(np.array([[0.0, 0.0], [100.0, 100.0]]), 10.0)
    disc = lone.index(0, slice(0, lone.shape(0)[0]), slice(0, lone.shape(0)[1])) == 0
    r, c = np.nonzero(disc)
    fill = disc.sum() / ((np.ptp(r) + 1) * (np.ptp(c) + 1))
    assert np.ptp(c) + 1 >= 15 and abs(fill - np.pi / 4) < 0.05
