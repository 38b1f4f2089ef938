"""A small live plot of training and validation loss per epoch."""

from __future__ import annotations

from qtpy.QtWidgets import QSizePolicy


def make_loss_plot():
    """A matplotlib canvas with :meth:`update_history`."""
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    class LossPlot(FigureCanvasQTAgg):
        def __init__(self):
            figure = Figure(figsize=(3.2, 1.8), tight_layout=True)
            super().__init__(figure)
            self.axes = figure.add_subplot(111)
            self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
            self.setFixedHeight(170)
            self.history: list[dict] = []
            self.update_history([])

        def update_history(self, history: list[dict]) -> None:
            self.history = list(history)
            axes = self.axes
            axes.clear()
            epochs = [h["epoch"] for h in self.history]
            for key, label in (("train_loss", "train"), ("val_loss", "validation")):
                values = [h.get(key) for h in self.history]
                if any(v is not None for v in values):
                    axes.plot(epochs, values, marker=".", label=label)
            axes.set_xlabel("epoch", fontsize=8)
            axes.set_ylabel("loss", fontsize=8)
            axes.tick_params(labelsize=7)
            if self.history:
                axes.legend(fontsize=7)
            self.draw_idle()

    return LossPlot()
