"""Step 4 of the CASPER widget: attention maps (one centroid, or the dominant centroid)."""

from __future__ import annotations

import html

from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

MEAN_OF_HEADS = -1


class AttentionPanel(QGroupBox):
    """Centroid choice, head choice, and the legend of the dominant-centroid layer."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("4. Attention", parent)
        self.centroid = QComboBox()
        self.centroid.setToolTip("the centroid (reference cell type or cluster) whose attention Show attention maps")
        self.centroid.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.centroid.setMinimumContentsLength(10)
        self.head = QSpinBox()
        self.head.setToolTip("one attention head, or the mean of all heads")
        self.head.setRange(MEAN_OF_HEADS, 15)
        self.head.setValue(MEAN_OF_HEADS)
        self.head.setSpecialValueText("mean of heads")
        self.show_button = QPushButton("Show attention")
        self.show_button.setToolTip("map the attention each spot pays to the chosen centroid")
        self.dominant_button = QPushButton("Dominant centroid")
        self.dominant_button.setToolTip("colour each spot by its most-attended centroid, with a legend beside the tissue")
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        form = QFormLayout()
        form.addRow("centroid", self.centroid)
        form.addRow("head", self.head)
        buttons = QHBoxLayout()
        buttons.addWidget(self.show_button)
        buttons.addWidget(self.dominant_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.legend)

    def set_centroids(self, names: list[str], n_heads: int) -> None:
        self.centroid.clear()
        self.centroid.addItems(names)
        self.head.setMaximum(max(n_heads - 1, 0))

    def chosen_head(self) -> int | None:
        value = self.head.value()
        return None if value == MEAN_OF_HEADS else value

    def show_legend(self, legend: dict[str, tuple]) -> None:
        """Colour swatch + name per category."""
        rows = []
        for name, rgba in legend.items():
            r, g, b = (int(255 * c) for c in rgba[:3])
            rows.append(f"<span style='color: rgb({r},{g},{b})'>&#9679;</span> {html.escape(name)}")
        self.legend.setText("&nbsp; ".join(rows))
