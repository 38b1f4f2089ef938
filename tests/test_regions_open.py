"""Opening sections with the Regions widget (named phases, Cancel) and reopening saved regions from a store."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import mob_path, shared_path
from gui_checks import Heartbeat, answer_file_dialog, click, open_folder_by_shortcut, wait_drawn, wait_warmed_up

from napari_casper._widgets.common.background_open import opening
from napari_casper._widgets.regions.widget import RegionsWidget
from napari_casper.io.store_writes import save_spatialdata
from napari_casper.io.stores import read_h5ad_spatial
from napari_casper.regions import RegionClasses, RegionSet, save_regions, spot_context

pytestmark = pytest.mark.gui
#: Cancel must have taken effect (worker stopped, widget usable) within this many seconds
CANCEL_LIMIT = 1.0


@pytest.fixture()
def regions_widget(make_napari_viewer, qtbot):
    created = []

    def make():
        viewer = make_napari_viewer(show=True)
        widget = RegionsWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Regions")
        created.append(widget)
        qtbot.waitUntil(widget.open_button.isVisible, timeout=10_000)
        wait_drawn(viewer, qtbot)  # the window's first paint with the dock: the dock's opening, not a timed step
        wait_warmed_up(qtbot)  # started after that paint: also the dock's opening
        return viewer, widget

    yield make
    for widget in created:
        widget.open_panel.cancel()
        qtbot.waitUntil(lambda widget=widget: not widget.busy, timeout=60_000)


@pytest.mark.parametrize("route", ["open section", "napari's File > Open Folder"])
def test_reopening_a_store_shows_its_saved_regions_as_an_editable_layer(regions_widget, qtbot, tmp_path, route, monkeypatch):
    """Both ways back into a saved store give the editable regions, and neither stalls the GUI over the limit:
    the dock's Open section... and napari's own File > Open Folder (its shortcut, its folder dialog) both read
    the store in a worker and add its layers a turn at a time."""
    store = save_spatialdata(read_h5ad_spatial(mob_path("MOB3")), tmp_path / "mob3.zarr")
    sdata = read_h5ad_spatial(mob_path("MOB3"))
    lo, hi = spot_context(sdata).coords.min(axis=0), spot_context(sdata).coords.max(axis=0)
    mid = (lo + hi) / 2
    legend = RegionClasses({"tumour": "#e6194b", "stroma": "#f58231", "necrosis": "#101010"})
    saved = RegionSet(
        [
            np.array([[lo[1], lo[0]], [lo[1], mid[0]], [mid[1], mid[0]], [mid[1], lo[0]]]),
            np.array([[mid[1], mid[0]], [mid[1], hi[0]], [hi[1], hi[0]], [hi[1], mid[0]]]),
            np.array([[lo[1], mid[0]], [lo[1], hi[0]], [mid[1], hi[0]]]),
        ],
        ["rectangle", "ellipse", "polygon"],
        ["tumour", "necrosis", "stroma"],
        palette=legend,
        origins=["suggested", "drawn", "drawn"],
    )
    save_regions(store, saved, "regions")

    viewer, widget = regions_widget()
    with Heartbeat() as beat:
        if route == "open section":
            answer_file_dialog(qtbot, store)
            click(qtbot, widget.open_button)
            qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
        else:
            open_folder_by_shortcut(viewer, qtbot, store, monkeypatch)
        qtbot.waitUntil(lambda: widget.regions_combo.currentText() == "regions", timeout=60_000)
        qtbot.waitUntil(lambda: not widget.busy and not opening(), timeout=60_000)
    print(f"reopen store by {route}: longest GUI stall {beat.longest:.2f} s")
    beat.assert_responsive(what=f"reopening a store by {route} (adds its layers)")
    assert sum(layer.name == "regions" for layer in viewer.layers) == 1 and "image" in viewer.layers
    layer = viewer.layers["regions"]
    assert type(layer).__name__ == "Shapes"
    assert list(layer.shape_type) == ["rectangle", "ellipse", "polygon"]
    assert list(layer.features["class"]) == ["tumour", "necrosis", "stroma"]
    assert list(layer.features["origin"]) == ["suggested", "drawn", "drawn"]
    np.testing.assert_allclose(layer.edge_color[1], [16 / 255, 16 / 255, 16 / 255, 1], atol=1e-6)
    assert layer.text.string.format == "{class}"  # class names written on the shapes
    # the widget recognises it: the saved legend (with its colours) is the widget's, the layer is the regions layer
    assert widget.classes.colour("necrosis") == "#101010" and "necrosis" in widget.suggest_panel.chosen_class() + " ".join(
        widget.classes.names
    )
    assert "3 saved region(s)" in widget.message.text()
    # editable: a new shape takes the chosen class and its colour
    widget.class_list.setCurrentRow(widget.classes.names.index("necrosis"))
    layer.add([np.array([[lo[1], lo[0]], [lo[1], lo[0] + 300], [lo[1] + 300, lo[0] + 300]])], shape_type="polygon")
    assert layer.features["class"].iloc[-1] == "necrosis" and layer.features["origin"].iloc[-1] == "drawn"
    np.testing.assert_allclose(layer.edge_color[-1][:3], [16 / 255] * 3, atol=1e-6)
    assert len(widget.layer_regions()) == 4


def open_her2(qtbot, widget) -> str:
    path = shared_path("her2st", "C2.h5ad")
    answer_file_dialog(qtbot, path)
    click(qtbot, widget.open_button)
    return path.name


def test_opening_her2_with_its_full_resolution_image_shows_phases_and_cancels_within_a_second(
    regions_widget, qtbot, monkeypatch
):
    """C2.h5ad + its 9274 x 9911 jpg: a worker with named phases, Cancel within 1 s in each, then a full open."""
    viewer, widget = regions_widget()
    latencies = {}
    for phase in ("decoding image", "image level"):  # the engine phases after these are cancelled the same way
        seen = []
        widget.message.setText("")
        with Heartbeat() as beat:
            open_her2(qtbot, widget)
            qtbot.waitUntil(lambda phase=phase: phase in widget.message.text(), timeout=120_000)
            seen.append(widget.message.text())
            assert widget.progress.isVisible() and widget.cancel_button.isEnabled()
            pressed = time.perf_counter()
            click(qtbot, widget.cancel_button)
            qtbot.waitUntil(lambda: not widget.busy, timeout=10_000)
            latencies[phase] = time.perf_counter() - pressed
        assert "cancelled" in widget.message.text() and not {"image", "spots"} & {la.name for la in viewer.layers}
        beat.assert_responsive(what=f"opening HER2 C2 until Cancel in {phase!r}")
        assert latencies[phase] < CANCEL_LIMIT, f"Cancel during {seen[0]!r} took {latencies[phase]:.2f} s"
    print("cancel latency per phase: " + ", ".join(f"{k} {v:.2f} s" for k, v in latencies.items()))

    phases = []
    show = widget.message.setText
    monkeypatch.setattr(widget.message, "setText", lambda text: (phases.append(text), show(text)))
    with Heartbeat() as beat:
        open_her2(qtbot, widget)
        qtbot.waitUntil(lambda: not widget.busy, timeout=180_000)
    print(f"HER2 C2 open: longest GUI stall {beat.longest:.2f} s over {len(beat.gaps)} ticks")
    assert {"image", "spots"} <= {layer.name for layer in viewer.layers}
    image = viewer.layers["image"]
    assert image.multiscale and image.data[0].shape[:2] == (9911, 9274) and isinstance(image.data[-1], np.ndarray)
    for expected in ("reading table", "decoding image C2.jpg", "image level 2 of 5", "building spots", "building layer"):
        assert any(expected in p for p in phases), (expected, phases)
    assert "opened C2.h5ad" in widget.message.text()
    beat.assert_responsive(what="opening HER2 C2 with its 9274 x 9911 jpg")  # adds the image and spots layers


def test_a_file_chosen_inside_a_store_opens_the_store(tmp_path):
    from napari_casper._widgets.regions.open_panel import store_root

    store = tmp_path / "section.zarr"
    assert store_root(store / "tables" / "table" / "zarr.json") == store
    assert store_root(store) == store
    assert store_root(tmp_path / "MOB3.h5ad") == tmp_path / "MOB3.h5ad"
