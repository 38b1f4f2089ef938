"""Step 2 of the Histology widget: training options, Train/Cancel, live loss, checkpoints."""

from __future__ import annotations

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

from napari_casper._widgets._loss_plot import make_loss_plot

AUTO = "auto"


class HistologyTrainPanel(QGroupBox):
    """Options and buttons; the owning widget runs the work."""

    def __init__(self, parent: QWidget | None = None):
        from napari_casper.histology.predict import HEADS

        super().__init__("2. Train", parent)
        self.epochs = QSpinBox()
        self.epochs.setRange(0, 10_000)
        self.epochs.setSpecialValueText(AUTO)
        self.epochs.setToolTip("auto: about 120 optimisation steps (10-30 epochs)")
        self.head = QComboBox()
        self.head.addItems([AUTO, *HEADS])
        self.head.setToolTip("auto: chosen by leave-one-section-out on the training sections (one extra model per section)")
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.train_button = QPushButton("Train")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.load_button = QPushButton("Load checkpoint...")
        self.save_button = QPushButton("Save checkpoint...")
        self.status = QLabel("not trained")
        self.status.setWordWrap(True)
        self.plot = make_loss_plot()

        form = QFormLayout()
        form.addRow("epochs", self.epochs)
        form.addRow("prediction head", self.head)
        form.addRow("device", self.device)
        form.addRow("seed", self.seed)
        run_row = QHBoxLayout()
        run_row.addWidget(self.train_button)
        run_row.addWidget(self.cancel_button)
        checkpoint_row = QHBoxLayout()
        checkpoint_row.addWidget(self.load_button)
        checkpoint_row.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(run_row)
        layout.addWidget(self.plot)
        layout.addWidget(self.status)
        layout.addLayout(checkpoint_row)

    def config(self, **values):
        """A :class:`HistologyConfig` from the options (``values`` add or override fields)."""
        from napari_casper.histology.train import HistologyConfig

        return HistologyConfig(
            epochs=self.epochs.value() or None,
            predictor=self.head.currentText(),
            device=self.device.currentText(),
            seed=self.seed.value(),
            **values,
        )

    def set_running(self, running: bool) -> None:
        for button in (self.train_button, self.load_button, self.save_button):
            button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def show_epoch(self, record, stage_history: list[dict]) -> None:
        """Plot the current model's losses and say where training is."""
        self.plot.update_history(stage_history)
        self.status.setText(
            f"{record.stage}: epoch {record.epoch}/{record.n_epochs}, loss {record.loss:.3f} "
            f"(contrastive {record.contrastive:.3f}, reconstruction {record.reconstruction:.3f}), "
            f"validation {record.val_loss:.3f}"
        )
