"""Regenerate the CASPER tutorial screenshots in docs/images/ (real runs, under Xvfb).

``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_screenshots.py``
"""

from __future__ import annotations

from pathlib import Path

import napari
from PIL import Image
from qtpy.QtWidgets import QApplication

from napari_casper._widgets.casper.widget import CasperWidget, grid_of

OUT = Path(__file__).parent / "images"


def shot(viewer, name: str) -> None:
    QApplication.instance().processEvents()
    viewer.reset_view()
    Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(OUT / name)
    print("wrote", OUT / name)


def main() -> None:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1550, 980)
    viewer.open_sample("napari-casper", "drosophila")
    widget = CasperWidget(viewer)
    viewer.window.add_dock_widget(widget, name="CASPER imputation")
    viewer.layers["cells"].face_color = "eve"
    viewer.layers["cells"].face_colormap = "viridis"
    viewer.reset_view()
    shot(viewer, "tutorial_1_data.png")

    widget.train_panel.epochs.setValue(10)
    widget.start_training()
    widget.wait()
    shot(viewer, "tutorial_2_trained.png")

    workflow = widget.workflow
    unmeasured = "Doc1" if "Doc1" in workflow.reference_genes else next(
        g for g in workflow.reference_genes if g not in set(workflow.panel_genes)
    )
    widget.impute.add_gene(unmeasured)
    widget.start_imputation([unmeasured])
    widget.wait()
    for layer in viewer.layers:
        layer.visible = layer.name in ("embryo", f"casper:{unmeasured}")
    viewer.layers.selection.active = viewer.layers[f"casper:{unmeasured}"]
    shot(viewer, "tutorial_3_impute.png")

    widget.show_dominant_centroid()
    for layer in viewer.layers:
        layer.visible = layer.name in ("embryo", "casper dominant centroid")
    shot(viewer, "tutorial_4_attention.png")

    widget.impute.add_gene("eve")
    widget.compare_with_measured("eve")
    for layer in viewer.layers:
        layer.visible = layer.name in ("measured:eve", "casper held-out:eve", "difference:eve")
    viewer.reset_view()
    shot(viewer, "tutorial_5_compare.png")
    grid_of(viewer).enabled = False
    viewer.close()


if __name__ == "__main__":
    main()
