"""The compiled polygon fill draws exactly the pixels skimage.draw.polygon draws (centre inside, even-odd)."""

from __future__ import annotations

import numpy as np
from skimage.draw import polygon

from napari_casper.display.polygon_fill import fill_polygons


def test_same_pixels_as_skimage_for_convex_concave_and_clipped_polygons():
    rng = np.random.default_rng(1)
    rings = []
    for _ in range(500):
        centre = rng.uniform(-20, 420, 2)  # some cross the image border
        k = int(rng.integers(3, 12))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radius = rng.uniform(1.5, 25, k)  # star-shaped: often concave
        rings.append(np.c_[centre[0] + radius * np.sin(angles), centre[1] + radius * np.cos(angles)])
    labels = np.arange(1, len(rings) + 1)
    drawn = fill_polygons(rings, labels, (400, 300))
    expected = np.zeros((400, 300), np.int32)
    for ring, label in zip(rings, labels):
        rr, cc = polygon(ring[:, 0], ring[:, 1], shape=expected.shape)
        expected[rr, cc] = label  # later polygons overwrite earlier ones, as in fill_polygons
    assert (expected > 0).sum() > 20_000
    np.testing.assert_array_equal(drawn, expected)


def test_degenerate_rings_draw_nothing():
    line = np.array([[1.0, 1.0], [5.0, 5.0]])
    assert not fill_polygons([line], [7], (10, 10)).any()
    assert fill_polygons([], [], (3, 4)).shape == (3, 4)
