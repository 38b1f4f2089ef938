"""Converters: AnnData(+image) and the legacy ST layout to SpatialData, with bad-input errors."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import drosophila_atlas, mob_path, shared_path

from napari_casper.errors import CasperInputError
from napari_casper.io.convert import (
    anndata_to_spatialdata,
    estimate_spot_diameter,
    legacy_st_to_spatialdata,
    read_image_file,
)


@pytest.fixture(scope="module")
def mob1():
    return ad.read_h5ad(mob_path("MOB1"))


def test_anndata_with_image_makes_spots_table_and_image(mob1):
    sdata = anndata_to_spatialdata(mob1, mob_path("MOB1").with_suffix(".jpg"))
    assert set(sdata.images) == {"image"} and set(sdata.shapes) == {"spots"} and set(sdata.tables) == {"table"}
    spots = sdata.shapes["spots"]
    np.testing.assert_allclose(np.c_[spots.geometry.x, spots.geometry.y], mob1.obsm["spatial"])
    # legacy ST: 100 um spots on a 200 um grid -> diameter is half the nearest-neighbour pitch
    assert spots["radius"].iloc[0] * 2 == pytest.approx(estimate_spot_diameter(mob1.obsm["spatial"]))
    assert 14 < spots["radius"].iloc[0] * 2 < 18
    table = sdata.tables["table"]
    assert table.uns["spatialdata_attrs"]["region"] == "spots"
    assert (table.var_names == mob1.var_names).all()
    assert "region" not in mob1.obs  # the caller's AnnData is untouched


def test_large_image_becomes_multiscale():
    he = read_image_file(shared_path("her2st", "C2.jpg"))
    c2 = ad.read_h5ad(shared_path("her2st", "C2.h5ad"))
    sdata = anndata_to_spatialdata(c2, he)
    tree = sdata.images["image"]
    assert "scale0" in tree and "scale1" in tree
    assert 120 < sdata.shapes["spots"]["radius"].iloc[0] * 2 < 150  # ~130 px at full resolution


def test_legacy_st_layout_round_trip(tmp_path, mob1):
    counts = pd.DataFrame(mob1.X.toarray(), index=mob1.obs_names, columns=mob1.var["gene_ids"])
    counts.to_csv(tmp_path / "stdata.tsv", sep="\t")
    array_xy = np.array([[float(v) for v in name.split("x")] for name in mob1.obs_names])
    positions = pd.DataFrame(
        {
            "x": array_xy[:, 0],
            "y": array_xy[:, 1],
            "new_x": array_xy[:, 0],
            "new_y": array_xy[:, 1],
            "pixel_x": mob1.obsm["spatial"][:, 0],
            "pixel_y": mob1.obsm["spatial"][:, 1],
            "selected": 1,
        }
    )
    extra = positions.iloc[:3].assign(x=99, y=99, selected=0)  # spots not under tissue are dropped
    pd.concat([positions, extra]).to_csv(tmp_path / "spots.tsv", sep="\t", index=False)
    sdata = legacy_st_to_spatialdata(tmp_path / "stdata.tsv", tmp_path / "spots.tsv", mob_path("MOB1").with_suffix(".jpg"))
    table = sdata.tables["table"]
    assert table.n_obs == mob1.n_obs
    np.testing.assert_allclose(table.X, mob1.X.toarray())
    np.testing.assert_allclose(np.c_[sdata.shapes["spots"].geometry.x], mob1.obsm["spatial"][:, :1])


def test_missing_coordinates_error(mob1):
    bare = ad.AnnData(mob1.X[:5])
    with pytest.raises(CasperInputError, match=r"no spatial coordinates.*obsm\['spatial'\]"):
        anndata_to_spatialdata(bare)


def test_nan_coordinates_error(mob1):
    broken = mob1[:20].copy()
    broken.obsm["spatial"][3, 0] = np.nan
    with pytest.raises(CasperInputError, match="1 spots have NaN"):
        anndata_to_spatialdata(broken)


def test_spot_diameter_needs_two_spots_unless_a_default_is_given(mob1):
    one = mob1[:1].copy()
    with pytest.raises(CasperInputError, match=r"from 1 spot\(s\): it needs at least 2"):
        anndata_to_spatialdata(one)
    assert anndata_to_spatialdata(one, spot_diameter=3.0).shapes["spots"]["radius"].iloc[0] == 1.5
    assert estimate_spot_diameter(np.zeros((1, 2)), default=1.0) == 1.0
    assert estimate_spot_diameter(np.array([[0.0, 0.0], [4.0, 0.0]]), 1.0) == 4.0
    with pytest.raises(CasperInputError, match="share coordinates"):
        estimate_spot_diameter(np.zeros((3, 2)))


def test_three_d_coordinates_need_axes():
    atlas = drosophila_atlas()
    with pytest.raises(CasperInputError, match="3-D coordinates"):
        anndata_to_spatialdata(atlas)
    sdata = anndata_to_spatialdata(atlas, axes=(0, 2))
    assert len(sdata.shapes["spots"]) == atlas.n_obs


def test_coordinates_in_another_resolution_error(mob1):
    wrong = mob1.copy()
    wrong.obsm["spatial"] = wrong.obsm["spatial"] * 4  # e.g. coordinates of a 4x larger image
    with pytest.raises(CasperInputError, match="another resolution or coordinate system"):
        anndata_to_spatialdata(wrong, mob_path("MOB1").with_suffix(".jpg"))


def test_unreadable_image_error(tmp_path):
    fake = tmp_path / "slide.jpg"
    fake.write_bytes(b"not an image")
    with pytest.raises(CasperInputError, match="cannot read image"):
        read_image_file(fake)
