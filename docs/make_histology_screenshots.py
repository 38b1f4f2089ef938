"""Regenerate the Histology widget screenshots in docs/images/histology_*.png (real runs, under Xvfb).

``xvfb-run -a -s "-screen 0 1700x1100x24" .venv/bin/python docs/make_histology_screenshots.py``

Trains on mouse olfactory bulb sections MOB1 + MOB2 (Stahl et al. 2016, ``../shared/data/mob``,
added from their files, not shown), then predicts on MOB3 opened as an H&E-only slide (its
expression table dropped): at virtual spots over the detected tissue, and at MOB3's own spots.
Default options (auto epochs, head chosen by leave-one-section-out), genes Penk, Nrgn, Cdhr1 shown.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _screenshots import new_viewer, shot

from napari_casper._widgets.histology.predict_panel import VIRTUAL
from napari_casper._widgets.histology.widget import HistologyWidget
from napari_casper.display.layers import spatialdata_to_layers
from napari_casper.io.stores import read_h5ad_spatial

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mob"


def main() -> None:
    viewer = new_viewer()
    slide = read_h5ad_spatial(DATA / "MOB3.h5ad")
    del slide.tables["table"]  # H&E-only: the measured counts are not used anywhere below
    for data, kwargs, kind in spatialdata_to_layers(slide, source=str(DATA / "MOB3.h5ad")):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.layers["spots"].visible = False
    widget = HistologyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Histology", area="right")
    for name in ("MOB1", "MOB2"):
        widget.sections.add_file(str(DATA / f"{name}.h5ad"))
    widget.sections.genes.setText("Penk, Nrgn, Cdhr1")

    start = time.perf_counter()
    widget.start_training()
    widget.wait()
    print(f"trained in {time.perf_counter() - start:.0f} s: {widget.train_panel.status.text()}")

    # 1. virtual spots over the detected tissue of the H&E-only slide
    widget.predict_panel.image.setCurrentText("image")
    widget.predict_panel.spots.setCurrentText(VIRTUAL)
    widget.start_prediction()
    widget.wait()
    print(widget.predict_panel.status.text())
    viewer.reset_view()
    viewer.camera.zoom *= 1.6
    shot(viewer, "histology_1_virtual_spots.png", widget.predict_panel.save_button, widget)

    # 2. the slide's own spots (no counts used), another gene, and its uncertainty
    widget.predict_panel.spots.setCurrentText("spots")
    widget.start_prediction()
    widget.wait()
    widget.predict_panel.gene.setCurrentText("Nrgn")
    shot(viewer, "histology_2_measured_spots.png", widget.predict_panel.save_button, widget)

    # 3. saved into a new store beside the slide's image and spots
    store = Path(tempfile.mkdtemp()) / "MOB3_histology.zarr"
    print("saved", widget.save_predictions(path=str(store)), "in", store)
    viewer.close()


if __name__ == "__main__":
    main()
