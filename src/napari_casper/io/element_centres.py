"""Centres and sizes of cells drawn as polygons or labels, so they can be used as spots.

A table may annotate polygons (MERSCOPE cells, Visium HD bins) or labels (Xenium, CosMx
segmentation) instead of circles. napari-casper's widgets work on spot centres: for a polygon
that is its centroid, for a label the mean position of its pixels; the spot's diameter is the
diameter of the disc of the same area. Labels are read in bands of rows (a whole-slide labels
image need not fit in memory).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: rows of a labels image read at a time
BAND_ROWS = 2048


def polygon_centres(shapes) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """``(n, 2)`` x, y centroids, equal-area diameters and the index of a polygon shapes element."""
    geometry = shapes.geometry
    centroid = geometry.centroid
    xy = np.c_[centroid.x.to_numpy(), centroid.y.to_numpy()]
    diameter = 2.0 * np.sqrt(np.clip(geometry.area.to_numpy(dtype=float), 0, None) / np.pi)
    return xy, diameter, shapes.index


def label_centres(labels) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """``(n, 2)`` x, y pixel centres, equal-area diameters and ids of every label (0 is background)
    of a (y, x) labels DataArray (the full-resolution level)."""
    labels = labels.transpose("y", "x").data
    height = labels.shape[0]
    sums: dict[str, np.ndarray] = {}
    for top in range(0, height, BAND_ROWS):
        band = np.asarray(labels[top : top + BAND_ROWS])
        ids = band.ravel().astype(np.int64)
        if ids.size == 0:
            continue
        rows, cols = np.indices(band.shape)
        size = int(ids.max()) + 1
        for key, weights in (("n", None), ("y", (rows + top).ravel()), ("x", cols.ravel())):
            counted = np.bincount(ids, weights=weights, minlength=size).astype(float)
            previous = sums.get(key, np.zeros(0))
            if len(previous) < size:
                previous = np.pad(previous, (0, size - len(previous)))
            previous[: len(counted)] += counted
            sums[key] = previous
    if not sums:
        return np.zeros((0, 2)), np.zeros(0), pd.Index([], dtype=np.int64)
    present = np.flatnonzero(sums["n"] > 0)
    present = present[present > 0]
    n = sums["n"][present]
    # pixel (r, c) at (y, x) = (r, c), as napari draws a labels layer, so the centres sit on what is seen
    xy = np.c_[sums["x"][present] / n, sums["y"][present] / n]
    return xy, 2.0 * np.sqrt(n / np.pi), pd.Index(present, dtype=np.int64)
