"""Value layers: Points for small spot sets, rasters for large ones, both aligned."""

from __future__ import annotations

import numpy as np

from napari_casper.display import value_layers
from napari_casper.display.layers import spots_layer
from napari_casper.display.value_layers import SpotGeometry, category_colours, value_layer
from napari_casper.io.samples import load_drosophila


def drosophila_geometry():
    sdata = load_drosophila()
    data, kwargs, _ = spots_layer(sdata, "cells", "global")
    return sdata, SpotGeometry.from_points_kwargs(data, kwargs)


def test_points_layer_for_small_sets():
    sdata, geometry = drosophila_geometry()
    eve = sdata.tables["atlas"][:, "eve"].X.ravel()
    data, kwargs, kind = value_layer(geometry, eve, "casper:eve")
    assert kind == "points" and kwargs["name"] == "casper:eve"
    np.testing.assert_allclose(kwargs["features"]["value"], eve, rtol=1e-6)
    lo, hi = kwargs["face_contrast_limits"]
    assert lo < np.median(eve) < hi


def test_raster_layer_for_large_sets_lands_on_the_spots(monkeypatch):
    monkeypatch.setattr(value_layers, "POINTS_LIMIT", 100)
    sdata, geometry = drosophila_geometry()
    eve = sdata.tables["atlas"][:, "eve"].X.ravel()
    image, kwargs, kind = value_layer(geometry, eve, "casper:eve")
    assert kind == "image"
    # map every spot centre (world) into raster pixels: the pixel shows that spot's value
    world = np.c_[geometry.yx, np.ones(geometry.n_spots)] @ geometry.affine.T
    pixel = world @ np.linalg.inv(kwargs["affine"]).T
    rows, cols = np.round(pixel[:, 0]).astype(int), np.round(pixel[:, 1]).astype(int)
    shown = image[rows, cols]
    assert np.isclose(shown, eve, rtol=1e-6).mean() > 0.97  # a few projected cells overlap


def test_category_colours_distinct():
    colours = category_colours([str(i) for i in range(30)])
    assert colours.shape == (30, 4)
    assert len(np.unique(colours.round(3), axis=0)) == 30
