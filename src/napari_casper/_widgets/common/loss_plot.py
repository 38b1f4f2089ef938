"""A small live plot of training and validation loss per epoch.

matplotlib's Qt backend takes 0.3-0.6 s to import, which on the GUI thread would freeze the dock's
opening, and so would its first drawing of text (0.1-0.2 s: fonts are found and loaded). So
:class:`LossPlot` is a plain Qt widget of the plot's size; the matplotlib canvas inside it is made
once a dock's warm-up thread has done both (:func:`import_backend`), or at the first epoch to draw,
whichever comes first.
"""

from __future__ import annotations

import contextlib
import threading

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

#: set once :func:`import_backend` has finished (a module is in ``sys.modules`` while it is still being imported)
BACKEND_READY = threading.Event()
#: how often (ms) the empty plot checks whether the backend is ready meanwhile
POLL_MS = 100
#: the plot's height in pixels
HEIGHT = 170


def import_backend() -> None:
    """Import matplotlib's Qt canvas and draw the plot's empty figure off screen, which loads its fonts (for a
    warm-up thread: the plot then appears without a stall). Nothing else draws with matplotlib meanwhile:
    the plots wait for :data:`BACKEND_READY`."""
    import matplotlib.backends.backend_qtagg  # noqa: F401 - imported for its side effect (loaded once)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(_figure()[0]).draw()
    BACKEND_READY.set()


def _figure():
    """``(figure, axes, lines)`` of an empty loss plot: its size, margins, labels and the two lines."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3.2, 1.8))
    figure.subplots_adjust(left=0.16, right=0.97, bottom=0.24, top=0.95)
    axes = figure.add_subplot(111)
    axes.set_xlabel("epoch", fontsize=8)
    axes.set_ylabel("loss", fontsize=8)
    axes.tick_params(labelsize=7)
    lines = {
        "train_loss": axes.plot([], [], marker=".", label="train")[0],
        "val_loss": axes.plot([], [], marker=".", label="validation")[0],
    }
    return figure, axes, lines


class LossPlot(QWidget):
    """Training and validation loss per epoch; :meth:`update_history` redraws it.

    Redrawing is cheap on the GUI thread (a few ms): the two lines are created once and only their data
    change; the margins are fixed (no tight layout per draw). ``canvas``, ``axes`` and ``lines`` are None
    until the canvas is made.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setFixedHeight(HEIGHT)
        self.setToolTip("training and validation loss per epoch (validation: genes and spots held out of training)")
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self.history: list[dict] = []
        self.canvas = self.axes = self.lines = None
        self._legend = None
        self._poll = QTimer(self)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._make_when_imported)
        self._poll.start()

    def _make_when_imported(self) -> None:
        if not BACKEND_READY.is_set():
            return
        try:
            self._make_canvas()
        except RuntimeError:  # the dock is being deleted: its Qt objects are gone (the timer too)
            with contextlib.suppress(RuntimeError):
                self._poll.stop()

    def _make_canvas(self) -> None:
        self._poll.stop()
        if self.canvas is not None:
            return
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg

        figure, self.axes, self.lines = _figure()
        self.canvas = FigureCanvasQTAgg(figure)
        self._layout.addWidget(self.canvas)
        self._draw()

    def update_history(self, history: list[dict]) -> None:
        """Show these epochs (dicts with ``epoch``, ``train_loss``, ``val_loss``); the canvas is made now if needed."""
        self.history = list(history)
        if self.canvas is None and self.history:
            self._make_canvas()  # also draws
        elif self.canvas is not None:
            self._draw()

    def _draw(self) -> None:
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
        self.canvas.draw_idle()
