"""The Genes dock widget as a user meets it: typed gene, Next / Previous clicks, hover, colour bar, zoomed-in discs.

On the packaged Drosophila sample (3,039 cells: a Points layer) and the real Xenium section
(36,602 cells: a multiscale raster). Every action is a real click or key press; a heartbeat
measures the longest GUI-thread stall of each flow.
"""

from __future__ import annotations

import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import shared_path
from gui_checks import Heartbeat, assert_fits, assert_tooltips, choose, click, type_text, wait_drawn

from napari_casper._widgets.genes.widget import GenesWidget

pytestmark = pytest.mark.gui

MAGMA_TOP = np.array([252, 253, 191])  # magma at 1.0: the top of the colour bar


def dock(viewer, qtbot) -> GenesWidget:
    viewer.window.resize(1600, 1000)  # the canvas beside the dock, as on a 1600 x 1000 screen
    widget = GenesWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Genes")
    qtbot.waitUntil(widget.gene.lineEdit().isVisible, timeout=10_000)
    wait_drawn(viewer, qtbot)  # the canvas, narrowed by the dock, redrawn: its own step, timed apart
    return widget


def wait_shown(widget, qtbot, gene: str) -> None:
    """Until ``gene`` is shown with its colour bar and units, and napari has drawn them."""
    qtbot.waitUntil(lambda: not widget.busy and widget.switcher is not None and widget.switcher.gene == gene, timeout=120_000)
    layer = widget.layer
    bar = layer.colorbar if hasattr(layer, "colorbar") else layer.face_colorbar
    units = widget.viewer.canvas.overlays["text"]
    qtbot.waitUntil(lambda: bar.visible and layer.name in units.text, timeout=10_000)
    qtbot.wait(200)


def world_of(spots, index: int) -> np.ndarray:
    return np.asarray(spots.data_to_world(spots.data[index]), dtype=float)


def colour_bar_pixels(viewer, bar) -> np.ndarray:
    """Canvas pixels that change when the colour bar is hidden (where the bar is drawn)."""
    shown = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    bar.visible = False
    hidden = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    bar.visible = True
    changed = np.abs(shown - hidden).sum(axis=2) > 30
    return changed, shown


def assert_colour_bar_drawn(viewer, layer) -> None:
    bar = layer.colorbar if hasattr(layer, "colorbar") else layer.face_colorbar
    assert bar.visible
    changed, shown = colour_bar_pixels(viewer, bar)
    rows, cols = np.nonzero(changed)
    assert len(rows) > 1000, "no colour bar on the canvas"
    assert cols.min() > changed.shape[1] * 0.5 and rows.min() < changed.shape[0] * 0.5, "the colour bar is not top right"
    assert np.ptp(rows) > 100, "the colour bar is not a tall bar"
    top = np.abs(shown[rows, cols] - MAGMA_TOP).sum(axis=1).min()
    assert top < 40, "the bar does not show the colormap's top colour"
    # the units: the text overlay above the bars
    overlay = viewer.canvas.overlays["text"]
    assert overlay.visible and f"{layer.name}: " in overlay.text, overlay.text
    bar.visible = False  # the text alone (napari places the bars left of it, so hiding the text moves them)
    with_text = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    overlay.visible = False
    without = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    overlay.visible = bar.visible = True
    text_rows, text_cols = np.nonzero(np.abs(with_text - without).sum(axis=2) > 30)
    assert len(text_rows) > 200 and text_cols.mean() > changed.shape[1] * 0.5, "the units are not written on the canvas"
    # the bar and its tick labels end before the units text starts (its top label once touched it: "4casper:hb")
    gap = text_cols.min() - cols.max() - 1
    assert gap >= 4, f"the colour bar's labels touch the units text ({gap} px apart)"


def isolated_spot(coords_xy: np.ndarray, values: np.ndarray, diameter: float) -> int:
    """A spot with no other disc within 1.5 diameters and a value unlike every neighbour's: its disc stands alone."""
    from scipy.spatial import cKDTree

    tree = cKDTree(coords_xy)
    pairs = tree.query_pairs(1.5 * diameter, output_type="ndarray")
    crowded = np.zeros(len(coords_xy), bool)
    crowded[pairs.ravel()] = True
    candidates = np.flatnonzero(~crowded & np.isfinite(values))
    assert len(candidates), "no isolated spot to zoom on"
    return int(candidates[np.argmax(values[candidates])])


def disc_fill(viewer, layer, centre_world, diameter_world: float) -> tuple[float, int]:
    """Zoom the camera on one spot; return (area / bounding-box area, box width in px) of its drawn disc."""
    from scipy import ndimage

    viewer.camera.center = tuple(centre_world[-2:])
    viewer.camera.zoom = 120.0 / diameter_world  # ~120 screen px across
    others = [other for other in viewer.layers if other is not layer and other.visible]
    for other in others:
        other.visible = False
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    for other in others:
        other.visible = True
    centre = np.array(shot.shape[:2]) // 2
    colour = shot[centre[0], centre[1]]
    assert colour.sum() > 30, "nothing is drawn at the spot's centre"
    same = np.abs(shot - colour).sum(axis=2) <= 12
    labels, _ = ndimage.label(same)
    disc = labels == labels[centre[0], centre[1]]
    rows, cols = np.nonzero(disc)
    box = (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
    return disc.sum() / box, int(np.ptp(cols) + 1)


def test_drosophila_typed_next_previous_hover_colour_bar_and_disc(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-casper", "drosophila")
    widget = dock(viewer, qtbot)
    assert_fits(widget, 420)
    assert_tooltips(widget)
    spots = viewer.layers[widget.spots.currentText()]
    atlas = spots.metadata["napari_casper"]["sdata"].tables["atlas"]
    genes = [str(g) for g in atlas.var_names]

    with Heartbeat() as beat:
        type_text(qtbot, widget.gene.lineEdit(), "EVE")  # any case, then Return
        wait_shown(widget, qtbot, "eve")
    print(f"drosophila first display: longest stall {beat.longest:.2f} s")
    beat.assert_responsive(what="the first gene typed")
    layer = widget.layer
    assert type(layer).__name__ == "Points" and layer.name == "genes: eve (cells/atlas)"
    eve = np.asarray(atlas[:, "eve"].X).ravel()
    np.testing.assert_allclose(np.sort(layer.features["value"].to_numpy()), np.sort(eve), rtol=1e-6)

    i = genes.index("eve")
    with Heartbeat() as beat:
        click(qtbot, widget.next_button)
        qtbot.waitUntil(lambda: widget.switcher.gene == genes[i + 1], timeout=10_000)
        qtbot.wait(100)  # napari draws the new gene
        assert layer.name == f"genes: {genes[i + 1]} (cells/atlas)" and widget.gene.currentText() == genes[i + 1]
        click(qtbot, widget.previous_button)
        qtbot.waitUntil(lambda: widget.switcher.gene == "eve", timeout=10_000)
        qtbot.wait(100)
    beat.assert_responsive(what="Next / Previous")
    print(f"drosophila Next + Previous: longest stall {beat.longest:.2f} s")
    assert layer.name == "genes: eve (cells/atlas)" and len(viewer.layers) == 3  # one Genes layer, renamed
    np.testing.assert_allclose(np.sort(layer.features["value"].to_numpy()), np.sort(eve), rtol=1e-6)

    # hover: the spot's id and the shown gene's value, nothing else
    viewer.layers.selection.active = layer
    spot = 5
    status = layer.get_status(world_of(spots, spot), world=True)["coordinates"]
    spot_id = spots.metadata["napari_casper"]["instance_ids"][spot]
    assert f"spot: {spot_id}" in status and f"value: {layer.features['value'][spot]:.4g}"[:10] in status
    assert not any(f"{g}:" in status for g in genes if g != "eve") and len(status) < 120, status

    assert_colour_bar_drawn(viewer, layer)
    assert "values as stored" in viewer.canvas.overlays["text"].text

    # zoomed in: a spot is a round disc (area / box = pi / 4)
    xy = np.asarray(spots.data, dtype=float)[:, ::-1]
    diameter = float(np.median(spots.size))
    target = isolated_spot(xy, layer.features["value"].to_numpy(), diameter)
    fill, width = disc_fill(viewer, layer, world_of(spots, target), diameter)
    assert width > 60 and abs(fill - np.pi / 4) < 0.08, (fill, width)


def test_xenium_raster_typed_next_hover_colour_bar_and_disc(make_napari_viewer, qtbot):
    path = shared_path("xenium", "xenium_mouse_brain.h5ad")
    truth = ad.read_h5ad(path)
    viewer = make_napari_viewer(show=True)
    viewer.open(str(path), plugin="napari-casper")
    spots = viewer.layers["spots"]
    widget = dock(viewer, qtbot)
    genes = [str(g) for g in truth.var_names]
    n_layers = len(viewer.layers)

    first = genes[17]
    with Heartbeat() as beat:
        type_text(qtbot, widget.gene.lineEdit(), first.lower())
        wait_shown(widget, qtbot, first)
    print(f"xenium first display: longest stall {beat.longest:.2f} s")
    beat.assert_responsive(what="the first gene typed")
    layer = widget.layer
    assert type(layer).__name__ == "Image" and layer.multiscale and len(viewer.layers) == n_layers + 1
    assert layer.name == f"genes: {first} (spots/table)"

    with Heartbeat() as beat:
        for step in range(1, 4):
            click(qtbot, widget.next_button)
            qtbot.waitUntil(lambda step=step: widget.switcher.gene == genes[17 + step], timeout=10_000)
            qtbot.wait(100)  # napari draws the new gene
    beat.assert_responsive(what="three Next clicks")
    print(f"xenium 3 x Next: longest stall {beat.longest:.2f} s")
    gene = genes[20]
    assert layer.name == f"genes: {gene} (spots/table)" and len(viewer.layers) == n_layers + 1

    # hover: the cell's id and its log1p count of the shown gene, in well under 50 ms
    viewer.layers.selection.active = layer
    counts = np.log1p(truth[:, gene].X.toarray().ravel())
    ids = spots.metadata["napari_casper"]["instance_ids"]
    hits, times = 0, []
    for cell in range(0, truth.n_obs, 997):
        start = time.perf_counter()
        status = layer.get_status(world_of(spots, cell), world=True)["coordinates"]
        times.append(time.perf_counter() - start)
        hits += f"spot: {ids[cell]}, value: {counts[cell]:.4g}" in status
    assert hits >= 0.9 * len(times), status
    assert max(times) < 0.05, f"hover took {max(times) * 1000:.0f} ms"
    assert len(status) < 120 and not any(f"{g}:" in status for g in genes if g != gene)

    assert_colour_bar_drawn(viewer, layer)
    assert "log1p counts" in viewer.canvas.overlays["text"].text

    xy = np.asarray(spots.data, dtype=float)[:, ::-1]
    target = isolated_spot(xy, counts, float(np.median(spots.size)))
    fill, width = disc_fill(viewer, layer, world_of(spots, target), float(np.median(spots.size)))
    assert width > 60 and abs(fill - np.pi / 4) < 0.08, (fill, width)


def test_unknown_gene_typed_is_reported(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-casper", "mob")
    widget = dock(viewer, qtbot)
    first = widget.gene.itemText(0)
    type_text(qtbot, widget.gene.lineEdit(), first)
    wait_shown(widget, qtbot, first)
    type_text(qtbot, widget.gene.lineEdit(), "not-a-gene")
    assert "not in this table" in widget.message.text()
    assert widget.layer.name.startswith(f"genes: {first} (")  # the layer still shows the last good gene


def test_a_table_layer_is_shown_in_its_own_layer(make_napari_viewer, qtbot):
    """E.g. the uncertainty of saved histology predictions: matrix = a layer of the table, picked in the list."""
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-casper", "mob")
    widget = dock(viewer, qtbot)
    meta = viewer.layers[widget.spots.currentText()].metadata["napari_casper"]
    table = meta["sdata"].tables[widget.table.currentText()]
    table.layers["doubled"] = table.X * 2
    choose(qtbot, widget.spots, widget.spots.currentText())
    widget._fill_tables()  # the table changed under the widget (a user would reopen it)
    assert [widget.matrix.itemText(i) for i in range(widget.matrix.count())] == ["X", "doubled"]
    choose(qtbot, widget.matrix, "doubled")
    choose(qtbot, widget.transform, "none")
    gene = widget.gene.itemText(3)
    type_text(qtbot, widget.gene.lineEdit(), gene)
    wait_shown(widget, qtbot, gene)
    assert widget.layer.name == f"genes: {gene} (spots/table [doubled])"
    assert "doubled of values as stored" in viewer.canvas.overlays["text"].text
    measured = table[:, gene].X
    measured = 2 * np.asarray(measured.todense() if hasattr(measured, "todense") else measured).ravel()
    np.testing.assert_allclose(np.sort(widget.layer.features["value"].to_numpy()), np.sort(measured), rtol=1e-6)


def test_xenium_cells_as_polygons_switch_genes_on_their_centres(make_napari_viewer, qtbot, tmp_path):
    """36,602 Xenium cells drawn as polygons (a hexagon each) that a table annotates: the store opens
    with the cells as one label image and a hidden layer of their centres; the Genes dock switches
    genes on those centres without stalling, and hovering reads the cell's value."""
    import geopandas as gpd
    from shapely.geometry import Polygon
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel

    from napari_casper.io.store_writes import save_spatialdata

    source = ad.read_h5ad(shared_path("xenium", "xenium_mouse_brain.h5ad"))
    xy = np.asarray(source.obsm["spatial"], dtype=float)[:, :2]
    angles = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    ring = np.c_[np.cos(angles), np.sin(angles)] * 4.0  # 8 um wide cells
    cells = ShapesModel.parse(gpd.GeoDataFrame(geometry=[Polygon(ring + p) for p in xy], index=np.arange(1, len(xy) + 1)))
    table = ad.AnnData(source.X, var=source.var[[]].copy())
    table.obs["region"] = pd.Categorical(["cells"] * len(xy))
    table.obs["cell_id"] = np.arange(1, len(xy) + 1)
    table = TableModel.parse(table, region="cells", region_key="region", instance_key="cell_id")
    store = save_spatialdata(SpatialData(shapes={"cells": cells}, tables={"table": table}), tmp_path / "cells.zarr")

    viewer = make_napari_viewer(show=True)
    viewer.open(str(store), plugin="napari-casper")
    drawn = viewer.layers[f"cells ({len(xy):,} polygons as labels)"]
    centres = viewer.layers["cells (centres)"]
    assert type(drawn).__name__ == "Labels" and not centres.visible and len(centres.data) == len(xy)
    widget = dock(viewer, qtbot)
    choose(qtbot, widget.spots, "cells (centres)")
    genes = [str(g) for g in source.var_names]
    with Heartbeat() as beat:
        type_text(qtbot, widget.gene.lineEdit(), genes[5])
        wait_shown(widget, qtbot, genes[5])
    beat.assert_responsive(what="the first gene on 36k polygon cells (adds its layer)")
    with Heartbeat() as beat:
        for step in range(1, 3):
            click(qtbot, widget.next_button)
            qtbot.waitUntil(lambda step=step: widget.switcher.gene == genes[5 + step], timeout=10_000)
            qtbot.wait(100)
    beat.assert_responsive(what="two Next clicks on 36k polygon cells")
    gene, layer = genes[7], widget.layer
    assert layer.name == f"genes: {gene} (cells/table)", layer.name
    assert type(layer).__name__ == "Image" and layer.multiscale  # the values are drawn on the polygons
    assert "36,602 cells (polygons)" in widget.message.text(), widget.message.text()
    counts = np.log1p(source[:, gene].X.toarray().ravel())
    viewer.layers.selection.active = layer
    cell = int(np.argmax(counts))
    status = layer.get_status(world_of(centres, cell), world=True)["coordinates"]
    assert f"cell: {cell + 1}, value: {counts[cell]:.4g}" in status, status
    # the hexagon's own pixels carry its value, and beyond its edge (5 um from the centre, off every cell) nothing
    row, col = np.rint(np.linalg.inv(layer.affine.affine_matrix) @ [*world_of(centres, cell), 1.0])[:2].astype(int)
    finest = layer.data[0]
    assert finest[row - 2 : row + 3, col - 2 : col + 3] == pytest.approx(np.full((5, 5), counts[cell]), rel=1e-5)
    lonely = isolated_spot(xy, counts, 24.0)  # no other cell within 36 um
    r, c = np.rint(np.linalg.inv(layer.affine.affine_matrix) @ [*(world_of(centres, lonely) + [0.0, 6.0]), 1.0])[:2].astype(int)
    assert np.isnan(finest[r, c])
