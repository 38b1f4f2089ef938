"""Regions widget, part 0: open a section (spatial .h5ad + its H&E, or a SpatialData store) without freezing napari.

The reading, image decoding, pyramid and layer building run in the widget's worker with named
phases and a progress bar (:mod:`.open_section`); Cancel takes effect within a second. The
finished layers are appended on the GUI thread one per event-loop turn.
"""

from __future__ import annotations

import threading
from pathlib import Path

from qtpy.QtWidgets import QDialog, QFileDialog, QGroupBox, QHBoxLayout, QProgressBar, QPushButton, QVBoxLayout, QWidget

from napari_casper._widgets.common.background import progress_relay
from napari_casper._widgets.common.first_paint import append_shown_later
from napari_casper._widgets.regions.layers import saved_regions_note
from napari_casper._widgets.regions.open_section import OpenCancelled, open_section


def store_root(path: str | Path) -> Path:
    """The ``.zarr`` folder that holds ``path`` (a store chosen by a file inside it), else ``path`` itself."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.suffix == ".zarr":
            return candidate
    return path


class SectionDialog(QFileDialog):
    """A file dialog that also takes a ``.zarr`` folder: Open on it, or a double-click into it, chooses it."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent, "Open a section: a spatial .h5ad, or a SpatialData .zarr folder")
        self.setOption(QFileDialog.Option.DontUseNativeDialog, True)  # native dialogs cannot be told about folders
        self.setFileMode(QFileDialog.FileMode.ExistingFile)
        self.setNameFilters(["Spatial data (*.h5ad *.zarr)", "AnnData (*.h5ad)", "SpatialData (*.zarr)"])
        self.chosen = ""
        self.directoryEntered.connect(self._entered)

    def _entered(self, directory: str) -> None:
        if Path(directory).suffix == ".zarr":
            self.chosen = directory
            QDialog.accept(self)

    def accept(self) -> None:
        files = self.selectedFiles()
        if files and Path(files[0]).suffix == ".zarr" and Path(files[0]).is_dir():
            self._entered(files[0])  # a plain file dialog would step into the folder instead
            return
        super().accept()


def pick_section(parent: QWidget) -> str:
    """Ask for a section: a spatial ``.h5ad`` file, or a SpatialData ``.zarr`` store (a folder); "" when cancelled.

    A file chosen inside a store opens the store.
    """
    dialog = SectionDialog(parent)
    if not dialog.exec():
        return ""
    chosen = dialog.chosen or (dialog.selectedFiles() or [""])[0]
    return str(store_root(chosen)) if chosen else ""


class OpenPanel(QGroupBox):
    """Open section... / Cancel and a progress bar; the phase is shown in the widget's message."""

    def __init__(self, host: QWidget):
        super().__init__("Section")
        self.host = host
        self._cancel = threading.Event()
        self._relay = progress_relay(self._phase)
        self.open_button = QPushButton("Open section...")
        self.open_button.setToolTip("open a spatial .h5ad (its H&E beside it) or a SpatialData .zarr store, in the background")
        self.open_button.clicked.connect(lambda: host.runner.guard(self._pick))
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("stop opening the section (takes effect within a second)")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setToolTip("progress of opening the section")
        self.progress.setVisible(False)
        row = QHBoxLayout()
        row.addWidget(self.open_button, 1)
        row.addWidget(self.cancel_button)
        box = QVBoxLayout(self)
        box.addLayout(row)
        box.addWidget(self.progress)

    @property
    def opening(self) -> bool:
        """Reading the section (its layers are then added by the widget's runner, which is busy meanwhile)."""
        return self.cancel_button.isEnabled()

    def _pick(self) -> None:
        path = pick_section(self)
        if path:
            self.open(path)

    def _phase(self, update) -> None:
        text, fraction = update
        if self.cancel_button.isEnabled():
            self.host.message.setText(f"opening: {text} ...")
            self.progress.setValue(int(round(100 * fraction)))

    def cancel(self) -> None:
        self._cancel.set()
        self.host.message.setText("cancelling ...")

    def open(self, path: str | Path) -> None:
        """Open ``path`` in the worker; its layers are added when ready (see the module docstring)."""
        host, path = self.host, Path(path)
        self._cancel = cancel = threading.Event()

        def work():
            try:
                return open_section(path, cancel, lambda text, fraction: self._relay.event.emit((text, fraction)))
            except OpenCancelled:
                return None

        def done(layers):
            self._finish()
            if layers is None:
                host.message.setText(f"opening {path.name} cancelled; nothing was added.")
                return
            self._append(layers, path)

        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.progress.setVisible(True)
        host.message.setText(f"opening {path.name} ...")
        host.runner.run(work, done)
        if not host.runner.working:  # refused, failed or ran inline
            self._finish()

    def _finish(self) -> None:
        self.cancel_button.setEnabled(False)
        self.progress.setVisible(False)

    def _append(self, layers: list, path: Path) -> None:
        """Add the built layers one per event-loop turn (each shown after its first paint), then frame them."""
        viewer = self.host.viewer

        def add(layer):
            self.host.message.setText(f"adding layer {layer.name!r} ...")
            return append_shown_later(viewer, layer)

        def added(_) -> None:
            viewer.reset_view()
            notes = " ".join(filter(None, map(saved_regions_note, layers)))  # saved regions found among the layers
            self.host.runner.say(f"opened {path.name}: {', '.join(layer.name for layer in layers)}. {notes}".strip())

        self.host.runner.add_layers(add, layers, added)
