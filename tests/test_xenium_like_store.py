"""A Xenium-like SpatialData store built from ../shared's Xenium mouse-brain cells.

As spatialdata-io writes a Xenium run: a multiscale ``cell_labels`` raster (1 um pixels, one label
per cell), ``cell_boundaries`` polygons, and a table annotating the labels (``region`` =
``cell_labels``, ``instance_key`` = the label id). The cells of the left third of the section
(x < 2000 um, 8.3k cells) are split in two: one half is the section, 600 cells of the other half
the single-cell reference, so no held-out value of a section cell is ever seen in training.
Train + impute + save + reopen on the labels-annotated table, and the values drawn on the labels
themselves.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import shared_path

from napari_casper.casper.workflow import CasperWorkflow
from napari_casper.display.layers import spatialdata_to_layers
from napari_casper.io.store_writes import save_spatialdata
from napari_casper.io.stores import read_spatialdata

RADIUS = 5  # pixels (= um) of each drawn cell
LEFT_OF = 2000.0  # um: the part of the section used
REFERENCE_CELLS = 600
HELD_OUT = ["Gad1", "Slc17a7", "Gfap", "Pvalb", "Sst", "Aqp4"]


def xenium_like(directory):
    """Write the store; return its path, the section's counts (cells x genes, AnnData) and the label ids."""
    import geopandas as gpd
    from shapely.geometry import Polygon
    from skimage.draw import disk
    from spatialdata import SpatialData
    from spatialdata.models import Labels2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Translation

    source = ad.read_h5ad(shared_path("xenium", "xenium_mouse_brain.h5ad"))
    source = source[np.asarray(source.obsm["spatial"])[:, 0] < LEFT_OF].copy()  # keeps the suite quick
    rng = np.random.default_rng(0)
    order = rng.permutation(source.n_obs)
    section = source[np.sort(order[: source.n_obs // 2])].copy()
    reference = source[np.sort(order[source.n_obs // 2 :][:REFERENCE_CELLS])].copy()
    xy = np.asarray(section.obsm["spatial"], dtype=float)[:, :2]
    origin = np.floor(xy.min(axis=0)) - 2 * RADIUS
    shape = tuple((np.ceil(xy.max(axis=0) - origin) + 2 * RADIUS).astype(int)[::-1])
    ids = np.arange(1, section.n_obs + 1)
    raster = np.zeros(shape, dtype=np.int32)
    for (x, y), label in zip(xy - origin, ids):
        rr, cc = disk((y, x), RADIUS, shape=shape)
        raster[rr, cc] = label
    to_global = {"global": Translation(origin[::-1], axes=("y", "x"))}
    labels = Labels2DModel.parse(raster, dims=("y", "x"), scale_factors=[2, 2], transformations=to_global)
    angles = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    ring = np.c_[np.cos(angles), np.sin(angles)] * RADIUS
    boundaries = ShapesModel.parse(gpd.GeoDataFrame(geometry=[Polygon(ring + p) for p in xy], index=ids))
    table = ad.AnnData(section.X.copy(), var=pd.DataFrame(index=section.var_names))
    table.obs["region"] = pd.Categorical(["cell_labels"] * section.n_obs)
    table.obs["cell_id"] = ids
    table = TableModel.parse(table, region="cell_labels", region_key="region", instance_key="cell_id")
    ref = ad.AnnData(reference.X.copy(), var=pd.DataFrame(index=reference.var_names))
    sdata = SpatialData(
        labels={"cell_labels": labels}, shapes={"cell_boundaries": boundaries}, tables={"table": table, "reference": ref}
    )
    return save_spatialdata(sdata, directory / "xenium_like.zarr"), section, ids


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return xenium_like(tmp_path_factory.mktemp("xenium"))


def test_every_element_opens_and_the_table_annotates_the_labels(store):
    path, section, ids = store
    sdata = read_spatialdata(path)
    layers = {kw["name"]: (data, kw, kind) for data, kw, kind in spatialdata_to_layers(sdata, source=str(path))}
    data, kwargs, kind = layers["cell_labels"]
    assert kind == "labels" and kwargs["multiscale"] and len(data) == 3
    boundaries = layers.get("cell_boundaries") or layers[f"cell_boundaries ({len(ids):,} polygons as labels)"]
    assert boundaries[2] == ("shapes" if len(ids) <= 5000 else "labels")  # above 5,000 polygons: one label image
    centres, ckw, _ = layers["cell_labels (centres)"]
    assert not ckw["visible"] and len(centres) == len(ids)
    world = centres @ ckw["affine"][:2, :2].T + ckw["affine"][:2, 2]  # (y, x)
    truth = pd.DataFrame(np.asarray(section.obsm["spatial"])[:, :2], index=ids).loc[ckw["metadata"]["napari_casper"]["instance_ids"]]
    error = np.linalg.norm(world[:, ::-1] - truth.to_numpy(), axis=1)
    assert np.median(error) < 0.5 and np.percentile(error, 95) < RADIUS, (np.median(error), error.max())


def test_train_impute_save_reopen_on_the_labels_table_draws_values_on_the_labels(store):
    path, section, ids = store
    sdata = read_spatialdata(path)
    layers = {kw["name"]: (data, kw, kind) for data, kw, kind in spatialdata_to_layers(sdata, source=str(path))}
    meta = dict(layers["cell_labels (centres)"][1]["metadata"]["napari_casper"])
    workflow = CasperWorkflow.from_layer_metadata(meta, sdata.tables["reference"], centroid_method="cells")
    truth = {g: workflow.measured(g) for g in HELD_OUT}
    workflow.st = workflow.st[:, [g for g in workflow.st.var_names if g not in HELD_OUT]].copy()  # hidden from every cell
    workflow.train(max_steps=60, seed=0, reference_weight=0.0)
    predictions = workflow.predict(HELD_OUT)
    pcc = {g: float(np.corrcoef(predictions[g], truth[g])[0, 1]) for g in HELD_OUT}
    assert np.mean(list(pcc.values())) > 0.5, pcc

    name = workflow.save_results(path, HELD_OUT)
    reopened = read_spatialdata(path)
    assert reopened.tables[name].uns["spatialdata_attrs"]["region"] == "cell_labels"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for table in reopened.tables.values():
            if "spatialdata_attrs" in table.uns:
                reopened.validate_table_in_spatialdata(table)
    again = {kw["name"]: (data, kw, kind) for data, kw, kind in spatialdata_to_layers(reopened, source=str(path))}
    levels, kwargs, kind = again["casper:Gad1"]
    assert kind == "image" and kwargs["multiscale"]  # drawn on the labels, not on discs
    labels = np.asarray(reopened.labels["cell_labels"]["scale0"]["image"])
    finest = np.asarray(levels[0])
    assert finest.shape == labels.shape
    order = pd.Series(np.arange(len(workflow.instance_ids)), index=np.asarray(workflow.instance_ids))
    inside = labels > 0
    expected = predictions["Gad1"].to_numpy()[order.loc[labels[inside]].to_numpy()]
    np.testing.assert_allclose(finest[inside], expected, rtol=1e-5)
    assert np.isnan(finest[~inside]).all()
    hover = kwargs["metadata"]["napari_casper"]["hover"]
    row, col = np.argwhere(labels == ids[100])[0]
    world = kwargs["affine"] @ [row, col, 1.0]
    value = predictions["Gad1"].to_numpy()[order.loc[ids[100]]]
    assert hover.describe(world[:2]) == f"cell: {ids[100]}, value: {value:.4g}"
