"""Step 2 of the Histology widget: training options, Train/Cancel, live loss, checkpoints."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QSpinBox, QWidget

from napari_casper._widgets.common.train_panel import TrainingGroup

AUTO = "auto"


class HistologyTrainPanel(TrainingGroup):
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
        self._lay_out([("epochs", self.epochs), ("prediction head", self.head)])

    def config(self, **values):
        """A :class:`HistologyConfig` from the options (``values`` add or override fields)."""
        from napari_casper.histology.config import HistologyConfig

        return HistologyConfig(
            epochs=self.epochs.value() or None,
            predictor=self.head.currentText(),
            device=self.device.currentText(),
            seed=self.seed.value(),
            **values,
        )

    def show_epoch(self, record, stage_history: list[dict]) -> None:
        """Plot the current model's losses and say where training is."""
        self.plot.update_history(stage_history)
        self.status.setText(
            f"{record.stage}: epoch {record.epoch}/{record.n_epochs}, loss {record.loss:.3f} "
            f"(contrastive {record.contrastive:.3f}, reconstruction {record.reconstruction:.3f}), "
            f"validation {record.val_loss:.3f}"
        )
