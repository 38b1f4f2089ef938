"""Step 2 of the Histology widget: training options, Train/Cancel, live loss, checkpoints."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QLineEdit, QPushButton, QSpinBox, QWidget

from napari_casper._widgets.common.train_panel import TrainingGroup

AUTO = "auto"


class HistologyTrainPanel(TrainingGroup):
    """Options and buttons; the owning widget runs the work."""

    def __init__(self, parent: QWidget | None = None):
        from napari_casper.histology.head_names import HEADS

        super().__init__("2. Train", parent)
        self.epochs = QSpinBox()
        self.epochs.setRange(0, 10_000)
        self.epochs.setSpecialValueText(AUTO)
        self.epochs.setToolTip("auto: about 120 optimisation steps (10-30 epochs)")
        self.head = QComboBox()
        self.head.addItems([AUTO, *HEADS])
        self.head.setToolTip("auto: chosen by leave-one-section-out on the training sections (one extra model per section)")
        self.encoder = QLineEdit()
        self.encoder.setPlaceholderText("built-in CNN")
        self.encoder.setToolTip(
            "optional: a local pretrained patch encoder (UNI, CONCH, Virchow, Phikon, your own ResNet): a TorchScript "
            "file, a weights file (give its timm architecture below) or a timm / Hugging Face model folder. Its "
            "embeddings of each slide are computed once and cached; nothing is downloaded. Empty: the small CNN "
            "trained from scratch"
        )
        self.encoder_browse = QPushButton("...")
        self.encoder_browse.setMaximumWidth(32)
        self.encoder_browse.setToolTip("choose the encoder's file (for a model folder, type or paste its path)")
        self.encoder_browse.clicked.connect(self._browse_encoder)
        self.encoder_arch = QLineEdit()
        self.encoder_arch.setPlaceholderText("from the folder's config.json")
        self.encoder_arch.setToolTip("the timm architecture of a weights file, e.g. vit_large_patch16_224 or resnet50")
        encoder_row = QWidget()
        row = QHBoxLayout(encoder_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.encoder)
        row.addWidget(self.encoder_browse)
        self._lay_out([("epochs", self.epochs), ("prediction head", self.head), ("patch encoder", encoder_row),
                       ("encoder architecture", self.encoder_arch)])  # fmt: skip
        self.last_epoch = ""
        tips = {
            self.device: "where the network trains: auto = CUDA, then Apple MPS, then CPU",
            self.seed: "random seed: the same seed, sections and options train the same model on a CPU",
            self.train_button: "train on the ticked sections in the background; the status names the phase",
            self.cancel_button: "stop training within a second, in any phase; the previous model, if any, is kept",
            self.save_button: "write the trained model to a .pt file (the format of napari-casper histology-train)",
            self.load_button: "read a model saved by this widget or by napari-casper histology-train",
            self.plot: "training and validation loss of the model being trained, per epoch",
        }
        for control, tip in tips.items():
            control.setToolTip(tip)

    def _browse_encoder(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Pretrained patch encoder", "", "Encoder (*.pt *.pth *.bin *.safetensors);;All files (*)")
        if path:
            self.encoder.setText(path)

    def encoder_source(self) -> tuple[str | None, str | None]:
        """``(path, timm architecture)`` of the chosen encoder; ``(None, None)`` for the built-in CNN."""
        path, arch = self.encoder.text().strip(), self.encoder_arch.text().strip()
        return (path or None), (arch or None)

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
        """Plot the current model's losses; the last epoch's numbers go under the phase."""
        self.plot.update_history(stage_history)
        self.last_epoch = (
            f"last epoch: loss {record.loss:.3f} (contrastive {record.contrastive:.3f}, "
            f"reconstruction {record.reconstruction:.3f}), validation {record.val_loss:.3f}"
        )

    def show_phase(self, phase) -> None:
        """Say what runs now and how far the whole training is."""
        overall = f" ({100 * phase.done // phase.total}% of the training)" if phase.total else ""
        self.status.setText(f"{phase.text}{overall}" + (f"\n{self.last_epoch}" if self.last_epoch and "epoch" in phase.text else ""))

    def set_running(self, running: bool) -> None:
        super().set_running(running)
        if running:
            self.last_epoch = ""
