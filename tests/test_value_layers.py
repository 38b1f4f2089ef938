"""Value layers: Points for small spot sets, rasters for large ones, both aligned."""

from __future__ import annotations

import numpy as np

from napari_casper.display import value_layers
from napari_casper.display.layers import spots_layer
from napari_casper.display.value_layers import SpotGeometry, category_colours, value_layer, value_units
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


def test_points_features_are_spot_id_and_value_only():
    sdata, geometry = drosophila_geometry()
    eve = sdata.tables["atlas"][:, "eve"].X.ravel()
    _, kwargs, _ = value_layer(geometry, eve, "casper:eve")
    assert list(kwargs["features"].columns) == ["spot", "value"]
    np.testing.assert_array_equal(kwargs["features"]["spot"], geometry.spot_ids)
    assert kwargs["metadata"]["napari_casper"]["units"] == "predicted log-normalised expression"


def test_units_follow_the_layer_name():
    assert value_units("casper:Penk") == "predicted log-normalised expression"
    assert value_units("histology uncertainty:Penk") == "expected absolute error (same units)"
    assert value_units("casper attention:3") == "attention weight"
    assert value_units("difference:Penk") == "predicted minus measured (z-scores)"
    assert value_units("something else") == "value"


def test_raster_layer_for_large_sets_lands_on_the_spots_and_hovers(monkeypatch):
    monkeypatch.setattr(value_layers, "POINTS_LIMIT", 100)
    sdata, geometry = drosophila_geometry()
    eve = sdata.tables["atlas"][:, "eve"].X.ravel()
    levels, kwargs, kind = value_layer(geometry, eve, "casper:eve")
    assert kind == "image" and kwargs["multiscale"] and len(levels) > 1
    assert all(a.shape[0] >= b.shape[0] for a, b in zip(levels, levels[1:]))  # finest first
    # map every spot centre (world) into raster pixels: the pixel shows that spot's value
    world = np.c_[geometry.yx, np.ones(geometry.n_spots)] @ geometry.affine.T
    shown = sample_levels(levels, kwargs["affine"], world[:, :2])
    assert np.isclose(shown, eve, rtol=1e-6).mean() > 0.97  # a few projected cells overlap
    # the finest level too, read in a window as napari does
    finest = (np.linalg.inv(kwargs["affine"]) @ world.T)[:2].T
    r, c = np.rint(finest[7]).astype(int)
    window = levels[0][r - 20 : r + 21, c - 20 : c + 21]
    assert window.shape == (41, 41) and np.isclose(window[20, 20], eve[7], rtol=1e-6)
    # hover: the spot id and value at a world position; nothing off the spots
    hover = kwargs["metadata"]["napari_casper"]["hover"]
    hits = [hover.describe(world[i, :2]) == f"spot: {geometry.spot_ids[i]}, value: {eve[i]:.4g}" for i in range(0, geometry.n_spots, 50)]
    assert np.mean(hits) > 0.9
    assert hover.describe(world[:, :2].min(axis=0) - 100) == ""


def test_category_colours_distinct():
    colours = category_colours([str(i) for i in range(30)])
    assert colours.shape == (30, 4)
    assert len(np.unique(colours.round(3), axis=0)) == 30


def sample_levels(levels, affine: np.ndarray, world_yx: np.ndarray) -> np.ndarray:
    """Values of a multiscale spot raster (finest level first) at world ``(y, x)`` points, read from its precomputed level."""
    level = next(k for k, lv in enumerate(levels) if lv.level >= lv.pyramid.base_level)
    finest = (np.linalg.inv(affine) @ np.c_[world_yx, np.ones(len(world_yx))].T)[:2].T
    pixels = np.rint(finest / 2**level).astype(int)
    image = np.asarray(levels[level])
    return image[pixels[:, 0], pixels[:, 1]]
