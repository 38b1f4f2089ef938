"""The CASPER dock widget as a user clicks it, on the real Drosophila sample (Xvfb + Mesa).

Every action is a real click on its button (file dialogs answered in the real dialog: path selected, Open or Save clicked), every
flow runs inside a :class:`gui_checks.Heartbeat` (the GUI thread never stalls over 0.5 s), and
Cancel is clicked in every phase of training and loading (it takes effect within 1 s).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from gui_checks import Heartbeat, answer_file_dialog, assert_fits, assert_tooltips, choose, click, type_text
from qtpy.QtCore import QPoint, Qt, QTimer

from napari_casper._widgets.casper.compare import TITLES_NAME, panel_names
from napari_casper._widgets.casper.widget import CasperWidget, grid_of
from napari_casper.casper.imputation import CasperImputer
from napari_casper.casper.network import CentroidCrossAttention

pytestmark = pytest.mark.gui

QUICK = 2  # epochs (25 batches each) for tests
CANCEL_LIMIT = 1.0  # seconds from the click on Cancel to an idle widget
LEGEND = "casper dominant centroid legend"
#: flows that add a new visible layer: napari's first draw of it (shaders built on the GUI thread,
#: 0.4-1.8 s under software OpenGL on a loaded 2-core machine) and its on-canvas colour bar are
#: napari's cost, not the widget's; the widget adds one layer per event-loop turn so they never add up


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A CASPER model of the Drosophila sample trained for QUICK epochs, saved as a checkpoint."""
    from napari_casper._sample_data import drosophila_sample
    from napari_casper.casper.workflow import CasperWorkflow

    layers = drosophila_sample()
    cells = next(kwargs for _, kwargs, _ in layers if kwargs["name"] == "cells")
    meta = cells["metadata"]["napari_casper"]
    workflow = CasperWorkflow.from_layer_metadata(meta, meta["sdata"].tables["reference"])
    workflow.train(max_steps=QUICK * 25, reference_weight=0.0)
    return workflow.save_checkpoint(tmp_path_factory.mktemp("casper") / "drosophila.pt")


@pytest.fixture()
def casper(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-casper", "drosophila")
    widget = CasperWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.train_panel.epochs.setValue(QUICK)
    choose(qtbot, widget.train_panel.reference_cells, "don't use")  # quicker; 'auto' is clicked where it is tested
    yield viewer, widget
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)


class StatusLog:
    """Every distinct text the Train panel's status shows (polled every 20 ms on the GUI thread)."""

    def __init__(self, widget):
        self.label = widget.train_panel.status
        self.texts: list[str] = []
        self.timer = QTimer()
        self.timer.timeout.connect(self._poll)
        self.timer.start(20)

    def _poll(self):
        text = self.label.text()
        if not self.texts or self.texts[-1] != text:
            self.texts.append(text)

    def stop(self) -> None:
        self.timer.stop()

    def seen(self, fragment: str) -> bool:
        self._poll()
        return any(fragment in t for t in self.texts)


def wait_idle(qtbot, widget, timeout=180_000):
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def world_yx(layer) -> np.ndarray:
    """World (y, x) of a Points layer's points."""
    matrix = layer.affine.affine_matrix
    return np.asarray(layer.data) @ matrix[:2, :2].T + matrix[:2, 2]


def answer_dialog(qtbot, path) -> None:
    """The next file dialog (open or save) answered with ``path`` in the real dialog, as a user does."""
    answer_file_dialog(qtbot, path)


def test_dock_fits_420_px_and_every_control_has_a_tooltip(casper, qtbot):
    viewer, _ = casper
    widget = CasperWidget(viewer)  # on its own: the napari dock would impose its own width
    qtbot.addWidget(widget)
    assert_fits(widget, 420)
    assert_tooltips(widget)


def test_train_click_shows_phases_then_impute_shows_the_newest_gene(casper, qtbot, checkpoint):
    # (``checkpoint`` trains once outside the heartbeat: a process's first training imports torch's
    # optimiser machinery, which can hold the GIL for seconds; that is paid once per napari session)
    viewer, widget = casper
    # before training: Impute says what to do
    widget.impute.set_reference_genes(["eve"])
    type_text(qtbot, widget.impute.search, "eve")
    click(qtbot, widget.impute.impute_button)
    assert "no trained model" in widget.message.text()

    choose(qtbot, widget.train_panel.reference_cells, "auto")  # with and without the reference cells, the better kept
    log = StatusLog(widget)
    with Heartbeat() as beat:
        click(qtbot, widget.train_panel.train_button)
        assert widget.busy and not widget.train_panel.train_button.isEnabled()
        wait_idle(qtbot, widget)
    log.stop()
    beat.assert_responsive(what="training (click to trained)")
    print(f"\ntraining: longest GUI stall {beat.longest:.3f} s; phases {log.texts}")
    workflow = widget.workflow
    assert workflow is not None and workflow.imputer is not None, widget.message.text()
    phases = (
        "preparing genes and centroids", f"epoch 1 of {QUICK}", "validation with the reference cells: step",
        "calibrating trust and intervals", "refit on all genes and spots: step", "refit 2 of 2 (seed 1): step",
        "encoding the spots",
    )  # fmt: skip
    for phase in phases:
        assert log.seen(phase), f"phase {phase!r} never shown: {log.texts}"
    assert workflow.imputer.model.network.size == 2  # "networks averaged": 2 by default
    plot = widget.train_panel.plot
    assert plot.history and plot.axes.get_xlim()[1] >= QUICK  # the live loss curve shows every epoch
    assert len(plot.lines["train_loss"].get_xdata()) == QUICK
    # the stale "no trained model" is gone; the message says what happened and what to do next
    assert "no trained model" not in widget.message.text() and "CASPER trained" in widget.message.text()
    assert widget.train_panel.status.text().startswith("trained on 3039 spots x 84 genes")
    assert widget.attention_panel.centroid.count() == len(workflow.display_names) > 1  # clusters came from the worker

    # impute an unmeasured gene, typed as a user types it
    unmeasured = next(g for g in sorted(workflow.reference_genes) if g not in set(workflow.panel_genes) and g.isalpha())
    widget.impute.chosen.clear()
    type_text(qtbot, widget.impute.search, unmeasured)
    with Heartbeat() as beat:
        click(qtbot, widget.impute.impute_button)
        wait_idle(qtbot, widget)
    print(f"\nimpute (a new layer): longest GUI stall {beat.longest:.3f} s")
    beat.assert_responsive(what="impute")
    first = viewer.layers[f"casper:{unmeasured}"]
    engine = CasperImputer(workflow.imputer.model, workflow.st).predict([unmeasured])[:, 0]
    np.testing.assert_allclose(first.features["value"].to_numpy(), engine, rtol=1e-5, atol=1e-6)
    assert first.visible and unmeasured in widget.message.text()
    assert viewer.layers.selection.active is first  # the gene's controls, not its hidden width layer's

    # a second gene: shown, the first gene hidden, the image and spots untouched
    before = {name: viewer.layers[name].visible for name in ("embryo", "cells")}
    widget.impute.chosen.clear()
    type_text(qtbot, widget.impute.search, "ftz")
    click(qtbot, widget.impute.impute_button)
    wait_idle(qtbot, widget)
    assert viewer.layers["casper:ftz"].visible and not first.visible
    assert {name: viewer.layers[name].visible for name in before} == before

    # imputing the first gene again updates its layer in place and shows it again
    widget.impute.chosen.clear()
    type_text(qtbot, widget.impute.search, unmeasured)
    click(qtbot, widget.impute.impute_button)
    wait_idle(qtbot, widget)
    names = [layer.name for layer in viewer.layers]
    assert names.count(f"casper:{unmeasured}") == 1 and viewer.layers[f"casper:{unmeasured}"] is first
    assert first.visible and not viewer.layers["casper:ftz"].visible

    # trust per gene in a sortable table, and the width of each spot's 90 % interval as a hidden layer beside the gene
    table = widget.impute.trust_table
    rows = {table.item(r, 0).text(): r for r in range(table.rowCount())}
    assert set(rows) == {unmeasured, "ftz"}
    expected = workflow.imputer.trust([unmeasured, "ftz"])
    shown = [float(table.item(rows[g], 1).text()) for g in (unmeasured, "ftz")]
    np.testing.assert_allclose(shown, expected, atol=6e-4)
    width = viewer.layers[f"casper 90% width:{unmeasured}"]
    assert not width.visible and "SD, width of the 90% interval" in str(width.metadata)
    np.testing.assert_allclose(
        width.features["value"].to_numpy(), workflow.imputer.interval_widths(expected[:1])[:, 0], rtol=1e-5
    )
    header = table.horizontalHeader()
    trust_x = header.sectionViewportPosition(1) + header.sectionSize(1) // 2
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(trust_x, header.height() // 2))
    order = [float(table.item(r, 1).text()) for r in range(table.rowCount())]
    assert order == sorted(order) or order == sorted(order, reverse=True)  # a click on the header sorts by trust
    # a threshold typed above the lower trust hides that gene's row and layer
    low_gene = (unmeasured, "ftz")[int(np.argmin(expected))]
    spin = widget.impute.trust_threshold
    spin.setFocus()
    spin.selectAll()
    qtbot.keyClicks(spin, f"{float(np.min(expected)) + 0.001:.3f}")
    qtbot.keyClick(spin, Qt.Key.Key_Return)
    hidden = {table.item(r, 0).text() for r in range(table.rowCount()) if table.isRowHidden(r)}
    assert hidden == {low_gene} and not viewer.layers[f"casper:{low_gene}"].visible


def cancel_and_time(qtbot, widget) -> float:
    start = time.perf_counter()
    click(qtbot, widget.train_panel.cancel_button)
    wait_idle(qtbot, widget, timeout=10_000)
    return time.perf_counter() - start


def test_cancel_takes_effect_within_a_second_in_every_phase(casper, qtbot, checkpoint, monkeypatch):
    viewer, widget = casper
    latencies = {}
    with Heartbeat() as beat:
        # preparing genes and centroids: Cancel right after Train; no model yet, none kept
        click(qtbot, widget.train_panel.train_button)
        assert "preparing genes and centroids" in widget.train_panel.status.text()
        latencies["preparing"] = cancel_and_time(qtbot, widget)
        assert widget.workflow is None and "Cancelled; no model yet" in widget.message.text()
        assert widget.train_panel.train_button.isEnabled()

        # an epoch of a long run: the best model so far is kept
        widget.train_panel.epochs.setValue(400)
        click(qtbot, widget.train_panel.train_button)
        qtbot.waitUntil(lambda: "epoch 1 of 400" in widget.train_panel.status.text(), timeout=120_000)
        latencies["epoch"] = cancel_and_time(qtbot, widget)
        assert widget.workflow is not None and widget.workflow.cancelled and len(widget.workflow.history) < 10
        assert "cancelled: the best model so far" in widget.train_panel.status.text()
        assert "Training cancelled; the best model so far is kept" in widget.message.text()

        # the refit: the validated model is kept
        widget.train_panel.epochs.setValue(QUICK)
        click(qtbot, widget.train_panel.train_button)
        qtbot.waitUntil(lambda: "refit" in widget.train_panel.status.text(), timeout=120_000)
        latencies["refit"] = cancel_and_time(qtbot, widget)
        assert widget.workflow.cancelled and widget.workflow.imputer is not None

        # clustering the reference (a resolution not clustered before: the child process runs for many seconds)
        widget.train_panel.epochs.setValue(1)
        widget.data.resolution.setValue(0.35)
        click(qtbot, widget.train_panel.train_button)
        qtbot.waitUntil(lambda: "clustering the reference" in widget.train_panel.status.text(), timeout=120_000)
        latencies["clustering"] = cancel_and_time(qtbot, widget)
        assert widget.workflow.cancelled and not widget.workflow.groups_ready
        assert "Dominant centroid computes them" in widget.message.text()

        # loading a checkpoint: cancelled, the model trained before stays
        kept = widget.workflow
        answer_dialog(qtbot, checkpoint)
        click(qtbot, widget.train_panel.load_button)
        assert widget.busy and "loading checkpoint" in widget.train_panel.status.text()
        latencies["loading"] = cancel_and_time(qtbot, widget)
        assert widget.workflow is kept and "Cancelled; the previous model is kept" in widget.message.text()
    beat.assert_responsive(what="training and cancelling in every phase")
    print(f"\ncancel latency (s): { {k: round(v, 3) for k, v in latencies.items()} }; longest GUI stall {beat.longest:.3f} s")
    slow = {phase: t for phase, t in latencies.items() if t > CANCEL_LIMIT}
    assert not slow, f"Cancel took over {CANCEL_LIMIT} s in {slow}"


def test_load_compare_attention_save_and_reopen(casper, qtbot, checkpoint, monkeypatch, tmp_path):
    viewer, widget = casper
    answer_dialog(qtbot, checkpoint)
    with Heartbeat() as beat:
        click(qtbot, widget.train_panel.load_button)
        wait_idle(qtbot, widget)
    print(f"\nload checkpoint: longest GUI stall {beat.longest:.3f} s")
    beat.assert_responsive(what="load checkpoint")
    workflow = widget.workflow
    assert workflow is not None and workflow.checkpoint_path == str(checkpoint), widget.message.text()
    assert f"Checkpoint {checkpoint.name} loaded" in widget.message.text() and "trained" not in widget.message.text()
    assert widget.train_panel.status.text().startswith(f"loaded {checkpoint.name}: 1297 centroids (cells)")
    assert widget.attention_panel.centroid.count() == len(workflow.display_names) > 1

    type_text(qtbot, widget.impute.search, "eve")
    click(qtbot, widget.impute.impute_button)
    wait_idle(qtbot, widget)

    # Compare with measured: three titled panels of one gene side by side, everything else hidden
    viewer.camera.zoom = 3.0
    view_before = {layer.name: layer.visible for layer in viewer.layers}
    camera_before = (tuple(viewer.camera.center), viewer.camera.zoom)
    with Heartbeat() as beat:
        click(qtbot, widget.impute.compare_button)
        wait_idle(qtbot, widget)
    print(f"\ncompare (4 new layers): longest GUI stall {beat.longest:.3f} s")
    beat.assert_responsive(what="compare with measured")
    panels = [viewer.layers[name] for name in panel_names("eve")]
    assert all(layer.visible for layer in panels) and viewer.layers[TITLES_NAME].visible
    assert not any(layer.visible for layer in viewer.layers if layer not in panels and layer.name != TITLES_NAME)
    assert not grid_of(viewer).enabled
    extents = [world_yx(layer) for layer in panels]
    for first, second in zip(extents, extents[1:]):  # the embryo is wide: one panel under the other
        assert first[:, 0].max() < second[:, 0].min()  # next to each other, in order, not overlapping
        np.testing.assert_allclose(first[:, 1], second[:, 1])  # aligned
    titles = list(viewer.layers[TITLES_NAME].features["label"])
    assert titles[0] == "measured eve" and titles[1].startswith("CASPER eve (eve hidden)") and titles[2] == "difference (z-scores)"
    r = widget.workflow.correlation("eve")
    assert f"PCC {r:.3f} (predicted with eve hidden" in widget.impute.score.text()
    assert widget.impute.compare_button.text() == "Back to tissue view"
    # Back restores the layers' visibility, the grid mode and the camera
    click(qtbot, widget.impute.compare_button)
    assert not any(name in viewer.layers for name in [*panel_names("eve"), TITLES_NAME])
    assert {layer.name: layer.visible for layer in viewer.layers} == view_before
    assert tuple(viewer.camera.center) == pytest.approx(camera_before[0]) and viewer.camera.zoom == pytest.approx(camera_before[1])
    assert widget.impute.compare_button.text() == "Compare with measured"

    # attention to one centroid, then the dominant centroid with its legend on the canvas
    first = workflow.display_names[0]
    widget.attention_panel.centroid.setCurrentText(first)
    with Heartbeat() as beat:
        click(qtbot, widget.attention_panel.show_button)
        wait_idle(qtbot, widget)
        click(qtbot, widget.attention_panel.dominant_button)
        wait_idle(qtbot, widget)
    print(f"\nattention + dominant (3 new layers): longest GUI stall {beat.longest:.3f} s")
    beat.assert_responsive(what="show attention and dominant centroid")
    weights = viewer.layers[f"casper attention:{first}"].features["value"].to_numpy()
    np.testing.assert_allclose(weights, workflow.display_attention()[:, 0], rtol=1e-5)
    legend = viewer.layers[LEGEND]
    assert list(legend.features["label"]) == ["dominant centroid", *workflow.display_names, ""]  # title, rows, end
    dominant = viewer.layers["casper dominant centroid"]
    codes = workflow.display_attention().argmax(axis=1)
    np.testing.assert_allclose(dominant.face_color[:, :3], legend.face_color[1:-1][codes][:, :3], atol=1e-6)
    assert (world_yx(legend)[:, 1] > world_yx(dominant)[:, 1].max()).all()  # beside the tissue, not over it
    assert legend.visible and dominant.visible

    # Save checkpoint and Save results (dialogs answered), then reopen the store
    answer_dialog(qtbot, tmp_path / "again.pt")
    click(qtbot, widget.train_panel.save_button)
    assert (tmp_path / "again.pt").exists() and "checkpoint saved" in widget.message.text()
    answer_dialog(qtbot, tmp_path / "dros.zarr")
    with Heartbeat() as beat:
        click(qtbot, widget.save_button)
        wait_idle(qtbot, widget)
    print(f"\nsave to SpatialData: longest GUI stall {beat.longest:.3f} s")
    beat.assert_responsive(what="save to SpatialData")
    assert widget.last_saved == (str(tmp_path / "dros.zarr"), "casper_predictions"), widget.message.text()
    from napari_casper.io.stores import read_spatialdata

    table = read_spatialdata(tmp_path / "dros.zarr").tables["casper_predictions"]
    assert list(table.obs["casper_dominant_centroid"].cat.categories) == workflow.display_names
    assert len(table.uns["casper_dominant_centroid_colors"]) == len(workflow.display_names)

    colours = legend.face_color[1:-1].copy()
    viewer.layers.clear()
    viewer.open(str(tmp_path / "dros.zarr"), plugin="napari-casper")
    np.testing.assert_allclose(viewer.layers["casper:eve"].features["value"].to_numpy(), workflow.predictions["eve"], rtol=1e-6)
    reopened = viewer.layers[LEGEND]
    assert list(reopened.features["label"]) == ["dominant centroid", *workflow.display_names, ""]
    np.testing.assert_allclose(reopened.face_color[1:-1], colours, atol=1e-6)
    np.testing.assert_allclose(viewer.layers["casper dominant centroid"].face_color, dominant.face_color, atol=1e-6)


def test_bad_input_is_reported_and_widget_stays_usable(casper, qtbot):
    viewer, widget = casper
    widget.impute.set_reference_genes(["eve"])
    type_text(qtbot, widget.impute.search, "eve")
    click(qtbot, widget.impute.impute_button)
    assert "press Train" in widget.message.text()
    widget.data.reference.setCurrentIndex(-1)  # no reference chosen
    click(qtbot, widget.train_panel.train_button)
    assert "no scRNA-seq reference chosen" in widget.message.text()
    assert not widget.busy and widget.train_panel.train_button.isEnabled()


def test_train_and_impute_by_click_on_cells_drawn_as_labels(make_napari_viewer, qtbot, tmp_path):
    """A store whose table annotates cells drawn as labels: choose their centres as the spots, click
    Train and Impute; the imputed gene is drawn on the labels themselves, each cell with its value."""
    from test_cells_as_labels import cells_as

    from napari_casper.io.store_writes import save_spatialdata

    sdata, _, _ = cells_as("labels")
    store = save_spatialdata(sdata, tmp_path / "cells.zarr")
    viewer = make_napari_viewer(show=True)
    viewer.open(str(store), plugin="napari-casper")
    viewer.window.resize(1600, 1000)
    widget = CasperWidget(viewer)
    viewer.window.add_dock_widget(widget)
    qtbot.waitUntil(widget.train_panel.train_button.isVisible, timeout=10_000)
    choose(qtbot, widget.data.spots, "cells_labels (centres)")
    widget.train_panel.epochs.setValue(QUICK)
    choose(qtbot, widget.train_panel.reference_cells, "don't use")
    type_text(qtbot, widget.train_panel.ensemble.lineEdit(), "1")  # one network: quicker
    click(qtbot, widget.train_panel.train_button)
    wait_idle(qtbot, widget)
    workflow = widget.workflow
    assert workflow is not None and workflow.imputer is not None, widget.message.text()
    assert isinstance(workflow.imputer.model.network, CentroidCrossAttention)  # the typed 1, not the default 2
    unmeasured = next(g for g in sorted(workflow.reference_genes) if g not in set(workflow.panel_genes) and g.isalpha())
    type_text(qtbot, widget.impute.search, unmeasured)
    click(qtbot, widget.impute.impute_button)
    wait_idle(qtbot, widget)
    layer = viewer.layers[f"casper:{unmeasured}"]
    assert type(layer).__name__ == "Image" and layer.multiscale  # on the labels, not on discs
    engine = CasperImputer(workflow.imputer.model, workflow.st).predict([unmeasured])[:, 0]
    value = dict(zip(np.asarray(workflow.instance_ids), engine))
    labels = np.asarray(sdata.labels["cells_labels"])
    finest = np.asarray(layer.data[0])
    assert finest.shape == labels.shape
    drawn = np.flatnonzero(np.isin(labels.ravel(), list(value)))[::50]
    expected = np.array([value[i] for i in labels.ravel()[drawn]])
    np.testing.assert_allclose(finest.ravel()[drawn], expected, rtol=1e-5, atol=1e-6)
    assert np.isnan(finest[labels == 0]).all()
