"""Handcrafted patch features: the baseline that the learned encoder must beat.

Per scale (1x/2x/4x spot diameter): RGB mean and std, haematoxylin/eosin/DAB optical-density
mean and std (colour deconvolution), and gradient-magnitude mean and std of the grey image
(texture). 14 numbers per scale, 42 for three scales. The features are computed on the resized
multi-scale patches of :func:`~napari_casper.histology.patches.extract_patches`.
"""

from __future__ import annotations

import numpy as np

from napari_casper.errors import TrainingCancelled
from napari_casper.histology.patches import HED_FROM_RGB
from napari_casper.runtime.control import CancelFlag, is_cancelled

_STATS = ("mean", "std")


def feature_names(n_scales: int) -> list[str]:
    """Names of the columns returned by :func:`handcrafted_features` for ``n_scales`` scales."""
    channels = ["R", "G", "B", "H", "E", "D", "grad"]
    return [f"s{s}_{c}_{stat}" for s in range(n_scales) for c in channels for stat in _STATS]


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
    """
    patches = np.asarray(patches)
    if patches.ndim != 5 or patches.shape[-1] != 3:
        raise ValueError(f"expected (n_spots, n_scales, P, P, 3) patches, got shape {patches.shape}")
    n, s = patches.shape[:2]
    out = np.empty((n, s, 7, 2), dtype=np.float32)
    for start in range(0, n, chunk):
        if is_cancelled(cancel):
            raise TrainingCancelled("computing patch features cancelled")
        block = patches[start : start + chunk].astype(np.float32) / 255.0  # (b, s, P, P, 3)
        od = -np.log(np.clip(block, 1.0 / 255.0, 1.0))
        hed = od @ HED_FROM_RGB
        grey = block.mean(axis=-1)
        gy, gx = np.gradient(grey, axis=(-2, -1))
        grad = np.sqrt(gx * gx + gy * gy)[..., None]
        channels = np.concatenate([block, hed, grad], axis=-1)  # (b, s, P, P, 7)
        out[start : start + chunk, :, :, 0] = channels.mean(axis=(2, 3))
        out[start : start + chunk, :, :, 1] = channels.std(axis=(2, 3))
    return out.reshape(n, s * 14)
