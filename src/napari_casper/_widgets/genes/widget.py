"""The "Genes" dock widget: browse the genes of any table over its spots, switching instantly.

One layer per spot element and table, named after the gene it shows and where the gene comes
from (``genes: eve (cells/atlas)``) and renamed as the gene changes; choosing another gene
replaces that layer's data (a multiscale raster above 20k spots, which then hides the plain
spots layer under it), never adding a layer per gene. The layer has a colour bar with its units
on the canvas, and hovering a spot shows its id and value. Works for measured tables and saved
CASPER / histology predictions alike.
"""

from __future__ import annotations

import time

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QCompleter,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_casper._widgets.common.background import BackgroundRunner, RunsInBackground, warm_up_in_background
from napari_casper._widgets.common.layer_sync import spot_layers, watch
from napari_casper.errors import CasperInputError
from napari_casper.io.elements import METADATA_KEY

LAYER_PREFIX = "genes: "


def _compact(combo: QComboBox, characters: int = 12) -> QComboBox:
    """A combo box whose width does not grow with its longest entry (long names would widen the dock)."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(characters)
    return combo


class GenesWidget(RunsInBackground, QWidget):
    """Show one gene of a spots table at a time; switch with the list, arrow keys or Prev/Next."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.switcher = None
        self.layer = None
        self.last_switch_ms: float | None = None
        self._key = None
        self._pending = ""
        warm_up_in_background("genes", viewer=napari_viewer)  # later garbage collections skip what napari and the data made so far

        self.spots = _compact(QComboBox())
        self.spots.setToolTip("The spots (or cells) to colour: a spots layer opened from SpatialData or a sample")
        self.table = _compact(QComboBox())
        self.table.setToolTip("The table whose genes to show: measured counts, or saved CASPER / histology predictions")
        self.matrix = _compact(QComboBox())
        self.matrix.setToolTip("X: the table's values; or one of its layers (e.g. a prediction's uncertainty)")
        self.transform = _compact(QComboBox())
        self.transform.addItems(["auto", "log1p", "none"])
        self.transform.setToolTip("auto: log1p for raw counts, values as stored otherwise")
        self.gene = _compact(QComboBox())
        self.gene.setEditable(True)
        self.gene.setInsertPolicy(QComboBox.NoInsert)
        self.gene.setMaxVisibleItems(20)
        self.gene.setToolTip("The gene shown: pick it from the list, or type its name (any case) and press Return")
        self.gene.lineEdit().setToolTip(self.gene.toolTip())
        self.previous_button = QPushButton("< Previous")
        self.previous_button.setToolTip("Show the gene before this one in the table")
        self.next_button = QPushButton("Next >")
        self.next_button.setToolTip("Show the gene after this one in the table")
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.runner = BackgroundRunner(self.message.setText)

        form = QFormLayout()
        form.addRow("spots", self.spots)
        form.addRow("table", self.table)
        form.addRow("matrix", self.matrix)
        form.addRow("values", self.transform)
        form.addRow("gene", self.gene)
        steps = QHBoxLayout()
        steps.addWidget(self.previous_button)
        steps.addWidget(self.next_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(steps)
        layout.addWidget(self.message)
        layout.addStretch(1)

        self.spots.currentIndexChanged.connect(self._fill_tables)
        self.table.currentIndexChanged.connect(self._fill_genes)
        self.transform.currentIndexChanged.connect(lambda *_: self._chosen())
        self.matrix.currentIndexChanged.connect(lambda *_: self._chosen())
        self.gene.activated.connect(lambda *_: self._chosen())
        self.gene.lineEdit().returnPressed.connect(self._chosen)
        self.previous_button.clicked.connect(lambda: self.step(-1))
        self.next_button.clicked.connect(lambda: self.step(1))
        napari_viewer.layers.events.inserted.connect(self.refresh)
        napari_viewer.layers.events.removed.connect(self.refresh)
        watch(napari_viewer)  # colour bars and units for the continuous layers already open
        self.refresh()

    # -- choices -------------------------------------------------------------------------
    def refresh(self, *_) -> None:
        current = self.spots.currentText()
        names = [layer.name for layer in spot_layers(self.viewer, with_table=False)]
        self.spots.blockSignals(True)
        self.spots.clear()
        self.spots.addItems(names)
        if current in names:
            self.spots.setCurrentText(current)
        self.spots.blockSignals(False)
        if self.spots.currentText() != current or self.table.count() == 0:
            self._fill_tables()

    def _spots_layer(self):
        name = self.spots.currentText()
        if not name or name not in self.viewer.layers:
            raise CasperInputError("no spots layer: open a SpatialData object (File > Open) or a sample first.")
        return self.viewer.layers[name]

    def _fill_tables(self, *_) -> None:
        from napari_casper.io.elements import annotating_tables

        self.table.blockSignals(True)
        self.table.clear()
        if self.spots.currentText():
            meta = self._spots_layer().metadata[METADATA_KEY]
            tables = annotating_tables(meta["sdata"], meta["element"], measured_only=False)
            self.table.addItems([name for name in tables if meta["sdata"].tables[name].n_vars > 0])
        self.table.blockSignals(False)
        self._fill_genes()

    def _fill_genes(self, *_) -> None:
        self.gene.blockSignals(True)
        self.gene.clear()
        self.matrix.blockSignals(True)
        self.matrix.clear()
        if self.table.currentText():
            meta = self._spots_layer().metadata[METADATA_KEY]
            table = meta["sdata"].tables[self.table.currentText()]
            self.matrix.addItems(["X", *map(str, table.layers.keys())])
            genes = [str(g) for g in table.var_names]
            self.gene.addItems(genes)
            completer = QCompleter(genes, self.gene)
            completer.setCaseSensitivity(Qt.CaseInsensitive)
            completer.setFilterMode(Qt.MatchContains)
            self.gene.setCompleter(completer)
        self.gene.setCurrentIndex(-1)
        self.gene.blockSignals(False)
        self.matrix.blockSignals(False)

    def _chosen(self) -> None:
        text = self.gene.currentText().strip()
        if not text or self._already(text):
            return  # Return in the gene field reaches here twice (the field, and the list's "activated")
        self.runner.guard(self.show_gene, text)

    def _already(self, gene: str) -> bool:
        """``gene`` is being prepared or shown for the current choices."""
        if self.runner.working:  # a build runs (layers still waiting for their first paint do not count)
            return self._pending.lower() == gene.lower()
        current = self.switcher is not None and self._key == self._wanted_key() and self.layer in self.viewer.layers
        return bool(current and self.switcher.gene and self.switcher.gene.lower() == gene.lower())

    def step(self, offset: int) -> None:
        """Show the previous (-1) or next (+1) gene of the table."""
        if self.gene.count() == 0:
            return
        index = (max(self.gene.currentIndex(), 0) + offset) % self.gene.count()
        self.gene.setCurrentIndex(index)
        self._chosen()

    # -- showing ---------------------------------------------------------------------------
    def _wanted_key(self) -> tuple:
        return (self.spots.currentText(), self.table.currentText(), self.matrix.currentText(), self.transform.currentText())

    def show_gene(self, gene: str) -> None:
        """Show ``gene``: the first time for these spots/table in a worker (the raster is built
        once), afterwards by replacing the layer's data on the GUI thread."""
        if self.switcher is not None and self._key == self._wanted_key() and self.layer in self.viewer.layers:
            self._switch(gene)
            return
        spots = self._spots_layer()
        table = self.table.currentText()
        if not table:
            raise CasperInputError(f"no table annotates the spots of {spots.name!r}: nothing to show.")
        matrix = self.matrix.currentText()
        self._pending = gene
        self.runner.run(self._build, self._built, spots, table, matrix, self.transform.currentText(), gene)
        self.runner.show_message(f"preparing {spots.name} / {table} (once)...")  # the dock says it; no toast to outlive it

    def _build(self, spots, table: str, matrix: str, transform: str, gene: str):
        from napari_casper.display.gene_display import GeneSwitcher, table_genes
        from napari_casper.display.value_layers import SpotGeometry

        meta = spots.metadata[METADATA_KEY]
        kwargs = {"size": spots.size, "affine": spots.affine.affine_matrix, "metadata": spots.metadata}
        geometry = SpotGeometry.from_points_kwargs(spots.data, kwargs)
        layer = None if matrix in ("", "X") else matrix
        genes = table_genes(meta["sdata"], meta["element"], table, meta["instance_ids"], transform=transform, layer=layer)
        suffix = f" [{layer}]" if layer else ""
        switcher = GeneSwitcher(geometry, genes, f"{meta['element']}/{table}{suffix}")
        layer_tuple = switcher.layer_tuple(gene)  # builds the raster pyramid for large sets
        return (spots.name, table, matrix, transform), switcher, layer_tuple

    def _built(self, result) -> None:
        from napari_casper._widgets.common.layer_sync import add_or_update

        self._key, self.switcher, layer_tuple = result
        previous = self._layer_of(self.switcher.source)
        if previous is not None:  # the same spots/table shown before: that layer follows the new gene
            previous.name = layer_tuple[1]["name"]
        if self.switcher.is_raster:
            # the raster covers the spots; drawing both doubles every frame's cost (a shown
            # 36k-point layer makes a switch ~5x slower under software GL). Hidden before the raster
            # is added: adding a layer re-slices every shown layer (napari), 36k points included
            element = self.switcher.geometry.element
            for other in self.viewer.layers:
                meta = other.metadata.get(METADATA_KEY, {})
                if meta.get("element") == element and meta.get("kind") in ("spots", "spots_overview"):
                    other.visible = False
        self.layer = add_or_update(self.viewer, layer_tuple)
        self._announce(None)

    def _layer_of(self, source: str):
        """The Genes layer already showing ``source`` (element/table), if any."""
        for layer in self.viewer.layers:
            if layer.metadata.get(METADATA_KEY, {}).get("genes_source") == source:
                return layer
        return None

    def _switch(self, gene: str) -> None:
        import pandas as pd

        start = time.perf_counter()
        data, limits = self.switcher.switch(gene)
        layer = self.layer
        if self.switcher.is_raster:
            layer.data = data
            layer.contrast_limits = limits
        else:
            layer.features = pd.DataFrame({"spot": self.switcher.geometry.spot_ids, "value": data})
            layer.face_color = "value"
            layer.face_contrast_limits = limits
        layer.metadata[METADATA_KEY]["gene"] = self.switcher.gene
        layer.name = self.switcher.name
        self.last_switch_ms = (time.perf_counter() - start) * 1000
        self._announce(self.last_switch_ms)

    def _announce(self, ms: float | None) -> None:
        switcher = self.switcher
        index = self.gene.findText(switcher.gene)
        if index >= 0 and index != self.gene.currentIndex():
            self.gene.blockSignals(True)
            self.gene.setCurrentIndex(index)
            self.gene.blockSignals(False)
        geometry = switcher.geometry
        kind = f"{geometry.cells}" if geometry.draws_cells else "raster" if switcher.is_raster else "points"
        noun = "cells" if geometry.draws_cells else "spots"
        timing = f" in {ms:.0f} ms" if ms is not None else ""
        self.message.setText(f"{switcher.gene} ({switcher.genes.units}) on {geometry.n_spots:,} {noun} ({kind}){timing}")
