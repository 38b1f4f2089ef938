"""What every docs/make_*_screenshots.py script shares: the window size and saving a screenshot."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from qtpy.QtWidgets import QApplication

OUT = Path(__file__).parent / "images"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def new_viewer(width: int = 1650, height: int = 1050):
    """A shown napari viewer of a fixed size (run under Xvfb with a screen at least this large)."""
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(width, height)
    return viewer


def shot(viewer, name: str, widget_part=None, widget=None) -> None:
    """Save the whole window to docs/images/``name`` after scrolling ``widget_part`` into view."""
    if widget_part is not None:
        widget.scroll.ensureWidgetVisible(widget_part)
    for _ in range(5):
        QApplication.instance().processEvents()
    Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(OUT / name)
    print("wrote", OUT / name)
