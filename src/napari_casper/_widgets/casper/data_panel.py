"""Step 1 of the CASPER widget: which spots, which reference, which centroids."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QWidget,
)

from napari_casper._widgets.common.layer_sync import spot_layers
from napari_casper.io.elements import METADATA_KEY

AUTOMATIC = "automatic"
LEIDEN = "Leiden clusters"
CELLS = "every reference cell (finest)"
FILE_PREFIX = "file: "


class DataPanel(QGroupBox):
    """Choose the spots layer, the scRNA reference (table or .h5ad) and its label column."""

    def __init__(self, viewer, parent: QWidget | None = None):
        super().__init__("1. Data", parent)
        self.viewer = viewer
        self._reference_files: dict[str, Path] = {}
        self.spots = QComboBox()
        self.spots.setToolTip("the spots layer (with its table of measured genes) to train on and impute for")
        self.reference = QComboBox()
        self.reference.setToolTip("the scRNA-seq reference: a table of the open SpatialData object, or an .h5ad file")
        self.browse = QPushButton("Open .h5ad...")
        self.browse.setToolTip("choose an scRNA-seq reference .h5ad file")
        self.label_key = QComboBox()
        for combo in (self.spots, self.reference, self.label_key):
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
        self.resolution = QDoubleSpinBox()
        self.resolution.setRange(0.05, 10.0)
        self.resolution.setSingleStep(0.1)
        self.resolution.setValue(1.0)
        self.resolution.setToolTip("Leiden resolution: higher gives more, smaller clusters")
        reference_row = QHBoxLayout()
        reference_row.addWidget(self.reference, 1)
        reference_row.addWidget(self.browse)
        form = QFormLayout(self)
        form.addRow("spots", self.spots)
        form.addRow("reference", reference_row)
        form.addRow("centroids from", self.label_key)
        form.addRow("resolution", self.resolution)
        self.browse.clicked.connect(self._browse)
        self.reference.currentIndexChanged.connect(self._fill_label_keys)
        self.spots.currentIndexChanged.connect(self._fill_references)
        self.label_key.currentTextChanged.connect(
            lambda text: self.resolution.setEnabled(text in (AUTOMATIC, LEIDEN, CELLS))
        )
        self.label_key.setToolTip(
            "automatic: every reference cell for references up to 5000 cells (most accurate; its "
            "attention is shown summed over the cells' Leiden clusters), else Leiden clusters; or a "
            "cell-type column of the reference"
        )
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        self.refresh()

    # -- choices -------------------------------------------------------------------------
    def refresh(self, *_):
        current = self.spots.currentText()
        self.spots.blockSignals(True)
        self.spots.clear()
        self.spots.addItems([layer.name for layer in spot_layers(self.viewer)])
        if current:
            self.spots.setCurrentText(current)
        self.spots.blockSignals(False)
        self._fill_references()

    def spots_layer(self):
        name = self.spots.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _sdata(self):
        layer = self.spots_layer()
        return layer.metadata[METADATA_KEY].get("sdata") if layer is not None else None

    def _fill_references(self, *_):
        current = self.reference.currentText()
        self.reference.blockSignals(True)
        self.reference.clear()
        sdata, layer = self._sdata(), self.spots_layer()
        if sdata is not None:
            measured = layer.metadata[METADATA_KEY].get("table")
            for name, table in sdata.tables.items():
                if name != measured and not table.uns.get("spatialdata_attrs", {}).get("region"):
                    self.reference.addItem(name)
        for label in self._reference_files:
            self.reference.addItem(label)
        if current:
            self.reference.setCurrentText(current)
        self.reference.blockSignals(False)
        self._fill_label_keys()

    def _browse(self):
        path, _ = QFileDialog.getOpenFileName(self, "scRNA-seq reference", "", "AnnData (*.h5ad)")
        if path:
            self.add_reference_file(path)

    def add_reference_file(self, path: str | Path) -> None:
        """Offer an ``.h5ad`` file as the reference (and select it)."""
        label = f"{FILE_PREFIX}{Path(path).name}"
        self._reference_files[label] = Path(path)
        self._fill_references()
        self.reference.setCurrentText(label)

    def reference_anndata(self):
        """The chosen reference AnnData, or None when nothing is chosen."""
        choice = self.reference.currentText()
        if not choice:
            return None
        if choice in self._reference_files:
            from napari_casper.io.stores import read_reference

            return read_reference(self._reference_files[choice])
        sdata = self._sdata()
        return sdata.tables[choice] if sdata is not None and choice in sdata.tables else None

    def _fill_label_keys(self, *_):
        self.label_key.clear()
        self.label_key.addItems([AUTOMATIC, LEIDEN, CELLS])
        choice = self.reference.currentText()
        if not choice:
            return
        import pandas as pd  # here: the dock opens with no reference chosen, without importing pandas

        try:
            reference = self.reference_anndata()
        except Exception:  # noqa: BLE001 - an unreadable file is reported when training starts
            return
        if reference is None:
            return
        for column in reference.obs.columns:
            values = reference.obs[column]
            if isinstance(values.dtype, pd.CategoricalDtype) or values.dtype == object:
                self.label_key.addItem(str(column))

    def label_column(self) -> str | None:
        text = self.label_key.currentText()
        return None if text in ("", AUTOMATIC, LEIDEN, CELLS) else text

    def centroid_method(self) -> str:
        """The engine's centroid method for the current choice."""
        text = self.label_key.currentText()
        return {AUTOMATIC: "auto", LEIDEN: "leiden", CELLS: "cells", "": "auto"}.get(text, "label")
