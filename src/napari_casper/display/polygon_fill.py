"""Polygons filled into a label image by a compiled scanline loop that runs without the GIL.

Drawing 36,000 cell polygons one by one from Python (skimage.draw) takes ~1.5 s of a worker
thread that needs the GIL all along; the GUI thread beside it then runs ~30x slower (each of its
many short calls waits out the worker's turn of the GIL) and napari stalls. The loop here is
compiled by numba (``nogil``, cached on disk; :mod:`napari_casper._widgets.common.compile_ahead`
compiles it at set-up) and holds no lock while it fills.

A pixel gets a polygon's label when its centre is inside the polygon (even-odd rule, as
skimage.draw.polygon); pixel ``(r, c)`` has its centre at ``(y, x) = (r, c)``. Later polygons
overwrite earlier ones where they overlap.
"""

from __future__ import annotations

import numpy as np

_KERNEL = None


def _kernel():
    global _KERNEL
    if _KERNEL is None:
        from numba import njit

        @njit(nogil=True, cache=True)
        def fill(xs, ys, starts, labels, image):  # pragma: no cover - compiled
            height, width = image.shape
            crossings = np.empty(64, dtype=np.float64)
            for p in range(len(starts) - 1):
                a, b = starts[p], starts[p + 1]
                n = b - a
                if n < 3:
                    continue
                if crossings.size < n:
                    crossings = np.empty(n, dtype=np.float64)
                top, bottom = ys[a], ys[a]
                for i in range(a, b):
                    top = min(top, ys[i])
                    bottom = max(bottom, ys[i])
                r0 = max(int(np.ceil(top)), 0)
                r1 = min(int(np.floor(bottom)), height - 1)
                for r in range(r0, r1 + 1):
                    k = 0
                    for i in range(n):
                        j = i + 1 if i + 1 < n else 0
                        y0, y1 = ys[a + i], ys[a + j]
                        if (y0 <= r < y1) or (y1 <= r < y0):
                            x0, x1 = xs[a + i], xs[a + j]
                            crossings[k] = x0 + (r - y0) * (x1 - x0) / (y1 - y0)
                            k += 1
                    cuts = np.sort(crossings[:k])
                    for m in range(0, k - 1, 2):
                        c0 = max(int(np.ceil(cuts[m])), 0)
                        c1 = min(int(np.floor(cuts[m + 1])), width - 1)
                        for c in range(c0, c1 + 1):
                            image[r, c] = labels[p]

        _KERNEL = fill
    return _KERNEL


def fill_polygons(rings_rc: list[np.ndarray], labels, shape: tuple[int, int]) -> np.ndarray:
    """An int32 image of ``shape`` with each ring ((n, 2) row, col vertices, in pixels) filled with its label."""
    if not rings_rc:
        return np.zeros(shape, dtype=np.int32)
    sizes = np.array([len(ring) for ring in rings_rc], dtype=np.int64)
    return fill_polygon_array(np.concatenate(rings_rc), sizes, labels, shape)


def fill_polygon_array(vertices_rc: np.ndarray, sizes, labels, shape: tuple[int, int]) -> np.ndarray:
    """:func:`fill_polygons` for rings given as one ``(n, 2)`` (row, col) array and each ring's vertex count."""
    image = np.zeros(shape, dtype=np.int32)
    starts = np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))]).astype(np.int64)
    vertices = np.asarray(vertices_rc, dtype=np.float64)
    _kernel()(np.ascontiguousarray(vertices[:, 1]), np.ascontiguousarray(vertices[:, 0]), starts, np.asarray(labels, dtype=np.int32), image)
    return image


def exercise() -> None:
    """Compile (or load from numba's cache) the kernel: two small polygons."""
    square = np.array([[1.0, 1.0], [1.0, 6.0], [6.0, 6.0], [6.0, 1.0]])
    fill_polygons([square, square + 2], [1, 2], (10, 10))
