"""SpatialData glue of the histology core on real MOB sections: transformations, genes, saving."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from histology_data import mob_path
from spatialdata.transformations import Scale, Sequence, Translation, get_transformation, set_transformation

from napari_casper.display.layers import spatialdata_to_layers
from napari_casper.errors import CasperInputError
from napari_casper.histology.genes import log_normalised, parse_gene_names, training_genes, variable_genes
from napari_casper.histology.predict import HistologyPrediction
from napari_casper.histology.spatial import (
    section_from_spatialdata,
    slide_image,
    spot_table_pairs,
    spots_in_image,
)
from napari_casper.histology.store import save_histology_predictions
from napari_casper.histology.tissue import virtual_spots_for
from napari_casper.io.convert import spots_element
from napari_casper.io.elements import affine_yx, spot_rows, spot_table
from napari_casper.io.store_writes import save_spatialdata
from napari_casper.io.stores import read_h5ad_spatial, read_spatialdata

# the image is drawn at half size and shifted; the spots are stored in units of 2 image pixels
IMAGE_TO_WORLD = Sequence([Scale([0.5, 0.5], axes=("y", "x")), Translation([100.0, -30.0], axes=("y", "x"))])
SPOT_UNIT = 2.0  # image pixels per intrinsic spot unit


def world_of_pixels(xy: np.ndarray) -> np.ndarray:
    """(x, y) image pixels -> (x, y) in the "global" system of :func:`transformed_mob`."""
    return xy * 0.5 + np.array([-30.0, 100.0])


def transformed_mob(name: str = "MOB1", *, multiscale: bool = False):
    """MOB section whose image and spots have different, non-identity transformations to "global"."""
    adata = ad.read_h5ad(mob_path(name))
    sdata = read_h5ad_spatial(mob_path(name))
    if multiscale:
        sdata.images["image"] = _pyramid(np.asarray(sdata.images["image"].data))
    set_transformation(sdata.images["image"], IMAGE_TO_WORLD, to_coordinate_system="global")
    # spots: intrinsic units of SPOT_UNIT image px, mapped to world by Scale(0.5 * SPOT_UNIT) + same shift
    world = world_of_pixels(adata.obsm["spatial"])
    intrinsic = (world - np.array([-30.0, 100.0])) / (0.5 * SPOT_UNIT)
    to_world = Sequence([Scale([0.5 * SPOT_UNIT] * 2, axes=("x", "y")), Translation([-30.0, 100.0], axes=("x", "y"))])
    sdata.shapes["spots"] = spots_element(intrinsic, 15.87 / SPOT_UNIT, transformation=to_world)
    return sdata, adata


def _pyramid(array_cyx: np.ndarray):
    from spatialdata.models import Image2DModel

    return Image2DModel.parse(array_cyx, dims=("c", "y", "x"), c_coords=["r", "g", "b"], scale_factors=[2], chunks=(3, 512, 512))


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_section_coordinates_go_through_the_transformations():
    sdata, adata = transformed_mob()
    section = section_from_spatialdata(sdata)
    np.testing.assert_allclose(section.coords, adata.obsm["spatial"], atol=1e-6)
    assert section.spot_diameter_px == pytest.approx(15.87)
    assert section.image.shape == (1905, 1905, 3) and section.image.dtype == np.uint8
    assert type(section.image).__module__.startswith("dask")  # lazy
    assert (section.expression.X != adata.X).nnz == 0 and section.name == "spots"
    # the spots element without its table is an H&E-only slide: coordinates, no counts
    del sdata.tables["table"]
    query = section_from_spatialdata(sdata, with_expression=False)
    assert query.expression is None and np.allclose(query.coords, adata.obsm["spatial"])


def test_multiscale_image_uses_full_resolution_for_spots_and_a_coarse_level_for_tissue():
    sdata, adata = transformed_mob(multiscale=True)
    slide = slide_image(sdata)
    assert [level.shape for level in slide.levels] == [(1905, 1905, 3), (952, 952, 3)]
    coords, diameter, _ = spots_in_image(sdata, "spots", slide)
    np.testing.assert_allclose(coords, adata.obsm["spatial"], atol=1e-6)
    coarse = slide.detect_tissue(max_size=512)  # level 1 (952 px) is read, not the full image
    fine = slide.detect_tissue(max_size=1905)
    assert coarse.image_shape == fine.image_shape == (1905, 1905)
    assert coarse.contains(coords).mean() > 0.95
    grid = np.mgrid[0:1905:20, 0:1905:20].reshape(2, -1).T[:, ::-1].astype(float)
    assert (coarse.contains(grid) == fine.contains(grid)).mean() > 0.97


def test_inputs_that_cannot_make_a_section_are_explained():
    sdata, _ = transformed_mob()
    del sdata.tables["table"]
    with pytest.raises(CasperInputError, match="no expression table.*prediction only"):
        section_from_spatialdata(sdata, spots_name="spots")
    sdata, _ = transformed_mob()
    set_transformation(sdata.shapes["spots"], Translation([5000.0, 0.0], axes=("x", "y")), to_coordinate_system="global")
    with pytest.raises(CasperInputError, match="not aligned"):
        section_from_spatialdata(sdata)
    sdata, _ = transformed_mob()
    del sdata.images["image"]
    with pytest.raises(CasperInputError, match="no RGB \\(H&E\\) image"):
        section_from_spatialdata(sdata)
    tissue = slide_image(transformed_mob()[0]).detect_tissue()
    with pytest.raises(CasperInputError, match="no tissue found.*lower the pitch"):
        virtual_spots_for(tissue, 16.0, pitch_px=5000.0)  # the only grid point lies off the image


def test_training_genes_resolve_symbols_and_refuse_unknown_names():
    sections = [section_from_spatialdata(read_h5ad_spatial(mob_path(n)), name=n) for n in ("MOB1", "MOB2")]
    genes, labels = training_genes(sections, 50, parse_gene_names("Penk, Nrgn;Penk"))
    assert len(genes) >= 50 and [labels[g] for g in genes[:2]] == ["Penk", "Nrgn"]
    assert sections[0].expression.var.loc[genes[0], "gene_ids"] == "ENSMUSG00000045573"  # Penk's Ensembl id
    top = variable_genes(sections, 50)
    values = np.concatenate([log_normalised(s.expression, top) for s in sections])
    assert np.all(np.diff(values.var(axis=0)) <= 1e-6)  # most variable first
    assert training_genes(sections, 50, ["ENSMUSG00000045573"])[0][0] == "Penk"  # an Ensembl id via var["gene_ids"]
    with pytest.raises(CasperInputError, match="NoSuchGene, Penkk not found.*gene_ids"):
        training_genes(sections, 50, ["Penk", "NoSuchGene", "Penkk"])


def stand_in_prediction(adata: ad.AnnData, coords: np.ndarray, n_genes: int = 5) -> HistologyPrediction:
    """A prediction object holding the section's measured values (what is saved is what is read back)."""
    genes = list(adata.var_names[:n_genes])
    values = log_normalised(adata, genes)
    return HistologyPrediction(values, values / 10, genes, coords, np.zeros((len(coords), 4), np.float32), "ensemble")


def test_save_round_trip_versions_names_and_never_overwrites(tmp_path):
    sdata, adata = transformed_mob()
    store = save_spatialdata(sdata, tmp_path / "mob1.zarr")
    slide = slide_image(read_spatialdata(store))
    coords = adata.obsm["spatial"][:50]
    prediction = stand_in_prediction(adata[:50], coords)
    names = save_histology_predictions(store, prediction, slide, 15.87, source_spots="spots", source_ids=np.arange(50),
                                       labels={prediction.genes[0]: "first"})  # fmt: skip
    assert names == ("histology_spots", "histology_predictions")
    assert save_histology_predictions(store, prediction, slide, 15.87) == ("histology_spots_2", "histology_predictions_2")
    before = tree_digest(store)
    with pytest.raises(CasperInputError, match="already has an element named 'histology_spots'"):
        save_histology_predictions(store, prediction, slide, 15.87, shapes_name="histology_spots", table_name="new_table")
    assert tree_digest(store) == before

    back = read_spatialdata(store)
    assert {"image", "spots", "histology_spots", "histology_spots_2"} <= set(back.images) | set(back.shapes)
    table = back.tables["histology_predictions"]
    np.testing.assert_allclose(table.X, prediction.expression, rtol=1e-6)
    np.testing.assert_allclose(table.layers["uncertainty"], prediction.uncertainty, rtol=1e-6)
    info = table.uns["napari_casper"]
    assert info["kind"] == "histology_predictions" and info["spots"] == "spots" and info["image"] == "image"
    assert list(table.var["name"][:2]) == ["first", prediction.genes[1]]
    assert table.uns["spatialdata_attrs"]["region"] == "histology_spots"
    # the spots carry the image's transformation: their world positions are those of the pixels
    shapes = back.shapes["histology_spots"]
    assert get_transformation(shapes, get_all=True).keys() == get_transformation(back.images["image"], get_all=True).keys()
    xy = np.c_[shapes.geometry.x, shapes.geometry.y]
    yx1 = np.c_[xy[:, ::-1], np.ones(len(xy))]
    world = (yx1 @ affine_yx(shapes, "global").T)[:, 1::-1]
    np.testing.assert_allclose(world, world_of_pixels(coords), atol=1e-6)
    assert shapes["radius"].iloc[0] == pytest.approx(15.87 / 2)
    # predictions are never offered as training counts
    assert spot_table_pairs(back) == [("spots", "table")]


def test_reader_reopens_a_store_with_predictions(tmp_path):
    sdata, adata = transformed_mob()
    store = save_spatialdata(sdata, tmp_path / "mob1.zarr")
    slide = slide_image(read_spatialdata(store))
    prediction = stand_in_prediction(adata, adata.obsm["spatial"])
    save_histology_predictions(store, prediction, slide, 15.87)
    back = read_spatialdata(store)
    layers = {kwargs["name"]: (data, kwargs, kind) for data, kwargs, kind in spatialdata_to_layers(back)}
    assert {"image", "spots", "histology_spots"} <= set(layers)
    data, kwargs, kind = layers["histology_spots"]
    # the layer carries the spot ids (hover); the predicted genes stay in the table annotating it
    assert kind == "points" and "spot" in kwargs["features"].columns and len(kwargs["features"]) == len(data)
    table = back.tables[spot_table(back, "histology_spots").name]
    assert set(prediction.genes) <= set(table.var_names)
    rows = spot_rows(table, "histology_spots", kwargs["features"]["spot"].to_numpy(), missing="error").rows
    gene = prediction.genes[0]
    np.testing.assert_allclose(np.asarray(table[rows, gene].X).ravel(), prediction.expression[:, 0], rtol=1e-6)
    world = (np.c_[data, np.ones(len(data))] @ kwargs["affine"].T)[:, :2]
    image_affine = layers["image"][1]["affine"]
    expected = (np.c_[adata.obsm["spatial"][:, ::-1], np.ones(adata.n_obs)] @ image_affine.T)[:, :2]
    np.testing.assert_allclose(world, expected, atol=1e-6)


def test_predictions_at_cells_drawn_as_labels_are_a_table_annotating_them(tmp_path):
    """MOB1's spots redrawn as a labels image on the H&E (a table annotating the labels): the spots are
    found on the slide at their true pixels, and the saved predictions annotate the same labels."""
    import warnings

    import pandas as pd
    from skimage.draw import disk
    from spatialdata.models import Labels2DModel, TableModel

    from napari_casper.display.gene_display import table_genes

    sdata, adata = transformed_mob()
    height, width = sdata.images["image"].shape[-2:]
    raster = np.zeros((height, width), dtype=np.int32)
    ids = np.arange(1, adata.n_obs + 1) * 10  # label ids that are not positions
    for (x, y), label in zip(adata.obsm["spatial"], ids):
        rr, cc = disk((y, x), 7.0, shape=raster.shape)
        raster[rr, cc] = label
    sdata.labels["spot_labels"] = Labels2DModel.parse(raster, dims=("y", "x"), transformations={"global": IMAGE_TO_WORLD})
    counts = ad.AnnData(adata.X.copy(), var=pd.DataFrame(index=adata.var_names))
    counts.obs["region"] = pd.Categorical(["spot_labels"] * adata.n_obs)
    counts.obs["label"] = ids
    sdata.tables["spot_counts"] = TableModel.parse(counts, region="spot_labels", region_key="region", instance_key="label")
    store = save_spatialdata(sdata, tmp_path / "mob1_labels.zarr")
    back = read_spatialdata(store)
    slide = slide_image(back)
    pixels, diameter, found = spots_in_image(back, "spot_labels", slide)
    truth = pd.DataFrame(adata.obsm["spatial"], index=ids).loc[np.asarray(found)].to_numpy()
    assert np.abs(pixels - truth).max() < 0.6 and diameter == pytest.approx(14.0, rel=0.1)

    prediction = stand_in_prediction(adata[pd.Index(ids).get_indexer(found)], pixels)
    names = save_histology_predictions(store, prediction, slide, diameter, source_spots="spot_labels", source_ids=np.asarray(found))
    assert names == ("spot_labels", "histology_predictions")
    again = read_spatialdata(store)
    assert set(again.labels) == {"spot_labels"} and "histology_spots" not in again.shapes  # no new spots element
    table = again.tables["histology_predictions"]
    assert table.uns["spatialdata_attrs"]["region"] == "spot_labels"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again.validate_table_in_spatialdata(table)
    # the Genes dock reads it on the labels' centres, in their order
    genes = table_genes(again, "spot_labels", "histology_predictions", np.asarray(found)[::-1], transform="none")
    gene = prediction.genes[0]
    np.testing.assert_allclose(genes.values(gene), prediction.expression[::-1, 0], rtol=1e-6)


def test_a_slide_on_disk_has_a_cache_key_that_changes_with_its_image(tmp_path):
    """The embedding cache of a pretrained encoder is keyed by where the image lies and how it is now."""
    from napari_casper.histology.spatial import section_from_spatialdata, slide_image

    sdata = read_h5ad_spatial(mob_path("MOB1"))
    assert slide_image(sdata).cache_key is None  # in memory only: no key, nothing cached on disk
    from_h5ad = slide_image(sdata, source=mob_path("MOB1")).cache_key
    assert from_h5ad.startswith(str(mob_path("MOB1").resolve()))
    store = save_spatialdata(sdata, tmp_path / "mob1.zarr")
    reopened = read_spatialdata(store)
    key = slide_image(reopened).cache_key  # a store read from disk knows its path
    assert key.startswith(f"{store.resolve()}:image:") and section_from_spatialdata(reopened).cache_key == key
    import os

    element = store / "images" / "image"
    stamp = element.stat().st_mtime_ns
    os.utime(element, ns=(stamp, stamp + 10**9))  # the image element written anew (its folder replaced)
    assert slide_image(reopened).cache_key != key
