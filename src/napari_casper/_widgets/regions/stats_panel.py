"""Regions widget, part 4: compare regions (statistics, spot classes, differential genes, plot, CSV)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QAbstractButton,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_casper._widgets.regions.summary_plot import render_summary
from napari_casper.errors import CasperInputError
from napari_casper.regions import PRECEDENCES

if TYPE_CHECKING:
    import pandas as pd

#: face colour of spots outside every region
OUTSIDE_RGBA = np.array([0.85, 0.85, 0.85, 1.0])


def _fill_table(widget: QTableWidget, frame: pd.DataFrame, max_rows: int = 200) -> None:
    frame = frame.head(max_rows)
    widget.clear()
    widget.setRowCount(len(frame))
    widget.setColumnCount(frame.shape[1])
    widget.setHorizontalHeaderLabels([str(c) for c in frame.columns])
    for r, row in enumerate(frame.itertuples(index=False)):
        for c, value in enumerate(row):
            text = f"{value:.4g}" if isinstance(value, (float, np.floating)) else str(value)
            widget.setItem(r, c, QTableWidgetItem(text))
    widget.resizeColumnsToContents()


class StatsPanel(QGroupBox):
    """Per-region statistics and spot assignment, differential genes of a class or region, export."""

    def __init__(self, host: QWidget):
        super().__init__("Compare regions")
        self.host = host
        self.statistics: pd.DataFrame | None = None
        self.differential: pd.DataFrame | None = None
        guard = host.runner.guard
        self.precedence_combo = QComboBox()
        for key, text in PRECEDENCES.items():
            self.precedence_combo.addItem(text, key)
        self.precedence_combo.setToolTip("which region a spot belongs to where regions overlap (default: hand-drawn wins)")
        self.stats_button = QPushButton("Statistics + assign spots")
        self.stats_button.setToolTip("count spots, area and mean marker expression per region and class; colour spots by class")
        self.stats_button.clicked.connect(lambda: guard(self.compute_statistics))
        self.de_combo = QComboBox()
        self.de_combo.setToolTip("the class or region whose genes are compared with all other spots")
        self.de_button = QPushButton("Differential genes vs rest")
        self.de_button.setToolTip("rank all genes inside the chosen class or region against the rest (Wilcoxon)")
        self.de_button.clicked.connect(lambda: guard(self.start_differential, self.de_combo.currentText()))
        self.export_button = QPushButton("Export CSV...")
        self.export_button.setToolTip("write the statistics (and differential genes) as CSV files")
        self.export_button.clicked.connect(self._pick_csv)
        self.stats_table = QTableWidget()
        self.stats_table.setToolTip("one row per region, per class and for the spots outside every region")
        self.stats_table.setMinimumHeight(150)
        self.de_table = QTableWidget()
        self.de_table.setToolTip("genes ranked by their difference inside vs outside")
        self.de_table.setMinimumHeight(120)
        self.plot = None  # a QLabel showing the summary plot, made at the first statistics
        box = QVBoxLayout(self)
        overlaps = QHBoxLayout()
        overlaps.addWidget(QLabel("overlaps"))
        overlaps.addWidget(self.precedence_combo, 1)
        box.addLayout(overlaps)
        box.addWidget(self.stats_button)
        box.addWidget(self.stats_table)
        box.addWidget(self.de_combo)
        box.addWidget(self.de_button)
        box.addWidget(self.de_table)
        for table in (self.stats_table, self.de_table):
            for corner in table.findChildren(QAbstractButton):
                corner.setToolTip("select the whole table (to copy it)")
        self._plot_slot = QVBoxLayout()
        box.addLayout(self._plot_slot)
        box.addWidget(self.export_button)

    def compute_statistics(self) -> None:
        """Per-region statistics, and each spot's region class in the table (``obs["region_class"]``).

        Computed in a worker thread (thousands of regions over 100k spots take seconds); the table,
        plot and spot colours are updated on the GUI thread when it ends (:attr:`statistics`).
        """
        import pandas as pd

        from napari_casper.regions import assign_spots_to_regions, region_statistics
        from napari_casper.regions.expression import known_genes

        host = self.host
        ctx, regions, extra = host.spot_context(), host.layer_regions(), host.spot_features()
        # mean expression of the marker genes this table has (the suggest panel's genes box); the others are named
        genes, absent = known_genes(ctx, host.suggest_panel.genes(), extra=extra)
        precedence = self.precedence_combo.currentData()

        colours, differential = self._colours(), self.differential

        def work():
            statistics = region_statistics(ctx, regions, genes, extra=extra, precedence=precedence)
            labels = assign_spots_to_regions(ctx, regions, precedence=precedence)
            return statistics, labels, render_summary(statistics, differential, colours)

        def done(result):
            self.statistics, labels, image = result
            per_spot = ctx.to_element_order(labels.astype(str), extra.index)
            host.set_spot_feature("region_class", pd.Categorical(per_spot, categories=labels.cat.categories))
            classes = host.classes
            colours = [classes.rgba(c) if c in classes else OUTSIDE_RGBA for c in per_spot]
            host.spots_layer().face_color = np.array(colours)
            _fill_table(self.stats_table, self.statistics)
            self.de_combo.clear()
            self.de_combo.addItems(
                [f"class: {c}" for c in dict.fromkeys(regions.classes)] + [f"region: {n}" for n in regions.names]
            )
            self._show_plot(image)
            counts = labels.value_counts()
            host.runner.say(
                "spots per class: "
                + ", ".join(f"{k} {v}" for k, v in counts.items() if v)
                + f" (table obs 'region_class'; overlaps: {self.precedence_combo.currentText()})."
                + (f" Marker means left out, not in this table: {', '.join(absent)}." if absent else "")
            )

        host.message.setText("computing region statistics ...")
        host.runner.run(work, done)

    def start_differential(self, choice: str | None = None) -> None:
        """Rank genes inside the chosen class/region vs all other spots (in a worker thread)."""
        from napari_casper.regions import differential_genes, region_mask
        from napari_casper.regions.stats import check_comparable

        choice = choice or self.de_combo.currentText()
        if not choice:
            raise CasperInputError("compute the statistics first, then choose a class or region to compare.")
        if self.de_combo.findText(choice) >= 0:
            self.de_combo.setCurrentText(choice)
        kind, _, label = choice.partition(": ")
        ctx, regions = self.host.spot_context(), self.host.layer_regions()
        inside = region_mask(ctx, regions, **({"classes": [label]} if kind == "class" else {"names": [label]}))
        check_comparable(inside)  # fail here, at once, rather than in the worker
        self.host.message.setText(f"ranking genes inside {label} vs the rest ...")
        colours, statistics = self._colours(), self.statistics

        def work():
            frame = differential_genes(ctx, inside)
            frame.attrs["comparison"] = choice
            return frame, render_summary(statistics, frame, colours)

        def done(result):
            frame, image = result
            self.differential = frame
            _fill_table(self.de_table, frame, max_rows=50)
            self._show_plot(image)
            self.host.runner.say(f"differential genes for {label}: top up {', '.join(map(str, frame['gene'][:5]))}.")

        self.host.runner.run(work, done)

    def _colours(self) -> dict[str, str]:
        classes = self.host.classes
        return {name: classes.colour(name) for name in classes.names}

    def _show_plot(self, rgba: np.ndarray) -> None:
        """Show the summary plot the worker rendered (:func:`render_summary`): only pixels on this thread."""
        if self.plot is None:
            self.plot = QLabel()
            self.plot.setToolTip("spots per class, and the top genes of the last comparison")
            self._plot_slot.addWidget(self.plot)
        height, width = rgba.shape[:2]
        self._plot_pixels = np.ascontiguousarray(rgba)  # QImage reads this buffer: keep it alive
        image = QImage(self._plot_pixels.data, width, height, 4 * width, QImage.Format.Format_RGBA8888)
        self.plot.setPixmap(QPixmap.fromImage(image))

    def export_csv(self, path: str | Path) -> list[Path]:
        """Write the statistics (and differential genes, if computed) as CSV files."""
        from napari_casper.regions import export_csv

        if self.statistics is None:
            raise CasperInputError("no statistics yet: press 'Statistics + assign spots' first.")
        path = Path(path)
        written = [export_csv(self.statistics, path)]
        if self.differential is not None:
            written.append(export_csv(self.differential, path.with_name(f"{path.stem}_differential_genes.csv")))
        self.host.runner.say("wrote " + ", ".join(map(str, written)))
        return written

    def _pick_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export region statistics", "region_statistics.csv", "CSV (*.csv)")
        if path:
            self.host.runner.guard(self.export_csv, path)
