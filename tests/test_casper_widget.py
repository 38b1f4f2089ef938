"""The CASPER dock widget driven end to end on the real Drosophila sample (Xvfb + Mesa)."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt, QTimer

from napari_casper._widgets.casper.widget import CasperWidget, grid_of
from napari_casper.casper.imputation import CasperImputer

pytestmark = pytest.mark.gui

QUICK = 2  # epochs (25 batches each) for tests


@pytest.fixture()
def casper(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-casper", "drosophila")
    widget = CasperWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.train_panel.epochs.setValue(QUICK)
    yield viewer, widget
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)


def train(widget, qtbot, epochs=QUICK):
    widget.train_panel.epochs.setValue(epochs)
    widget.start_training()
    qtbot.waitUntil(lambda: not widget.busy, timeout=300_000)
    assert widget.workflow is not None and widget.workflow.imputer is not None, widget.message.text()


def changed_pixels(viewer, layer):
    """Pixels that change when ``layer`` is shown: where its points are drawn."""
    layer.visible = False
    without = viewer.screenshot(canvas_only=True, flash=False)[:, :, :3].astype(int)
    layer.visible = True
    with_layer = viewer.screenshot(canvas_only=True, flash=False)[:, :, :3].astype(int)
    return np.abs(with_layer - without).sum(axis=2) > 30, without


def test_defaults_come_from_the_open_layers(casper):
    _, widget = casper
    assert widget.data.spots.currentText() == "cells"
    assert widget.data.reference.currentText() == "reference"  # the table inside the SpatialData object


def test_train_in_worker_keeps_gui_responsive_and_impute_unmeasured_gene(casper, qtbot):
    viewer, widget = casper
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(20)
    widget.train_panel.epochs.setValue(QUICK)
    qtbot.mouseClick(widget.train_panel.train_button, Qt.MouseButton.LeftButton)  # a real click
    assert widget.busy and not widget.train_panel.train_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.busy, timeout=300_000)
    timer.stop()
    assert len(ticks) > 20, "the event loop stalled while training ran"
    workflow = widget.workflow
    assert len(workflow.history) >= 1 and widget.train_panel.plot.history  # live curve got data

    atlas_genes = set(workflow.panel_genes)
    unmeasured = next(g for g in workflow.reference_genes if g not in atlas_genes)
    assert widget.impute.add_gene(unmeasured.lower()) or widget.impute.add_gene(unmeasured)
    # a real click on Impute (clicked(bool) once reached start_imputation as genes=False: "no gene chosen")
    qtbot.mouseClick(widget.impute.impute_button, Qt.MouseButton.LeftButton)
    assert "no gene chosen" not in widget.message.text()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    layer = viewer.layers[f"casper:{unmeasured}"]
    engine = CasperImputer(workflow.imputer.model, workflow.st).predict([unmeasured])[:, 0]
    np.testing.assert_allclose(layer.features["value"].to_numpy(), engine, rtol=1e-5, atol=1e-6)
    lo, hi = np.percentile(engine, [1, 99])
    assert widget.impute.colorbar.pixmap() is not None and f"{lo:.3g}" in widget.impute.colorbar_range.text()

    # the gene layer is drawn on the embryo: its pixels lie over the embryo image
    for other in viewer.layers:
        other.visible = other.name in ("embryo", layer.name)
    viewer.reset_view()
    drawn, background = changed_pixels(viewer, layer)
    assert drawn.sum() > 500
    embryo = background.mean(axis=2) > 120  # the rendered embryo is bright on dark
    assert embryo[drawn].mean() > 0.95

    # imputing again updates the layer instead of stacking a duplicate
    widget.start_imputation([unmeasured])
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert [l.name for l in viewer.layers].count(f"casper:{unmeasured}") == 1


def test_cancel_keeps_best_model(casper, qtbot):
    _, widget = casper
    widget.train_panel.epochs.setValue(400)
    widget.start_training()
    qtbot.waitUntil(lambda: widget.workflow is not None and len(widget.workflow.history) >= 1, timeout=120_000)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    workflow = widget.workflow
    assert workflow.cancelled and workflow.imputer is not None
    assert len(workflow.history) < 50
    assert "cancelled" in widget.train_panel.status.text()
    assert widget.train_panel.train_button.isEnabled()


def test_compare_attention_save_and_reopen(casper, qtbot, tmp_path):
    viewer, widget = casper
    train(widget, qtbot)
    widget.impute.add_gene("eve")
    qtbot.mouseClick(widget.impute.impute_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    qtbot.mouseClick(widget.impute.compare_button, Qt.MouseButton.LeftButton)  # compares the listed gene, eve
    assert {"measured:eve", "casper held-out:eve", "difference:eve"} <= {l.name for l in viewer.layers}
    r = widget.workflow.correlation("eve")
    assert f"PCC {r:.3f} (predicted with eve hidden" in widget.impute.score.text()
    # hiding the gene matters: with eve visible the model could copy it
    visible = widget.workflow.predict(["eve"])["eve"].to_numpy()
    assert np.corrcoef(visible, widget.workflow.measured("eve"))[0, 1] > r
    grid_of(viewer).enabled = False

    first = widget.workflow.display_names[0]
    widget.attention_panel.centroid.setCurrentText(first)
    qtbot.mouseClick(widget.attention_panel.show_button, Qt.MouseButton.LeftButton)
    weights = viewer.layers[f"casper attention:{first}"].features["value"].to_numpy()
    np.testing.assert_allclose(weights, widget.workflow.display_attention()[:, 0], rtol=1e-5)
    qtbot.mouseClick(widget.attention_panel.dominant_button, Qt.MouseButton.LeftButton)
    assert "casper dominant centroid" in viewer.layers
    assert widget.attention_panel.legend.text()

    name = widget.save_results(str(tmp_path / "dros.zarr"))
    assert name == "casper_predictions", widget.message.text()
    viewer.layers.clear()
    viewer.open(str(tmp_path / "dros.zarr"), plugin="napari-casper")
    reopened = viewer.layers["casper:eve"].features["value"].to_numpy()
    np.testing.assert_allclose(reopened, widget.workflow.predictions["eve"], rtol=1e-6)
    assert "casper dominant centroid" in viewer.layers


def test_bad_input_is_reported_and_widget_stays_usable(casper, qtbot):
    viewer, widget = casper
    widget.start_imputation(["eve"])
    assert "press Train" in widget.message.text()
    widget.data.reference.setCurrentIndex(-1)  # no reference chosen
    widget.start_training()
    assert "no scRNA-seq reference chosen" in widget.message.text()
    assert not widget.busy and widget.train_panel.train_button.isEnabled()
