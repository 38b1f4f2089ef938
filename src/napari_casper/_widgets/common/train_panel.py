"""Step 2 of the CASPER widget: training options, Train/Cancel, live loss, checkpoints."""

from __future__ import annotations

from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_casper._widgets.common.loss_plot import LossPlot


def _spin(low: int, high: int, value: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    return box


class TrainingGroup(QGroupBox):
    """Options form + Train/Cancel + live loss plot + status + checkpoint buttons.

    Subclasses create their option widgets and call :meth:`_lay_out` with the form rows; the
    owning widget connects the buttons and runs the work.
    """

    def _lay_out(self, rows: list[tuple[str, QWidget]]) -> None:
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        self.device.setToolTip("where training runs: auto picks CUDA, then MPS, then the CPU")
        self.seed = _spin(0, 2**31 - 1, 0)
        self.seed.setToolTip("random seed: the same seed and data train the same model")
        self.train_button = QPushButton("Train")
        self.train_button.setToolTip("train in the background; the status names the phase and the plot shows the loss per epoch")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("stop training or loading within a second; the best model so far is kept")
        self.cancel_button.setEnabled(False)
        self.save_button = QPushButton("Save checkpoint...")
        self.save_button.setToolTip("save the trained model to a .pt file")
        self.load_button = QPushButton("Load checkpoint...")
        self.load_button.setToolTip("load a model saved with Save checkpoint (for spots with the same panel genes)")
        self.status = QLabel("not trained")
        self.status.setWordWrap(True)
        self.plot = LossPlot()

        form = QFormLayout()
        for label, field in [*rows, ("device", self.device), ("seed", self.seed)]:
            form.addRow(label, field)
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

    def set_running(self, running: bool) -> None:
        for button in (self.train_button, self.load_button, self.save_button):
            button.setEnabled(not running)
        self.cancel_button.setEnabled(running)


#: the reference-cells choices and the ``reference_weight`` each sets
REFERENCE_CELLS = {"auto": "auto", "use": 1.0, "don't use": 0.0}


class TrainPanel(TrainingGroup):
    """CASPER's hyper-parameters and the buttons; the owning widget runs the work."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("2. Train", parent)
        self.epochs = _spin(1, 10_000, 12)
        self.epochs.setToolTip("an epoch is 25 batches; training stops early when validation stops improving")
        self.learning_rate = QDoubleSpinBox()
        self.learning_rate.setDecimals(5)
        self.learning_rate.setRange(1e-5, 1.0)
        self.learning_rate.setSingleStep(1e-4)
        self.learning_rate.setValue(1e-3)
        self.learning_rate.setToolTip("peak learning rate of the one-cycle schedule")
        self.batch_size = _spin(16, 1_000_000, 512)
        self.batch_size.setToolTip("spots per batch")
        self.heads = _spin(1, 16, 2)
        self.heads.setToolTip("attention heads of the cross-attention")
        self.reference_cells = QComboBox()
        self.reference_cells.addItems(list(REFERENCE_CELLS))
        self.reference_cells.setToolTip(
            "also learn from the reference cells (their panel genes in, every other gene out): 'auto' trains "
            "with and without them and keeps the better on validation genes (about twice the time)"
        )
        self.ensemble = _spin(1, 8, 2)
        self.ensemble.setToolTip(
            "the final network is trained this many times from successive seeds and their predictions are "
            "averaged: more accurate, each one more costs one more refit (1: a single network)"
        )
        self._lay_out(
            [
                ("epochs", self.epochs),
                ("learning rate", self.learning_rate),
                ("batch size", self.batch_size),
                ("attention heads", self.heads),
                ("reference cells", self.reference_cells),
                ("networks averaged", self.ensemble),
            ]
        )

    def config(self) -> dict:
        """Training options as keyword arguments for :meth:`CasperWorkflow.train`.

        Cheap on the GUI thread: nothing heavy is imported here (``epochs`` becomes
        ``max_steps`` in the worker).
        """
        return {
            "epochs": self.epochs.value(),
            "learning_rate": self.learning_rate.value(),
            "batch_size": self.batch_size.value(),
            "heads": self.heads.value(),
            "reference_weight": REFERENCE_CELLS[self.reference_cells.currentText()],
            "ensemble": self.ensemble.value(),
            "device": self.device.currentText(),
            "seed": self.seed.value(),
        }
