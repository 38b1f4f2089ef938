"""Cells drawn as labels or polygons, with a table annotating them: train, impute, save, reopen.

The packaged Drosophila atlas (3039 cells, 84 genes) is redrawn as a labels raster (one label per
cell, 0.5 um pixels, placed by a SpatialData transformation) and as polygons (a hexagon per cell),
each with a copy of the atlas table annotating it. The centres CASPER uses are found from the
labels' pixels and the polygons' shapes, independently of the circles they came from.
"""

from __future__ import annotations

import anndata as ad
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Polygon

from napari_casper.casper.workflow import CasperWorkflow
from napari_casper.display.layers import spatialdata_to_layers, spots_layer
from napari_casper.io.elements import spot_element_names, spot_positions
from napari_casper.io.samples import load_drosophila
from napari_casper.io.store_writes import save_spatialdata
from napari_casper.io.stores import read_spatialdata

PIXEL = 0.5  # microns per labels pixel
CELL_RADIUS = 1.0  # microns: small enough that few cells touch in the 2-D projection
HELD_OUT = ["eve", "ftz", "hb", "Kr"]


def cells_as(kind: str):
    """The Drosophila sample with its cells as ``kind`` ("labels" or "polygons") and a table annotating them."""
    from skimage.draw import disk
    from spatialdata import SpatialData
    from spatialdata.models import Labels2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Scale, Sequence, Translation

    sample = load_drosophila()
    circles = sample.shapes["cells"]
    xy = np.c_[circles.geometry.x.to_numpy(), circles.geometry.y.to_numpy()]
    ids = circles.index.to_numpy() + 1  # label 0 is background
    atlas = sample.tables["atlas"]
    table = ad.AnnData(atlas.X.copy(), var=atlas.var.copy())
    table.obs["region"] = f"cells_{kind}"
    table.obs["region"] = table.obs["region"].astype("category")
    table.obs["cell_id"] = ids[atlas.obs["spot_id"].to_numpy()]
    elements: dict = {}
    if kind == "labels":
        origin = xy.min(axis=0) - 5
        shape = tuple(np.ceil((xy.max(axis=0) - origin + 5) / PIXEL).astype(int)[::-1])
        raster = np.zeros(shape, dtype=np.int32)
        for (x, y), label in zip(xy, ids):
            rr, cc = disk(((y - origin[1]) / PIXEL, (x - origin[0]) / PIXEL), CELL_RADIUS / PIXEL, shape=shape)
            raster[rr, cc] = label
        to_global = Sequence([Scale([PIXEL, PIXEL], axes=("y", "x")), Translation(origin[::-1], axes=("y", "x"))])
        elements["labels"] = {"cells_labels": Labels2DModel.parse(raster, dims=("y", "x"), transformations={"global": to_global})}
    else:
        angles = np.linspace(0, 2 * np.pi, 6, endpoint=False)
        hexagons = [Polygon(np.c_[x + CELL_RADIUS * np.cos(angles), y + CELL_RADIUS * np.sin(angles)]) for x, y in xy]
        frame = gpd.GeoDataFrame(geometry=hexagons, index=ids)
        elements["shapes"] = {"cells_polygons": ShapesModel.parse(frame)}
    table = TableModel.parse(table, region=f"cells_{kind}", region_key="region", instance_key="cell_id")
    tables = {"atlas_cells": table, "reference": sample.tables["reference"]}
    return SpatialData(images=dict(sample.images), tables=tables, **elements), xy, ids


@pytest.fixture(scope="module", params=["labels", "polygons"])
def cells(request):
    return request.param, *cells_as(request.param)


def world_centres(sdata, element):
    data, kwargs, _ = spots_layer(sdata, element, "global")
    affine = kwargs["affine"]
    yx = data @ affine[:2, :2].T + affine[:2, 2]
    return yx[:, ::-1], kwargs["metadata"]["napari_casper"]["instance_ids"]


def test_centres_of_labels_and_polygons_are_the_cells(cells):
    kind, sdata, xy, ids = cells
    element = f"cells_{kind}"
    assert element in spot_element_names(sdata)
    centres, found = world_centres(sdata, element)
    assert len(found) > 0.95 * len(ids)  # only cells that overlap others in the projection can be lost
    truth = dict(zip(ids, xy))
    error = np.linalg.norm(centres - np.array([truth[i] for i in found]), axis=1)
    assert np.median(error) < PIXEL / 2 and error.max() < 2 * CELL_RADIUS, (np.median(error), error.max())
    _, diameter, _ = spot_positions(sdata, element)
    scale = 1 / PIXEL if kind == "labels" else 1.0
    assert np.median(diameter) == pytest.approx(2 * CELL_RADIUS * scale, rel=0.15)


def test_train_impute_save_and_reopen_on_cells_a_table_annotates(cells, tmp_path):
    kind, sdata, _, _ = cells
    element = f"cells_{kind}"
    layers = {kw["name"]: (data, kw, k) for data, kw, k in spatialdata_to_layers(sdata)}
    centres = layers[f"{element} (centres)"]
    assert centres[2] == "points" and not centres[1]["visible"]  # the widgets' spots; the cells are drawn by:
    assert layers[element][2] == ("labels" if kind == "labels" else "shapes")
    meta = dict(centres[1]["metadata"]["napari_casper"], sdata=sdata)
    workflow = CasperWorkflow.from_layer_metadata(meta, sdata.tables["reference"], centroid_method="cells")
    truth = {g: workflow.measured(g) for g in HELD_OUT}
    workflow.st = workflow.st[:, [g for g in workflow.st.var_names if g not in HELD_OUT]].copy()
    workflow.train(max_steps=100, seed=0, reference_weight=0.0)
    predictions = workflow.predict(HELD_OUT)
    pcc = [np.corrcoef(predictions[g], truth[g])[0, 1] for g in HELD_OUT]
    assert np.mean(pcc) > 0.4, pcc  # as on the circles (tests/test_workflow.py)

    store = save_spatialdata(sdata, tmp_path / f"cells_{kind}.zarr")
    name = workflow.save_results(store, HELD_OUT)
    reopened = read_spatialdata(store)
    assert reopened.tables[name].uns["spatialdata_attrs"]["region"] == element  # annotates the same cells
    import warnings

    with warnings.catch_warnings():  # spatialdata's own check: every table annotates elements of this store
        warnings.simplefilter("error")
        for table in reopened.tables.values():
            reopened.validate_table_in_spatialdata(table)
    again = {kw["name"]: (data, kw, k) for data, kw, k in spatialdata_to_layers(reopened)}
    _, eve, layer_kind = again["casper:eve"]
    assert layer_kind == "image"  # drawn on the cells' own labels or polygons, not on discs
    hover = eve["metadata"]["napari_casper"]["hover"]
    centres, ids = world_centres(reopened, element)
    value = dict(zip(np.asarray(workflow.instance_ids), predictions["eve"].to_numpy()))
    said = [hover.describe(centres[i, ::-1]) for i in range(0, len(ids), 30)]
    expected = [f"cell: {ids[i]}, value: {value[ids[i]]:.4g}" for i in range(0, len(ids), 30)]
    agree = np.mean([a == b for a, b in zip(said, expected)])
    assert agree > 0.95, [(a, b) for a, b in zip(said, expected) if a != b][:5]  # a few centres lie in a neighbour


def test_one_table_annotating_labels_and_polygons_gives_each_its_own_rows():
    """A table whose rows annotate two elements (``region`` = [labels, polygons]): each element's
    centres layer joins only its own rows (the polygons' rows hold doubled values, so a wrong join shows)."""
    from spatialdata import SpatialData
    from spatialdata.models import TableModel

    labels, _, _ = cells_as("labels")
    polygons, _, _ = cells_as("polygons")
    a = labels.tables["atlas_cells"].copy()
    b = polygons.tables["atlas_cells"].copy()
    b.X = b.X * 2.0
    both = ad.concat([a, b], merge="same")
    both.obs["region"] = both.obs["region"].astype(str).astype("category")
    both.obs_names_make_unique()
    table = TableModel.parse(both, region=["cells_labels", "cells_polygons"], region_key="region", instance_key="cell_id")
    sdata = SpatialData(labels=dict(labels.labels), shapes=dict(polygons.shapes), tables={"cells": table})
    layers = {kw["name"]: (data, kw, k) for data, kw, k in spatialdata_to_layers(sdata)}
    reference = load_drosophila().tables["reference"]
    for element, rows in (("cells_labels", a), ("cells_polygons", b)):
        meta = dict(layers[f"{element} (centres)"][1]["metadata"]["napari_casper"], sdata=sdata)
        workflow = CasperWorkflow.from_layer_metadata(meta, reference, centroid_method="cells")
        ids = np.asarray(workflow.instance_ids)
        expected = pd.Series(rows[:, "eve"].X.ravel(), index=rows.obs["cell_id"].to_numpy()).loc[ids].to_numpy()
        np.testing.assert_allclose(workflow.measured("eve"), expected, rtol=1e-6)


def test_regions_statistics_on_cells_drawn_as_labels(cells):
    """A region drawn over the embryo's anterior half: the cells inside (by their centres) are the
    cells whose true positions are inside, and the region's mean expression is theirs."""
    from napari_casper.regions import RegionSet, region_statistics, spot_context

    kind, sdata, xy, ids = cells
    ctx = spot_context(sdata, f"cells_{kind}")
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    mid_x = (lo[0] + hi[0]) / 2
    box_xy = np.array([[lo[0] - 1, lo[1] - 1], [mid_x, lo[1] - 1], [mid_x, hi[1] + 1], [lo[0] - 1, hi[1] + 1]])
    regions = RegionSet([box_xy[:, ::-1]], ["polygon"], ["anterior"], coordinate_system="global")
    stats = region_statistics(ctx, regions, ["eve"], normalize="none")
    row = stats[(stats["level"] == "class") & (stats["name"] == "anterior")].iloc[0]
    truth_inside = {i for i, (x, _) in zip(ids, xy) if x < mid_x}
    found = set(np.asarray(ctx.instance_ids))
    expected = truth_inside & found
    assert abs(row["n_spots"] - len(expected)) <= 0.01 * len(expected) + 2, (row["n_spots"], len(expected))
    table = sdata.tables["atlas_cells"]
    eve = pd.Series(table[:, "eve"].X.ravel(), index=table.obs["cell_id"].to_numpy())
    assert row["mean_eve"] == pytest.approx(eve.loc[sorted(expected)].mean(), rel=0.02)


def test_regions_saved_with_each_cells_region_as_a_table_annotating_the_cells(cells, tmp_path):
    """Saving regions drawn over cells (labels or polygons) writes, in the same commit, each cell's
    region class as a new table annotating the cells; it is never taken for their expression."""
    import warnings

    from napari_casper.io.elements import spot_table
    from napari_casper.regions import RegionSet, save_regions, spot_context

    kind, sdata, xy, ids = cells
    element = f"cells_{kind}"
    store = save_spatialdata(sdata, tmp_path / "cells.zarr")
    ctx = spot_context(read_spatialdata(store), element)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    mid_x = (lo[0] + hi[0]) / 2
    box_xy = np.array([[lo[0] - 1, lo[1] - 1], [mid_x, lo[1] - 1], [mid_x, hi[1] + 1], [lo[0] - 1, hi[1] + 1]])
    saved = save_regions(store, RegionSet([box_xy[:, ::-1]], ["polygon"], ["tumour"]), spots=ctx)
    assert saved.spots_table == "regions_spots" and "annotating 'cells_" in saved.message()
    back = read_spatialdata(store)
    table = back.tables["regions_spots"]
    assert table.uns["spatialdata_attrs"]["region"] == element
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back.validate_table_in_spatialdata(table)
    by_cell = table.obs.set_index("spot_id")["class"].astype(str)
    centres = dict(zip(np.asarray(ctx.instance_ids), ctx.coords[:, 0]))
    expected = {i: ("tumour" if x < mid_x else "outside") for i, x in centres.items()}
    assert (by_cell.loc[list(expected)].to_numpy() == np.array(list(expected.values()))).all()
    assert spot_table(back, element).name == "atlas_cells"  # still the cells' expression table
