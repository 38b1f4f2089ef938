"""Regenerate docs/images/elements_*.png: stores written by others, every element type.

``xvfb-run -a -s "-screen 0 1700x1100x24" .venv/bin/python docs/make_element_screenshots.py``

1. ``elements_blobs.png``: ``spatialdata.datasets.blobs()`` written to zarr (images single and
   multiscale, labels single and multiscale, points, circles, polygons, multipolygons, a table
   annotating the labels), opened with the plugin's reader as ``File > Open`` does.
2. ``elements_by_type.png``: the same store, one panel per element type (each layer alone on the
   canvas, titled with its type), so each type can be seen as the reader draws it.
3. ``elements_xenium_labels.png`` (needs ../shared): the Xenium-like store of
   tests/test_xenium_like_store.py (multiscale cell labels a table annotates, cell-boundary
   polygons); in the Genes dock the centres are chosen and a gene typed, as a user does.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _screenshots import SHARED, new_viewer, shot
from spatialdata.datasets import blobs

from napari_casper.io.store_writes import save_spatialdata


def blobs_store() -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = save_spatialdata(blobs(), Path(folder) / "blobs.zarr")
        viewer = new_viewer()
        viewer.open(str(store), plugin="napari-casper")
        for layer in viewer.layers:  # one image channel under the labels, outlines and points
            layer.visible = not layer.name.startswith(("blobs_multiscale", "blobs_image:1", "blobs_image:2"))
        viewer.layers["blobs_labels"].opacity = 0.45
        viewer.layers.selection.active = viewer.layers["blobs_polygons"]
        viewer.reset_view()
        shot(viewer, "elements_blobs.png")
        by_type(viewer)
        viewer.close()


#: one panel per element type of blobs(): (title, the layers shown)
TYPES = [
    ("image (multichannel, one layer per channel)", ["blobs_image:0"]),
    ("image (multiscale)", ["blobs_multiscale_image:0"]),
    ("labels (a table annotates them)", ["blobs_labels"]),
    ("labels (multiscale)", ["blobs_multiscale_labels"]),
    ("points (no table: subsampled when huge)", ["blobs_points"]),
    ("circles", ["blobs_circles"]),
    ("polygons", ["blobs_polygons"]),
    ("multipolygons", ["blobs_multipolygons"]),
]


def by_type(viewer) -> None:
    """One canvas screenshot per element type, titled, in a 4 x 2 grid: docs/images/elements_by_type.png."""
    import numpy as np
    from _screenshots import OUT
    from PIL import Image, ImageDraw

    panels = []
    for title, names in TYPES:
        for layer in viewer.layers:
            layer.visible = layer.name in names
        viewer.reset_view()
        canvas = Image.fromarray(viewer.screenshot(canvas_only=True, flash=False)[..., :3])
        canvas.thumbnail((420, 420))
        panel = Image.new("RGB", (420, 450), "white")
        panel.paste(canvas, ((420 - canvas.width) // 2, 30))
        ImageDraw.Draw(panel).text((8, 8), title, fill="black")
        panels.append(np.asarray(panel))
    rows = [np.hstack(panels[i : i + 4]) for i in range(0, len(panels), 4)]
    Image.fromarray(np.vstack(rows)).save(OUT / "elements_by_type.png")
    print("wrote", OUT / "elements_by_type.png")


def xenium_labels() -> None:
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    from napari_casper._widgets.genes.widget import GenesWidget

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the store the tests build
    from test_xenium_like_store import xenium_like

    with tempfile.TemporaryDirectory() as folder:
        store, _, _ = xenium_like(Path(folder))
        viewer = new_viewer()
        viewer.open(str(store), plugin="napari-casper")
        widget = GenesWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Genes", area="right")
        widget.spots.setCurrentText("cell_labels (centres)")
        QTest.keyClicks(widget.gene.lineEdit(), "Gad1")
        QTest.keyClick(widget.gene.lineEdit(), Qt.Key.Key_Return)
        widget.wait()
        for _ in range(40):  # the colour bar and units appear a few paints later
            QApplication.instance().processEvents()
            QTest.qWait(50)
        boundaries = next(layer for layer in viewer.layers if layer.name.startswith("cell_boundaries"))
        boundaries.visible = False
        viewer.camera.center = (1700.0, 1200.0)  # a patch of cortex: each label filled with its cell's value
        viewer.camera.zoom = 2.2
        shot(viewer, "elements_xenium_labels.png")
        viewer.close()


def main() -> None:
    blobs_store()
    if (SHARED / "xenium" / "xenium_mouse_brain.h5ad").exists():
        xenium_labels()
    else:
        print("../shared/data/xenium is missing: elements_xenium_labels.png not regenerated")


if __name__ == "__main__":
    main()
