"""Multi-scale H&E patches around spot centres, read lazily and cached.

For every spot, square windows of side ``scale * spot_diameter_px`` (default scales 1x, 2x and
4x) are centred on the spot and resized to one common ``patch_size``. Only the largest window
is read from the image (the smaller ones are centre crops of it), so an image held as a dask
or xarray array is read window by window, never whole. Windows that reach past the image
border are padded with white (255), the colour of an empty glass slide.

Images are ``(H, W, 3)`` (or ``(H, W, 4)``, alpha dropped) uint8 arrays: numpy, dask or
xarray. A channel-first ``(3, H, W)`` array (SpatialData's layout) is accepted too; an
xarray ``DataArray`` is oriented by its ``c`` dimension name. Coordinates are ``(x, y)``
image pixels, like ``obsm["spatial"]``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from napari_casper.errors import CasperInputError, TrainingCancelled
from napari_casper.runtime.control import CancelFlag, is_cancelled

#: default context scales, in multiples of the spot diameter
DEFAULT_SCALES: tuple[float, ...] = (1.0, 2.0, 4.0)
#: value of padding outside the image (white glass)
PAD_VALUE = 255
#: ``cancel`` is checked (and ``progress`` called) every this many spots while patches are read
CANCEL_EVERY = 16
#: a lazy (dask, xarray) image whose spots' region holds at most this many bytes is read into memory
#: first, in bands of :data:`BAND_ROWS` rows (one read per band instead of one per spot: MOB 2.1 s -> 0.2 s)
PRELOAD_BYTES = 1 << 29
BAND_ROWS = 1024


class ImageWindows:
    """Random access to rectangular windows of an RGB image, without loading the whole image.

    Parameters
    ----------
    image
        ``(H, W, 3|4)`` or ``(3|4, H, W)`` array-like (numpy, dask, xarray), uint8.
    """

    def __init__(self, image) -> None:
        self.image = image
        shape = tuple(int(s) for s in image.shape)
        if len(shape) != 3:
            raise CasperInputError(
                f"the H&E image must be a 3-D (height, width, 3) RGB array; got shape {shape}"
            )
        self.channel_first = _is_channel_first(image, shape)
        if self.channel_first:
            n_channels, self.height, self.width = shape
        else:
            self.height, self.width, n_channels = shape
        if n_channels not in (3, 4):
            raise CasperInputError(
                f"the H&E image must have 3 (RGB) or 4 (RGBA) channels; got shape {shape}"
            )

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        return self.height, self.width

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Window ``[y0:y1, x0:x1]`` as ``(y1 - y0, x1 - x0, 3)`` uint8, white-padded outside."""
        out = np.full((y1 - y0, x1 - x0, 3), PAD_VALUE, dtype=np.uint8)
        cy0, cy1 = max(y0, 0), min(y1, self.height)
        cx0, cx1 = max(x0, 0), min(x1, self.width)
        if cy1 <= cy0 or cx1 <= cx0:
            return out
        if self.channel_first:
            block = _materialise(self.image[:3, cy0:cy1, cx0:cx1])
            block = np.moveaxis(block, 0, -1)
        else:
            block = _materialise(self.image[cy0:cy1, cx0:cx1, :3])
        out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = _to_uint8(block)
        return out

    def preloaded(self, y0: int, y1: int, x0: int, x1: int, *, cancel: CancelFlag | None = None) -> ImageWindows:
        """Windows over an in-memory copy of ``[y0:y1, x0:x1]`` (clipped to the image) of a lazy image.

        Read in bands of :data:`BAND_ROWS` rows, ``cancel`` checked between bands. An in-memory
        (numpy) image, or a region over :data:`PRELOAD_BYTES`, is returned as it is (read per window).
        """
        cy0, cy1, cx0, cx1 = max(y0, 0), min(y1, self.height), max(x0, 0), min(x1, self.width)
        if isinstance(self.image, np.ndarray) or cy1 <= cy0 or cx1 <= cx0 or (cy1 - cy0) * (cx1 - cx0) * 3 > PRELOAD_BYTES:
            return self
        pixels = np.empty((cy1 - cy0, cx1 - cx0, 3), dtype=np.uint8)
        for top in range(cy0, cy1, BAND_ROWS):
            if is_cancelled(cancel):
                raise TrainingCancelled("reading the image cancelled")
            bottom = min(top + BAND_ROWS, cy1)
            pixels[top - cy0 : bottom - cy0] = self.read(top, bottom, cx0, cx1)
        return _LoadedRegion(pixels, cy0, cx0, self.height, self.width)

    def thumbnail(self, max_size: int = 1024) -> tuple[np.ndarray, float]:
        """Downsampled ``(h, w, 3)`` uint8 copy whose longer side is at most ``max_size``.

        Returns ``(thumbnail, scale)`` where ``scale`` = thumbnail pixels per image pixel.
        Strided reading first (cheap for lazy arrays), then an area-averaging resize.
        """
        longest = max(self.height, self.width)
        step = max(1, longest // (2 * max_size))  # keep 2x oversampling for the final box filter
        if self.channel_first:
            sub = np.moveaxis(_materialise(self.image[:3, ::step, ::step]), 0, -1)
        else:
            sub = _materialise(self.image[::step, ::step, :3])
        sub = _to_uint8(sub)
        factor = max_size / longest
        if factor >= 1.0:
            return np.ascontiguousarray(sub), 1.0
        w = max(1, round(self.width * factor))
        h = max(1, round(self.height * factor))
        thumb = np.asarray(Image.fromarray(sub).resize((w, h), Image.Resampling.BOX))
        return thumb, w / self.width


class _LoadedRegion(ImageWindows):
    """Windows of an image of which only ``pixels`` (at ``(y0, x0)``) are in memory; the rest is never read."""

    def __init__(self, pixels: np.ndarray, y0: int, x0: int, height: int, width: int) -> None:
        self.image, self.channel_first = pixels, False
        self.y0, self.x0, self.height, self.width = y0, x0, height, width

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        out = np.full((y1 - y0, x1 - x0, 3), PAD_VALUE, dtype=np.uint8)
        h, w = self.image.shape[:2]
        cy0, cy1 = max(y0, self.y0), min(y1, self.y0 + h)
        cx0, cx1 = max(x0, self.x0), min(x1, self.x0 + w)
        if cy1 > cy0 and cx1 > cx0:
            out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = self.image[cy0 - self.y0 : cy1 - self.y0, cx0 - self.x0 : cx1 - self.x0]
        return out


def _is_channel_first(image, shape: tuple[int, ...]) -> bool:
    dims = getattr(image, "dims", None)
    if dims is not None and "c" in dims:
        return tuple(dims).index("c") == 0
    return shape[0] in (3, 4) and shape[-1] not in (3, 4)


def _materialise(block) -> np.ndarray:
    if hasattr(block, "compute"):  # dask array, or xarray backed by dask
        block = block.compute()
    if hasattr(block, "values") and not isinstance(block, np.ndarray):  # xarray
        block = block.values
    return np.asarray(block)


def _to_uint8(block: np.ndarray) -> np.ndarray:
    if block.dtype == np.uint8:
        return block
    if np.issubdtype(block.dtype, np.floating) and block.size and float(block.max()) <= 1.0:
        block = block * 255.0
    return np.clip(block, 0, 255).astype(np.uint8)


def check_coords(coords, n_expected: int | None = None) -> np.ndarray:
    """``coords`` as a float64 ``(n_spots, 2)`` array of ``(x, y)``; clear error otherwise."""
    arr = np.asarray(coords, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise CasperInputError(
            f"spot coordinates must be an (n_spots, 2) array of (x, y) pixels; got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise CasperInputError("spot coordinates contain NaN or infinite values; drop those spots")
    if n_expected is not None and arr.shape[0] != n_expected:
        raise CasperInputError(
            f"{arr.shape[0]} spot coordinates for {n_expected} expression rows; they must match"
        )
    return arr


def extract_patches(
    image,
    coords,
    spot_diameter_px: float,
    *,
    scales: Sequence[float] = DEFAULT_SCALES,
    patch_size: int = 32,
    cache_dir: str | os.PathLike | None = None,
    cache_key: str | None = None,
    cancel: CancelFlag | None = None,
    progress=None,
) -> np.ndarray:
    """Multi-scale patches centred on every spot.

    Parameters
    ----------
    image
        H&E image, ``(H, W, 3)`` uint8 array-like (see module docstring).
    coords
        ``(n_spots, 2)`` spot centres as ``(x, y)`` pixels of ``image``.
    spot_diameter_px
        Spot diameter in image pixels (legacy ST: 100 um; Visium: 55 um).
    scales
        Window sides in multiples of the spot diameter, smallest first.
    patch_size
        Side in pixels of every returned patch (windows are area-resized to it).
    cache_dir, cache_key
        With both given, the result is stored as ``<cache_dir>/<hash>.npy`` and read back on
        the next call with the same key, coordinates and options. ``cache_key`` must identify
        the image (e.g. file path + modification time).
    cancel
        ``threading.Event`` or callable, checked every :data:`CANCEL_EVERY` spots; raises
        :class:`~napari_casper.errors.TrainingCancelled`.
    progress
        Called as ``progress(spots_done, n_spots)`` every :data:`CANCEL_EVERY` spots.

    Returns
    -------
    ``(n_spots, n_scales, patch_size, patch_size, 3)`` uint8.
    """
    xy = check_coords(coords)
    if not spot_diameter_px or spot_diameter_px <= 0:
        raise CasperInputError(f"spot_diameter_px must be a positive number of pixels; got {spot_diameter_px!r}")
    scales = tuple(float(s) for s in scales)
    cache_file = None
    if cache_dir is not None and cache_key is not None:
        digest = hashlib.sha1()
        digest.update(repr((cache_key, float(spot_diameter_px), scales, int(patch_size))).encode())
        digest.update(np.ascontiguousarray(xy).tobytes())
        cache_file = Path(cache_dir) / f"patches-{digest.hexdigest()[:20]}.npy"
        if cache_file.exists():
            cached = np.load(cache_file)
            if cached.shape == (len(xy), len(scales), patch_size, patch_size, 3):
                return cached
    windows = image if isinstance(image, ImageWindows) else ImageWindows(image)
    sides = _window_sides(spot_diameter_px, scales)
    big = max(sides)
    out = np.empty((len(xy), len(scales), patch_size, patch_size, 3), dtype=np.uint8)
    if len(xy):
        low, high = _spots_bounds(xy, big)
        windows = windows.preloaded(low[1], high[1], low[0], high[0], cancel=cancel)
    region = _region_image(windows, low, high) if len(xy) and min(sides) >= patch_size else None  # every window shrinks
    for i, (x, y) in enumerate(xy):
        if i % CANCEL_EVERY == 0:
            if is_cancelled(cancel):
                raise TrainingCancelled(f"reading patches cancelled at spot {i + 1} of {len(xy)}")
            if progress is not None:
                progress(i, len(xy))
        x0 = int(np.floor(x - big / 2 + 0.5))
        y0 = int(np.floor(y - big / 2 + 0.5))
        if region is not None:  # no window read: each is resized straight from the region
            for j, side in enumerate(sides):
                left, top = x0 - low[0] + (big - side) // 2, y0 - low[1] + (big - side) // 2
                out[i, j] = _box_resize(region, (left, top, left + side, top + side), patch_size)
            continue
        window = windows.read(y0, y0 + big, x0, x0 + big)
        for j, side in enumerate(sides):
            off = (big - side) // 2
            crop = window[off : off + side, off : off + side]
            out[i, j] = resize_patch(crop, patch_size)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npy")
        np.save(tmp, out)
        os.replace(tmp, cache_file)
    return out


def _window_sides(spot_diameter_px: float, scales: Sequence[float]) -> list[int]:
    """Window side in pixels of each scale (the largest is the one read)."""
    return [max(1, int(round(s * spot_diameter_px))) for s in scales]


def _spots_bounds(xy: np.ndarray, big: int) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` ``(x, y)`` pixel bounds of every spot's ``big`` x ``big`` window."""
    low = np.floor(xy.min(axis=0) - big / 2 + 0.5).astype(int)
    return low, np.floor(xy.max(axis=0) - big / 2 + 0.5).astype(int) + big


def preload_spots(image, coords, spot_diameter_px: float, scales: Sequence[float], *, cancel: CancelFlag | None = None) -> ImageWindows:
    """Windows over ``image`` with the region of every spot's largest window in memory (see
    :meth:`ImageWindows.preloaded`): :func:`extract_patches` of any subset of these spots then reads no more
    of a lazy image (so patches taken chunk by chunk read it once)."""
    windows = image if isinstance(image, ImageWindows) else ImageWindows(image)
    xy = check_coords(coords)
    if not len(xy):
        return windows
    low, high = _spots_bounds(xy, max(_window_sides(spot_diameter_px, scales)))
    return windows.preloaded(low[1], high[1], low[0], high[0], cancel=cancel)


def _region_image(windows: ImageWindows, low: np.ndarray, high: np.ndarray):
    """Every spot's windows as one PIL image (``[low, high)`` in ``(x, y)`` pixels, white outside the image), or
    None when that region is over :data:`PRELOAD_BYTES`. Resizing a box of it is what resizing the window gives."""
    if (high[0] - low[0]) * (high[1] - low[1]) * 3 > PRELOAD_BYTES:
        return None
    return Image.fromarray(windows.read(int(low[1]), int(high[1]), int(low[0]), int(high[0])))


def _box_resize(region, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The ``box`` (left, top, right, bottom) of ``region`` area-averaged to ``(size, size, 3)``: with the BOX filter each
    output pixel averages exactly its share of the box, so this equals :func:`resize_patch` of the cropped window."""
    if box[2] - box[0] == size:
        return np.asarray(region.crop(box))
    return np.asarray(region.resize((size, size), Image.Resampling.BOX, box=box))


def resize_patch(patch: np.ndarray, size: int) -> np.ndarray:
    """Square ``(s, s, 3)`` uint8 patch resized to ``(size, size, 3)``: area average down, bilinear up."""
    if patch.shape[0] == size and patch.shape[1] == size:
        return patch
    resample = Image.Resampling.BOX if patch.shape[0] > size else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(patch).resize((size, size), resample))


def suggest_patch_size(spot_diameter_px: float) -> int:
    """Patch side for a spot diameter (full-resolution pixels): 64 when the spot is at least 64 px wide, else 32.

    Measured on HER2+ (spots ~136 px): 64 px patches gave HEG-50 PCC 0.354 vs 0.341 with 32 px;
    on MOB (spots ~16 px) 32 px patches already upsample the spot.
    """
    return 64 if spot_diameter_px >= 64 else 32


# --- stain normalisation -------------------------------------------------------------------

#: reference optical-density mean and std per RGB channel (pooled over the MOB and HER2 sections)
REFERENCE_OD_MEAN = (0.50, 0.55, 0.28)
REFERENCE_OD_STD = (0.33, 0.30, 0.17)


def optical_density_table() -> np.ndarray:
    """``(256,)`` optical density ``-log(I / 255)`` of each uint8 intensity (0 counted as 1)."""
    return -np.log(np.maximum(np.arange(256), 1) / 255.0)


def channel_counts(patches: np.ndarray, *, chunk: int = 1024, cancel: CancelFlag | None = None) -> np.ndarray:
    """``(3, 256)`` histogram of the uint8 values of each RGB channel over every pixel of ``(n, ..., 3)`` patches."""
    counts = np.zeros((3, 256), dtype=np.int64)
    for start in range(0, len(patches), chunk):
        if is_cancelled(cancel):
            raise TrainingCancelled("stain normalisation cancelled")
        block = np.asarray(patches[start : start + chunk])
        counts += np.stack([np.bincount(block[..., c].ravel(), minlength=256) for c in range(3)])
    return counts


def normalize_stain(patches: np.ndarray, *, chunk: int = 1024, cancel: CancelFlag | None = None) -> np.ndarray:
    """Match one section's colour statistics to a fixed reference (Reinhard-style, in optical density).

    Per RGB channel, the optical density ``-log(I / 255)`` of every pixel of every patch of the
    section is standardised with the section's own mean and std, then rescaled to the reference
    mean and std. This removes most of the staining and scanning differences between sections
    (measured: it is what lets a model trained on three MOB sections transfer to the fourth).
    Uses only the section's image, so it applies equally to an H&E-only query slide.

    Parameters
    ----------
    patches
        ``(n_spots, n_scales, P, P, 3)`` uint8 patches of ONE section.

    cancel
        ``threading.Event`` or callable, checked before every ``chunk`` of spots (both passes).

    Returns
    -------
    Normalised patches, same shape, uint8.
    """
    patches = np.asarray(patches)
    lut = optical_density_table()
    counts = channel_counts(patches, chunk=chunk, cancel=cancel)
    total = counts.sum(axis=1)
    mean = (counts * lut).sum(axis=1) / total
    std = np.sqrt((counts * (lut - mean[:, None]) ** 2).sum(axis=1) / total)
    std = np.where(std > 1e-6, std, 1.0)
    out = np.empty_like(patches)
    for c in range(3):  # a lookup table per channel: 256 values, exact and fast
        od = (lut - mean[c]) / std[c] * REFERENCE_OD_STD[c] + REFERENCE_OD_MEAN[c]
        table = np.clip(np.round(255.0 * np.exp(-np.maximum(od, 0.0))), 0, 255).astype(np.uint8)
        for start in range(0, len(patches), chunk):
            if is_cancelled(cancel):
                raise TrainingCancelled("stain normalisation cancelled")
            out[start : start + chunk, ..., c] = table[patches[start : start + chunk, ..., c]]
    return out


# --- augmentation (training only) -----------------------------------------------------------

#: RGB optical density -> haematoxylin/eosin/DAB (Ruifrok & Johnston; scikit-image's matrix)
_RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
_RGB_FROM_HED /= np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED).astype(np.float32)
RGB_FROM_HED = _RGB_FROM_HED.astype(np.float32)


def augment_batch(batch, generator=None, *, stain_jitter: float = 0.05):
    """Random flips, 90-degree rotations and mild H&E stain jitter of a patch batch.

    Parameters
    ----------
    batch
        ``(B, n_scales, 3, P, P)`` float tensor in [0, 1]. Every scale of one spot gets the
        same geometric transform (the scales stay concentric).
    generator
        ``torch.Generator`` for reproducibility.
    stain_jitter
        Relative jitter of each stain's optical density (HED colour deconvolution):
        ``od * U(1 - s, 1 + s) + U(-s/2, s/2)`` per spot and stain.

    Returns a new tensor of the same shape.
    """
    import torch

    b = batch.shape[0]
    dev = batch.device
    out = batch
    flip = torch.rand(b, generator=generator).to(dev) < 0.5
    out = torch.where(flip[:, None, None, None, None], out.flip(-1), out)
    k = torch.randint(0, 4, (b,), generator=generator)
    rotated = [torch.rot90(out[i], int(k[i]), dims=(-2, -1)) for i in range(b)]
    out = torch.stack(rotated)
    if stain_jitter > 0:
        hed_from_rgb = torch.as_tensor(HED_FROM_RGB, device=dev)
        rgb_from_hed = torch.as_tensor(RGB_FROM_HED, device=dev)
        od = -torch.log(out.clamp(min=1.0 / 255.0))  # (B, S, 3, P, P)
        hed = torch.einsum("bschw,cd->bsdhw", od, hed_from_rgb)
        alpha = 1.0 + (torch.rand(b, 1, 3, 1, 1, generator=generator) * 2 - 1).to(dev) * stain_jitter
        beta = (torch.rand(b, 1, 3, 1, 1, generator=generator) - 0.5).to(dev) * stain_jitter
        hed = hed * alpha + beta
        od = torch.einsum("bsdhw,dc->bschw", hed, rgb_from_hed)
        out = torch.exp(-od).clamp(0.0, 1.0)
    return out
