"""A small live plot of training and validation loss per epoch."""

from __future__ import annotations

from qtpy.QtWidgets import QSizePolicy


def make_loss_plot():
    """A matplotlib canvas with :meth:`update_history`.

    Redrawing is cheap on the GUI thread (a few ms): the two lines are created once and only
    their data change; the margins are fixed (no tight layout per draw).
    """
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    class LossPlot(FigureCanvasQTAgg):
        def __init__(self):
            figure = Figure(figsize=(3.2, 1.8))
            super().__init__(figure)
            figure.subplots_adjust(left=0.16, right=0.97, bottom=0.24, top=0.95)
            self.axes = figure.add_subplot(111)
            self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
            self.setFixedHeight(170)
            self.setToolTip("training and validation loss per epoch (validation: genes and spots held out of training)")
            axes = self.axes
            axes.set_xlabel("epoch", fontsize=8)
            axes.set_ylabel("loss", fontsize=8)
            axes.tick_params(labelsize=7)
            self.lines = {
                "train_loss": axes.plot([], [], marker=".", label="train")[0],
                "val_loss": axes.plot([], [], marker=".", label="validation")[0],
            }
            self._legend = None
            self.history: list[dict] = []
            self.update_history([])

        def update_history(self, history: list[dict]) -> None:
            self.history = list(history)
            epochs = [h["epoch"] for h in self.history]
            shown = False
            for key, line in self.lines.items():
                values = [h.get(key) for h in self.history]
                points = [(e, v) for e, v in zip(epochs, values) if v is not None and v == v]
                line.set_data([p[0] for p in points], [p[1] for p in points])
                shown = shown or bool(points)
            if shown and self._legend is None:
                self._legend = self.axes.legend(fontsize=7)
            if shown:
                self.axes.set_autoscale_on(True)  # set_xlim/set_ylim of the empty frame turned it off
                self.axes.relim()
                self.axes.autoscale_view()
            else:  # nothing yet: a clean empty frame, not +-0.04 ticks around nothing
                self.axes.set_xlim(0, 1)
                self.axes.set_ylim(0, 1)
            self.draw_idle()

    return LossPlot()
