"""Regenerate the region-annotation screenshots in docs/images/regions_*.png (real runs, under Xvfb).

``xvfb-run -a -s "-screen 0 1700x1100x24" .venv/bin/python docs/make_regions_screenshots.py``

Uses HER2+ breast cancer section C2 (Andersson et al. 2021) from ``../shared/data/her2st`` at full
resolution; the store is written to a temporary folder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from _screenshots import new_viewer, shot

from napari_casper._widgets.regions.widget import RegionsWidget

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "her2st"


def main() -> None:
    viewer = new_viewer()
    viewer.open(str(DATA / "C2.h5ad"), plugin="napari-casper")
    widget = RegionsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Regions", area="right")
    store = Path(tempfile.mkdtemp()) / "C2.zarr"
    widget.store_edit.setText(str(store))
    spots = viewer.layers["spots"]

    # 1. hand-drawn regions of several classes and shape types
    layer = widget.new_regions_layer()  # vertices are (y, x) pixels of the full-resolution H&E
    widget.select_class("stroma")
    stroma = np.array([[5500, 2500], [4700, 3600], [4500, 4600], [5300, 4700], [6500, 4200], [6700, 2700]], dtype=float)
    layer.add([stroma], shape_type="polygon")
    widget.select_class("immune")
    layer.add(
        [np.array([[5350.0, 4750.0], [5350.0, 5400.0], [5850.0, 5400.0], [5850.0, 4750.0]])], shape_type="ellipse"
    )
    widget.select_class("normal")
    layer.add(
        [np.array([[3350.0, 6350.0], [3350.0, 7100.0], [3900.0, 7100.0], [3900.0, 6350.0]])], shape_type="rectangle"
    )
    widget.add_class("necrosis", "#000000")
    widget.select_class("stroma")
    viewer.reset_view()
    shot(viewer, "regions_1_annotate.png")

    # 2. auto-suggest from HER2 amplicon + epithelial markers, preview at Otsu's threshold
    suggestion = widget.compute_suggestion(["ERBB2", "GRB7", "KRT19", "EPCAM"])
    spots.face_color = "biomarker score"
    spots.face_colormap = "magma"
    layer.visible = False
    shot(viewer, "regions_2_suggest.png", widget.accept_button, widget)
    print(f"Otsu {suggestion.otsu:.3f}: {int(suggestion.above.sum())}/{len(suggestion.above)} spots above")

    # 3. accept as tumour, save (the store is created from the open .h5ad, then the regions added)
    widget.suggest_class.setCurrentText("tumour")
    widget.accept_suggestion()
    layer.visible = True
    spots.face_color = "#ffd400"
    widget.save()
    widget.wait()
    shot(viewer, "regions_3_saved.png", widget.save_button, widget)

    # 4. statistics, spot assignment, differential genes for the tumour class
    widget.compute_statistics()
    widget.wait()
    widget.start_differential("class: tumour")
    widget.wait()
    shot(viewer, "regions_4_statistics.png", widget.export_button, widget)

    # 5. a fresh viewer: reopen the store from disk and load the saved regions
    viewer.close()
    viewer = new_viewer()
    viewer.open(str(store), plugin="napari-casper")
    widget = RegionsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Regions", area="right")
    widget.refresh_saved_regions()
    widget.load("regions")
    viewer.reset_view()
    shot(viewer, "regions_5_reloaded.png", widget.load_button, widget)
    viewer.close()


if __name__ == "__main__":
    main()
