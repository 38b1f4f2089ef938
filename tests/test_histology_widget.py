"""The Histology dock widget as a user clicks it, on the packaged MOB sections (Xvfb + Mesa, real worker threads).

Every action is a real click or key press on the real control (file dialogs are patched, their
buttons clicked); a heartbeat on the GUI thread (``gui_checks.Heartbeat``) measures the longest
stall of every flow; Cancel is measured in every phase of training and prediction.

Train on MOB1 + MOB2 (MOB2 added with *Add .h5ad...*), then predict on MOB3 opened as an
H&E-only slide (its table dropped; its image and spots given different, non-identity
transformations), at its spots and at virtual spots over the detected tissue; check alignment,
accuracy against MOB3's held-out counts, what is drawn on screen, the uncertainty beside the
slide, saving, checkpoints, messages, the dock's width and tooltips.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from conftest import mob_path
from gui_checks import STALL_LIMIT, Heartbeat, answer_file_dialog, assert_fits, assert_tooltips, choose, click, type_text
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication, QFileDialog
from scipy.spatial import cKDTree
from spatialdata.transformations import Scale, Sequence, Translation, set_transformation

from napari_casper._widgets.histology.predict_panel import VIRTUAL
from napari_casper._widgets.histology.widget import HistologyWidget
from napari_casper.display.layers import spatialdata_to_layers
from napari_casper.evaluate.metrics import pearson
from napari_casper.histology.genes import log_normalised, resolve_genes
from napari_casper.histology.tissue import detect_tissue
from napari_casper.io.convert import read_image_file, spots_element
from napari_casper.io.stores import read_h5ad_spatial, read_spatialdata

pytestmark = pytest.mark.gui

MARKERS = ("Penk", "Nrgn", "Cdhr1")
# Measured (MOB1 + MOB2, 1 epoch per model, head chosen by leave-one-section-out, 30 most variable
# genes + markers, seed 0, CPU), MOB3's held-out spots vs its measured counts: see the test's print.
MIN_PCC = 0.35
#: Cancel must have taken effect (the worker stopped, the buttons are back) within this many seconds
CANCEL_LIMIT = 1.0


def open_section(viewer, name: str, *, drop_table: bool = False, transformed: bool = False):
    """A MOB section as the reader shows it; optionally H&E-only and with non-identity transforms."""
    path = mob_path(name)
    sdata = read_h5ad_spatial(path)
    if drop_table:
        del sdata.tables["table"]
    if transformed:  # image drawn at half size and shifted; spots stored in units of 2 image pixels
        xy = ad.read_h5ad(path).obsm["spatial"]
        shift = Translation([100.0, -30.0], axes=("y", "x"))
        set_transformation(sdata.images["image"], Sequence([Scale([0.5, 0.5], axes=("y", "x")), shift]), "global")
        sdata.shapes["spots"] = spots_element(xy / 2, 15.87 / 2, transformation=shift)
    for data, kwargs, kind in spatialdata_to_layers(sdata, source=str(path)):
        kwargs["name"] = f"{name} {kwargs['name']}"
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    settle()
    return sdata


def settle() -> None:
    """Let the canvas draw what the test itself added (its first paint is the test's cost, not the flow's)."""
    from qtpy.QtWidgets import QApplication

    for _ in range(3):
        QApplication.processEvents()
        time.sleep(0.02)


@pytest.fixture()
def histology(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    widget = HistologyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Histology")
    # the dock imports torch in the background when it opens (its first import holds the GIL ~1 s);
    # a user reads the dock and ticks sections meanwhile: the flows below start after it
    qtbot.waitUntil(lambda: widget.warmed_up, timeout=120_000)
    yield viewer, widget
    widget._cancel.set()
    qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)  # leaked worker threads crash the next test


def type_number(qtbot, spin, value) -> None:
    """Select a spin box's text and type ``value`` over it, then Return (as a user does)."""
    assert spin.isVisible() and spin.isEnabled()
    spin.setFocus()
    spin.selectAll()
    qtbot.keyClicks(spin, str(value))
    qtbot.keyClick(spin, Qt.Key.Key_Return)
    assert spin.value() == pytest.approx(value), f"typed {value}, the box holds {spin.value()}"


def run(widget, qtbot, button, what: str, timeout: int = 120_000) -> Heartbeat:
    """Click ``button`` and wait for the widget's worker (and the layers it adds), measuring the GUI thread all along."""
    with Heartbeat() as beat:
        click(qtbot, button)
        qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)
    print(f"{what}: longest GUI-thread stalls {', '.join(f'{g:.3f}' for g in sorted(beat.gaps)[-3:])} s")
    beat.assert_responsive(what=what)
    return beat


def options(widget, qtbot, *, epochs: int, n_variable: int, head: str, genes: str = "") -> None:
    type_text(qtbot, widget.sections.genes, genes)
    type_number(qtbot, widget.sections.n_variable, n_variable)
    type_number(qtbot, widget.train_panel.epochs, epochs)
    choose(qtbot, widget.train_panel.head, head)


def predict(widget, qtbot, image: str, spots: str) -> None:
    choose(qtbot, widget.predict_panel.image, image)
    choose(qtbot, widget.predict_panel.spots, spots)
    run(widget, qtbot, widget.predict_panel.predict_button, f"Predict at {spots}")  # adds the prediction layer
    assert widget.result is not None and widget.result.image_layer == image, widget.message.text()
    assert " genes at " in widget.predict_panel.status.text(), (widget.predict_panel.status.text(), widget.message.text())


def world_positions(layer) -> np.ndarray:
    return np.array([layer.data_to_world(p) for p in layer.data])


def screenshot(viewer) -> np.ndarray:
    return viewer.screenshot(canvas_only=True, flash=False)[:, :, :3].astype(int)


def hide_colour_bars(viewer) -> None:
    """Hide every layer's colour bar: pixel comparisons are about the spots (the units line stays, top rows).

    A new layer's colour bar is shown a few paints after the layer (layer_sync.decorate): wait for those first."""
    import time

    until = time.monotonic() + 3 * 0.15 + 0.3
    while time.monotonic() < until:
        QApplication.processEvents()
        time.sleep(0.01)
    for other in viewer.layers:
        bar = getattr(other, "colorbar", None) or getattr(other, "face_colorbar", None)
        if bar is not None:
            bar.visible = False
    QApplication.processEvents()


def changed_pixels(viewer, layer):
    """Pixels that change when ``layer`` is shown (where it is drawn), and the screenshot without it."""
    hide_colour_bars(viewer)
    layer.visible = False
    without = screenshot(viewer)
    layer.visible = True
    return np.abs(screenshot(viewer) - without).sum(axis=2) > 30, without


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def check_one_overall_progress(phases, *names) -> None:
    """The phases were named, and their progress only went forward over one total, to the end."""
    texts = [p.text for p in phases]
    for name in names:
        assert any(t.startswith(name) for t in texts), f"no phase {name!r} in {sorted(set(texts))}"
    counted = [p for p in phases if p.total]
    assert len({p.total for p in counted}) == 1, "the progress restarted with another total"
    done = [p.done for p in counted]
    assert done == sorted(done) and done[-1] == counted[-1].total, done


def test_the_clicked_flow_train_predict_uncertainty_save_and_checkpoints(histology, qtbot, tmp_path, monkeypatch):
    viewer, widget = histology
    open_section(viewer, "MOB1")
    open_section(viewer, "MOB3", drop_table=True, transformed=True)
    assert widget.sections.labels() == ["MOB1:spots"]  # MOB3 has no counts: not offered
    answer_file_dialog(qtbot, str(mob_path("MOB2")))
    run(widget, qtbot, widget.sections.add_h5ad, "Add .h5ad...")
    assert widget.sections.labels() == ["MOB1:spots", "MOB2:spots"] and "added MOB2:spots" in widget.message.text()

    options(widget, qtbot, epochs=1, n_variable=30, head="ensemble", genes=", ".join(MARKERS))
    start = time.perf_counter()
    run(widget, qtbot, widget.train_panel.train_button, "Train")
    print(f"trained in {time.perf_counter() - start:.1f} s: {widget.train_panel.status.text()}")
    assert widget.predictor is not None, widget.message.text()
    check_one_overall_progress(
        widget.phases, "opening section 2 of 2", "reading section 2 of 2 (MOB2:spots)", "features", "final model: epoch 1 of 1", "trained"
    )  # the head chosen by leave-one-section-out ("auto") adds "choosing the head: model 2 of 2": see the cancel test
    assert widget.train_panel.status.text().startswith("trained: 33 genes, head ensemble")
    assert widget.train_panel.plot.history  # the live loss curve got the epochs
    assert widget.predictor.config.spot_diameter_px == pytest.approx(15.87, abs=0.05)
    assert widget.trained_on == ["MOB1:spots", "MOB2:spots"]

    # 1. at MOB3's own spots (no table): only the gene shown gets a layer
    assert [widget.predict_panel.spots.itemText(i) for i in range(widget.predict_panel.spots.count())] == ["spots", VIRTUAL]
    predict(widget, qtbot, "MOB3 image", "spots")
    check_one_overall_progress(widget.phases, "reading patches: spot", "features and embedding", "predicting")
    histology_layers = [layer.name for layer in viewer.layers if layer.name.startswith("histology")]
    assert histology_layers == ["histology:Penk"] and widget.predict_panel.gene.currentText() == "Penk"
    truth = ad.read_h5ad(mob_path("MOB3"))
    image, layer = viewer.layers["MOB3 image"], viewer.layers["histology:Penk"]
    expected = np.array([image.data_to_world(p) for p in truth.obsm["spatial"][:, ::-1]])
    error = np.abs(world_positions(layer) - expected).max() / 0.5  # in image pixels (world = 0.5 px)
    assert error < 1.0, error
    assert np.allclose(layer.size, 15.87 * 0.5, atol=0.05)  # spot diameter on screen, world units

    prediction = widget.result.prediction
    assert prediction.reach is not None and not prediction.reach.out_of_reach  # a held-out MOB section: no warning
    assert "WARNING" not in widget.predict_panel.status.text()
    markers = resolve_genes(MARKERS, truth, prediction.genes)
    measured = log_normalised(truth, list(markers.values()))
    predicted = prediction.expression[:, [prediction.genes.index(g) for g in markers.values()]]
    r = dict(zip(markers, pearson(measured, predicted)))
    print("held-out MOB3 PCC", {k: round(float(v), 3) for k, v in r.items()})
    assert r["Penk"] > MIN_PCC and r["Nrgn"] > MIN_PCC
    np.testing.assert_allclose(layer.features["value"], prediction.expression[:, prediction.genes.index(markers["Penk"])])

    # what is drawn lies on the tissue of the H&E
    for other in viewer.layers:
        other.visible = other.name in ("MOB3 image", "histology:Penk")
    viewer.reset_view()
    drawn, background = changed_pixels(viewer, layer)
    height, width = drawn.shape
    drawn[: int(0.15 * height)] = False  # the top rows: the units line of the shown layers
    rows, cols = np.nonzero(background.sum(axis=2) > 30)  # the H&E on the black canvas
    crop = np.s_[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    tissue = detect_tissue(background[crop].astype(np.uint8), max_size=max(background.shape))
    on_tissue = tissue.mask[drawn[crop]].mean()  # (off the slide: the layer's colour bar and units, by design)
    print(f"{drawn[crop].sum()} drawn pixels on the slide, {on_tissue:.1%} on tissue")
    assert drawn[crop].sum() > 2000 and on_tissue > 0.85
    assert tissue.mask.mean() < 0.4  # the slide is mostly glass: landing on tissue is not chance

    # 2. show uncertainty: its own layer beside the slide; the prediction on the H&E stays visible, uncovered
    with Heartbeat() as beat:
        click(qtbot, widget.predict_panel.show_uncertainty)
        qtbot.waitUntil(lambda: "histology uncertainty:Penk" in viewer.layers and viewer.layers["histology uncertainty:Penk"].visible)
    print(f"show uncertainty: longest GUI-thread stall {beat.longest:.3f} s")
    beat.assert_responsive(what="show uncertainty")  # adds the uncertainty layer
    spread = viewer.layers["histology uncertainty:Penk"]
    assert spread.visible and layer.visible
    assert world_positions(spread)[:, 1].min() > image.extent.world[1][-1]  # every uncertainty spot right of the slide
    np.testing.assert_allclose(world_positions(spread)[:, 0], world_positions(layer)[:, 0])  # same rows, beside
    viewer.reset_view()
    hide_colour_bars(viewer)
    both = screenshot(viewer)
    spread.visible = False
    prediction_only = screenshot(viewer)
    layer.visible = False
    image_only = screenshot(viewer)
    layer.visible = spread.visible = True
    rows = np.nonzero((image_only.sum(axis=2) > 30).mean(axis=1) > 0.2)[0]  # the slide's rows (colour bars and units lie above)
    band = np.zeros(image_only.shape[:2], bool)
    band[rows.min() : rows.max() + 1] = True
    band[: int(0.15 * band.shape[0])] = False  # the top rows: the units line of the shown layers
    drawn_prediction = band & (np.abs(prediction_only - image_only).sum(axis=2) > 30)
    drawn_uncertainty = band & (np.abs(both - prediction_only).sum(axis=2) > 30)
    print(f"on screen: prediction {drawn_prediction.sum()} px, uncertainty {drawn_uncertainty.sum()} px")
    assert drawn_prediction.sum() > 1000 and drawn_uncertainty.sum() > 1000
    assert not (drawn_prediction & drawn_uncertainty).any()  # the uncertainty covers no pixel of the prediction
    click(qtbot, widget.predict_panel.show_uncertainty)  # off again: hidden, the prediction stays
    assert not spread.visible and layer.visible

    # the gene combo swaps the gene shown (keyboard): the same layer, renamed, its values swapped in place
    with Heartbeat() as beat:
        choose(qtbot, widget.predict_panel.gene, "Nrgn")
    print(f"gene shown: longest GUI-thread stall {beat.longest:.3f} s")
    beat.assert_responsive(what="choosing the gene shown")
    assert viewer.layers["histology:Nrgn"] is layer and layer.visible and "histology:Penk" not in viewer.layers
    assert widget.predict_panel.status.text().endswith("showing Nrgn: choose another gene below")  # not the old gene
    np.testing.assert_allclose(layer.features["value"], prediction.expression[:, prediction.genes.index(markers["Nrgn"])])

    # 3. at virtual spots over the detected tissue (same slide, no spots used)
    predict(widget, qtbot, "MOB3 image", VIRTUAL)
    virtual = viewer.layers["histology:Penk"]
    assert virtual is layer and virtual.visible and "histology:Nrgn" not in viewer.layers  # the new prediction shows its first gene
    assert len(virtual.data) == len(widget.result.prediction.coords)
    pixels = np.array([image.world_to_data(p) for p in world_positions(virtual)])[:, ::-1]  # (x, y) image px
    he_tissue = detect_tissue(read_image_file(mob_path("MOB3").with_suffix(".jpg")))
    on = he_tissue.contains(pixels).mean()
    spacing = np.median(cKDTree(pixels).query(pixels, k=2)[0][:, 1])
    print(f"{len(pixels)} virtual spots, {on:.1%} on tissue, spacing {spacing:.1f} px")
    assert on > 0.9 and spacing == pytest.approx(2 * 15.87, rel=0.02) and 300 < len(pixels) < 1000

    # 4. Save predictions: the slide came from an .h5ad, so a new store is written first (asked for)
    store = tmp_path / "mob3.zarr"
    answer_file_dialog(qtbot, str(store))
    run(widget, qtbot, widget.predict_panel.save_button, "Save predictions (new store)")
    assert "'histology_spots'" in widget.message.text() and store.is_dir(), widget.message.text()
    users = {k: v for k, v in tree_digest(store).items() if k.startswith(("images/", "shapes/spots/"))}
    asked = []
    with monkeypatch.context() as patch:  # the store is known: no dialog is shown
        patch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: asked.append(a) or ("", ""))
        run(widget, qtbot, widget.predict_panel.save_button, "Save predictions (same store)")
    assert not asked, "a save dialog was shown for a known store"
    assert "'histology_spots_2'" in widget.message.text()
    assert {k: v for k, v in tree_digest(store).items() if k in users} == users  # the user's elements untouched
    back = read_spatialdata(store)
    assert set(back.shapes) == {"spots", "histology_spots", "histology_spots_2"} and "table" not in back.tables
    table = back.tables["histology_predictions"]
    assert table.uns["napari_casper"]["model"]["training_sections"] == "MOB1:spots, MOB2:spots"
    saved_reach = table.uns["napari_casper"]["out_of_distribution"]  # saved with the predictions
    assert saved_reach["score"] == pytest.approx(widget.result.prediction.reach.score)
    assert table.n_obs == len(pixels) and "Penk" in list(table.var["name"])

    # 5. Save checkpoint / Load checkpoint: the loaded model predicts the same and names genes the same
    checkpoint = tmp_path / "mob.pt"
    answer_file_dialog(qtbot, str(checkpoint))
    run(widget, qtbot, widget.train_panel.save_button, "Save checkpoint")
    assert checkpoint.is_file() and "saved to" in widget.message.text()
    before = widget.result.prediction.expression.copy()
    trained = widget.predictor
    answer_file_dialog(qtbot, str(checkpoint))
    run(widget, qtbot, widget.train_panel.load_button, "Load checkpoint")
    assert widget.predictor is not trained and widget.train_panel.status.text().startswith("loaded from mob.pt")
    predict(widget, qtbot, "MOB3 image", VIRTUAL)
    np.testing.assert_allclose(widget.result.prediction.expression, before, atol=1e-5)
    assert widget.predict_panel.gene.currentText() == "Penk"


def cancel_at(widget, qtbot, button, cancel_button, prefix: str) -> tuple[str, float]:
    """Click ``button``; click Cancel the moment a phase starting with ``prefix`` is shown.

    Returns the phase Cancel was clicked in and the seconds from that click until the worker
    stopped and the buttons were back.
    """
    clicked: dict = {}

    def on_phase(phase) -> None:
        if not clicked and phase.text.startswith(prefix):
            clicked["phase"], clicked["at"] = phase.text, time.perf_counter()
            click(qtbot, cancel_button)

    widget.phase_reported.connect(on_phase)
    try:
        with Heartbeat() as beat:
            click(qtbot, button)
            qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
            stopped = time.perf_counter()
    finally:
        widget.phase_reported.disconnect(on_phase)
    beat.assert_responsive(what=f"cancel at {prefix!r}")
    assert clicked, f"no phase {prefix!r} was shown: {[p.text for p in widget.phases]}"
    latency = stopped - clicked["at"]
    print(f"Cancel at {clicked['phase']!r}: stopped {latency:.3f} s after the click; longest stall {beat.longest:.3f} s")
    assert latency < CANCEL_LIMIT, f"Cancel at {clicked['phase']!r} took {latency:.2f} s"
    assert button.isEnabled() and not cancel_button.isEnabled()
    return clicked["phase"], latency


def test_cancel_takes_effect_within_a_second_in_each_kind_of_phase(histology, qtbot):
    viewer, widget = histology
    open_section(viewer, "MOB1")
    open_section(viewer, "MOB2")
    panel = widget.train_panel
    options(widget, qtbot, epochs=2, n_variable=30, head="auto")
    # a phase of each kind here (reading, a model's epochs, the final model, prediction); the engine tests
    # (tests/histology) cancel in every phase, without the GUI
    for prefix in ("reading section 2 of 2", "choosing the head: model 1 of 2 (without MOB1:spots): epoch 1"):
        cancel_at(widget, qtbot, panel.train_button, panel.cancel_button, prefix)
        assert widget.cancelled and widget.predictor is None and panel.status.text() == "training cancelled (no model yet)."
    choose(qtbot, panel.head, "ensemble")
    for prefix in ("final model: epoch 2 of 2",):
        cancel_at(widget, qtbot, panel.train_button, panel.cancel_button, prefix)
    type_number(qtbot, panel.epochs, 1)
    run(widget, qtbot, panel.train_button, "Train (ensemble, 1 epoch)")  # usable again after the cancels
    assert not widget.cancelled and len(widget.predictor.genes) == 30 and widget.trained_on == ["MOB1:spots", "MOB2:spots"]

    # prediction on a plain RGB image layer (not from SpatialData, scaled and shifted), dense virtual spots
    pixels = read_image_file(mob_path("MOB4").with_suffix(".jpg"))
    image = viewer.add_image(pixels, rgb=True, name="MOB4 jpg", scale=(2.0, 2.0), translate=(500.0, -40.0))
    settle()
    choose(qtbot, widget.predict_panel.image, "MOB4 jpg")
    choose(qtbot, widget.predict_panel.spots, VIRTUAL)
    type_number(qtbot, widget.predict_panel.pitch, 8.0)  # about 6,000 spots: every phase lasts
    n_layers = len(viewer.layers)
    predict_panel = widget.predict_panel
    for prefix in ("reading patches: spot 16",):
        cancel_at(widget, qtbot, predict_panel.predict_button, predict_panel.cancel_button, prefix)
        assert "cancelled" in predict_panel.status.text() and widget.result is None and len(viewer.layers) == n_layers
    type_number(qtbot, widget.predict_panel.pitch, 0.0)  # back to "2 x diameter"
    run(widget, qtbot, predict_panel.predict_button, "Predict on a plain image layer")
    layer = viewer.layers[f"histology:{predict_panel.gene.currentText()}"]
    spots = np.array([image.world_to_data(p) for p in world_positions(layer)])[:, ::-1]
    np.testing.assert_allclose(spots, widget.result.prediction.coords, atol=1e-6)
    assert detect_tissue(pixels).contains(spots).mean() > 0.9


def test_messages_follow_the_state(histology, qtbot, tmp_path, monkeypatch):
    viewer, widget = histology
    for button in (widget.train_panel.train_button, widget.predict_panel.predict_button, widget.predict_panel.save_button):
        click(qtbot, button)
    assert "nothing to save yet" in widget.message.text()
    open_section(viewer, "MOB3", drop_table=True)
    assert widget.sections.labels() == []  # an H&E-only slide is no training section
    open_section(viewer, "MOB1")
    # a copy of MOB2 whose genes are named by Ensembl id: it shares no gene name with MOB1
    renamed = ad.read_h5ad(mob_path("MOB2"))
    renamed.var_names = list(renamed.var["gene_ids"])
    (tmp_path / "MOB2.jpg").write_bytes(mob_path("MOB2").with_suffix(".jpg").read_bytes())
    renamed.write_h5ad(tmp_path / "MOB2.h5ad")
    answer_file_dialog(qtbot, str(tmp_path / "MOB2.h5ad"))
    run(widget, qtbot, widget.sections.add_h5ad, "Add .h5ad...")
    options(widget, qtbot, epochs=1, n_variable=20, head="ensemble", genes="Penk")
    run(widget, qtbot, widget.train_panel.train_button, "Train (two gene namings)")
    assert "share only 0 genes" in widget.message.text() and "MOB2:spots" in widget.message.text() and widget.predictor is None
    assert widget.train_panel.status.text().startswith("training failed: ") and "no model yet" in widget.train_panel.status.text()
    # untick the renamed section (keyboard: select its row, Space); an unknown gene is the next error
    widget.sections.list.setFocus()
    widget.sections.list.setCurrentRow(1)
    qtbot.keyClick(widget.sections.list, Qt.Key.Key_Space)
    type_text(qtbot, widget.sections.genes, "Penk, NoSuchGene")
    run(widget, qtbot, widget.train_panel.train_button, "Train (unknown gene)")
    assert "NoSuchGene not found" in widget.message.text() and "gene_ids" in widget.message.text()
    assert "share only" not in widget.message.text()  # the earlier error went with the new attempt
    assert widget.train_panel.status.text().startswith("training failed: gene(s) NoSuchGene")
    type_text(qtbot, widget.sections.genes, "Penk")
    run(widget, qtbot, widget.train_panel.train_button, "Train (one section)")
    assert widget.predictor is not None
    assert "not found" not in widget.message.text() and "no trained model" not in widget.message.text()
    assert widget.message.text().startswith("histology model trained") and widget.train_panel.status.text().startswith("trained:")
    # a slide stained unlike the training section (MOB3 with its colour channels reversed): predicted, with a warning
    he = viewer.layers["MOB3 image"]
    viewer.add_image(np.asarray(he.data)[..., ::-1], rgb=True, name="restained", affine=he.affine.affine_matrix)
    predict(widget, qtbot, "restained", VIRTUAL)
    assert widget.result.prediction.reach.out_of_reach
    for where in (widget.predict_panel.status.text(), widget.message.text()):
        assert "WARNING: this slide looks unlike the training sections" in where, where


def test_the_dock_fits_420_px_and_every_control_explains_itself(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=False)
    widget = HistologyWidget(viewer)
    qtbot.addWidget(widget)
    widget.predict_panel.set_genes(["Penk", "a-rather-long-gene-name-0000001"], "Penk")
    assert_fits(widget, 420)
    assert_tooltips(widget)


def test_manifest_offers_the_widget():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(Path(__file__).parents[1] / "src" / "napari_casper" / "napari.yaml")
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    widgets = {w.display_name: commands[w.command] for w in manifest.contributions.widgets}
    assert widgets["Histology"] == "napari_casper._widgets.histology.widget:HistologyWidget"


def test_a_pretrained_encoder_typed_into_the_dock_trains_predicts_and_travels_with_the_model(
    histology, qtbot, tmp_path, monkeypatch, make_torchscript_encoder
):
    """The user's own encoder (a TorchScript file, as UNI & co. are exported) is typed into the dock; its
    embeddings replace the CNN's, and the saved model finds it again."""
    viewer, widget = histology
    cache = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_CASPER_CACHE", str(cache))
    encoder = make_torchscript_encoder(tmp_path / "my-he-encoder.pt")
    open_section(viewer, "MOB1")
    open_section(viewer, "MOB3", drop_table=True)
    options(widget, qtbot, epochs=2, n_variable=30, head="ridge", genes=", ".join(MARKERS))
    # a bare weights file with a typed timm architecture: without timm the dock says how to get it
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"")
    type_text(qtbot, widget.train_panel.encoder, str(weights))
    type_text(qtbot, widget.train_panel.encoder_arch, "no_such_net")
    run(widget, qtbot, widget.train_panel.train_button, "Train with an encoder that cannot load")
    assert widget.predictor is None and "timm" in widget.message.text(), widget.message.text()
    type_text(qtbot, widget.train_panel.encoder_arch, "")
    # "..." chooses the encoder file
    answer_file_dialog(qtbot, str(encoder))
    click(qtbot, widget.train_panel.encoder_browse)
    assert widget.train_panel.encoder.text() == str(encoder)
    run(widget, qtbot, widget.train_panel.train_button, "Train with a pretrained encoder")
    assert widget.predictor is not None, widget.message.text()
    assert widget.predictor.encoder.spec.kind == "torchscript" and widget.predictor.encoder.spec.n_features == 64
    assert "TorchScript encoder my-he-encoder.pt" in widget.train_panel.status.text()
    assert any(p.text.startswith("embedding section 1 of 1 (MOB1:spots)") for p in widget.phases)

    with Heartbeat() as beat:  # the new layer's first paint (its shaders) belongs to the prediction
        predict(widget, qtbot, "MOB3 image", "spots")
        settle()
    beat.assert_responsive(what="Predict and its first paint")
    assert any(p.text.startswith("embedding with the TorchScript encoder") for p in widget.phases)
    assert len(list(cache.glob("embeddings-*.npy"))) == 2  # MOB1's (training) and MOB3's, kept for next time
    prediction = widget.result.prediction
    truth = ad.read_h5ad(mob_path("MOB3"))
    penk = resolve_genes(MARKERS, truth, prediction.genes)["Penk"]
    r = float(pearson(log_normalised(truth, [penk]), prediction.expression[:, [prediction.genes.index(penk)]])[0])
    print(f"held-out MOB3 Penk PCC with a random-weight encoder: {r:.3f}")
    assert r > 0.2

    checkpoint = tmp_path / "mob-encoder.pt"
    answer_file_dialog(qtbot, str(checkpoint))
    run(widget, qtbot, widget.train_panel.save_button, "Save checkpoint")
    type_text(qtbot, widget.train_panel.encoder, "")  # the saved model finds its encoder where it was trained
    answer_file_dialog(qtbot, str(checkpoint))
    run(widget, qtbot, widget.train_panel.load_button, "Load checkpoint")
    from napari_casper.histology.pretrained import load_encoder

    assert widget.predictor.encoder.spec.fingerprint == load_encoder(encoder).spec.fingerprint  # its weights
    assert "TorchScript encoder my-he-encoder.pt" in widget.train_panel.status.text()
