"""The Regions dock widget in a real napari viewer (Xvfb + Mesa) on real HER2 and MOB sections."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import mob_path, shared_path
from napari.utils.notifications import notification_manager

from napari_casper._widgets.regions.layers import PREVIEW_NAME
from napari_casper._widgets.regions.widget import RegionsWidget
from napari_casper.display.layers import spatialdata_to_layers
from napari_casper.errors import CasperInputError
from napari_casper.io.convert import anndata_to_spatialdata
from napari_casper.io.stores import read_h5ad_spatial, read_spatialdata, save_spatialdata
from napari_casper.regions import (
    HER2_TUMOUR_MARKERS,
    RegionSet,
    load_regions,
    region_statistics,
    save_regions,
    spot_context,
)

pytestmark = pytest.mark.gui


def messages(since: int) -> list[str]:
    return [str(r.message) for r in notification_manager.records[since:]]


@pytest.fixture()
def mob_store(tmp_path):
    return save_spatialdata(read_h5ad_spatial(mob_path("MOB1")), tmp_path / "mob1.zarr")


@pytest.fixture()
def regions_widget(make_napari_viewer, qtbot):
    created = []

    def make(show: bool = False):
        viewer = make_napari_viewer(show=show)
        widget = RegionsWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Regions")
        created.append(widget)
        return viewer, widget

    yield make
    for widget in created:  # leaked worker threads crash the next test
        qtbot.waitUntil(lambda widget=widget: not widget.busy, timeout=60_000)


def open_spots(viewer, path, store=None) -> None:
    """The spots of an ``.h5ad`` (no image, to stay fast) as the reader would add them."""
    sdata = anndata_to_spatialdata(ad.read_h5ad(path))
    for data, kwargs, kind in spatialdata_to_layers(sdata, source=None if store is None else str(store)):
        getattr(viewer, f"add_{kind}")(data, **kwargs)


def open_her2_spots(viewer, section: str = "C2", store=None) -> None:
    """HER2 spots (no 9300 px image), see :func:`open_spots`."""
    open_spots(viewer, shared_path("her2st", f"{section}.h5ad"), store)


def test_draw_every_shape_kind_save_versioned_and_reopen_from_disk(mob_store, regions_widget, qtbot):
    # mob_store first: without ../shared it skips before a viewer exists (napari's viewer
    # fixture cannot tear down after a skip in set-up)
    viewer, widget = regions_widget(show=True)
    viewer.open(str(mob_store), plugin="napari-casper")
    assert widget.spots_combo.currentText() == "spots" and widget.store_edit.text() == str(mob_store)
    layer = widget.new_regions_layer()
    np.testing.assert_allclose(layer.affine.affine_matrix, viewer.layers["spots"].affine.affine_matrix)
    kinds = {
        "tumour": ("polygon", [[700, 700], [650, 1000], [900, 1150], [1000, 800]]),
        "stroma": ("rectangle", [[1100, 600], [1100, 900], [1300, 900], [1300, 600]]),
        "immune": ("ellipse", [[500, 1000], [500, 1300], [700, 1300], [700, 1000]]),
    }
    for cls, (shape_type, vertices) in kinds.items():
        widget.select_class(cls)
        layer.add([np.array(vertices, float)], shape_type=shape_type)
    theta = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    lasso = np.c_[1000 + 120 * np.sin(theta), 1200 + 150 * np.cos(theta) * (1 + 0.2 * np.sin(4 * theta))]
    widget.add_class("necrosis", "#000000")
    layer.add([lasso], shape_type="polygon")  # what the freehand (lasso) tool draws
    assert list(layer.features["class"]) == ["tumour", "stroma", "immune", "necrosis"]
    np.testing.assert_allclose(layer.edge_color[3], [0, 0, 0, 1])
    np.testing.assert_allclose(layer.edge_color[0][:3], widget.classes.rgba("tumour")[:3])

    layer.selected_data = {1}
    widget.set_class_of_selected("normal")
    assert layer.features["class"][1] == "normal"
    np.testing.assert_allclose(layer.face_color[1][:3], widget.classes.rgba("normal")[:3])

    start = len(notification_manager.records)
    widget.save()  # real worker thread
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    assert any("Saved 4 regions" in m and "'regions'" in m for m in messages(start)), messages(start)
    widget.save()
    widget.wait()
    assert widget.last_saved.shapes_name == "regions_2"
    widget.name_edit.setText("regions")
    start = len(notification_manager.records)
    widget.save()
    widget.wait()
    assert any("already has" in m and "overwrite" in m for m in messages(start)), messages(start)
    on_disk = read_spatialdata(mob_store)
    assert {"regions", "regions_2"} <= set(on_disk.shapes) and "regions_3" not in on_disk.shapes
    assert list(on_disk.tables["regions_table"].obs["class"]) == ["tumour", "normal", "immune", "necrosis"]

    # reopen from disk in a fresh viewer: classes, colours and shape kinds come back, editable
    viewer2, widget2 = regions_widget()
    viewer2.open(str(mob_store), plugin="napari-casper")
    assert widget2.refresh_saved_regions() == ["regions", "regions_2"]
    loaded = widget2.load("regions")
    assert list(loaded.features["class"]) == ["tumour", "normal", "immune", "necrosis"]
    assert list(loaded.shape_type) == ["polygon", "rectangle", "ellipse", "polygon"]
    assert widget2.classes.colour("necrosis") == "#000000"
    np.testing.assert_allclose(loaded.edge_color[3], [0, 0, 0, 1])
    for before, after in zip(
        widget.layer_regions(layer).world_polygons(), widget2.layer_regions(loaded).world_polygons()
    ):
        assert before.symmetric_difference(after).area < 1e-6 * before.area


def drawn_pixels(viewer, layer) -> np.ndarray:
    """Canvas pixels that change when ``layer`` is shown, and the screenshot with it."""
    layer.visible = False
    without = viewer.screenshot(canvas_only=True, flash=False)[:, :, :3].astype(int)
    layer.visible = True
    shot = viewer.screenshot(canvas_only=True, flash=False)[:, :, :3].astype(int)
    return np.abs(shot - without).sum(axis=2) > 30, shot


def test_auto_suggest_slider_accept_statistics_and_differential_genes(regions_widget, tmp_path, qtbot):
    viewer, widget = regions_widget(show=True)
    open_her2_spots(viewer)
    viewer.layers["spots"].face_color = "white"
    suggestion = widget.compute_suggestion(list(HER2_TUMOUR_MARKERS))
    assert suggestion.threshold == pytest.approx(suggestion.otsu) and "Otsu" in widget.threshold_label.text()
    spots = viewer.layers["spots"]
    spots.face_color = "biomarker score"  # the new feature colours the spots
    assert len(np.unique(spots.face_color.round(3), axis=0)) > 20
    spots.face_color = "white"
    preview = viewer.layers[PREVIEW_NAME]
    assert len(preview.data) >= 1
    viewer.reset_view()
    changed, shot = drawn_pixels(viewer, preview)
    assert changed.sum() > 500, "the preview outlines are not drawn"
    red, green, blue = shot[changed].mean(axis=0)
    assert red > 1.5 * green and red > 1.5 * blue, "outlines should take the tumour colour"
    above_at_otsu = int(widget.suggestion.above.sum())
    widget.threshold_slider.setValue(900)
    assert widget.suggestion.above.sum() < above_at_otsu and widget.suggestion.threshold > suggestion.otsu
    widget.otsu_button.click()
    assert widget.suggestion.threshold == pytest.approx(suggestion.otsu)
    widget.accept_suggestion()
    assert PREVIEW_NAME not in viewer.layers
    regions = viewer.layers["regions"]
    assert set(regions.features["class"]) == {"tumour"}

    widget.compute_statistics()  # real worker thread
    qtbot.waitUntil(lambda: not widget.busy, timeout=30_000)
    stats = widget.statistics
    ctx = spot_context(viewer.layers["spots"].metadata["napari_casper"]["sdata"])
    expected = region_statistics(ctx, widget.layer_regions(), list(HER2_TUMOUR_MARKERS))
    pd.testing.assert_frame_equal(stats, expected)
    tumour = stats[(stats["level"] == "class") & (stats["name"] == "tumour")].iloc[0]
    assert (
        tumour["n_spots"] == (viewer.layers["spots"].features["region_class"] == "tumour").sum() >= 0.95 * above_at_otsu
    )
    assert widget.stats_table.rowCount() == len(stats)

    widget.start_differential("class: tumour")  # real worker thread
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert widget.differential is not None and "EPCAM" in list(widget.differential["gene"][:20])
    assert widget.de_table.rowCount() == 50
    written = widget.export_csv(tmp_path / "stats.csv")
    assert len(written) == 2
    pd.testing.assert_frame_equal(pd.read_csv(written[0]), stats, check_dtype=False, check_categorical=False)
    assert list(pd.read_csv(written[1])["gene"][:5]) == list(widget.differential["gene"][:5])


def test_bad_inputs_become_clear_error_notifications(regions_widget, tmp_path):
    viewer, widget = regions_widget()
    start = len(notification_manager.records)
    widget.score_button.click()  # no spots layer yet
    assert any("no spots layer" in m for m in messages(start))

    sdata = anndata_to_spatialdata(ad.read_h5ad(mob_path("MOB1")))
    store = save_spatialdata(sdata, tmp_path / "mob1.zarr")
    open_spots(viewer, mob_path("MOB1"), store)
    start = len(notification_manager.records)
    widget.genes_edit.setText("Penk, NOT_A_GENE")
    widget.score_button.click()
    assert any("['NOT_A_GENE'] are not in table" in m and "Fix" in m for m in messages(start)), messages(start)

    widget.save_button.click()  # nothing drawn yet
    assert any("no regions layer" in m for m in messages(start))
    layer = widget.new_regions_layer()
    far = spot_context(sdata).coords.max(axis=0) + 3000
    layer.add(
        [np.array([[far[1], far[0]], [far[1], far[0] + 500], [far[1] + 500, far[0] + 500]])], shape_type="polygon"
    )
    widget.genes_edit.setText("Penk")
    widget.compute_statistics()
    widget.wait()
    assert widget.statistics.iloc[0]["n_spots"] == 0
    widget.de_button.click()
    assert any("contains no spot" in m for m in messages(start)), messages(start)
    widget.select_class("tumour")
    start = len(notification_manager.records)
    widget._guard(widget.remove_class, "tumour")
    assert any("used by shapes" in m for m in messages(start))

    # regions saved in another coordinate system than the spots
    elsewhere = RegionSet(
        [np.array([[5000, 3000], [5000, 4000], [6000, 4000]], float)],
        ["polygon"],
        ["stroma"],
        coordinate_system="aligned",
    )
    save_regions(store, elsewhere, "aligned_regions")
    assert load_regions(store, "aligned_regions").coordinate_system == "aligned"
    widget.refresh_saved_regions()
    start = len(notification_manager.records)
    widget.load_combo.setCurrentText("aligned_regions")
    widget.load_button.click()
    assert any("not 'global'" in m and "coordinate system" in m for m in messages(start)), messages(start)


def test_save_beside_an_h5ad_in_a_read_only_folder_asks_for_a_store(regions_widget, tmp_path, monkeypatch):
    """Data opened from an .h5ad: the store is proposed beside it; an unwritable folder makes Save ask."""
    from napari_casper._widgets.regions import save_panel as _regions_save_panel

    viewer, widget = regions_widget()
    source = tmp_path / "read_only" / "MOB1.h5ad"
    source.parent.mkdir()
    open_spots(viewer, mob_path("MOB1"), source)
    beside = source.with_suffix(".zarr")
    assert widget.store_edit.text() == str(beside)
    # root may write anywhere, so the folder is declared read-only rather than chmod-ed
    writable = _regions_save_panel.folder_writable
    monkeypatch.setattr(
        _regions_save_panel, "folder_writable", lambda folder: folder != source.parent and writable(folder)
    )
    layer = widget.new_regions_layer()
    x, y = spot_context(viewer.layers["spots"].metadata["napari_casper"]["sdata"]).coords.T
    layer.add([np.array([[y.min(), x.min()], [y.min(), x.max()], [y.max(), x.max()]])], shape_type="polygon")

    asked = []

    class Dialog:  # the user cancels the file dialog
        @staticmethod
        def getSaveFileName(parent, title, suggested, filters):
            asked.append(suggested)
            return "", ""

    monkeypatch.setattr(_regions_save_panel, "QFileDialog", Dialog)
    start = len(notification_manager.records)
    widget.save()
    assert asked == ["MOB1.zarr"] and widget.last_saved is None and not widget.busy
    assert "not saved" in widget.message.text() and messages(start) == []

    chosen = tmp_path / "elsewhere.zarr"
    widget.synchronous = True  # inline, as scripts may run it
    widget.save(path=chosen)  # what the dialog answers
    assert not widget.busy
    assert widget.last_saved.shapes_name == "regions" and widget.store_edit.text() == str(chosen)
    assert any("new store created" in m for m in messages(start)), messages(start)
    assert "regions" in read_spatialdata(chosen).shapes and not beside.exists()

    monkeypatch.setattr(_regions_save_panel, "folder_writable", writable)
    widget.store_edit.setText(str(tmp_path / "missing_folder" / "x.zarr"))
    with pytest.raises(CasperInputError, match="not writable"):
        widget.save(path=tmp_path / "missing_folder" / "y.zarr")  # a dialog answer that cannot work either
