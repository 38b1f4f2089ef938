"""Regenerate the region-annotation screenshots in docs/images/regions_*.png from the clicked flow (under Xvfb).

``xvfb-run -a -s "-screen 0 1700x1100x24" .venv/bin/python docs/make_regions_screenshots.py``

Uses HER2+ breast cancer section C2 (Andersson et al. 2021) from ``../shared/data/her2st`` at full
resolution, opened with the widget's **Open section...**; every widget action is a click on its
button (file dialogs answered in code). The shapes are added as napari's drawing tools add them.
The store is written to a temporary folder.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from _screenshots import SHARED, new_viewer, shot
from qtpy.QtCore import QCoreApplication, Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QFileDialog

from napari_casper._widgets.regions.widget import RegionsWidget

DATA = SHARED / "her2st"


def click(button) -> None:
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)


def wait(widget) -> None:
    while widget.busy:
        QCoreApplication.processEvents()
        time.sleep(0.01)


def pick(combo, text: str) -> None:
    combo.setCurrentIndex(combo.findText(text))


def main() -> None:
    viewer = new_viewer()
    widget = RegionsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Regions", area="right")
    store = Path(tempfile.mkdtemp()) / "C2.zarr"
    QFileDialog.getOpenFileName = staticmethod(lambda *a, **k: (str(DATA / "C2.h5ad"), ""))
    click(widget.open_button)
    wait(widget)
    widget.store_edit.setText(str(store))

    # 1. hand-drawn regions of several classes and shape types
    click(widget.new_layer_button)
    layer = viewer.layers["regions"]  # vertices are (y, x) pixels of the full-resolution H&E
    widget.select_class("stroma")
    stroma = np.array([[5500, 2500], [4700, 3600], [4500, 4600], [5300, 4700], [6500, 4200], [6700, 2700]], dtype=float)
    layer.add([stroma], shape_type="polygon")
    widget.select_class("immune")
    layer.add([np.array([[5350.0, 4750.0], [5350.0, 5400.0], [5850.0, 5400.0], [5850.0, 4750.0]])], shape_type="ellipse")
    widget.select_class("normal")
    layer.add([np.array([[3350.0, 6350.0], [3350.0, 7100.0], [3900.0, 7100.0], [3900.0, 6350.0]])], shape_type="rectangle")
    widget.class_name.setText("necrosis")
    click(widget.classes_panel.add_button)
    widget.select_class("stroma")
    viewer.reset_view()
    shot(viewer, "regions_1_annotate.png")

    # 2. suggest from the HER2 amplicon + epithelial markers, preview at Otsu's threshold
    widget.genes_edit.setText("ERBB2, GRB7, KRT19, EPCAM")
    click(widget.score_button)
    wait(widget)
    spots = viewer.layers["spots"]
    spots.face_color = "biomarker score"
    spots.face_colormap = "magma"
    layer.visible = False
    shot(viewer, "regions_2_suggest.png", widget.accept_button, widget)
    s = widget.suggestion
    print(f"Otsu {s.otsu:.3f}: {int(s.above.sum())}/{len(s.above)} spots above, {len(s.polygons)} outlines")

    # 3. accept as tumour, save (the store is created from the open .h5ad, then the regions added)
    pick(widget.suggest_class, "tumour")
    click(widget.accept_button)
    wait(widget)
    layer.visible = True
    spots.face_color = "#ffd400"
    click(widget.save_button)
    wait(widget)
    shot(viewer, "regions_3_saved.png", widget.save_button, widget)

    # 4. statistics (hand-drawn regions win where a suggestion overlaps them), differential genes
    click(widget.stats_button)
    wait(widget)
    stats = widget.statistics
    print(stats[stats["level"] != "region"][["level", "name", "n_spots"]].to_string(index=False))
    pick(widget.de_combo, "class: tumour")
    click(widget.de_button)
    wait(widget)
    shot(viewer, "regions_4_statistics.png", widget.export_button, widget)

    # 5. a fresh viewer: reopening the store shows the saved regions as an editable layer
    viewer.close()
    viewer = new_viewer()
    widget = RegionsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Regions", area="right")
    viewer.open(str(store), plugin="napari-casper")
    wait(widget)
    viewer.reset_view()
    print(widget.message.text())
    shot(viewer, "regions_5_reloaded.png", widget.regions_combo, widget)
    viewer.close()
    learned_from_strokes()


def interior_spots(coords: np.ndarray, labels: np.ndarray, name: str, pitch: float) -> np.ndarray:
    """Spots of class ``name`` whose neighbours within 1.5 pitches all share it, farthest-first."""
    from scipy.spatial import cKDTree

    near = cKDTree(coords).query_ball_point(coords, 1.5 * pitch)
    inner = [i for i in np.flatnonzero(labels == name) if len(near[i]) >= 5 and (labels[near[i]] == name).all()]
    picks = [inner[0]]
    while len(picks) < len(inner):
        far = np.argmax([min(np.linalg.norm(coords[i] - coords[j]) for j in picks) for i in inner])
        picks.append(inner[far])
    return np.asarray(picks)


def learned_from_strokes() -> None:
    """6. A HER2+ section with a pathologist's label per spot (no image): two small regions per class drawn,
    every spot learned; the spots are coloured by the pathologist's label (tumour yellow, the rest blue)."""
    import shutil

    folder = Path(tempfile.mkdtemp())
    shutil.copyfile(SHARED / "her2st_labels" / "D1.h5ad", folder / "D1.h5ad")
    viewer = new_viewer()
    widget = RegionsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Regions", area="right")
    QFileDialog.getOpenFileName = staticmethod(lambda *a, **k: (str(folder / "D1.h5ad"), ""))
    click(widget.open_button)
    wait(widget)
    ctx = widget.spot_context()
    labels = ctx.table.obs["label"].astype(str).to_numpy()[ctx.rows]
    # the pathologist's tumour (invasive cancer, cancer in situ) in yellow, every other label in blue
    pathologist = dict(zip(ctx.instance_ids, np.isin(labels, ["invasive cancer", "cancer in situ"])))
    spots = viewer.layers["spots"]
    ids = spots.metadata["napari_casper"].get("instance_ids", ctx.instance_ids)
    spots.face_color = np.array([[1.0, 0.83, 0.0, 1.0] if pathologist.get(i) else [0.2, 0.6, 1.0, 1.0] for i in ids])
    pitch = float(np.median(np.sort(np.linalg.norm(ctx.coords[:, None] - ctx.coords[None], axis=2), axis=1)[:, 1]))
    # the one-click suggestion (HER2 markers, Otsu) over the same colours
    click(widget.score_button)
    wait(widget)
    suggested = widget.suggestion.above
    agree = (suggested == np.isin(labels, ["invasive cancer", "cancer in situ"])).mean()
    print(f"one-click: {int(suggested.sum())} spots above Otsu; agrees with the pathologist's tumour on {agree:.1%}")
    viewer.reset_view()
    shot(viewer, "regions_7_suggested.png", widget.score_button, widget)
    viewer.layers.remove("suggested regions (preview)")

    click(widget.new_layer_button)
    layer = viewer.layers["regions"]
    for cls, label in (("tumour", "invasive cancer"), ("stroma", "connective tissue")):
        widget.select_class(cls)
        for i in interior_spots(ctx.coords, labels, label, pitch)[:2]:
            x, y = ctx.coords[i]
            h = 1.6 * pitch  # a small square: the spot and its neighbours
            layer.add([np.array([[y - h, x - h], [y - h, x + h], [y + h, x + h], [y + h, x - h]])], shape_type="rectangle")
    click(widget.learn_button)
    wait(widget)
    learned = widget.learn_panel.learned
    tumour = np.isin(labels, ["invasive cancer", "cancer in situ"])
    agree = ((learned.labels == "tumour") == tumour).mean()
    print(f"learned from {int(learned.labelled.sum())} spots: {learned.counts()}; tumour agrees with the pathologist on {agree:.1%} of spots")
    viewer.reset_view()
    shot(viewer, "regions_6_learned.png", widget.accept_learned_button, widget)
    viewer.close()


if __name__ == "__main__":
    main()
