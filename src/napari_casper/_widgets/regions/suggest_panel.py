"""Regions widget, part 2: suggest regions from biomarkers (score, threshold slider, preview, accept)."""

from __future__ import annotations

from qtpy.QtCore import Qt
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
from napari_casper._widgets.regions.layers import PREVIEW_NAME, edge_width
from napari_casper.errors import CasperInputError
from napari_casper.regions import HER2_TUMOUR_MARKERS, parse_gene_list

SLIDER_STEPS = 1000


class SuggestPanel(QGroupBox):
    """Genes, smoothing and class of the suggestion; Otsu threshold with a slider; a preview layer."""

    def __init__(self, host: QWidget):
        super().__init__("Suggest regions from biomarkers")
        self.host = host
        self.suggestion = None
        self.genes_edit = QLineEdit(", ".join(HER2_TUMOUR_MARKERS))
        self.genes_edit.setToolTip(
            "any genes: table genes (symbols or ids in var), obs columns, or spots-layer features (imputed)"
        )
        self.smoothing = QDoubleSpinBox()
        self.smoothing.setRange(0.0, 1.0)
        self.smoothing.setSingleStep(0.1)
        self.smoothing.setValue(0.5)
        self.smoothing.setToolTip("weight of the neighbours' mean score (0: each spot alone)")
        self.suggest_class = QComboBox()
        self.score_button = QPushButton("Score and outline")
        self.score_button.clicked.connect(lambda: host.runner.guard(self.compute_suggestion))
        self.threshold_slider = QSlider(Qt.Horizontal)
        self.threshold_slider.setRange(0, SLIDER_STEPS)
        self.threshold_slider.setEnabled(False)
        self.threshold_slider.valueChanged.connect(self._slider_moved)
        self.threshold_label = QLabel("threshold: score first (Otsu by default)")
        self.otsu_button = QPushButton("Otsu")
        self.otsu_button.clicked.connect(
            lambda: self.suggestion is not None and self.set_threshold(self.suggestion.otsu)
        )
        self.accept_button = QPushButton("Add outlines as regions")
        self.accept_button.clicked.connect(lambda: host.runner.guard(self.accept_suggestion))
        form = QFormLayout(self)
        form.addRow("genes", self.genes_edit)
        form.addRow("smoothing", self.smoothing)
        form.addRow("class", self.suggest_class)
        form.addRow(self.score_button)
        slider = QHBoxLayout()
        slider.addWidget(self.threshold_slider)
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

    def compute_suggestion(self, genes: list[str] | None = None):
        """Score the genes, outline at Otsu's threshold, and show a preview layer.

        The smoothed score also becomes the spots layer's feature ``"biomarker score"`` (to colour by).
        """
        from napari_casper.regions import suggest_regions

        genes = genes or self.genes()
        ctx, extra = self.host.spot_context(), self.host.spot_features()
        self.suggestion = suggest_regions(ctx, genes, smoothing=self.smoothing.value(), extra=extra)
        score = ctx.to_element_order(self.suggestion.smoothed, extra.index).astype(float)
        self.host.set_spot_feature("biomarker score", score)
        self.threshold_slider.setEnabled(True)
        self.set_threshold(self.suggestion.otsu)
        return self.suggestion

    def _slider_moved(self, step: int) -> None:
        if self.suggestion is None:
            return
        lo, hi = float(self.suggestion.smoothed.min()), float(self.suggestion.smoothed.max())
        self.host.runner.guard(self._outline, lo + (hi - lo) * step / SLIDER_STEPS)

    def set_threshold(self, threshold: float) -> None:
        """Move the slider to ``threshold`` (on the smoothed score) and redraw the preview."""
        lo, hi = float(self.suggestion.smoothed.min()), float(self.suggestion.smoothed.max())
        self.threshold_slider.blockSignals(True)
        self.threshold_slider.setValue(int(round((threshold - lo) / max(hi - lo, 1e-12) * SLIDER_STEPS)))
        self.threshold_slider.blockSignals(False)
        self._outline(threshold)

    def _outline(self, threshold: float) -> None:
        self.suggestion = self.suggestion.at_threshold(threshold)
        s = self.suggestion
        self.threshold_label.setText(
            f"threshold {s.threshold:.3g} (Otsu {s.otsu:.3g}): {int(s.above.sum())}/{len(s.above)} spots above, "
            f"{len(s.polygons)} outline(s)"
        )
        spots = self.host.spots_layer()
        affine = layer_affine(spots)
        vertices = s.to_regions(affine=affine).vertices if s.polygons else []
        colour = self.host.classes.rgba(self.chosen_class())
        viewer = self.host.viewer
        if PREVIEW_NAME in viewer.layers:
            preview = viewer.layers[PREVIEW_NAME]
            preview.data = []
            if vertices:
                preview.add(vertices, shape_type="polygon", edge_color=colour, face_color=[0, 0, 0, 0])
        else:
            viewer.add_shapes(
                vertices,
                shape_type="polygon",
                name=PREVIEW_NAME,
                affine=affine,
                edge_color=colour,
                face_color=[0, 0, 0, 0],
                edge_width=edge_width(spots, affine, 1 / 5),
            )

    def accept_suggestion(self) -> None:
        """Add the previewed outlines to the regions layer as editable shapes of the chosen class."""
        if self.suggestion is None:
            raise CasperInputError("nothing suggested yet: press 'Score and outline' first.")
        cls = self.chosen_class()
        regions = self.suggestion.to_regions(cls, palette=self.host.classes)
        layer = self.host.add_regions(regions)
        if PREVIEW_NAME in self.host.viewer.layers:
            self.host.viewer.layers.remove(PREVIEW_NAME)
        self.host.runner.say(
            f"added {len(regions)} {cls} region(s) from {', '.join(self.suggestion.genes)} to {layer.name!r}; "
            "edit them freely."
        )
