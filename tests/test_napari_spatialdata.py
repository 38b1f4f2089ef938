"""Round trip with the ecosystem's own viewer, napari-spatialdata (a test extra).

* A store napari-casper wrote (cells as labels with their table, CASPER's results table, saved
  tumour regions) passes spatialdata's validation and opens in napari-spatialdata: every element
  becomes a layer there, and its table list offers our results table on the cells.
* A store edited in napari-spatialdata (a polygon drawn and saved with its Shift+E, then written
  as napari-spatialdata asks its users to) opens here with the new element.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_cells_as_labels import HELD_OUT, cells_as

from napari_casper.casper.workflow import CasperWorkflow
from napari_casper.display.layers import spatialdata_to_layers
from napari_casper.io.store_writes import save_spatialdata
from napari_casper.io.stores import read_spatialdata

pytestmark = [pytest.mark.gui, pytest.mark.untimed]
napari_spatialdata = pytest.importorskip("napari_spatialdata", reason="napari-spatialdata is a test extra (pip install -e .[testing])")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The Drosophila cells as labels with their table, CASPER's results and two regions, as napari-casper writes them."""
    from napari_casper.regions import RegionSet
    from napari_casper.regions.store import save_regions

    sdata, xy, _ = cells_as("labels")
    store = save_spatialdata(sdata, tmp_path_factory.mktemp("roundtrip") / "cells.zarr")
    layers = {kw["name"]: kw for _, kw, _ in spatialdata_to_layers(read_spatialdata(store))}
    meta = dict(layers["cells_labels (centres)"]["metadata"]["napari_casper"])
    workflow = CasperWorkflow.from_layer_metadata(meta, sdata.tables["reference"], centroid_method="cells")
    workflow.st = workflow.st[:, [g for g in workflow.st.var_names if g not in HELD_OUT]].copy()
    workflow.train(max_steps=30, seed=0, reference_weight=0.0)
    results = workflow.save_results(store, HELD_OUT)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    mid = (lo + hi) / 2
    boxes = [np.array([[lo[1], lo[0]], [lo[1], mid[0]], [hi[1], mid[0]], [hi[1], lo[0]]]),
             np.array([[lo[1], mid[0]], [lo[1], hi[0]], [hi[1], hi[0]], [hi[1], mid[0]]])]  # (y, x)
    regions = RegionSet(boxes, ["polygon", "polygon"], ["tumour", "stroma"], coordinate_system="global")
    saved = save_regions(store, regions)
    return store, results, saved.shapes_name


def test_a_store_napari_casper_wrote_validates_and_opens_in_napari_spatialdata(written, make_napari_viewer, qtbot):
    store, results, regions = written
    sdata = read_spatialdata(store)
    with warnings.catch_warnings():  # spatialdata's own check of every table
        warnings.simplefilter("error")
        for table in sdata.tables.values():
            if "spatialdata_attrs" in table.uns:
                sdata.validate_table_in_spatialdata(table)
    viewer = make_napari_viewer(show=True)
    interactive = napari_spatialdata.Interactive(sdata, headless=True)
    assert interactive._viewer is viewer
    expected = {name: kind for kind in ("images", "labels", "shapes", "points") for name in getattr(sdata, kind)}
    for name in expected:  # one at a time: napari-spatialdata refuses a second while it loads one
        interactive.add_element(name, "global")
        qtbot.waitUntil(lambda name=name: name in viewer.layers, timeout=60_000)
    kinds = {layer.name: type(layer).__name__ for layer in viewer.layers}
    assert kinds["cells_labels"] == "Labels"
    assert kinds[regions] == "Shapes" and len(viewer.layers[regions].data) == 2  # our regions, as polygons
    assert all(kinds[name] == "Image" for name in sdata.images)
    # the results table annotates the cells: napari-spatialdata lists it for the labels layer
    tables = viewer.layers["cells_labels"].metadata["table_names"]
    assert results in tables and "atlas_cells" in tables, tables


def test_a_store_edited_in_napari_spatialdata_opens_here(written, make_napari_viewer, qtbot):
    from qtpy.QtCore import Qt

    store, results, _ = written
    sdata = read_spatialdata(store)
    viewer = make_napari_viewer(show=True)
    napari_spatialdata.Interactive(sdata, headless=True).add_element("cells_labels", "global")
    qtbot.waitUntil(lambda: "cells_labels" in viewer.layers, timeout=60_000)
    drawn = viewer.add_shapes([np.array([[0.0, 0.0], [0.0, 40.0], [30.0, 40.0], [30.0, 0.0]])], shape_type="polygon", name="annotation")
    viewer.layers.selection.active = drawn
    viewer.window._qt_viewer.canvas.native.setFocus()
    qtbot.keyClick(viewer.window._qt_viewer.canvas.native, Qt.Key.Key_E, Qt.KeyboardModifier.ShiftModifier)  # napari-spatialdata's save
    qtbot.waitUntil(lambda: "annotation" in sdata.shapes, timeout=10_000)
    sdata.write_element("annotation")  # napari-spatialdata adds in memory; its users write the element
    viewer.close()

    here = make_napari_viewer(show=True)
    here.open(str(store), plugin="napari-casper")
    names = {layer.name: type(layer).__name__ for layer in here.layers}
    assert names.get("annotation") == "Shapes", names
    corners = np.asarray(here.layers["annotation"].data[0])
    world = corners @ here.layers["annotation"].affine.affine_matrix[:2, :2].T + here.layers["annotation"].affine.affine_matrix[:2, 2]
    np.testing.assert_allclose(np.sort(world[:, 0])[[0, -1]], [0.0, 30.0], atol=1e-6)  # where it was drawn
    assert f"casper:{HELD_OUT[0]}" in names and "cells_labels (centres)" in names  # our own results still open
