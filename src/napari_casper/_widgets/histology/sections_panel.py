"""Step 1 of the Histology widget: which sections to train on, and which genes.

Training sections are found in the open layers (every spots layer that napari-casper opened
from SpatialData and whose spots have a measured expression table) and can be added from
files (``.zarr`` stores, or ``.h5ad`` with the H&E image beside it) without showing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_casper.errors import CasperInputError
from napari_casper.io.elements import METADATA_KEY

DEFAULT_VARIABLE_GENES = 500


@dataclass
class SectionSource:
    """A training section: spot element + table of a SpatialData object."""

    label: str
    sdata: object
    spots: str
    table: str
    coordinate_system: str | None = None
    path: str | None = None

    @property
    def key(self) -> tuple:
        return (id(self.sdata), self.spots, self.table)

    def section(self):
        """The :class:`HistologySection` (image lazily, spots in image pixels, counts)."""
        from napari_casper.histology.spatial import section_from_spatialdata

        return section_from_spatialdata(
            self.sdata, spots_name=self.spots, table_name=self.table, coordinate_system=self.coordinate_system,
            name=self.label, source=self.path,
        )  # fmt: skip


def _stem(path: str | None, fallback: str) -> str:
    return Path(path).stem if path else fallback


def sources_in_layers(viewer) -> list[SectionSource]:
    """Sections behind the open spots layers whose spots have a measured expression table."""
    from napari_casper.io.elements import annotating_tables

    found = []
    for layer in viewer.layers:
        meta = layer.metadata.get(METADATA_KEY, {}) if hasattr(layer, "metadata") else {}
        if meta.get("kind") != "spots" or meta.get("sdata") is None:
            continue
        for table in annotating_tables(meta["sdata"], meta["element"]):
            label = f"{_stem(meta.get('path'), layer.name)}:{meta['element']}"
            found.append(SectionSource(label, meta["sdata"], meta["element"], table, meta.get("coordinate_system"), meta.get("path")))
    return found


def sources_in_file(path: str | Path) -> list[SectionSource]:
    """Every (spots, measured table) pair of a ``.zarr`` store or ``.h5ad`` (+ image) file."""
    from napari_casper.histology.spatial import spot_table_pairs
    from napari_casper.io.stores import read_any

    sdata = read_any(path)
    pairs = spot_table_pairs(sdata)
    if not pairs:
        raise CasperInputError(
            f"{path} has no spots with an expression table: a training section needs measured counts per spot."
        )
    stem = Path(path).stem
    return [SectionSource(f"{stem}:{spots}" + ("" if len(pairs) == 1 else f" ({table})"), sdata, spots, table, None, str(path))
            for spots, table in pairs]  # fmt: skip


def _unique_labels(sources: list[SectionSource]) -> None:
    """Suffix repeated labels with `` [2]``, `` [3]`` ... (two open sections may share a name)."""
    seen: dict[str, int] = {}
    for source in sources:
        base = source.label.split(" [")[0]
        seen[base] = seen.get(base, 0) + 1
        source.label = base if seen[base] == 1 else f"{base} [{seen[base]}]"


class SectionsPanel(QGroupBox):
    """Checkable list of training sections, file buttons, and the gene choice."""

    def __init__(self, viewer, parent: QWidget | None = None):
        super().__init__("1. Training sections and genes", parent)
        self.viewer = viewer
        self._sources: dict[tuple, SectionSource] = {}
        self._from_files: list[SectionSource] = []
        self.list = QListWidget()
        self.list.setMaximumHeight(120)
        self.list.setToolTip("sections with H&E and measured spot counts; tick the ones to train on")
        self.add_h5ad = QPushButton("Add .h5ad...")
        self.add_h5ad.setToolTip("list the section of an .h5ad file (its H&E image beside it) without showing it")
        self.add_zarr = QPushButton("Add .zarr...")
        self.add_zarr.setToolTip("list the sections (spots with a counts table) of a SpatialData .zarr store without showing them")
        self.n_variable = QSpinBox()
        self.n_variable.setRange(1, 100_000)
        self.n_variable.setValue(DEFAULT_VARIABLE_GENES)
        self.n_variable.setToolTip("the most variable genes of the training sections are learned and predicted")
        self.genes = QLineEdit()
        self.genes.setPlaceholderText("also these genes, e.g. Penk, Nrgn (optional)")
        self.genes.setToolTip("comma-separated names (var_names or a var column such as gene_ids); shown first")

        buttons = QHBoxLayout()
        buttons.addWidget(self.add_h5ad)
        buttons.addWidget(self.add_zarr)
        form = QFormLayout()
        form.addRow("most variable genes", self.n_variable)
        form.addRow("genes to show", self.genes)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list)
        layout.addLayout(buttons)
        layout.addLayout(form)

        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        self.refresh()

    def refresh(self, *_args) -> None:
        """Rebuild the list from the open layers and added files; ticks are kept."""
        checked = {key for key, source in self._sources.items() if self._is_checked(source.label)}
        was_listed = set(self._sources)
        sources = {}
        for source in sources_in_layers(self.viewer) + self._from_files:
            sources.setdefault(source.key, source)
        _unique_labels(list(sources.values()))
        self._sources = sources
        self.list.clear()
        for key, source in sources.items():
            item = QListWidgetItem(source.label)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            tick = key in checked or key not in was_listed  # new sections start ticked
            item.setCheckState(Qt.Checked if tick else Qt.Unchecked)
            self.list.addItem(item)

    def _is_checked(self, label: str) -> bool:
        for row in range(self.list.count()):
            item = self.list.item(row)
            if item.text() == label:
                return item.checkState() == Qt.Checked
        return False

    def labels(self) -> list[str]:
        return [self.list.item(row).text() for row in range(self.list.count())]

    def chosen(self) -> list[SectionSource]:
        """The ticked sections; an error when none is."""
        by_label = {source.label: source for source in self._sources.values()}
        chosen = [by_label[self.list.item(r).text()] for r in range(self.list.count())
                  if self.list.item(r).checkState() == Qt.Checked]  # fmt: skip
        if not chosen:
            raise CasperInputError(
                "no training section ticked: open sections with H&E and measured spots (File > Open a .zarr or "
                ".h5ad), or press Add .h5ad... / Add .zarr..., then tick them."
            )
        return chosen

    def ask_path(self, kind: str = "h5ad") -> str:
        """The file dialog of *Add .h5ad...* / *Add .zarr...*; ``""`` when the user cancels."""
        if kind == "zarr":
            return QFileDialog.getExistingDirectory(self, "Add a SpatialData .zarr store")
        path, _ = QFileDialog.getOpenFileName(self, "Add a section (.h5ad with its H&E beside it)", "", "AnnData (*.h5ad)")
        return path

    def add_sources(self, sources: list[SectionSource]) -> list[str]:
        """List sections read from a file (ticked); returns their labels."""
        self._from_files.extend(sources)
        self.refresh()
        return [s.label for s in sources]

    def add_file(self, path: str | None = None, *, kind: str = "h5ad") -> list[str]:
        """Read and add the sections of a ``.zarr`` store or ``.h5ad`` file here (scripts; the widget reads in a worker)."""
        path = path or self.ask_path(kind)
        return self.add_sources(sources_in_file(path)) if path else []

    def requested_genes(self) -> list[str]:
        from napari_casper.histology.genes import parse_gene_names

        return parse_gene_names(self.genes.text())
