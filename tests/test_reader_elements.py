"""Stores written by others: every SpatialData element type opens, nothing is dropped silently.

``spatialdata.datasets.blobs()`` (independent of this package: images single and multiscale,
labels single and multiscale, points, circles, polygons, multipolygons, a table annotating the
labels) written to zarr and read by the plugin's reader; plus polygon and point sets too large to
draw one by one (rasterised / subsampled, the count named).
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import Polygon

from napari_casper._reader import napari_get_reader
from napari_casper.display.element_layers import LARGE_POLYGON_SET, MAX_POINTS_SHOWN, polygon_rings
from napari_casper.display.layers import not_shown_note, spatialdata_to_layers
from napari_casper.io.store_writes import save_spatialdata


@pytest.fixture(scope="module")
def blobs_store(tmp_path_factory):
    from spatialdata.datasets import blobs

    path = tmp_path_factory.mktemp("blobs") / "blobs.zarr"
    save_spatialdata(blobs(), path)
    return path


def by_element(layers):
    """Element name -> its layer (the drawing of cells, not the hidden layer of their centres)."""
    return {
        kwargs["metadata"]["napari_casper"]["element"]: (data, kwargs, kind)
        for data, kwargs, kind in layers
        if not str(kwargs["name"]).endswith(" (centres)")
    }


def test_every_element_of_blobs_is_a_layer(blobs_store):
    from spatialdata import read_zarr

    layers = napari_get_reader(str(blobs_store))(str(blobs_store))
    shown = by_element(layers)
    sdata = read_zarr(blobs_store)
    every = {name for group in ("images", "labels", "points", "shapes") for name in getattr(sdata, group)}
    assert every == set(shown), f"not shown: {every - set(shown)}"
    kinds = {name: kind for name, (_, _, kind) in shown.items()}
    assert kinds["blobs_labels"] == kinds["blobs_multiscale_labels"] == "labels"
    assert kinds["blobs_polygons"] == kinds["blobs_multipolygons"] == "shapes"
    assert kinds["blobs_circles"] == kinds["blobs_points"] == "points"
    assert kinds["blobs_image"] == kinds["blobs_multiscale_image"] == "image"

    # labels: lazy, multiscale kept, the label ids are the element's own
    data, kwargs, _ = shown["blobs_multiscale_labels"]
    assert kwargs["multiscale"] and len(data) == 3 and [d.shape for d in data] == [(512, 512), (256, 256), (128, 128)]
    single, kwargs, _ = shown["blobs_labels"]
    np.testing.assert_array_equal(np.asarray(single), sdata.labels["blobs_labels"].values)
    # the table annotates the labels: its rows are the layer's features, keyed by label id
    features = kwargs["features"]
    table = sdata.tables["table"]
    assert list(features["index"]) == list(table.obs["instance_id"])
    # and, annotated by a table, the labels are cells: a hidden layer of their centres serves the widgets
    centres = [kw for _, kw, kind in layers if kw["name"] == "blobs_labels (centres)"]
    assert len(centres) == 1 and not centres[0]["visible"]
    assert sorted(centres[0]["metadata"]["napari_casper"]["instance_ids"]) == sorted(table.obs["instance_id"])

    # polygons: every part of every multipolygon, with its vertices
    polygons, kwargs, _ = shown["blobs_multipolygons"]
    parts = sum(len(g.geoms) for g in sdata.shapes["blobs_multipolygons"].geometry)
    assert len(polygons) == parts and kwargs["shape_type"] == "polygon"
    first = np.asarray(sdata.shapes["blobs_multipolygons"].geometry.iloc[0].geoms[0].exterior.coords)[:-1]
    np.testing.assert_allclose(polygons[0], first[:, ::-1])
    assert len(shown["blobs_polygons"][0]) == len(sdata.shapes["blobs_polygons"])


def test_elements_outside_the_coordinate_system_are_named(blobs_store):
    from spatialdata import read_zarr
    from spatialdata.transformations import Identity, set_transformation

    sdata = read_zarr(blobs_store)
    set_transformation(sdata.labels["blobs_labels"], {"aligned": Identity()}, set_all=True)
    skipped = []
    layers = spatialdata_to_layers(sdata, "global", skipped=skipped)
    assert "blobs_labels" not in by_element(layers)
    assert skipped == [("blobs_labels", "not in coordinate system 'global' (it is in ['aligned'])")]
    note = not_shown_note("blobs.zarr", "global", list(sdata.coordinate_systems), skipped)
    assert note.startswith("blobs.zarr: not shown: blobs_labels (not in coordinate system 'global'")
    assert "the data also has ['aligned']" in note


def test_many_polygons_become_a_label_image_and_many_points_a_named_sample():
    import dask.dataframe as dd
    from spatialdata import SpatialData
    from spatialdata.models import PointsModel, ShapesModel

    side = int(np.ceil(np.sqrt(LARGE_POLYGON_SET + 1)))
    squares = [Polygon([(10 * i, 10 * j), (10 * i + 8, 10 * j), (10 * i + 8, 10 * j + 8), (10 * i, 10 * j + 8)])
               for i in range(side) for j in range(side)]
    cells = ShapesModel.parse(gpd.GeoDataFrame(geometry=squares, index=pd.RangeIndex(len(squares))))
    n_points = 3 * MAX_POINTS_SHOWN + 7
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.uniform(0, 500, n_points), "y": rng.uniform(0, 500, n_points)})
    transcripts = PointsModel.parse(dd.from_pandas(frame, npartitions=4))
    layers = by_element(spatialdata_to_layers(SpatialData(shapes={"cells": cells}, points={"transcripts": transcripts})))

    image, kwargs, kind = layers["cells"]
    assert kind == "labels" and f"{len(squares):,} polygons as labels" in kwargs["name"]
    # every square's centre, mapped through the layer's affine, lands on that square's label
    inverse = np.linalg.inv(kwargs["affine"])
    rings, owners, _ = polygon_rings(cells)
    for k in rng.choice(len(rings), 50, replace=False):
        centre_yx = rings[k].mean(axis=0)[::-1]
        r, c = np.floor(inverse[:2, :2] @ centre_yx + inverse[:2, 2] + 0.5).astype(int)
        label = image[r, c]
        assert kwargs["features"].set_index("index").loc[label, "instance"] == owners[k]

    points, kwargs, kind = layers["transcripts"]
    assert kind == "points" and len(points) <= MAX_POINTS_SHOWN
    assert f"of {n_points:,} points" in kwargs["name"]
    np.testing.assert_allclose(points[0], frame[["y", "x"]].to_numpy()[0])
