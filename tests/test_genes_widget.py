"""The Genes dock widget on the real Xenium section (36,602 cells): opens, switches genes in place."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from conftest import shared_path

from napari_casper._widgets.genes.widget import GenesWidget

pytestmark = pytest.mark.gui


def _wait(widget, qtbot):
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)


def test_xenium_opens_and_switches_genes_in_one_raster_layer(make_napari_viewer, qtbot):
    path = shared_path("xenium", "xenium_mouse_brain.h5ad")
    truth = ad.read_h5ad(path)
    viewer = make_napari_viewer(show=True)
    viewer.open(str(path), plugin="napari-casper")
    spots = viewer.layers["spots"]
    assert len(spots.data) == truth.n_obs
    widget = GenesWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.spots.currentText() == "spots" and widget.table.currentText() == "table"
    assert widget.gene.count() == truth.n_vars

    n_layers = len(viewer.layers)
    first, second = str(truth.var_names[0]), str(truth.var_names[17])
    widget.show_gene(first)  # first display: raster built in a worker
    _wait(widget, qtbot)
    layer = widget.layer
    assert layer is not None and type(layer).__name__ == "Image", widget.message.text()
    assert len(viewer.layers) == n_layers + 1

    widget.show_gene(second.lower())  # switch in place, case-insensitive
    assert len(viewer.layers) == n_layers + 1 and layer in viewer.layers
    assert layer.metadata["napari_casper"]["gene"] == second
    assert widget.last_switch_ms is not None and str(second) in widget.message.text()
    # one gene in the layer: the raster is the only data it holds
    assert layer.data.ndim == 2 and layer.data.dtype == np.float32

    # known truth: at each cell centre the layer shows log1p of that cell's count
    xy = np.asarray(truth.obsm["spatial"], dtype=float)[:, :2]
    world_yx = (spots.affine.affine_matrix @ np.c_[xy[:, ::-1], np.ones(len(xy))].T)[:2].T
    pixels = np.rint((np.linalg.inv(layer.affine.affine_matrix) @ np.c_[world_yx, np.ones(len(xy))].T)[:2].T).astype(int)
    shown = np.asarray(layer.data)[pixels[:, 0], pixels[:, 1]]
    expected = np.log1p(truth[:, second].X.toarray().ravel())
    assert np.mean(np.isclose(shown, expected, rtol=1e-5)) > 0.95

    widget.step(1)  # next gene in the table's order
    assert layer.metadata["napari_casper"]["gene"] == str(truth.var_names[18])

    screenshot = viewer.screenshot(canvas_only=True, flash=False)
    assert screenshot[..., :3].std() > 5  # something was drawn


def test_small_sections_switch_a_points_feature(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-casper", "mob")
    widget = GenesWidget(viewer)
    table = widget.table.currentText()
    assert table
    genes = [widget.gene.itemText(i) for i in range(2)]
    widget.show_gene(genes[0])
    _wait(widget, qtbot)
    layer = widget.layer
    assert type(layer).__name__ == "Points" and len(layer.data) == len(viewer.layers[widget.spots.currentText()].data)
    widget.show_gene(genes[1])
    meta = viewer.layers[widget.spots.currentText()].metadata["napari_casper"]
    measured = meta["sdata"].tables[table][:, genes[1]].X
    measured = np.log1p(np.asarray(measured.todense() if hasattr(measured, "todense") else measured).ravel())
    np.testing.assert_allclose(np.sort(layer.features["value"].to_numpy()), np.sort(measured), rtol=1e-5)


def test_unknown_gene_is_reported_not_raised(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-casper", "mob")
    widget = GenesWidget(viewer)
    widget.show_gene(widget.gene.itemText(0))
    _wait(widget, qtbot)
    widget.gene.setEditText("not-a-gene")
    widget._chosen()
    assert "not in this table" in widget.message.text()


def test_a_table_layer_is_shown_in_its_own_layer(make_napari_viewer, qtbot):
    """E.g. the uncertainty of saved histology predictions: matrix = a layer of the table."""
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-casper", "mob")
    widget = GenesWidget(viewer)
    meta = viewer.layers[widget.spots.currentText()].metadata["napari_casper"]
    table = meta["sdata"].tables[widget.table.currentText()]
    table.layers["doubled"] = table.X * 2
    widget._fill_tables()
    assert [widget.matrix.itemText(i) for i in range(widget.matrix.count())] == ["X", "doubled"]
    widget.matrix.setCurrentText("doubled")
    widget.transform.setCurrentText("none")
    gene = widget.gene.itemText(3)
    widget.show_gene(gene)
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert widget.layer.name.endswith("[doubled]")
    measured = table[:, gene].X
    measured = 2 * np.asarray(measured.todense() if hasattr(measured, "todense") else measured).ravel()
    np.testing.assert_allclose(np.sort(widget.layer.features["value"].to_numpy()), np.sort(measured), rtol=1e-6)
