"""Regions widget, part 0: open a section (spatial .h5ad + its H&E, or a SpatialData store) without freezing napari.

The reading, image decoding, pyramid and layer building run in the widget's worker with named
phases and a progress bar (:mod:`.open_section`); Cancel takes effect within a second. The
finished layers are appended on the GUI thread one per event-loop turn.
"""

from __future__ import annotations

import threading
from pathlib import Path

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QGroupBox, QHBoxLayout, QProgressBar, QPushButton, QVBoxLayout, QWidget

from napari_casper._widgets.common.background import progress_relay
from napari_casper._widgets.regions.open_section import OpenCancelled, open_section


class OpenPanel(QGroupBox):
    """Open section... / Cancel and a progress bar; the phase is shown in the widget's message."""

    def __init__(self, host: QWidget):
        super().__init__("Section")
        self.host = host
        self._cancel = threading.Event()
        self._appending = False
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
        return self.cancel_button.isEnabled() or self._appending

    def _pick(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a section", "", "Spatial data (*.h5ad *.zarr);;AnnData (*.h5ad);;SpatialData (*.zarr)"
        )
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
        if not host.runner.busy:  # refused, failed or ran inline
            self._finish()

    def _finish(self) -> None:
        self.cancel_button.setEnabled(False)
        self.progress.setVisible(False)

    def _append(self, layers: list, path: Path) -> None:
        """Add the built layers one per event-loop turn, then frame them."""
        viewer, pending = self.host.viewer, list(layers)
        self._appending = True

        def next_layer():
            if pending:
                layer = pending.pop(0)
                self.host.message.setText(f"adding layer {layer.name!r} ...")
                viewer.layers.append(layer)
                QTimer.singleShot(0, next_layer)
                return
            self._appending = False
            viewer.reset_view()
            self.host.runner.say(f"opened {path.name}: {', '.join(layer.name for layer in layers)}.")

        next_layer()
