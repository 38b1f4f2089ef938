"""Step 3 of the Histology widget: the slide to predict on, its spots, and the genes shown."""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_casper.io.elements import METADATA_KEY

VIRTUAL = "virtual spots over the tissue"


def rgb_image_layers(viewer) -> list:
    """Image layers that hold an RGB(A) picture (an H&E)."""
    return [layer for layer in viewer.layers if type(layer).__name__ == "Image" and getattr(layer, "rgb", False)]


def spot_elements_of(layer) -> list[str]:
    """Spot elements of the SpatialData object an image layer came from (none for a plain image)."""
    from spatialdata.transformations import get_transformation

    from napari_casper.io.elements import spot_element, spot_element_names

    meta = layer.metadata.get(METADATA_KEY, {})
    sdata, cs = meta.get("sdata"), meta.get("coordinate_system")
    if sdata is None:
        return []
    names = []
    for name in spot_element_names(sdata):
        element = spot_element(sdata, name)
        if cs is None or cs in get_transformation(element, get_all=True):
            names.append(name)
    return names


def _spin(maximum: float, value: float, suffix: str) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(1)
    box.setRange(0.0, maximum)
    box.setValue(value)
    box.setSuffix(suffix)
    return box


class PredictPanel(QGroupBox):
    """Target image, spots (measured or virtual), spot size and grid, Predict, gene shown, Save."""

    def __init__(self, viewer, parent: QWidget | None = None):
        super().__init__("3. Predict on a slide", parent)
        self.viewer = viewer
        self.image = QComboBox()
        self.image.setToolTip("the H&E image layer to predict on")
        self.spots = QComboBox()
        self.spots.setToolTip("the slide's spots (with or without counts), or a grid over the detected tissue")
        self.diameter = _spin(100_000.0, 0.0, " px")
        self.diameter.setSpecialValueText("from the model")
        self.diameter.setToolTip("spot diameter in pixels of this image (the physical spot size the model learnt)")
        self.pitch = _spin(100_000.0, 0.0, " px")
        self.pitch.setSpecialValueText("2 x diameter")
        self.pitch.setToolTip("centre-to-centre distance of the virtual spots, pixels of this image")
        self.layout_box = QComboBox()
        self.layout_box.addItems(["hex", "square"])
        self.layout_box.setToolTip("how virtual spots are laid over the tissue: a hexagonal or a square grid")
        self.predict_button = QPushButton("Predict")
        self.predict_button.setToolTip("predict every trained gene at the chosen spots, in the background")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip("stop the prediction at its next batch; shown layers stay as they are")
        self.gene = QComboBox()
        self.gene.setToolTip("the predicted gene shown as 'histology:<gene>' (other genes are hidden)")
        self.show_uncertainty = QCheckBox("show uncertainty")
        self.show_uncertainty.setToolTip(
            "also show the gene's uncertainty (its expected absolute error per spot), drawn beside the slide: "
            "the prediction on the H&E stays visible"
        )
        self.save_button = QPushButton("Save predictions to SpatialData")
        self.save_button.setToolTip("add the predicted spots and a table of every predicted gene to the slide's .zarr store")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.image)
        form.addRow("spots", self.spots)
        form.addRow("spot diameter", self.diameter)
        form.addRow("grid pitch", self.pitch)
        form.addRow("grid layout", self.layout_box)
        gene_row = QHBoxLayout()
        gene_row.addWidget(self.gene, 1)
        gene_row.addWidget(self.show_uncertainty)
        self.gene.setMinimumContentsLength(8)
        self.gene.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        for box in (self.image, self.spots):
            box.setMinimumContentsLength(12)
            box.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        run_row = QHBoxLayout()
        run_row.addWidget(self.predict_button)
        run_row.addWidget(self.cancel_button)
        layout.addLayout(run_row)
        layout.addWidget(QLabel("gene shown"))
        layout.addLayout(gene_row)
        layout.addWidget(self.status)
        layout.addWidget(self.save_button)

        self.image.currentTextChanged.connect(self._image_changed)
        self.spots.currentTextChanged.connect(self._spots_changed)
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        self.refresh()

    def refresh(self, *_args) -> None:
        """List the open RGB image layers (the choice is kept when still open)."""
        current = self.image.currentText()
        names = [layer.name for layer in rgb_image_layers(self.viewer)]
        self.image.blockSignals(True)
        self.image.clear()
        self.image.addItems(names)
        if current in names:
            self.image.setCurrentText(current)
        self.image.blockSignals(False)
        self._image_changed(self.image.currentText())

    def image_layer(self):
        name = self.image.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _image_changed(self, _name: str) -> None:
        layer = self.image_layer()
        current = self.spots.currentText()
        options = (spot_elements_of(layer) if layer is not None else []) + [VIRTUAL]
        self.spots.blockSignals(True)
        self.spots.clear()
        self.spots.addItems(options)
        if current in options:
            self.spots.setCurrentText(current)
        self.spots.blockSignals(False)
        self._spots_changed(self.spots.currentText())

    def _spots_changed(self, choice: str) -> None:
        virtual = choice == VIRTUAL
        for box in (self.pitch, self.layout_box):
            box.setEnabled(virtual)
        self.diameter.setEnabled(virtual)

    def spots_element(self) -> str | None:
        """The chosen spot element, or None for virtual spots."""
        choice = self.spots.currentText()
        return None if choice in ("", VIRTUAL) else choice

    def set_running(self, running: bool) -> None:
        self.predict_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def show_phase(self, phase) -> None:
        """Say what the prediction does now and how far it is."""
        self.status.setText(f"{phase.text}" + (f" ({100 * phase.done // phase.total}%)" if phase.total else ""))

    def set_genes(self, labels: list[str], shown: str | None = None) -> None:
        self.gene.blockSignals(True)
        self.gene.clear()
        self.gene.addItems(labels)
        if shown:
            self.gene.setCurrentText(shown)
        self.gene.blockSignals(False)
