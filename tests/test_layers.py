"""SpatialData -> napari layer-data tuples: alignment, spot size, features (no viewer needed)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from conftest import data_path, mob_path

from napari_casper.display.layers import spatialdata_to_layers, spots_layer
from napari_casper.errors import CasperInputError
from napari_casper.io.convert import anndata_to_spatialdata, read_image_file
from napari_casper.io.samples import load_drosophila


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """Tissue = pixels clearly darker or more saturated than the slide background."""
    from scipy import ndimage

    rgb = rgb.astype(float)
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    darkness = 255 - rgb.mean(axis=2)
    background_sat, background_dark = np.median(saturation), np.median(darkness)
    mask = (saturation > background_sat + 12) | (darkness > background_dark + 25)
    return ndimage.binary_closing(mask, iterations=5)


def world_to_image_pixels(points_yx: np.ndarray, points_affine: np.ndarray, image_affine: np.ndarray) -> np.ndarray:
    homogeneous = np.c_[points_yx, np.ones(len(points_yx))]
    world = homogeneous @ points_affine.T
    return (world @ np.linalg.inv(image_affine).T)[:, :2]


@pytest.mark.parametrize("section", [("mob", "MOB1"), ("her2st", "C2")])
def test_spots_sit_on_tissue(section):
    folder, name = section
    adata = ad.read_h5ad(data_path(folder, f"{name}.h5ad"))
    rgb = read_image_file(data_path(folder, f"{name}.jpg"))
    layers = spatialdata_to_layers(anndata_to_spatialdata(adata, rgb))
    (_, image_kw, _), (points, points_kw, kind) = layers
    assert kind == "points"
    step = max(1, max(rgb.shape[:2]) // 2000)  # judge tissue on a <= 2000 px thumbnail
    rows_cols = np.round(world_to_image_pixels(points, points_kw["affine"], image_kw["affine"]) / step).astype(int)
    mask = tissue_mask(rgb[::step, ::step])
    rows_cols = np.minimum(rows_cols, np.array(mask.shape) - 1)
    inside = mask[rows_cols[:, 0], rows_cols[:, 1]].mean()
    assert inside > 0.95, f"only {inside:.0%} of {name}'s spots fall on tissue"
    # the same spots mirrored (x <-> y) must land off tissue far more often: the check can fail
    swapped = mask[np.clip(rows_cols[:, 1], 0, mask.shape[0] - 1), np.clip(rows_cols[:, 0], 0, mask.shape[1] - 1)]
    shifted = mask[rows_cols[:, 0], np.clip(rows_cols[:, 1] + mask.shape[1] // 3, 0, mask.shape[1] - 1)].mean()
    assert min(swapped.mean(), shifted) < inside - 0.2


def test_drosophila_image_transformation_puts_cells_on_the_embryo():
    sdata = load_drosophila()
    (image, image_kw, _), (cells, cells_kw, _) = spatialdata_to_layers(sdata)
    picture = np.asarray(image)
    assert picture.ndim == 2  # one grey channel, split by channel_axis
    # image pixels are 2 um; the affine scales them to microns
    np.testing.assert_allclose(np.diag(image_kw["affine"])[:2], [2.0, 2.0])
    rows_cols = np.round(world_to_image_pixels(cells, cells_kw["affine"], image_kw["affine"])).astype(int)
    under_cells = picture[rows_cols[:, 0], rows_cols[:, 1]]
    corners = picture[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert under_cells.min() > corners.max()  # every cell sits on the bright embryo


def test_points_size_is_spot_diameter_in_world_units():
    sdata = load_drosophila()
    _, kwargs, _ = spots_layer(sdata, "cells", "global")
    radius = sdata.shapes["cells"]["radius"].to_numpy()
    np.testing.assert_allclose(kwargs["size"], 2 * radius)  # identity transform: 1 unit = 1 um


def test_size_scales_with_the_affine():
    from spatialdata.transformations import Scale, set_transformation

    sdata = load_drosophila()
    set_transformation(sdata.shapes["cells"], Scale([3.0, 3.0], axes=("x", "y")), to_coordinate_system="global")
    _, kwargs, _ = spots_layer(sdata, "cells", "global")
    np.testing.assert_allclose(kwargs["size"], 6 * sdata.shapes["cells"]["radius"].to_numpy())
    np.testing.assert_allclose(np.diag(kwargs["affine"])[:2], [3.0, 3.0])


def test_features_follow_instance_ids_not_row_order():
    adata = ad.read_h5ad(mob_path("MOB1"))
    sdata = anndata_to_spatialdata(adata)
    table = sdata.tables["table"]
    order = np.random.default_rng(0).permutation(table.n_obs)
    shuffled = table[order].copy()
    shuffled.uns["spatialdata_attrs"] = table.uns["spatialdata_attrs"]
    shuffled.obs["depth"] = np.arange(shuffled.n_obs, dtype=float)  # an obs column, known per row
    sdata.tables["table"] = shuffled
    _, kwargs, _ = spots_layer(sdata, "spots", "global")
    features = kwargs["features"]
    ids = kwargs["metadata"]["napari_casper"]["instance_ids"]
    np.testing.assert_array_equal(features["spot"].to_numpy(), ids)
    key = shuffled.uns["spatialdata_attrs"]["instance_key"]
    expected = shuffled.obs.set_index(key)["depth"].reindex(ids).to_numpy()
    np.testing.assert_allclose(features["depth"].to_numpy(), expected)


def test_features_are_spot_id_and_obs_not_genes():
    """Hovering lists every feature: genes stay out (the Genes widget shows them one at a time)."""
    sdata = load_drosophila()
    _, kwargs, _ = spots_layer(sdata, "cells", "global")
    atlas = sdata.tables["atlas"]
    columns = set(kwargs["features"].columns)
    assert "spot" in columns and not columns & set(map(str, atlas.var_names))


def test_unknown_coordinate_system_error():
    with pytest.raises(CasperInputError, match="coordinate system 'aligned' is not in this object"):
        spatialdata_to_layers(load_drosophila(), "aligned")
