"""Spots drawn as a raster, so that switching genes on many spots is instant.

napari recolours a Points layer in about 1 s per 100k points; swapping the data of an Image
layer that already exists is ~30 ms. :class:`SpotRaster` precomputes, once, which spot covers
each pixel of a grid (``index_map``); showing another gene is then one gather
``values[index_map]``. The raster's affine places it in the spots' coordinate system.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_casper.errors import CasperInputError

#: the raster's longest side, in pixels, when no pixel size is given (more spots: up to 4096)
DEFAULT_MAX_SIDE = 2048
LARGEST_SIDE = 4096


def default_max_side(n_spots: int) -> int:
    """Longest raster side for ``n_spots``: 2048 px, growing to 4096 px for ~1M spots (4 px/spot side)."""
    return int(min(LARGEST_SIDE, max(DEFAULT_MAX_SIDE, 4 * np.sqrt(max(n_spots, 1)))))


@dataclass
class SpotRaster:
    """Which spot covers each pixel.

    Attributes
    ----------
    index_map
        ``(height, width)`` int32 spot index per pixel, -1 where no spot is.
    pixel_size
        Side of one pixel in the coordinate units of the spots.
    origin
        ``(x0, y0)`` position of pixel (0, 0)'s corner, in coordinate units.
    n_spots
        Number of spots rasterised.
    """

    index_map: np.ndarray
    pixel_size: float
    origin: tuple[float, float]
    n_spots: int

    @classmethod
    def build(
        cls,
        coords_xy: np.ndarray,
        diameter: float | np.ndarray,
        *,
        pixel_size: float | None = None,
        max_side: int | None = None,
    ) -> SpotRaster:
        """Rasterise discs of ``diameter`` at ``coords_xy`` ``(n, 2)``.

        Where discs overlap, the spot whose centre is nearest to the pixel centre wins. ``pixel_size`` defaults to the
        finer of diameter / 4 and what keeps the longest side within ``max_side`` (default
        :func:`default_max_side`: 2048 px, growing to 4096 px for a million spots).
        """
        coords = np.asarray(coords_xy, dtype=float)
        if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) == 0:
            raise CasperInputError(f"need (n_spots, 2) coordinates to rasterise, got shape {coords.shape}.")
        radius = np.broadcast_to(np.asarray(diameter, dtype=float) / 2.0, (len(coords),))
        r_max = float(radius.max())
        max_side = default_max_side(len(coords)) if max_side is None else int(max_side)
        lo = coords.min(axis=0) - r_max
        extent = coords.max(axis=0) + r_max - lo
        if pixel_size is None:
            pixel_size = max(float(np.median(radius)) / 2.0, float(extent.max()) / max_side)
        width, height = (np.ceil(extent / pixel_size).astype(int) + 1).tolist()
        index_map = _splat_discs(coords, radius, lo, float(pixel_size), width, height)
        return cls(index_map=index_map, pixel_size=float(pixel_size), origin=(float(lo[0]), float(lo[1])), n_spots=len(coords))

    def render(self, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``(height, width)`` float32 image of per-spot ``values`` ``(n_spots,)``; NaN off spots."""
        values = np.asarray(values, dtype=np.float32)
        if values.shape != (self.n_spots,):
            raise CasperInputError(f"expected {self.n_spots} values (one per spot), got shape {values.shape}.")
        padded = np.append(values, np.float32(np.nan))  # index -1 reads the NaN at the end
        # "wrap" maps -1 to the last entry without a bounds check per pixel
        return np.take(padded, self.index_map, out=out, mode="wrap")

    def affine_yx(self) -> np.ndarray:
        """3x3 affine (napari (y, x) order) from raster pixels to the spots' coordinate system.

        napari puts pixel centres at integer positions, so pixel (0, 0) sits at origin + half a pixel.
        """
        half = self.pixel_size / 2.0
        return np.array(
            [
                [self.pixel_size, 0.0, self.origin[1] + half],
                [0.0, self.pixel_size, self.origin[0] + half],
                [0.0, 0.0, 1.0],
            ]
        )


def _splat_discs(coords, radius, lo, pixel_size: float, width: int, height: int) -> np.ndarray:
    """``(height, width)`` spot index per pixel: every disc stamped with a z-buffer on distance.

    Loops over the few pixel offsets a disc can reach (a 5 x 5 stencil for the default pixel
    size) and handles all spots at once per offset, so the cost grows with the number of spots,
    not with the raster's area (1M Xenium cells: ~2 s instead of ~30 s for a KD-tree query per
    pixel). A pixel belongs to the covering spot whose centre is nearest to the pixel centre.
    """
    cx = (coords[:, 0] - lo[0]) / pixel_size - 0.5  # centre in pixel units (pixel i's centre at i)
    cy = (coords[:, 1] - lo[1]) / pixel_size - 0.5
    r_pix = radius / pixel_size
    ix0 = np.rint(cx).astype(np.int64)
    iy0 = np.rint(cy).astype(np.int64)
    reach = int(np.ceil(float(r_pix.max()))) + 1
    best = np.full(height * width, np.inf, dtype=np.float64)
    index = np.full(height * width, -1, dtype=np.int32)
    spots = np.arange(len(coords), dtype=np.int32)
    for dy in range(-reach, reach + 1):
        iy = iy0 + dy
        for dx in range(-reach, reach + 1):
            ix = ix0 + dx
            dist = np.hypot(ix - cx, iy - cy)
            ok = (dist <= r_pix) & (ix >= 0) & (ix < width) & (iy >= 0) & (iy < height)
            if not ok.any():
                continue
            pixel = iy[ok] * width + ix[ok]
            d = dist[ok]
            np.minimum.at(best, pixel, d)
            win = d <= best[pixel]
            index[pixel[win]] = spots[ok][win]
    return index.reshape(height, width)
