"""Handcrafted patch features: the baseline that the learned encoder must beat.

Per scale (1x/2x/4x spot diameter): RGB mean and std, haematoxylin/eosin/DAB optical-density
mean and std (colour deconvolution), and gradient-magnitude mean and std of the grey image
(texture). 14 numbers per scale, 42 for three scales. The features are computed on the resized
multi-scale patches of :func:`~napari_casper.histology.patches.extract_patches`.
"""

from __future__ import annotations

import numpy as np

from napari_casper.errors import TrainingCancelled
from napari_casper.histology.patches import HED_FROM_RGB, optical_density_table
from napari_casper.runtime.control import CancelFlag, is_cancelled

_STATS = ("mean", "std")


def feature_names(n_scales: int) -> list[str]:
    """Names of the columns returned by :func:`handcrafted_features` for ``n_scales`` scales."""
    channels = ["R", "G", "B", "H", "E", "D", "grad"]
    return [f"s{s}_{c}_{stat}" for s in range(n_scales) for c in channels for stat in _STATS]


#: optical density of each uint8 intensity, float32
_OD = optical_density_table().astype(np.float32)


def handcrafted_features(patches: np.ndarray, *, chunk: int = 256, cancel: CancelFlag | None = None) -> np.ndarray:
    """Colour, stain and texture statistics of multi-scale patches.

    Parameters
    ----------
    patches
        ``(n_spots, n_scales, P, P, 3)`` uint8 (from ``extract_patches``).
    cancel
        ``threading.Event`` or callable, checked before every ``chunk`` of spots.

    Returns
    -------
    ``(n_spots, 14 * n_scales)`` float32, columns named by :func:`feature_names`.
    Each channel is laid out as one contiguous row of pixels and the optical density is a lookup
    table: 2-3x faster than per-axis statistics of ``(P, P, channel)`` images (same values within 3e-5).
    """
    patches = np.asarray(patches)
    if patches.ndim != 5 or patches.shape[-1] != 3:
        raise ValueError(f"expected (n_spots, n_scales, P, P, 3) patches, got shape {patches.shape}")
    n, s, side = patches.shape[:3]
    out = np.empty((n, s, 7, 2), dtype=np.float32)
    for start in range(0, n, chunk):
        if is_cancelled(cancel):
            raise TrainingCancelled("computing patch features cancelled")
        block = patches[start : start + chunk]
        m = block.shape[0] * s
        planes = np.ascontiguousarray(block.reshape(m, side * side, 3).transpose(0, 2, 1))  # (m, 3, pixels)
        channels = np.empty((m, 7, side * side), dtype=np.float32)
        np.multiply(planes, np.float32(1.0 / 255.0), out=channels[:, :3])
        np.matmul(HED_FROM_RGB.T, _OD[planes], out=channels[:, 3:6])
        grey = channels[:, :3].mean(axis=1).reshape(m, side, side)
        gy, gx = np.gradient(grey, axis=(-2, -1))
        channels[:, 6] = np.sqrt(gx * gx + gy * gy).reshape(m, side * side)
        out[start : start + chunk, :, :, 0] = channels.mean(axis=-1, dtype=np.float64).reshape(-1, s, 7)
        out[start : start + chunk, :, :, 1] = channels.std(axis=-1).reshape(-1, s, 7)
    return out.reshape(n, s * 14)
