"""Regenerate the CASPER tutorial screenshots in docs/images/ by clicking the widget as a user does (under Xvfb).

``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python docs/make_screenshots.py``

Every step is a real mouse click on the widget's button (or keys typed into its gene field);
the script waits for the background work as a user would, then takes the screenshot.
"""

from __future__ import annotations

from pathlib import Path

import napari
from PIL import Image
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication

from napari_casper._widgets.casper.widget import CasperWidget

OUT = Path(__file__).parent / "images"
DOCK_WIDTH = 420


def settle(widget, ms: int = 400) -> None:
    """Wait for the widget's work (worker and layers) and let the canvas paint."""
    widget.wait()
    QTest.qWait(ms)


def shot(viewer, name: str) -> None:
    QApplication.instance().processEvents()
    Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(OUT / name)
    print("wrote", OUT / name)


def click(button) -> None:
    assert button.isVisible() and button.isEnabled(), button.text()
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)


def type_gene(widget, gene: str) -> None:
    """Type ``gene`` into the gene field and press Enter (it joins the list), then select only it."""
    widget.impute.chosen.clearSelection()
    field = widget.impute.search
    field.setFocus()
    QTest.keyClicks(field, gene)
    QTest.keyClick(field, Qt.Key.Key_Return)
    items = widget.impute.chosen.findItems(gene, Qt.MatchFlag.MatchExactly)
    items[0].setSelected(True)


def main() -> None:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1550, 980)
    viewer.open_sample("napari-casper", "drosophila")
    widget = CasperWidget(viewer)
    dock = viewer.window.add_dock_widget(widget, name="CASPER imputation")
    QTest.qWait(200)
    viewer.window._qt_window.resizeDocks([dock], [DOCK_WIDTH + 20], Qt.Orientation.Horizontal)
    viewer.reset_view()
    settle(widget)
    shot(viewer, "tutorial_1_data.png")

    widget.train_panel.epochs.setValue(10)
    click(widget.train_panel.train_button)
    settle(widget, 800)
    shot(viewer, "tutorial_2_trained.png")

    workflow = widget.workflow
    unmeasured = "Doc1" if "Doc1" in workflow.reference_genes else next(g for g in workflow.reference_genes if g not in set(workflow.panel_genes))
    type_gene(widget, unmeasured)
    click(widget.impute.impute_button)
    settle(widget, 800)
    viewer.layers["cells"].visible = False
    viewer.reset_view()
    shot(viewer, "tutorial_3_impute.png")

    viewer.layers[f"casper:{unmeasured}"].visible = False
    click(widget.attention_panel.dominant_button)
    settle(widget, 800)
    viewer.reset_view()
    shot(viewer, "tutorial_4_attention.png")

    type_gene(widget, "eve")
    click(widget.impute.compare_button)
    settle(widget, 800)
    shot(viewer, "tutorial_5_compare.png")
    click(widget.impute.compare_button)  # Back: the view from before
    settle(widget, 800)
    shot(viewer, "tutorial_6_back.png")
    viewer.close()


if __name__ == "__main__":
    main()
