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
