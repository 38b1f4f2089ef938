"""The npe2 reader and sample data in a real napari viewer (Xvfb + Mesa), with screenshots."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path, mob_path

from napari_casper.io.store_writes import save_spatialdata
from napari_casper.io.stores import read_h5ad_spatial

pytestmark = pytest.mark.gui  # the tests that time nothing are also marked untimed

SPOT_RGB = np.array([255, 0, 255])  # magenta: absent from H&E, so its pixels are the spots


def spot_and_tissue_masks(viewer, points_layer, image_layer):
    """Screenshot twice (with and without spots); return (spot pixels, tissue pixels) masks."""
    from scipy import ndimage

    points_layer.face_color = "magenta"
    points_layer.border_width = 0
    points_layer.opacity = 1.0
    image_layer.visible = False
    viewer.reset_view()  # frame the spots
    image_layer.visible = True
    points_layer.visible = False
    tissue_shot = viewer.screenshot(canvas_only=True, flash=False)[:, :, :3].astype(float)
    points_layer.visible = True
    spots_shot = viewer.screenshot(canvas_only=True, flash=False)[:, :, :3].astype(float)
    spots = np.abs(spots_shot - SPOT_RGB).sum(axis=2) < 60
    saturation = tissue_shot.max(axis=2) - tissue_shot.min(axis=2)
    darkness = 255 - tissue_shot.mean(axis=2)
    on_slide = tissue_shot.sum(axis=2) > 30  # the black canvas outside the image is not tissue
    tissue = on_slide & ((saturation > np.median(saturation[on_slide]) + 12) | (darkness > np.median(darkness[on_slide]) + 25))
    tissue = ndimage.binary_dilation(ndimage.binary_closing(tissue, iterations=3), iterations=3)
    return spots, tissue


@pytest.mark.untimed
@pytest.mark.parametrize("section", [("mob", "MOB1"), ("her2st", "C2")])
def test_spots_are_drawn_on_the_tissue(make_napari_viewer, tmp_path, section):
    folder, name = section
    store = save_spatialdata(read_h5ad_spatial(data_path(folder, f"{name}.h5ad")), tmp_path / f"{name}.zarr")
    viewer = make_napari_viewer(show=True)
    layers = viewer.open(str(store), plugin="napari-casper")
    image_layer, points_layer = viewer.layers["image"], viewer.layers["spots"]
    assert len(layers) == 2 and points_layer.data.shape[0] > 150
    spots, tissue = spot_and_tissue_masks(viewer, points_layer, image_layer)
    assert spots.sum() > 2000, "spots are not visible in the screenshot"
    on_tissue = tissue[spots].mean()
    assert on_tissue > 0.9, f"only {on_tissue:.0%} of spot pixels lie over tissue"
    # negative control: the same spots moved by a third of the image width fall largely off tissue
    height, width = image_layer.data[0].shape[:2] if image_layer.multiscale else image_layer.data.shape[:2]
    points_layer.translate = (0, width / 3)
    shifted_spots, _ = spot_and_tissue_masks(viewer, points_layer, image_layer)
    assert tissue[shifted_spots].mean() < on_tissue - 0.15


def test_hovering_a_spot_reads_its_id_quickly(make_napari_viewer):
    """The HER2 section has 15.7k genes: hovering once listed them all (164k characters, ~1 s)."""
    import time

    from conftest import shared_path

    viewer = make_napari_viewer()
    viewer.open(str(shared_path("her2st", "C2.h5ad")), plugin="napari-casper")
    points = viewer.layers["spots"]
    assert list(points.features.columns) == ["spot", "patient"]
    meta = points.metadata["napari_casper"]
    world = points.data_to_world(points.data[10])
    start = time.perf_counter()
    status = points.get_status(world, world=True)["coordinates"]
    took = time.perf_counter() - start
    assert f"spot: {meta['instance_ids'][10]}" in status and len(status) < 200, status
    assert took < 0.05, f"hover took {took * 1000:.0f} ms"
    assert meta["element"] == "spots" and meta["table"] == "table" and meta["sdata"] is not None


@pytest.mark.untimed
def test_points_carry_table_obs(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open(str(mob_path("MOB1")), plugin="napari-casper")
    points = viewer.layers["spots"]
    assert points.features.shape[0] == 379 and points.features.columns[0] == "spot"
    meta = points.metadata["napari_casper"]
    assert meta["element"] == "spots" and meta["table"] == "table" and meta["sdata"] is not None


@pytest.mark.untimed
@pytest.mark.parametrize("key", ["drosophila", "mob"])
def test_open_sample(make_napari_viewer, key):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-casper", key)
    assert len(viewer.layers) == 2
    assert type(viewer.layers[-1]).__name__ == "Points"


@pytest.mark.parametrize(("key", "title", "points"), [
    ("drosophila", "Drosophila embryo (BDTNP atlas + Karaiskos scRNA)", "cells"),
    ("mob", "Mouse olfactory bulb section 1 (H&E + ST)", "spots"),
])  # fmt: skip
def test_file_open_sample_reads_in_the_background(make_napari_viewer, qtbot, capfd, key, title, points):
    """File > Open Sample > napari-casper > <sample>, chosen in the running viewer: the sample is read in a worker
    (napari would read it on the GUI thread: 2.5-3.2 s in a fresh viewer), the GUI never stalls over the limit,
    and the layers are those a script's ``open_sample`` gets, named as the sample (not a file) for saving."""
    from gui_checks import Heartbeat, menu_action
    from qtpy.QtCore import QTimer

    from napari_casper._widgets.common.background_open import opening

    viewer = make_napari_viewer(show=True)
    action = menu_action(viewer, "File", "Open Sample", "napari-casper", title)
    with Heartbeat() as beat:
        QTimer.singleShot(0, action.trigger)  # chosen while the viewer runs its event loop, as a user chooses it
        qtbot.waitUntil(lambda: points in viewer.layers, timeout=60_000)
        qtbot.waitUntil(lambda: not opening(), timeout=60_000)
    printed = capfd.readouterr()
    assert not [line for line in (printed.out + printed.err).splitlines() if "thread" in line and "QObject" in line]
    print(f"File > Open Sample > {key}: longest GUI stall {beat.longest:.2f} s")
    beat.assert_responsive(what=f"File > Open Sample > {key}")
    script = make_napari_viewer(show=False)
    script.open_sample("napari-casper", key)  # a script's open: read at once
    assert [layer.name for layer in script.layers] == [layer.name for layer in viewer.layers]
    for mine, theirs in zip(viewer.layers, script.layers, strict=True):
        assert type(mine) is type(theirs) and mine.visible == theirs.visible
        assert mine.metadata["napari_casper"]["path"] == theirs.metadata["napari_casper"]["path"] == f"sample:{key}"
    np.testing.assert_allclose(viewer.layers[points].data, script.layers[points].data)


@pytest.mark.untimed
def test_bad_folder_gives_clear_error(make_napari_viewer, tmp_path):
    folder = tmp_path / "notes.zarr"
    folder.mkdir()
    (folder / "readme.txt").write_text("not spatialdata")
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match="is not a SpatialData store"):
        viewer.open(str(folder), plugin="napari-casper")
    assert len(viewer.layers) == 0


@pytest.mark.untimed
def test_a_store_with_every_element_type_opens_in_napari(make_napari_viewer, tmp_path):
    """spatialdata's blobs(): labels, polygons, multipolygons, points, circles and images become layers
    that are drawn where the elements are; hovering a label reads its table row."""
    from napari.layers import Image, Labels, Points, Shapes
    from spatialdata.datasets import blobs

    sdata = blobs()
    table = sdata.tables["table"]
    table.obs["cell_type"] = np.where(table.obs["instance_id"].to_numpy() % 2 == 0, "tumour", "stroma")
    store = save_spatialdata(sdata, tmp_path / "blobs.zarr")
    viewer = make_napari_viewer(show=True)
    viewer.open(str(store), plugin="napari-casper")
    kinds = {layer.name: type(layer) for layer in viewer.layers}
    assert kinds["blobs_labels"] is Labels and kinds["blobs_multiscale_labels"] is Labels
    assert kinds["blobs_polygons"] is Shapes and kinds["blobs_multipolygons"] is Shapes
    assert kinds["blobs_points"] is Points and kinds["blobs_circles"] is Points
    assert kinds["blobs_image:0"] is Image and kinds["blobs_multiscale_image:2"] is Image  # one layer per channel

    labels = viewer.layers["blobs_labels"]
    for layer in viewer.layers:
        layer.visible = layer is labels
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)[:, :, :3]
    truth = sdata.labels["blobs_labels"].values > 0
    drawn = shot.sum(axis=2) > 0

    def cropped(mask):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

    from skimage.transform import resize

    expected = cropped(truth)
    seen = resize(cropped(drawn), expected.shape, order=0, anti_aliasing=False).astype(bool)
    iou = (seen & expected).sum() / (seen | expected).sum()
    assert iou > 0.8, f"the labels on screen match the element's labels only {iou:.0%} (intersection over union)"
    # hovering a labelled pixel: the label id and its row of the table (the table annotates the labels)
    y, x = np.argwhere(truth)[len(np.argwhere(truth)) // 2]
    label = int(sdata.labels["blobs_labels"].values[y, x])
    status = labels.get_status((float(y), float(x)), world=True)["coordinates"]
    cell_type = table.obs.set_index("instance_id").loc[label, "cell_type"]
    assert str(label) in status and f"cell_type: {cell_type}" in status, status


@pytest.mark.untimed
def test_napari_asks_which_reader_and_default_reader_makes_it_napari_casper(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """What ``napari store.zarr`` and File > Open do: several readers accept a ``.zarr`` folder
    (napari's own, napari-casper, napari-spatialdata when installed), so napari asks, and choosing
    napari-casper opens the store. After ``napari-casper default-reader`` (run as a command, into
    its own settings file here) napari opens every store with napari-casper without asking."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml
    from gui_checks import when_modal
    from napari.settings import get_settings
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QDialog, QDialogButtonBox, QRadioButton

    from napari_casper._widgets.common.reader_preference import set_default_reader
    from napari_casper.io.samples import load_drosophila

    first = save_spatialdata(load_drosophila(), tmp_path / "first.zarr")
    second = save_spatialdata(load_drosophila(), tmp_path / "second.zarr")
    settings = get_settings()
    before = dict(settings.plugins.extension2reader)
    viewer = make_napari_viewer(show=True)
    asked = []

    def answer(dialog) -> None:
        choices = {button.text(): button for button in dialog.findChildren(QRadioButton)}
        asked.append(sorted(choices))
        qtbot.mouseClick(choices["napari-casper"], Qt.MouseButton.LeftButton)
        qtbot.mouseClick(dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok), Qt.MouseButton.LeftButton)

    try:
        settings.plugins.extension2reader = {k: v for k, v in before.items() if "zarr" not in k}
        when_modal(QDialog, answer)  # napari asks which reader
        viewer.window._qt_viewer._qt_open([str(first)], stack=False)  # the path napari's command line and File > Open take
        assert asked and "napari-casper" in asked[0] and len(asked[0]) >= 2, asked
        assert "cells" in viewer.layers and "embryo" in viewer.layers

        config = tmp_path / "napari_settings.yaml"
        env = {**os.environ, "NAPARI_CONFIG": str(config)}
        console = str(Path(sys.executable).parent / "napari-casper")  # the installed command
        done = subprocess.run([console, "default-reader"], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "napari now opens *.zarr/ and *.h5ad with napari-casper" in done.stdout
        written = yaml.safe_load(config.read_text())["plugins"]["extension2reader"]
        assert written == {"*.zarr/": "napari-casper", "*.h5ad": "napari-casper"}

        monkeypatch.setattr(type(settings), "save", lambda self, *a, **k: None)  # this process: napari's own file stays as it was
        set_default_reader()
        viewer.layers.clear()
        viewer.window._qt_viewer._qt_open([str(second)], stack=False)
        assert len(asked) == 1 and "cells" in viewer.layers  # no question this time
    finally:
        settings.plugins.extension2reader = before


def test_file_open_folder_reads_a_store_in_the_background_and_reports_a_bad_one(make_napari_viewer, qtbot, capfd, tmp_path, monkeypatch):
    """napari's File > Open Folder (its shortcut and folder dialog, in the running viewer) reads a store in a worker:
    the GUI never stalls over the limit, the store's layers arrive as ``viewer.open`` gives them, and a folder that
    is not a store is named in an error notification, with nothing added and the folder untouched."""
    from gui_checks import Heartbeat, open_folder_by_shortcut
    from napari.utils.notifications import notification_manager

    from napari_casper._widgets.common.background_open import opening
    from napari_casper.io.samples import load_drosophila

    store = save_spatialdata(load_drosophila(), tmp_path / "embryo.zarr")
    viewer = make_napari_viewer(show=True)
    with Heartbeat() as beat:
        open_folder_by_shortcut(viewer, qtbot, store, monkeypatch)
        qtbot.waitUntil(lambda: "cells" in viewer.layers, timeout=60_000)
        qtbot.waitUntil(lambda: not opening(), timeout=60_000)
    print(f"File > Open Folder of the Drosophila store: longest GUI stall {beat.longest:.2f} s")
    printed = capfd.readouterr()
    threads = [line for line in (printed.out + printed.err).splitlines() if "thread" in line and "QObject" in line]
    assert not threads, threads  # no Qt object made or timer started off the GUI thread (the activity bar included)
    beat.assert_responsive(what="File > Open Folder of a store")
    script = make_napari_viewer(show=False)
    expected = script.open(str(store), plugin="napari-casper")  # a script's open: read at once, layers returned
    assert [layer.name for layer in expected] == [layer.name for layer in viewer.layers]
    for mine, theirs in zip(viewer.layers, expected, strict=True):
        assert type(mine) is type(theirs) and mine.visible == theirs.visible
        np.testing.assert_allclose(np.asarray(mine.data if not mine.multiscale else mine.data[-1]),
                                   np.asarray(theirs.data if not theirs.multiscale else theirs.data[-1]))

    bad = tmp_path / "notes.zarr"
    bad.mkdir()
    (bad / "readme.txt").write_text("not a store")
    before = len(notification_manager.records)
    n_layers = len(viewer.layers)
    open_folder_by_shortcut(viewer, qtbot, bad, monkeypatch)
    qtbot.waitUntil(lambda: len(notification_manager.records) > before and not opening(), timeout=30_000)
    messages = [str(record.message) for record in notification_manager.records[before:]]
    assert any("is not a SpatialData store" in text and "notes.zarr" in text for text in messages), messages
    assert len(viewer.layers) == n_layers and (bad / "readme.txt").read_text() == "not a store"
