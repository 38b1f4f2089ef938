"""Tissue detection and virtual spots on real MOB and HER2+ H&E thumbnails."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from histology_data import her2_path, mob_path
from scipy.spatial import cKDTree

from napari_casper.errors import CasperInputError
from napari_casper.histology.sections import read_jpeg
from napari_casper.histology.tissue import detect_tissue, virtual_spots

SECTIONS = [("mob", "MOB1"), ("mob", "MOB3"), ("her2st", "C2"), ("her2st", "C4")]


def _load(dataset: str, name: str):
    path = mob_path(name) if dataset == "mob" else her2_path(name)
    image, scale = read_jpeg(path.with_suffix(".jpg"), 4 if dataset == "her2st" else 1)
    return image, ad.read_h5ad(path).obsm["spatial"] * scale


@pytest.mark.parametrize(("dataset", "name"), SECTIONS)
def test_tissue_mask_covers_the_measured_spots(dataset, name):
    image, spots = _load(dataset, name)
    tissue = detect_tissue(image)
    inside = tissue.contains(spots).mean()
    print(f"{name}: {inside:.1%} of spots on tissue, tissue covers {tissue.tissue_fraction:.1%} of the slide")
    assert inside > 0.95
    # the slide corners are glass, and the tissue is a minority of the slide
    h, w = tissue.mask.shape
    assert not tissue.mask[[0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1]].any()
    assert 0.05 < tissue.tissue_fraction < 0.3


@pytest.mark.parametrize("layout", ["hex", "square"])
def test_virtual_spots_lie_on_tissue_at_the_pitch(layout):
    image, spots = _load("mob", "MOB2")
    tissue = detect_tissue(image)
    pitch = 32.0
    grid = virtual_spots(tissue, pitch, layout=layout)
    assert tissue.contains(grid).all()
    dist, _ = cKDTree(grid).query(grid, k=2)
    assert np.allclose(np.median(dist[:, 1]), pitch, rtol=0.01)
    # about as many virtual spots as measured spots over the same tissue (same pitch)
    expected = len(spots) * (1.0 if layout == "hex" else np.sqrt(3) / 2)
    assert 0.8 * expected < len(grid) < 1.5 * expected


def test_bad_grid_and_blank_image_are_explained():
    image, _ = _load("mob", "MOB1")
    tissue = detect_tissue(image)
    with pytest.raises(CasperInputError, match="layout"):
        virtual_spots(tissue, 30, layout="triangle")
    with pytest.raises(CasperInputError, match="pitch"):
        virtual_spots(tissue, 0)
    with pytest.raises(CasperInputError, match="uniform"):
        detect_tissue(np.full((200, 200, 3), 240, np.uint8))
