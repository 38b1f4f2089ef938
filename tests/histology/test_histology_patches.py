"""Multi-scale patch extraction, stain normalisation and augmentation on real MOB H&E."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch
import xarray as xr
from histology_data import mob_sections  # noqa: F401 - fixture

from napari_casper.errors import CasperInputError
from napari_casper.histology.patches import (
    PAD_VALUE,
    augment_batch,
    extract_patches,
    normalize_stain,
    suggest_patch_size,
)
from napari_casper.io.convert import estimate_spot_diameter


def test_shapes_and_scales(mob_sections):
    sec = mob_sections[0]
    patches = extract_patches(sec.image, sec.coords[:10], sec.spot_diameter_px, patch_size=32)
    assert patches.shape == (10, 3, 32, 32, 3) and patches.dtype == np.uint8
    # the 1x patch is the centre of the 2x patch (same tissue, twice the zoom)
    centre = patches[:, 1, 8:24, 8:24].astype(float).mean(axis=(1, 2))
    assert np.allclose(centre, patches[:, 0].astype(float).mean(axis=(1, 2)), atol=6)


def test_border_spots_are_padded_white(mob_sections):
    sec = mob_sections[0]
    h, w = sec.image.shape[:2]
    corners = np.array([[0.0, 0.0], [w - 1.0, h - 1.0], [-40.0, 10.0]])
    patches = extract_patches(sec.image, corners, 30.0, patch_size=32)
    assert patches.shape == (3, 3, 32, 32, 3)
    # a spot centred on the top-left corner: its top-left quadrant lies outside the image
    assert (patches[0, 2, :12, :12] == PAD_VALUE).all()
    # a spot entirely outside the image is all padding
    assert (patches[2, 0] == PAD_VALUE).all()


def _per_window(image, xy, diameter, patch_size):
    """The plain definition: read each spot's largest window (white outside the image), centre-crop each
    scale, resize it on its own."""
    from napari_casper.histology.patches import ImageWindows, resize_patch

    windows, sides = ImageWindows(image), [max(1, int(round(s * diameter))) for s in (1, 2, 4)]
    big = max(sides)
    out = np.empty((len(xy), 3, patch_size, patch_size, 3), np.uint8)
    for i, (x, y) in enumerate(xy):
        x0, y0 = int(np.floor(x - big / 2 + 0.5)), int(np.floor(y - big / 2 + 0.5))
        window = windows.read(y0, y0 + big, x0, x0 + big)
        for j, side in enumerate(sides):
            off = (big - side) // 2
            out[i, j] = resize_patch(window[off : off + side, off : off + side], patch_size)
    return out


@pytest.mark.parametrize("patch_size", [16, 32])  # every window shrinks (resized from one region) / the 1x one grows
def test_patches_equal_the_per_window_definition_at_the_border_too(mob_sections, patch_size):
    sec = mob_sections[3]
    h, w = sec.image.shape[:2]
    xy = np.vstack([sec.coords[::7], [[3.0, 5.0], [w - 2.0, h - 9.0], [-20.0, 40.0]]])  # and spots over the edges
    got = extract_patches(sec.image, xy, sec.spot_diameter_px, patch_size=patch_size)
    assert np.array_equal(got, _per_window(sec.image, xy, sec.spot_diameter_px, patch_size))


def test_lazy_arrays_read_the_same_patches(mob_sections):
    sec = mob_sections[1]
    coords = sec.coords[:20]
    expected = extract_patches(sec.image, coords, sec.spot_diameter_px)
    lazy = da.from_array(sec.image, chunks=(256, 256, 3))
    assert np.array_equal(extract_patches(lazy, coords, sec.spot_diameter_px), expected)
    channel_first = xr.DataArray(np.moveaxis(sec.image, -1, 0), dims=("c", "y", "x"))
    assert np.array_equal(extract_patches(channel_first, coords, sec.spot_diameter_px), expected)


def test_disk_cache_round_trip(mob_sections, tmp_path):
    sec = mob_sections[0]
    first = extract_patches(sec.image, sec.coords, sec.spot_diameter_px, cache_dir=tmp_path, cache_key="MOB1")
    files = list(tmp_path.glob("patches-*.npy"))
    assert len(files) == 1
    second = extract_patches(np.zeros_like(sec.image), sec.coords, sec.spot_diameter_px, cache_dir=tmp_path, cache_key="MOB1")
    assert np.array_equal(first, second)  # read back from the cache, not from the (blank) image


def test_bad_input_is_explained(mob_sections):
    sec = mob_sections[0]
    with pytest.raises(CasperInputError, match="spot_diameter_px"):
        extract_patches(sec.image, sec.coords, 0)
    with pytest.raises(CasperInputError, match=r"\(n_spots, 2\)"):
        extract_patches(sec.image, sec.coords[:, :1], 20)
    with pytest.raises(CasperInputError, match="3-D"):
        extract_patches(sec.image[..., 0], sec.coords, 20)


def test_spot_diameter_and_patch_size_from_layout(mob_sections):
    # legacy ST: 100 um spots 200 um apart -> half the nearest-neighbour distance (~32 px on MOB)
    assert 14 < estimate_spot_diameter(mob_sections[0].coords) < 18
    assert suggest_patch_size(16) == 32 and suggest_patch_size(136) == 64


def test_stain_normalisation_brings_sections_together(mob_sections):
    raw = [s.patches((1, 2, 4), 32) for s in mob_sections]
    norm = [normalize_stain(p) for p in raw]
    spread_raw = np.std([p.mean() for p in raw])
    spread_norm = np.std([p.mean() for p in norm])
    assert norm[0].shape == raw[0].shape and norm[0].dtype == np.uint8
    assert spread_norm < 0.5 * spread_raw


def test_augmentation_keeps_shape_and_scales_concentric(mob_sections):
    patches = torch.from_numpy(mob_sections[0].patches((1, 2, 4), 32)[:16]).permute(0, 1, 4, 2, 3).float() / 255
    gen = torch.Generator().manual_seed(0)
    out = augment_batch(patches, gen, stain_jitter=0.0)
    assert out.shape == patches.shape
    # flips / rotations only permute pixels: per-patch means are unchanged
    assert torch.allclose(out.mean(dim=(2, 3, 4)), patches.mean(dim=(2, 3, 4)), atol=1e-5)
    again = augment_batch(patches, torch.Generator().manual_seed(0), stain_jitter=0.0)
    assert torch.equal(out, again)
    jittered = augment_batch(patches, torch.Generator().manual_seed(1), stain_jitter=0.05)
    assert 0 < (jittered - augment_batch(patches, torch.Generator().manual_seed(1), stain_jitter=0.0)).abs().mean() < 0.05
