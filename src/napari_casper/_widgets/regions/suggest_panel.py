"""Regions widget, part 2: suggest regions from biomarkers (score, threshold slider, preview, accept)."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QWidget,
)

from napari_casper._widgets.common.layer_sync import layer_affine
from napari_casper._widgets.regions.layers import PREVIEW_NAME, edge_width, keep_active
from napari_casper.errors import CasperInputError
from napari_casper.regions import HER2_TUMOUR_MARKERS, parse_gene_list

SLIDER_STEPS = 1000


def closed_paths(vertices: list[np.ndarray]) -> list[np.ndarray]:
    """Each ring as a closed path (first vertex repeated): outlines drawn without filling, so napari
    does not triangulate them (a polygon's face is triangulated on the GUI thread)."""
    return [np.vstack([v, v[:1]]) for v in vertices]


class SuggestPanel(QGroupBox):
    """Genes, smoothing and class of the suggestion; Otsu threshold with a slider; a preview layer.

    Scoring and re-outlining run in the widget's worker; the preview is drawn as outlines (paths).
    """

    def __init__(self, host: QWidget):
        super().__init__("Suggest regions from biomarkers")
        self.host = host
        self.suggestion = None
        self._pending: float | None = None  # a threshold asked for while the worker was busy
        self.genes_edit = QLineEdit(", ".join(HER2_TUMOUR_MARKERS))
        self.genes_edit.setToolTip(
            "marker genes, comma-separated: table genes (symbols or ids in var), obs columns, or spots-layer features"
        )
        self.smoothing = QDoubleSpinBox()
        self.smoothing.setRange(0.0, 1.0)
        self.smoothing.setSingleStep(0.1)
        self.smoothing.setValue(0.5)
        self.smoothing.setToolTip("weight of the neighbours' mean score (0: each spot alone)")
        self.suggest_class = QComboBox()
        self.suggest_class.setToolTip("class the accepted outlines get")
        self.score_button = QPushButton("Score and outline")
        self.score_button.setToolTip("score the genes per spot, smooth over neighbours and outline at Otsu's threshold")
        self.score_button.clicked.connect(lambda: host.runner.guard(self.compute_suggestion))
        self.threshold_slider = QSlider(Qt.Horizontal)
        self.threshold_slider.setRange(0, SLIDER_STEPS)
        self.threshold_slider.setEnabled(False)
        self.threshold_slider.setToolTip("threshold on the smoothed score: spots at or above it are outlined")
        self.threshold_slider.valueChanged.connect(self._slider_moved)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(120)
        self._debounce.timeout.connect(lambda: host.runner.guard(self._outline_at_slider))
        self.threshold_label = QLabel("threshold: score first (Otsu by default)")
        self.threshold_label.setWordWrap(True)
        self.otsu_button = QPushButton("Otsu")
        self.otsu_button.setToolTip("put the threshold back at Otsu's threshold of the smoothed scores")
        self.otsu_button.setEnabled(False)
        self.otsu_button.clicked.connect(lambda: host.runner.guard(self.set_threshold, self.suggestion.otsu))
        self.accept_button = QPushButton("Add outlines as regions")
        self.accept_button.setToolTip("add the previewed outlines to the regions layer as editable shapes of the class")
        self.accept_button.setEnabled(False)
        self.accept_button.clicked.connect(lambda: host.runner.guard(self.accept_suggestion))
        form = QFormLayout(self)
        form.addRow("genes", self.genes_edit)
        form.addRow("smoothing", self.smoothing)
        form.addRow("class", self.suggest_class)
        form.addRow(self.score_button)
        slider = QHBoxLayout()
        slider.addWidget(self.threshold_slider, 1)
        slider.addWidget(self.otsu_button)
        form.addRow("threshold", slider)
        form.addRow(self.threshold_label)
        form.addRow(self.accept_button)

    def genes(self) -> list[str]:
        return parse_gene_list(self.genes_edit.text())

    def chosen_class(self) -> str:
        return self.suggest_class.currentText() or "tumour"

    def set_classes(self, names: list[str]) -> None:
        """Offer the legend's classes, keeping the choice when it still exists."""
        chosen = self.chosen_class()
        self.suggest_class.clear()
        self.suggest_class.addItems(names)
        self.suggest_class.setCurrentText(chosen if chosen in names else names[0])

    def compute_suggestion(self, genes: list[str] | None = None) -> None:
        """Score the genes, outline at Otsu's threshold (worker thread), then show a preview layer.

        The smoothed score also becomes the spots layer's feature ``"biomarker score"`` (to colour by).
        """
        from napari_casper.regions import suggest_regions

        genes = genes or self.genes()
        if not genes:
            raise CasperInputError("type at least one gene (e.g. ERBB2, EPCAM) before scoring.")
        host = self.host
        ctx, extra, smoothing = host.spot_context(), host.spot_features(), self.smoothing.value()
        affine = layer_affine(host.spots_layer())

        def work():
            suggestion = suggest_regions(ctx, genes, smoothing=smoothing, extra=extra)
            score = ctx.to_element_order(suggestion.smoothed, extra.index).astype(float)
            return suggestion, score, self._preview_vertices(suggestion, affine)

        def done(result):
            self.suggestion, score, vertices = result
            host.set_spot_feature("biomarker score", score)
            self._place_slider(self.suggestion.threshold)
            for control in (self.threshold_slider, self.otsu_button, self.accept_button):
                control.setEnabled(True)
            self._show(vertices)
            host.runner.say(
                f"scored {', '.join(self.suggestion.genes)}: {self._counts()}. Move the threshold, then "
                "'Add outlines as regions'."
            )

        host.message.setText(f"scoring {', '.join(genes)} and outlining ...")
        host.runner.run(work, done)

    @staticmethod
    def _preview_vertices(suggestion, affine) -> list[np.ndarray]:
        return closed_paths(suggestion.to_regions(affine=affine).vertices) if suggestion.polygons else []

    def _counts(self) -> str:
        s = self.suggestion
        return f"{int(s.above.sum())}/{len(s.above)} spots above, {len(s.polygons)} outline(s)"

    def _place_slider(self, threshold: float) -> None:
        lo, hi = float(self.suggestion.smoothed.min()), float(self.suggestion.smoothed.max())
        self.threshold_slider.blockSignals(True)
        self.threshold_slider.setValue(int(round((threshold - lo) / max(hi - lo, 1e-12) * SLIDER_STEPS)))
        self.threshold_slider.blockSignals(False)

    def _slider_moved(self, _step: int) -> None:
        if self.suggestion is not None:
            self._debounce.start()  # outline once the slider rests

    def _outline_at_slider(self) -> None:
        lo, hi = float(self.suggestion.smoothed.min()), float(self.suggestion.smoothed.max())
        self._outline(lo + (hi - lo) * self.threshold_slider.value() / SLIDER_STEPS)

    def set_threshold(self, threshold: float) -> None:
        """Move the slider to ``threshold`` (on the smoothed score) and redraw the preview (worker thread)."""
        if self.suggestion is None:
            raise CasperInputError("nothing suggested yet: press 'Score and outline' first.")
        self._place_slider(threshold)
        self._outline(threshold)

    def _outline(self, threshold: float) -> None:
        host = self.host
        if host.runner.working:  # the latest threshold is outlined when the running job ends
            self._pending = threshold
            return
        suggestion, affine = self.suggestion, layer_affine(host.spots_layer())

        def work():
            moved = suggestion.at_threshold(threshold)
            return moved, self._preview_vertices(moved, affine)

        def done(result):
            self.suggestion, vertices = result
            self._show(vertices)
            host.message.setText(f"threshold {self.suggestion.threshold:.3g}: {self._counts()}.")
            pending, self._pending = self._pending, None
            if pending is not None:
                QTimer.singleShot(0, lambda: host.runner.guard(self._outline, pending))

        host.message.setText(f"outlining at threshold {threshold:.3g} ...")
        host.runner.run(work, done)

    def _show(self, vertices: list[np.ndarray]) -> None:
        """Draw the outlines in the preview layer (created on first use) and update the label."""
        s = self.suggestion
        self.threshold_label.setText(f"threshold {s.threshold:.3g} (Otsu {s.otsu:.3g}): {self._counts()}")
        spots = self.host.spots_layer()
        affine = layer_affine(spots)
        colour = self.host.classes.rgba(self.chosen_class())
        viewer = self.host.viewer
        width = edge_width(spots, affine, 1 / 5)
        if PREVIEW_NAME not in viewer.layers:
            keep_active(
                viewer,
                lambda: viewer.add_shapes(ndim=2, name=PREVIEW_NAME, affine=affine, edge_width=width, edge_color=colour),
            )
        preview = viewer.layers[PREVIEW_NAME]
        preview.selected_data = set()
        preview.data = []
        if vertices:
            preview.add_paths(vertices, edge_color=colour, edge_width=width)

    def accept_suggestion(self) -> None:
        """Add the previewed outlines to the regions layer as editable shapes of the chosen class."""
        if self.suggestion is None:
            raise CasperInputError("nothing suggested yet: press 'Score and outline' first.")
        cls = self.chosen_class()
        regions = self.suggestion.to_regions(cls, palette=self.host.classes)
        genes = ", ".join(self.suggestion.genes)

        def added(layer):
            if PREVIEW_NAME in self.host.viewer.layers:
                self.host.viewer.layers.remove(PREVIEW_NAME)
            self.host.runner.say(
                f"added {len(regions)} {cls} region(s) from {genes} to {layer.name!r}; edit them freely. "
                "Where they overlap hand-drawn regions, the hand-drawn ones win (the 'overlaps' box under Compare regions)."
            )

        self.host.add_regions(regions, then=added)
