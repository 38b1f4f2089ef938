"""On-canvas legends (display/legend.py): scanpy's colour convention and the legend layer data."""

from __future__ import annotations

import numpy as np
import pytest

from napari_casper.display.legend import (
    LEGEND_KIND,
    colors_key,
    colours_from_uns,
    hex_colours,
    legend_layer,
    rgba_from_hex,
    store_colours,
    text_layer,
    world_extent,
)
from napari_casper.display.value_layers import category_colours


def test_scanpy_colour_convention_round_trips():
    categories = ["leiden_0", "leiden_1", "leiden_2"]
    rgba = category_colours(categories)
    uns = {}
    store_colours(uns, "dominant", rgba)
    assert colors_key("dominant") == "dominant_colors" and list(uns["dominant_colors"]) == hex_colours(rgba)
    assert hex_colours([[1, 0, 0, 1], [0, 0.5, 1, 1]]) == ["#ff0000", "#0080ff"]
    np.testing.assert_allclose(colours_from_uns(uns, "dominant", 3), rgba, atol=1 / 255)
    assert colours_from_uns(uns, "dominant", 4) is None  # too few colours: the caller's palette
    assert colours_from_uns({}, "dominant", 3) is None
    np.testing.assert_allclose(rgba_from_hex(["#00000080"]), [[0, 0, 0, 128 / 255]])
    with pytest.raises(ValueError, match="not a #rrggbb colour"):
        rgba_from_hex(["red"])


def test_legend_sits_beside_the_tissue_in_world_coordinates():
    yx = np.array([[0.0, 0.0], [10.0, 20.0]])
    affine = np.array([[2.0, 0, 100], [0, 2.0, 50], [0, 0, 1]])
    low, high = world_extent(yx, affine)
    np.testing.assert_allclose(low, [100, 50])
    np.testing.assert_allclose(high, [120, 90])
    data, kwargs, kind = legend_layer(["a", "b"], ["#ff0000", "#00ff00"], (low, high), name="L", title="dominant")
    assert kind == "points" and kwargs["name"] == "L"
    # the title, one row per category, and an invisible point where the names end
    assert list(kwargs["features"]["label"]) == ["dominant", "a", "b", ""]
    assert (data[:, 1] > high[1]).all()  # right of the tissue
    assert low[0] <= data[:, 0].min() and data[:, 0].max() <= high[0]  # within its height
    assert np.all(np.diff(data[:3, 0]) > 0)  # top to bottom
    assert data[3, 1] > data[:3, 1].max()  # the end of the longest name
    assert kwargs["size"][0] == 0 == kwargs["size"][3] and (kwargs["size"][1:3] > 0).all()  # title and end: no marker
    np.testing.assert_allclose(kwargs["face_color"][1:3], [[1, 0, 0, 1], [0, 1, 0, 1]])
    assert kwargs["metadata"]["napari_casper"]["kind"] == LEGEND_KIND
    with pytest.raises(ValueError, match="2 categories but 1 colours"):
        legend_layer(["a", "b"], ["#ff0000"], (low, high), name="L")


def test_text_layer_is_text_only():
    data, kwargs, kind = text_layer(np.array([[0, 0], [0, 5]]), ["left", "right"], name="titles")
    assert kind == "points" and data.shape == (2, 2) and not kwargs["size"].any()
    assert list(kwargs["features"]["label"]) == ["left", "right"] and kwargs["text"]["string"] == "{label}"
