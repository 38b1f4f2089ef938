"""Regenerate the Histology widget screenshots in docs/images/histology_*.png from the clicked flow (under Xvfb).

``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_histology_screenshots.py``

The packaged mouse olfactory bulb sections (Stahl et al. 2016): MOB3 is opened as an H&E-only slide
(its expression table dropped); MOB1 and MOB2 are added with *Add .h5ad...* (the file dialog answers
with their paths), the genes Penk, Nrgn, Cdhr1 are typed, and every step is a click on the widget's
buttons, exactly as in ``tests/test_histology_widget.py``: Train (defaults: auto epochs, head chosen
by leave-one-section-out), Predict at virtual spots over the tissue, Predict at the slide's own
spots, Nrgn chosen, *show uncertainty* ticked.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _screenshots import new_viewer, shot
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication, QFileDialog

from napari_casper._widgets.histology.predict_panel import VIRTUAL
from napari_casper._widgets.histology.widget import HistologyWidget
from napari_casper.display.layers import spatialdata_to_layers
from napari_casper.io.samples import mob_files
from napari_casper.io.stores import read_h5ad_spatial


def click(button) -> None:
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)


def choose(combo, text: str) -> None:
    """Pick ``text`` with the keyboard, as a user would."""
    index = combo.findText(text)
    combo.setFocus()
    while combo.currentIndex() != index:
        QTest.keyClick(combo, Qt.Key.Key_Down if combo.currentIndex() < index else Qt.Key.Key_Up)


def wait(widget) -> None:
    while widget.busy or not widget.warmed_up:
        QApplication.processEvents()
        time.sleep(0.02)


def main() -> None:
    viewer = new_viewer(1600, 1000)
    files = {name: mob_files(name) for name in ("MOB1", "MOB2", "MOB3")}
    slide = read_h5ad_spatial(files["MOB3"][0])
    del slide.tables["table"]  # H&E-only: the measured counts are not used anywhere below
    for data, kwargs, kind in spatialdata_to_layers(slide, source=str(files["MOB3"][0])):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.layers["spots"].visible = False
    widget = HistologyWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Histology", area="right")
    wait(widget)
    for name in ("MOB1", "MOB2"):  # Add .h5ad..., the dialog answered with the packaged file
        QFileDialog.getOpenFileName = staticmethod(lambda *a, name=name, **k: (str(files[name][0]), ""))
        click(widget.sections.add_h5ad)
        wait(widget)
    widget.sections.genes.setFocus()
    QTest.keyClicks(widget.sections.genes, "Penk, Nrgn, Cdhr1")

    start = time.perf_counter()
    click(widget.train_panel.train_button)
    wait(widget)
    print(f"trained in {time.perf_counter() - start:.0f} s: {widget.train_panel.status.text()}")

    # 1. virtual spots over the detected tissue of the H&E-only slide
    choose(widget.predict_panel.spots, VIRTUAL)
    click(widget.predict_panel.predict_button)
    wait(widget)
    print(widget.predict_panel.status.text())
    viewer.reset_view()
    viewer.scene.camera.zoom *= 1.3
    shot(viewer, "histology_1_virtual_spots.png", widget.predict_panel.save_button, widget)

    # 2. the slide's own spots (no counts used), another gene, and its uncertainty beside the slide
    choose(widget.predict_panel.spots, "spots")
    click(widget.predict_panel.predict_button)
    wait(widget)
    choose(widget.predict_panel.gene, "Nrgn")
    click(widget.predict_panel.show_uncertainty)
    QApplication.processEvents()
    shot(viewer, "histology_2_measured_spots.png", widget.predict_panel.save_button, widget)

    # 3. saved into a new store beside the slide's image and spots
    store = Path(tempfile.mkdtemp()) / "MOB3_histology.zarr"
    QFileDialog.getSaveFileName = staticmethod(lambda *a, **k: (str(store), ""))
    click(widget.predict_panel.save_button)
    wait(widget)
    print(widget.message.text())
    viewer.close()


if __name__ == "__main__":
    main()
