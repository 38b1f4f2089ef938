"""Running long work off the GUI thread, shared by every dock widget.

:class:`BackgroundRunner` starts a napari ``thread_worker`` (or runs inline when ``synchronous``,
for tests), routes its result to a handler on the GUI thread, and turns errors into a message
plus a napari notification so that a failure never kills the widget. Layers are only touched in
the ``on_done`` handlers, which napari calls on the GUI thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QWidget

from napari_casper._widgets.common.activity import ACTIVE as _ACTIVE
from napari_casper._widgets.common.activity import WARMING as _WARMING
from napari_casper._widgets.common.first_paint import revealing
from napari_casper.errors import CasperInputError, TrainingCancelled


def notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)


def error_text(err: BaseException) -> str:
    """What the user reads: our input errors and cancellations as written, anything else with its type."""
    return str(err) if isinstance(err, CasperInputError | TrainingCancelled) else f"{type(err).__name__}: {err}"


class _Relay(QObject):
    event = Signal(object)


def progress_relay(handler: Callable[[object], None]) -> _Relay:
    """A Qt signal carrier: ``relay.event.emit(x)`` from a worker thread calls ``handler(x)`` on
    the GUI thread (queued connection). Keep the returned object alive with the widget."""
    relay = _Relay()
    relay.event.connect(handler)
    return relay


#: pause between two layers added by :meth:`BackgroundRunner.add_layers` (lets the canvas paint in between)
LAYER_INTERVAL_MS = 150  # a paint (a new layer's shaders: 0.2-0.4 s on software GL) falls between two layers


class BackgroundRunner:
    """One worker at a time for a widget.

    Parameters
    ----------
    show_message
        called with the text of every status or error message (e.g. a ``QLabel.setText``).
    on_start, on_finish
        called (GUI thread) when work starts and when it has ended, successfully or not:
        enable/disable buttons, close progress bars.
    """

    def __init__(
        self,
        show_message: Callable[[str], None],
        *,
        on_start: Callable[[], None] | None = None,
        on_finish: Callable[[], None] | None = None,
    ) -> None:
        self.show_message = show_message
        self.on_start = on_start
        self.on_finish = on_finish
        self.worker = None
        self.synchronous = False  # tests may run work in the GUI thread
        self._adding_layers = False  # add_layers is at work (until its ``then`` has run)

    @property
    def working(self) -> bool:
        """A worker runs or layers are being added (what a new job must wait for)."""
        return self.worker is not None or self._adding_layers

    @property
    def busy(self) -> bool:
        """A worker runs, layers are being added, or added layers wait for their first paint."""
        return self.working or revealing()

    def add_layers(self, add: Callable[[object], object], items: list, then: Callable[[list], None] | None = None) -> None:
        """Call ``add(item)`` for each item on the GUI thread, one per event-loop turn, then ``then(results)``
        once the new layers are shown.

        napari draws a new layer the first time at the next paint (building its shaders costs
        0.1-0.5 s per layer on a software GL): adding several layers in one handler would add
        those costs up into one long stall; spread over turns, each paint stays short. The
        runner is ``busy`` until the last one is added and shown and ``then`` has run.
        """
        from qtpy.QtCore import QTimer

        results: list = []
        pending = list(items)
        if self.synchronous or not pending:
            for item in pending:
                results.append(self.guard(add, item))
            if then is not None:
                self.guard(then, results)
            return
        self._adding_layers = True

        def step() -> None:
            if revealing():  # the previous layer's first paint first, in a turn of its own
                QTimer.singleShot(LAYER_INTERVAL_MS, step)
                return
            if pending:
                results.append(self.guard(add, pending.pop(0)))
                QTimer.singleShot(LAYER_INTERVAL_MS, step)
                return
            self._adding_layers = False  # every layer added and shown: ``then`` sees them as they are
            if then is not None:
                self.guard(then, results)

        QTimer.singleShot(0, step)

    def say(self, text: str) -> None:
        self.show_message(text)
        notify_info(text)

    def fail(self, err: BaseException) -> None:
        text = error_text(err)
        self.show_message(text)
        notify_error(text)

    def guard(self, function: Callable, *args):
        """Call ``function``; a failure becomes an error message and the widget stays usable."""
        try:
            return function(*args)
        except Exception as err:  # noqa: BLE001 - shown to the user
            self.fail(err)
            return None

    def run(self, function: Callable, on_done: Callable, *args, **kwargs) -> None:
        """Run ``function(*args, **kwargs)`` in a worker; ``on_done(result)`` on the GUI thread."""
        if self.working:
            self.fail(CasperInputError("still working on the previous step: wait for it to finish or cancel it."))
            return
        if self.on_start is not None:
            self.on_start()
        if self.synchronous:
            try:
                result = function(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - shown to the user, widget stays usable
                self.fail(err)
            else:
                self.guard(on_done, result)
            finally:
                self._finished()
            return
        from napari.qt.threading import create_worker

        # handlers go in at creation: superqt re-raises a worker's error when no "errored"
        # handler is connected by the time it is raised
        self.worker = create_worker(
            function,
            *args,
            _start_thread=False,
            _connect={
                "returned": lambda result: self.guard(on_done, result),
                "errored": self.fail,
                "finished": self._finished,
            },
            **kwargs,
        )
        _ACTIVE.add(self)
        self.worker.start()

    def _finished(self) -> None:
        _ACTIVE.discard(self)
        self.worker = None
        if self.on_finish is not None:
            self.on_finish()

    def wait(self, timeout_ms: int = 600_000) -> None:
        """Block (processing Qt events) until the running worker ends; used by tests and scripts."""
        process_events_while(lambda: self.busy, timeout_ms)


def process_events_while(busy: Callable[[], bool], timeout_ms: int = 600_000) -> None:
    """Process Qt events while ``busy()`` holds, at most ``timeout_ms`` (tests and scripts wait this way)."""
    from qtpy.QtCore import QCoreApplication, QElapsedTimer

    timer = QElapsedTimer()
    timer.start()
    while busy() and timer.elapsed() < timeout_ms:
        QCoreApplication.processEvents()
        threading.Event().wait(0.01)


class RunsInBackground:
    """Mixin for a dock widget that keeps its :class:`BackgroundRunner` in ``self.runner``.

    Gives the widget the ``busy`` / ``synchronous`` / ``wait`` API that tests and scripts use.
    """

    runner: BackgroundRunner

    @property
    def busy(self) -> bool:
        return self.runner.busy

    @property
    def synchronous(self) -> bool:
        return self.runner.synchronous

    @synchronous.setter
    def synchronous(self, value: bool) -> None:
        self.runner.synchronous = bool(value)

    def wait(self, timeout_ms: int = 600_000) -> None:
        """Block (processing Qt events) while the widget is :attr:`busy` (its own definition, when it has one)."""
        process_events_while(lambda: self.busy, timeout_ms)


class WarmUp(threading.Thread):
    """A dock's warm-up thread; ``finished`` is set once its work is done (``is_alive`` is False
    both before it starts and after it ends; :meth:`start_once` may be called any number of times)."""

    def __init__(self, name: str, work: Callable[[], None] | None) -> None:
        super().__init__(daemon=True, name=f"napari-casper warm-up: {name}")
        self.work = work
        self.finished = threading.Event()
        self._start_asked = False

    def start_once(self) -> None:
        """Start the thread unless it was started already."""
        with _WARM_LOCK:
            if self._start_asked:
                return
            self._start_asked = True
        self.start()

    def run(self) -> None:
        import contextlib
        import gc

        try:
            with contextlib.suppress(Exception):  # only an optimisation: the first click imports instead
                if self.work is not None:
                    self.work()
            gc.freeze()  # no gc.collect() first: a full collection would hold the GIL ~0.6 s while the dock opens
        finally:
            self.finished.set()


_WARM_LOCK = threading.Lock()


#: a warm-up waiting for its dock's first paint starts anyway after this long (a dock that is never shown)
START_LATEST_MS = 2000


def warm_up_in_background(
    name: str, work: Callable[[], None] | None = None, *, viewer=None, after_paint_of=None
) -> WarmUp:
    """Run ``work`` (imports, first-use compilation) off the GUI thread once per process, then freeze the GC.

    Two costs would otherwise land on the GUI thread at a user's first click: importing torch,
    scanpy or numba-compiled code (seconds, partly holding the GIL) and Python's full garbage
    collections, which with torch and napari loaded scan ~800k objects and hold the GIL
    0.35-1.1 s (measured), wherever they start; napari itself calls ``gc.collect()`` when a
    layer is removed. ``gc.freeze()`` moves the objects alive after the warm-up into the
    permanent generation, so later collections scan only what was made since (measured: a layer
    removal's collection went from 0.42 s to under 0.1 s). ``name`` keys the once-per-process:
    a second dock of the same kind gets the first one's thread (alive while it still warms up).

    With ``viewer``, the viewer's canvas also renders its text glyphs ahead, a few per event-loop
    turn once no worker is busy (:func:`~napari_casper._widgets.common.glyphs.warm_glyphs`). The
    warm-up itself starts at once, or with ``after_paint_of`` (the dock being built) in a shown viewer
    right after that widget's first paint: the warm-up's imports hold the GIL for long stretches, and started while the
    dock was still being added and painted they tripled that stall (CASPER dock in a fresh viewer: 0.1 s
    without a warm-up, 0.4-0.6 s with it at once). Later still it would overlap the user's first steps,
    and a freeze after them leaves their objects to the full collections meanwhile (0.66 s seen).
    """
    if viewer is not None:
        from napari_casper._widgets.common.glyphs import warm_glyphs

        warm_glyphs(viewer)  # every viewer's canvas has its own glyphs, whichever dock opens first
    with _WARM_LOCK:
        if name not in _WARMING:
            _WARMING[name] = thread = WarmUp(name, work)
        thread = _WARMING[name]
    if after_paint_of is None or not _shown(viewer):  # a hidden viewer's docks are never painted (scripts, tests)
        thread.start_once()
    elif not thread._start_asked:
        _start_after_first_paint(thread, after_paint_of)
    return thread


def _shown(viewer) -> bool:
    """Whether ``viewer``'s window is on screen (True when unknown)."""
    try:
        return viewer is None or bool(viewer.window._qt_window.isVisible())
    except (AttributeError, RuntimeError):  # no Qt window, or deleted
        return True


def _start_after_first_paint(thread: WarmUp, widget) -> None:
    """Start ``thread`` in the event-loop turn after ``widget`` (or one of its children) is first painted,
    and at the latest :data:`START_LATEST_MS` from now."""
    from qtpy.QtCore import QEvent, QTimer

    class FirstPaint(QObject):
        def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt's name
            if event.type() == QEvent.Type.Paint:
                for child in watching:
                    child.removeEventFilter(self)
                watching.clear()
                QTimer.singleShot(0, thread.start_once)  # after this paint, not inside it
            return False

    watcher = FirstPaint(widget)  # lives as long as the widget
    # a dock filled by a scroll area is painted through its children: the first of them to paint counts
    watching = [widget, *widget.findChildren(QWidget)]
    for child in watching:
        child.installEventFilter(watcher)
    QTimer.singleShot(START_LATEST_MS, thread.start_once)
