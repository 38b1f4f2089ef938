"""The Regions dock widget as a user clicks it, in a real napari viewer (Xvfb + Mesa) on the packaged MOB sections.

Every action is a real click or key press on the widget's controls (file and colour dialogs
answered in the real dialog, as a user answers them), and a heartbeat on the GUI thread fails any
flow that stalls the event loop over 0.5 s.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import mob_path
from gui_checks import Steps, answer_colour_dialog, answer_file_dialog, assert_fits, assert_tooltips, choose, click, type_text, wait_drawn, wait_warmed_up
from napari.utils.notifications import notification_manager
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QColorDialog, QFileDialog

from napari_casper._widgets.regions.layers import PREVIEW_NAME
from napari_casper._widgets.regions.widget import RegionsWidget
from napari_casper.io.stores import read_spatialdata
from napari_casper.regions import region_membership, spot_context

pytestmark = pytest.mark.gui
#: MOB markers (gene symbols are the MOB var_names): granule-cell layer Penk, mitral/tufted Nrgn
MARKERS = "Penk, Nrgn"


def messages(since: int) -> list[str]:
    return [str(r.message) for r in notification_manager.records[since:]]


def idle(qtbot, widget, timeout: int = 60_000) -> None:
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


@pytest.fixture()
def regions_widget(make_napari_viewer, qtbot):
    created = []

    def make():
        viewer = make_napari_viewer(show=True)
        viewer.window._qt_window.resize(1600, 1000)
        widget = RegionsWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Regions")
        created.append(widget)
        qtbot.waitUntil(widget.open_button.isVisible, timeout=10_000)
        wait_drawn(viewer, qtbot)  # the window's first paint with the dock: the dock's opening, not a timed step
        wait_warmed_up(qtbot)  # started after that paint: also the dock's opening
        return viewer, widget

    yield make
    for widget in created:  # leaked worker threads crash the next test
        qtbot.waitUntil(lambda widget=widget: not widget.busy, timeout=60_000)


#: the pause between two actions a user makes by hand (a click, a drawn shape): no one draws two shapes in one event-loop turn
USER_PAUSE_MS = 50


def open_by_click(qtbot, monkeypatch, widget, path) -> None:
    """Open section... with the file dialog answering ``path``; waits until the layers are in."""
    answer_file_dialog(qtbot, path)
    click(qtbot, widget.open_button)
    idle(qtbot, widget, 120_000)


def spots_xy(viewer) -> np.ndarray:
    return spot_context(viewer.layers["spots"].metadata["napari_casper"]["sdata"]).coords


def square(centre_xy, half: float) -> np.ndarray:
    """A napari (y, x) square around an (x, y) centre."""
    x, y = centre_xy
    return np.array([[y - half, x - half], [y - half, x + half], [y + half, x + half], [y + half, x - half]], float)


#: the steps that add napari layers (the section's image and spots, a regions layer, the score and its preview
#: outlines, accepted outlines, a loaded layer)


def test_every_action_by_click_on_mob1_without_freezing(regions_widget, qtbot, monkeypatch, tmp_path):
    viewer, widget = regions_widget()
    start = len(notification_manager.records)
    step = Steps()
    if True:
        step("open")
        open_by_click(qtbot, monkeypatch, widget, mob_path("MOB1"))
        assert {"image", "spots"} <= {layer.name for layer in viewer.layers}
        assert widget.spots_combo.currentText() == "spots"
        assert "opened MOB1.h5ad" in widget.message.text()

        step("classes")
        # classes: add (typed + Add), colour (dialog answered), remove
        type_text(qtbot, widget.class_name, "necrosis", enter=False)
        click(qtbot, widget.classes_panel.add_button)
        assert "necrosis" in widget.classes and widget.current_class == "necrosis"
        assert "class 'necrosis' added" in widget.message.text()
        answer_colour_dialog(qtbot, "#123456")
        click(qtbot, widget.classes_panel.colour_button)
        assert widget.classes.colour("necrosis") == "#123456" and "#123456" in widget.message.text()
        type_text(qtbot, widget.class_name, "scratch")  # Return adds too
        assert widget.current_class == "scratch"
        click(qtbot, widget.classes_panel.remove_button)
        assert "scratch" not in widget.classes and "removed" in widget.message.text()

        step("new layer + draw")
        # a regions layer, hand-drawn shapes in the chosen classes, reclassified by click
        click(qtbot, widget.new_layer_button)
        layer = viewer.layers["regions"]
        assert widget.regions_combo.currentText() == "regions"
        xy = spots_xy(viewer)
        centre = np.median(xy, axis=0)
        qtbot.wait(USER_PAUSE_MS)  # each action below is a user's own event: the event loop turns in between
        widget.class_list.setCurrentRow(widget.classes.names.index("stroma"))  # a click in the legend list
        layer.add([square(centre, 150)], shape_type="polygon")  # what napari's polygon tool adds
        qtbot.wait(USER_PAUSE_MS)
        widget.class_list.setCurrentRow(widget.classes.names.index("necrosis"))
        layer.add([square(xy.min(axis=0) + 120, 100)], shape_type="rectangle")
        qtbot.wait(USER_PAUSE_MS)
        assert list(layer.features["class"]) == ["stroma", "necrosis"]
        assert list(layer.features["origin"]) == ["drawn", "drawn"]
        np.testing.assert_allclose(layer.edge_color[1][:3], widget.classes.rgba("necrosis")[:3])
        layer.selected_data = {1}
        widget.class_list.setCurrentRow(widget.classes.names.index("normal"))
        click(qtbot, widget.assign_button)
        assert list(layer.features["class"]) == ["stroma", "normal"]
        np.testing.assert_allclose(layer.face_color[1][:3], widget.classes.rgba("normal")[:3])
        assert "1 shape(s) set to class 'normal'" in widget.message.text()

        step("score")
        # suggest from markers: score, slider by keyboard, Otsu, accept
        type_text(qtbot, widget.genes_edit, MARKERS)
        click(qtbot, widget.score_button)
        idle(qtbot, widget)
        suggestion = widget.suggestion
        assert suggestion.threshold == pytest.approx(suggestion.otsu) and "Otsu" in widget.threshold_label.text()
        assert "biomarker score" in viewer.layers["spots"].features
        preview = viewer.layers[PREVIEW_NAME]
        assert len(preview.data) == len(suggestion.polygons) >= 1 and set(preview.shape_type) == {"path"}
        step("threshold")
        above = int(suggestion.above.sum())
        widget.threshold_slider.setFocus()
        for _ in range(2):
            qtbot.keyClick(widget.threshold_slider, Qt.Key.Key_PageUp)
        qtbot.waitUntil(lambda: widget.suggestion.threshold > suggestion.otsu, timeout=10_000)
        idle(qtbot, widget)
        assert widget.suggestion.above.sum() < above and "threshold" in widget.message.text()
        click(qtbot, widget.otsu_button)
        idle(qtbot, widget)
        assert widget.suggestion.threshold == pytest.approx(suggestion.otsu)
        step("accept")
        n_outlines = len(widget.suggestion.polygons)
        click(qtbot, widget.accept_button)
        idle(qtbot, widget)
        assert PREVIEW_NAME not in viewer.layers
        assert len(layer.data) == 2 + n_outlines
        assert list(layer.features["origin"][2:]) == ["suggested"] * n_outlines
        assert set(layer.features["class"][2:]) == {"tumour"}
        assert "added" in widget.message.text() and "hand-drawn ones win" in widget.message.text()

        step("statistics")
        # statistics, differential genes, CSV export
        click(qtbot, widget.stats_button)
        idle(qtbot, widget)
        stats = widget.statistics
        assert widget.stats_table.rowCount() == len(stats) and "spots per class" in widget.message.text()
        tumour = stats[(stats["level"] == "class") & (stats["name"] == "tumour")].iloc[0]
        assert tumour["n_spots"] == (viewer.layers["spots"].features["region_class"] == "tumour").sum() > 0
        step("differential")
        choose(qtbot, widget.de_combo, "class: tumour")
        click(qtbot, widget.de_button)
        idle(qtbot, widget)
        assert widget.differential is not None and widget.de_table.rowCount() == 50
        assert {"Penk", "Nrgn"} & set(widget.differential["gene"][:30])
        csv = tmp_path / "stats.csv"
        answer_file_dialog(qtbot, csv)
        click(qtbot, widget.export_button)
        pd.testing.assert_frame_equal(pd.read_csv(csv), stats, check_dtype=False, check_categorical=False)
        assert (tmp_path / "stats_differential_genes.csv").is_file()

        step("save")
        # save (typed store, a new one from the open .h5ad), save again (next version), refresh + load
        store = tmp_path / "mob1.zarr"
        type_text(qtbot, widget.store_edit, str(store), enter=False)
        click(qtbot, widget.save_button)
        idle(qtbot, widget)
        assert widget.last_saved.shapes_name == "regions" and "new store created" in widget.message.text()
        assert "each spot's region as table 'regions_spots' annotating 'spots'" in widget.message.text()
        with step.aside():  # the test reads the store back on this thread; not the user's wait
            assigned = read_spatialdata(store).tables["regions_spots"]  # what Statistics assigned, saved with them
            np.testing.assert_array_equal(
                assigned.obs.set_index("spot_id")["class"].astype(str).loc[np.asarray(widget.spot_context().instance_ids)],
                widget.spot_context().table.obs["region_class"].astype(str).to_numpy()[widget.spot_context().rows],
            )
        click(qtbot, widget.save_button)
        idle(qtbot, widget)
        assert widget.last_saved.shapes_name == "regions_2"
        assert widget.load_combo.count() == 2 and widget.load_combo.currentText() == "regions_2"  # the newest, ready to load
        step("load")
        click(qtbot, widget.save_panel.refresh_button)
        idle(qtbot, widget)
        choose(qtbot, widget.load_combo, "regions_2")
        click(qtbot, widget.load_button)
        idle(qtbot, widget)
        loaded = viewer.layers["regions_2"]
        assert widget.regions_combo.currentText() == "regions_2"
        assert list(loaded.features["class"]) == list(layer.features["class"])
        assert list(loaded.features["origin"]) == list(layer.features["origin"])
        np.testing.assert_allclose(loaded.edge_color[1][:3], widget.classes.rgba("normal")[:3])
    step.assert_responsive()
    on_disk = read_spatialdata(store).tables["regions_table"].obs
    assert list(on_disk["class"]) == list(layer.features["class"]) and "origin" in on_disk
    assert not [m for m in messages(start) if "Error" in m or "error" in m]


def test_hand_drawn_regions_win_over_suggestions_unless_chosen(regions_widget, qtbot, monkeypatch):
    """A hand-drawn stroma region keeps its spots where a suggested tumour outline overlaps it (by default)."""
    viewer, widget = regions_widget()
    open_by_click(qtbot, monkeypatch, widget, mob_path("MOB1"))
    click(qtbot, widget.new_layer_button)
    layer = viewer.layers["regions"]
    type_text(qtbot, widget.genes_edit, MARKERS)
    click(qtbot, widget.score_button)
    idle(qtbot, widget)
    # a stroma square around the highest-scoring spot: it overlaps the suggested outline
    ctx = widget.spot_context()
    hot = ctx.coords[np.argmax(widget.suggestion.smoothed)]
    widget.class_list.setCurrentRow(widget.classes.names.index("stroma"))
    layer.add([square(hot, 220)], shape_type="polygon")
    click(qtbot, widget.accept_button)
    idle(qtbot, widget)
    regions = widget.layer_regions()
    inside = region_membership(ctx, regions)
    drawn_alone = int(inside[:, 0].sum())
    overlap = int((inside[:, 0] & inside[:, 1:].any(axis=1)).sum())
    assert drawn_alone >= 5 and overlap >= 3, (drawn_alone, overlap)

    def stroma_spots() -> int:
        click(qtbot, widget.stats_button)
        idle(qtbot, widget)
        stats = widget.statistics
        return int(stats[(stats["level"] == "class") & (stats["name"] == "stroma")]["n_spots"].iloc[0])

    assert widget.precedence_combo.currentData() == "drawn"
    assert stroma_spots() == drawn_alone  # default: every spot of the hand-drawn region stays stroma
    choose(qtbot, widget.precedence_combo, "suggested regions win over hand-drawn ones")
    assert stroma_spots() == drawn_alone - overlap
    assert "suggested regions win" in widget.message.text()
    choose(qtbot, widget.precedence_combo, "the top-most (last) shape wins")
    assert stroma_spots() == drawn_alone - overlap  # the suggestion was added last, on top


def test_dock_fits_420_px_has_tooltips_and_messages_follow_the_state(regions_widget, qtbot, monkeypatch):
    viewer, widget = regions_widget()
    assert_fits(widget, 420)
    assert_tooltips(widget)
    start = len(notification_manager.records)
    click(qtbot, widget.score_button)  # nothing open yet
    assert "no spots layer" in widget.message.text()
    assert not widget.accept_button.isEnabled() and not widget.threshold_slider.isEnabled()
    open_by_click(qtbot, monkeypatch, widget, mob_path("MOB2"))
    assert "opened MOB2.h5ad" in widget.message.text()  # the earlier error is gone
    type_text(qtbot, widget.genes_edit, "Penk, NOT_A_GENE")
    click(qtbot, widget.score_button)
    idle(qtbot, widget)
    assert "NOT_A_GENE" in widget.message.text()
    click(qtbot, widget.save_button)  # nothing drawn
    assert "no regions layer" in widget.message.text()
    click(qtbot, widget.new_layer_button)
    click(qtbot, widget.assign_button)
    assert "no shape is selected" in widget.message.text()
    click(qtbot, widget.de_button)
    assert "compute the statistics first" in widget.message.text()
    layer = viewer.layers["regions"]
    widget.class_list.setCurrentRow(0)  # tumour
    layer.add([square(spots_xy(viewer).mean(axis=0), 200)], shape_type="ellipse")
    click(qtbot, widget.classes_panel.remove_button)
    assert "used by shapes" in widget.message.text()
    assert len(messages(start)) >= 5
    assert_fits(widget, 420)  # still fits with tables, plot and the progress bar laid out
    assert_tooltips(widget)


def test_learn_from_a_few_strokes_by_click(regions_widget, qtbot, monkeypatch):
    """Draw two small regions per class, click Learn: every spot gets a class (what the engine learns from the
    same spots), a stroke more updates it by itself, Accept adds editable outlines and the strokes stay."""
    from napari_casper._widgets.regions.layers import LEARNED_PREVIEW_NAME
    from napari_casper.regions.learn import StrokeLearner, region_examples

    viewer, widget = regions_widget()
    step = Steps()
    open_by_click(qtbot, monkeypatch, widget, mob_path("MOB1"))
    click(qtbot, widget.new_layer_button)
    layer = viewer.layers["regions"]
    ctx = widget.spot_context()
    type_text(qtbot, widget.genes_edit, "Penk")
    click(qtbot, widget.score_button)
    idle(qtbot, widget)
    score = widget.suggestion.smoothed
    pitch = np.median(np.sort(np.linalg.norm(ctx.coords[:, None] - ctx.coords[None], axis=2), axis=1)[:, 1])
    high, low = np.argsort(score)[::-1], np.argsort(score)
    step("draw")
    for cls, picks in (("tumour", high[[0, 25]]), ("stroma", low[[0, 25]])):
        widget.class_list.setCurrentRow(widget.classes.names.index(cls))  # a click in the legend list
        for i in picks:
            layer.add([square(ctx.coords[i], 1.2 * pitch)], shape_type="rectangle")
    step("learn")
    click(qtbot, widget.learn_button)
    idle(qtbot, widget)
    learned = widget.learn_panel.learned
    assert set(learned.classes) == {"tumour", "stroma"}
    preview = viewer.layers[LEARNED_PREVIEW_NAME]
    assert len(preview.data) == len(widget.learn_panel.learned_regions) >= 2 and set(preview.shape_type) == {"path"}
    assert "from" in widget.learned_label.text() and "tumour" in widget.learned_label.text()
    with step.aside():  # known truth: the engine on the spots inside the hand-drawn regions
        marks = np.asarray(region_examples(ctx, widget.layer_regions()), dtype=object)
        expected = StrokeLearner.from_spots(ctx).learn(marks)
        np.testing.assert_array_equal(learned.labels, expected.labels)
        assert learned.labelled.sum() == (marks != None).sum() >= 8  # noqa: E711
        # the strokes follow the markers: most high-Penk spots are learned as the class drawn there
        assert (learned.labels[high[:40]] == "tumour").mean() > 0.8
    assert viewer.layers.selection.active is layer  # the preview never becomes the layer drawn in
    step("stroke")
    before = int(learned.labelled.sum())
    widget.class_list.setCurrentRow(widget.classes.names.index("stroma"))
    layer.add([square(ctx.coords[low[60]], 1.2 * pitch)], shape_type="rectangle")
    qtbot.waitUntil(lambda: widget.learn_panel.learned is not learned, timeout=20_000)
    idle(qtbot, widget)
    assert widget.learn_panel.learned.labelled.sum() > before
    names = list(layer.features["name"])
    assert layer.features["class"].iloc[-1] == "stroma" and len(set(names)) == len(names) == 5, names
    step("reclass")
    learned = widget.learn_panel.learned
    layer.selected_data = {1}  # the second tumour stroke becomes stroma: the classes are learned again
    click(qtbot, widget.assign_button)
    qtbot.waitUntil(lambda: widget.learn_panel.learned is not learned, timeout=20_000)
    idle(qtbot, widget)
    assert widget.learn_panel.learned.counts()["stroma"] > learned.counts()["stroma"]
    step("delete")
    layer.selected_data = {i for i, c in enumerate(layer.features["class"]) if c == "stroma"}
    layer.remove_selected()  # only tumour strokes left: nothing to tell apart, the preview goes
    qtbot.waitUntil(lambda: LEARNED_PREVIEW_NAME not in viewer.layers, timeout=20_000)
    idle(qtbot, widget)
    assert widget.learn_panel.learned is None and not widget.accept_learned_button.isEnabled()
    assert "not learned: only class 'tumour' has examples" in widget.learned_label.text()
    widget.class_list.setCurrentRow(widget.classes.names.index("stroma"))
    layer.add([square(ctx.coords[low[0]], 1.2 * pitch)], shape_type="rectangle")  # the fix learns again
    qtbot.waitUntil(lambda: widget.learn_panel.learned is not None, timeout=20_000)
    idle(qtbot, widget)
    assert LEARNED_PREVIEW_NAME in viewer.layers and widget.accept_learned_button.isEnabled()
    step("accept")
    n_drawn = len(layer.data)
    n_learned = len(widget.learn_panel.learned_regions)
    click(qtbot, widget.accept_learned_button)
    idle(qtbot, widget)
    assert LEARNED_PREVIEW_NAME not in viewer.layers
    assert len(layer.data) == n_drawn + n_learned
    assert list(layer.features["origin"][:n_drawn]) == ["drawn"] * n_drawn
    assert list(layer.features["origin"][n_drawn:]) == ["suggested"] * n_learned
    assert not widget.accept_learned_button.isEnabled()
    # steps that draw new shapes, text or a new preview: napari builds shaders and glyphs on the GUI thread
    step.assert_responsive()


def test_saving_regions_drawn_on_the_packaged_sample_asks_where_and_writes_nothing_else(regions_widget, qtbot, tmp_path, monkeypatch):
    """The MOB sample names no file: the store box proposes none and Save regions asks where (it used to write a
    'sample:mob.zarr' folder into the working directory, then fail to read it back)."""
    monkeypatch.chdir(tmp_path)
    viewer, widget = regions_widget()
    viewer.open_sample("napari-casper", "mob")
    qtbot.waitUntil(lambda: widget.spots_combo.currentText() == "spots", timeout=10_000)
    assert widget.save_panel.default_store() == ""
    click(qtbot, widget.new_layer_button)
    centre = np.median(spots_xy(viewer), axis=0)
    qtbot.wait(USER_PAUSE_MS)
    viewer.layers["regions"].add([square(centre, 150)], shape_type="polygon")
    qtbot.wait(USER_PAUSE_MS)
    # the genes box still holds the human HER2 markers: statistics are computed, the absent markers named
    click(qtbot, widget.stats_button)
    idle(qtbot, widget)
    assert widget.statistics is not None and "spots per class" in widget.message.text(), widget.message.text()
    assert "Marker means left out, not in this table: ERBB2, GRB7, KRT19, EPCAM" in widget.message.text()
    # a store name the writer takes but cannot read back ('odd:' is a URI scheme to pyarrow): an error, and the
    # store this save created is not left behind
    odd = tmp_path / "odd:name.zarr"
    type_text(qtbot, widget.store_edit, odd.name, enter=False)  # relative, in the working directory
    click(qtbot, widget.save_button)
    idle(qtbot, widget)
    assert widget.last_saved is None and "odd:name.zarr" in widget.message.text(), widget.message.text()
    assert not odd.exists()
    type_text(qtbot, widget.store_edit, "", enter=False)
    store = tmp_path / "chosen" / "mob.zarr"
    store.parent.mkdir()
    answer_file_dialog(qtbot, store)
    click(qtbot, widget.save_button)
    idle(qtbot, widget)
    assert widget.last_saved is not None and widget.last_saved.shapes_name == "regions", widget.message.text()
    assert "regions" in read_spatialdata(store).shapes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chosen"]  # nothing written beside it
