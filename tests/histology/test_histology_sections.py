"""Loading .h5ad + jpg pairs: coordinates, reduced decoding of large JPEGs, validation."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from histology_data import her2_path, mob_path

from napari_casper.errors import CasperInputError
from napari_casper.histology.sections import HistologySection, choose_reduction, load_section, read_jpeg


def test_mob_loads_at_full_resolution():
    sec = load_section(mob_path("MOB1"))
    assert sec.image.shape == (1905, 1905, 3)
    assert sec.n_spots == sec.expression.n_obs == len(sec.coords)
    assert np.allclose(sec.coords, sec.expression.obsm["spatial"])
    assert 14 < sec.spot_diameter_px < 18


def test_her2_decodes_reduced_and_rescales_coordinates():
    full = ad.read_h5ad(her2_path("C3"))
    sec = load_section(her2_path("C3"), patch_size=32)  # spot ~136 px -> decode at 1/4
    assert 2200 < sec.image.shape[0] < 2600
    scale = sec.coords[:, 0] / full.obsm["spatial"][:, 0]
    assert np.allclose(scale, scale[0]) and 0.24 < scale[0] < 0.26
    assert 32 <= sec.spot_diameter_px < 36
    assert choose_reduction(136, 64) == 2 and choose_reduction(16, 32) == 1


def test_inconsistent_input_is_explained():
    sec = load_section(mob_path("MOB2"))
    with pytest.raises(CasperInputError, match="must match"):
        HistologySection(sec.image, sec.coords[:10], 16.0, expression=sec.expression)
    with pytest.raises(CasperInputError, match="positive"):
        HistologySection(sec.image, sec.coords, 0.0)
    with pytest.raises(CasperInputError, match="does not exist"):
        load_section(mob_path("MOB2"), image_path="/nonexistent.jpg")


def test_images_are_read_through_read_image_file_tiff_too(tmp_path):
    import tifffile
    from PIL import Image

    jpg = mob_path("MOB1").with_suffix(".jpg")
    pixels, scale = read_jpeg(jpg)
    assert pixels.shape == (1905, 1905, 3) and scale == 1.0
    tif = tmp_path / "MOB1.tif"
    tifffile.imwrite(tif, pixels)
    again, _ = read_jpeg(tif)
    np.testing.assert_array_equal(again, pixels)
    half, scale = read_jpeg(tif, reduce=2)  # no draft mode for a TIFF: reduced after reading
    assert half.shape == (953, 953, 3) and scale == pytest.approx(953 / 1905)
    quarter, scale = read_jpeg(jpg, reduce=4)  # a JPEG decodes reduced (draft mode)
    assert quarter.shape == (477, 477, 3) and scale == pytest.approx(477 / 1905)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(jpg.read_bytes()[:5000])
    for reduce in (1, 4):
        with pytest.raises(CasperInputError, match="cut.jpg"):
            read_jpeg(truncated, reduce)
    Image.fromarray(pixels[:, :, 0]).save(tmp_path / "grey.png")  # a grey image becomes RGB
    assert read_jpeg(tmp_path / "grey.png")[0].shape == (1905, 1905, 3)
