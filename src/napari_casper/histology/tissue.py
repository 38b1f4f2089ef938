"""Tissue detection on an H&E thumbnail, and virtual spots on a grid inside the tissue.

Detection (on a thumbnail whose longer side is ``max_size`` pixels):

1. saturation (HSV) and optical density (``-log`` of the RGB transmission, summed) per pixel,
   both smoothed with a Gaussian of ``smooth_px`` thumbnail pixels;
2. tissue = saturation above its Otsu threshold *and* optical density above ``od_fraction``
   of its Otsu threshold (stained tissue is both coloured and dark; glass artefacts, shadows
   and grey slide borders are rarely both);
3. morphology: closing with a disk, hole filling, and removal of components smaller than
   ``min_component_fraction`` of the largest one.

The result is a :class:`TissueMask` that maps between thumbnail and image pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import gaussian, threshold_otsu
from skimage.morphology import disk

from napari_casper.errors import CasperInputError
from napari_casper.histology.patches import ImageWindows, check_coords

GRID_LAYOUTS = ("hex", "square")


@dataclass
class TissueMask:
    """Boolean tissue mask on a thumbnail of the image.

    Attributes
    ----------
    mask
        ``(h, w)`` bool, True on tissue (thumbnail pixels).
    scale
        Thumbnail pixels per image pixel.
    image_shape
        ``(H, W)`` of the full image.
    thresholds
        The saturation and optical-density thresholds used.
    """

    mask: np.ndarray
    scale: float
    image_shape: tuple[int, int]
    thresholds: dict

    @property
    def tissue_fraction(self) -> float:
        """Fraction of the image covered by tissue."""
        return float(self.mask.mean())

    def contains(self, coords) -> np.ndarray:
        """``(n,)`` bool: which ``(x, y)`` image-pixel points fall on tissue (outside the image: False)."""
        xy = check_coords(coords)
        col = np.floor(xy[:, 0] * self.scale).astype(int)
        row = np.floor(xy[:, 1] * self.scale).astype(int)
        h, w = self.mask.shape
        inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
        out = np.zeros(len(xy), dtype=bool)
        out[inside] = self.mask[row[inside], col[inside]]
        return out


def tissue_scores(thumbnail: np.ndarray, smooth_px: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed ``(saturation, optical_density)`` maps of an ``(h, w, 3)`` uint8 thumbnail."""
    rgb = np.asarray(thumbnail, dtype=np.float64)[..., :3] / 255.0
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    saturation = (high - low) / np.maximum(high, 1e-6)
    density = -np.log(np.clip(rgb, 1.0 / 255.0, 1.0)).sum(axis=-1)
    if smooth_px > 0:
        saturation = gaussian(saturation, smooth_px)
        density = gaussian(density, smooth_px)
    return saturation, density


def detect_tissue(
    image,
    *,
    max_size: int = 1024,
    smooth_px: float = 2.0,
    saturation_fraction: float = 0.8,
    od_fraction: float = 0.5,
    closing_px: int = 10,
    min_component_fraction: float = 0.05,
) -> TissueMask:
    """Find the tissue on an H&E image.

    Parameters
    ----------
    image
        ``(H, W, 3)`` uint8 array-like (numpy, dask, xarray; only a strided thumbnail is read).
    max_size
        Longer side of the thumbnail the detection runs on, in pixels.
    smooth_px
        Gaussian sigma (thumbnail pixels) applied to the colour scores.
    saturation_fraction
        Saturation threshold as a fraction of its Otsu threshold (lower keeps pale tissue).
    od_fraction
        Optical-density threshold as a fraction of its Otsu threshold (lower keeps pale tissue).
    closing_px
        Radius of the closing disk (thumbnail pixels) that bridges gaps inside the tissue.
    min_component_fraction
        Components smaller than this fraction of the largest one are dropped (dust, debris).
    """
    windows = image if isinstance(image, ImageWindows) else ImageWindows(image)
    thumb, scale = windows.thumbnail(max_size)
    saturation, density = tissue_scores(thumb, smooth_px)
    if np.ptp(saturation) < 1e-6 or np.ptp(density) < 1e-6:
        raise CasperInputError("the image is uniform: no tissue can be told from background")
    sat_t = float(threshold_otsu(saturation)) * saturation_fraction
    od_t = float(threshold_otsu(density)) * od_fraction
    mask = (saturation > sat_t) & (density > od_t)
    if closing_px > 0:
        pad = closing_px + 1  # so the closing does not stick to the border
        padded = np.pad(mask, pad)
        padded = ndi.binary_closing(padded, structure=disk(closing_px))
        mask = padded[pad:-pad, pad:-pad]
    mask = ndi.binary_fill_holes(mask)
    labels, n = ndi.label(mask)
    if n:
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.flatnonzero(sizes >= min_component_fraction * sizes.max()) + 1
        mask = np.isin(labels, keep)
    return TissueMask(mask, scale, windows.shape, {"saturation": sat_t, "optical_density": od_t})


def virtual_spots(
    tissue: TissueMask,
    pitch_px: float,
    *,
    layout: str = "hex",
    min_tissue_fraction: float = 0.5,
    footprint_px: float | None = None,
) -> np.ndarray:
    """Spot centres on a regular grid inside the tissue, for an H&E-only slide.

    Parameters
    ----------
    tissue
        From :func:`detect_tissue`.
    pitch_px
        Centre-to-centre distance in image pixels (legacy ST: 200 um; Visium: 100 um).
    layout
        ``"hex"`` (rows offset by half a pitch, row spacing ``pitch * sqrt(3) / 2``) or ``"square"``.
    min_tissue_fraction
        Keep a spot when its centre is on tissue and at least this fraction of its footprint is.
    footprint_px
        Diameter of the footprint checked, image pixels (default: half the pitch, the spot).

    Returns
    -------
    ``(n_spots, 2)`` float ``(x, y)`` image pixels, in row-major grid order.
    """
    if layout not in GRID_LAYOUTS:
        raise CasperInputError(f"unknown grid layout {layout!r}; choose one of {GRID_LAYOUTS}")
    if not pitch_px or pitch_px <= 0:
        raise CasperInputError(f"the grid pitch must be a positive number of pixels; got {pitch_px!r}")
    H, W = tissue.image_shape
    row_step = pitch_px * np.sqrt(3) / 2 if layout == "hex" else pitch_px
    rows = np.arange(pitch_px / 2, H, row_step)
    points = []
    for r, y in enumerate(rows):
        offset = pitch_px / 2 if (layout == "hex" and r % 2) else 0.0
        xs = np.arange(pitch_px / 2 + offset, W, pitch_px)
        points.append(np.column_stack([xs, np.full_like(xs, y)]))
    grid = np.concatenate(points) if points else np.zeros((0, 2))
    if len(grid) == 0:
        return grid
    diameter = footprint_px if footprint_px else pitch_px / 2
    keep = tissue.contains(grid) & (_footprint_coverage(tissue, grid, diameter) >= min_tissue_fraction)
    return grid[keep]


def _footprint_coverage(tissue: TissueMask, xy: np.ndarray, diameter_px: float) -> np.ndarray:
    """Fraction of tissue pixels in a disk of ``diameter_px`` around each point (sampled)."""
    radius = diameter_px / 2
    # 7 x 7 sample offsets inside the disk
    u = np.linspace(-radius, radius, 7)
    dx, dy = np.meshgrid(u, u)
    inside = dx**2 + dy**2 <= radius**2 + 1e-9
    offsets = np.column_stack([dx[inside], dy[inside]])
    samples = xy[:, None, :] + offsets[None, :, :]
    hits = tissue.contains(samples.reshape(-1, 2)).reshape(len(xy), -1)
    return hits.mean(axis=1)


def virtual_spots_for(tissue: TissueMask, spot_diameter_px: float, pitch_px: float | None = None, *, layout: str = "hex") -> np.ndarray:
    """Virtual spots of a slide without measured spots: :func:`virtual_spots` at ``pitch_px``
    (default twice the spot diameter, the legacy ST and Visium spacing), refusing an empty result.

    ``spot_diameter_px`` is the physical spot size the model was trained with, in this image's
    pixels; each spot's footprint (``min(diameter, pitch)``) must be half on tissue.
    """
    if not spot_diameter_px or spot_diameter_px <= 0:
        raise CasperInputError(f"the spot diameter must be a positive number of pixels; got {spot_diameter_px!r}")
    pitch = float(pitch_px) if pitch_px else 2.0 * float(spot_diameter_px)
    coords = virtual_spots(tissue, pitch, layout=layout, footprint_px=min(float(spot_diameter_px), pitch))
    if len(coords) == 0:
        raise CasperInputError(
            f"no tissue found for virtual spots ({tissue.tissue_fraction:.1%} of the image detected as tissue, "
            f"pitch {pitch:.1f} px): check that the image is an H&E slide, lower the pitch, or give measured spots."
        )
    return coords
