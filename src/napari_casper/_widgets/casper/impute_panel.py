"""Step 3 of the CASPER widget: choose genes (any reference gene) and show predictions."""

from __future__ import annotations

from qtpy.QtCore import QStringListModel, Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCompleter,
    QDoubleSpinBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

COMPARE = "Compare with measured"
BACK = "Back to tissue view"


class ImputePanel(QGroupBox):
    """Gene search with completion over all reference genes, a chosen-gene list, actions."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("3. Impute", parent)
        self._genes: list[str] = []
        self._known: set[str] = set()
        self.search = QLineEdit()
        self.search.setPlaceholderText("gene name, Enter to add")
        self.search.setToolTip("type any reference gene (completion offers them all) and press Enter to add it to the list")
        self._model = QStringListModel()
        completer = QCompleter(self._model, self)
        completer.setCaseSensitivity(Qt.CaseInsensitive)
        completer.setFilterMode(Qt.MatchContains)
        self.search.setCompleter(completer)
        self.chosen = QListWidget()
        self.chosen.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.chosen.setMaximumHeight(110)
        self.chosen.setToolTip("genes to impute; select some to impute or remove only those")
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("remove the selected genes from the list")
        self.impute_button = QPushButton("Impute")
        self.impute_button.setToolTip("predict the listed (or selected) genes for every spot; the newest gene is shown, the other gene layers hidden")
        self.compare_button = QPushButton(COMPARE)
        self.compare_button.setToolTip(
            "for a gene the panel measured: measured, predicted with that gene hidden, and their difference, side by side; "
            "press again (Back) to restore the view"
        )
        self.trust_table = QTableWidget(0, 3)
        self.trust_table.setHorizontalHeaderLabels(["gene", "trust", "90% width"])
        self.trust_table.setSortingEnabled(True)
        self.trust_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.trust_table.setMaximumHeight(130)
        self.trust_table.verticalHeader().setVisible(False)
        self.trust_table.setToolTip(
            "imputed genes: trust = expected Pearson r with what the spots would measure (calibrated on panel genes "
            "hidden in training); 90% width = mean width of the per-spot 90% interval, in standard deviations. "
            "Click a header to sort."
        )
        self.trust_threshold = QDoubleSpinBox()
        self.trust_threshold.setDecimals(3)
        self.trust_threshold.setRange(-1.0, 1.0)
        self.trust_threshold.setSingleStep(0.05)
        self.trust_threshold.setValue(-1.0)
        self.trust_threshold.setPrefix("hide trust below ")
        self.trust_threshold.setToolTip("hide the genes whose trust is below this (their rows and their layers)")
        self.trust_threshold.valueChanged.connect(self._apply_threshold)
        self._trust: dict[str, float] = {}
        self.score = QLabel("")
        self.score.setWordWrap(True)
        self.colorbar = QLabel("")
        self.colorbar_range = QLabel("")
        self.search.returnPressed.connect(self._add_from_search)
        self.remove_button.clicked.connect(self._remove_selected)

        buttons = QHBoxLayout()
        buttons.addWidget(self.remove_button)
        buttons.addWidget(self.impute_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.search)
        layout.addWidget(self.chosen)
        layout.addLayout(buttons)
        layout.addWidget(self.compare_button)
        layout.addWidget(self.trust_table)
        layout.addWidget(self.trust_threshold)
        layout.addWidget(self.score)
        layout.addWidget(self.colorbar)
        layout.addWidget(self.colorbar_range)

    def set_comparing(self, comparing: bool) -> None:
        """The compare button becomes Back while a comparison is shown."""
        self.compare_button.setText(BACK if comparing else COMPARE)

    def set_reference_genes(self, genes: list[str]) -> None:
        self._genes = sorted(genes, key=str.lower)
        self._known = set(genes)
        self._model.setStringList(self._genes)

    def add_gene(self, gene: str) -> bool:
        """Add ``gene`` to the chosen list; False (and a message) when it is not a reference gene."""
        gene = gene.strip()
        if gene not in self._known:
            matches = [g for g in self._genes if g.lower() == gene.lower()]
            if len(matches) == 1:
                gene = matches[0]
            else:
                self.score.setText(f"'{gene}' is not a reference gene.")
                return False
        existing = [self.chosen.item(i).text() for i in range(self.chosen.count())]
        if gene not in existing:
            self.chosen.addItem(gene)
        return True

    def _add_from_search(self) -> None:
        if self.add_gene(self.search.text()):
            self.search.clear()

    def _remove_selected(self) -> None:
        for item in self.chosen.selectedItems():
            self.chosen.takeItem(self.chosen.row(item))

    def genes(self) -> list[str]:
        """Selected genes, or all chosen genes when none is selected."""
        selected = [item.text() for item in self.chosen.selectedItems()]
        return selected or [self.chosen.item(i).text() for i in range(self.chosen.count())]

    def show_trust(self, trust: dict[str, float], widths: dict[str, float]) -> None:
        """Add or update rows: gene, trust, mean interval width (sortable; the threshold hides rows)."""
        self._trust.update(trust)
        table = self.trust_table
        table.setSortingEnabled(False)
        rows = {table.item(r, 0).text(): r for r in range(table.rowCount())}
        for gene, value in trust.items():
            row = rows.get(gene)
            if row is None:
                row = table.rowCount()
                table.insertRow(row)
            for column, item in enumerate((gene, value, widths.get(gene, float("nan")))):
                cell = QTableWidgetItem()
                if column == 0:
                    cell.setText(str(item))
                else:
                    cell.setData(Qt.DisplayRole, round(float(item), 3))
                table.setItem(row, column, cell)
        table.setSortingEnabled(True)
        table.resizeColumnsToContents()
        self._apply_threshold()

    def hidden_by_trust(self) -> set[str]:
        """Genes whose trust is below the threshold."""
        cut = self.trust_threshold.value()
        return {g for g, t in self._trust.items() if t == t and t < cut}

    def _apply_threshold(self, *_):
        hidden = self.hidden_by_trust()
        for row in range(self.trust_table.rowCount()):
            self.trust_table.setRowHidden(row, self.trust_table.item(row, 0).text() in hidden)
        self.threshold_changed(hidden)

    def threshold_changed(self, hidden: set[str]) -> None:
        """Called with the genes the threshold hides (the widget hides their layers)."""

    def show_colorbar(self, title: str, colormap: str, limits: tuple[float, float]) -> None:
        """Colour bar of the last gene layer: its colormap from the low to the high limit."""
        import numpy as np
        from napari.utils.colormaps import ensure_colormap
        from qtpy.QtGui import QImage, QPixmap

        width, height = 220, 12
        rgba = ensure_colormap(colormap).map(np.linspace(0.0, 1.0, width))
        pixels = np.ascontiguousarray(np.repeat((rgba * 255).astype(np.uint8)[None], height, axis=0))
        image = QImage(pixels.data, width, height, 4 * width, QImage.Format_RGBA8888)
        self.colorbar.setPixmap(QPixmap.fromImage(image.copy()))
        self.colorbar_range.setText(f"{title}: {limits[0]:.3g} \u2013 {limits[1]:.3g}")
