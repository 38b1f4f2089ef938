"""What every GUI test checks the way a user meets it: real clicks, a responsive event loop, a dock that fits.

* :class:`Heartbeat` -- a 10 ms timer on the GUI thread; the longest gap between its ticks is the longest
  time the event loop could not run (a handler on the GUI thread, a layer added, a blocking call).
  Use it around the user's flow, not around the test's own screenshots or assertions::

      with Heartbeat() as beat:
          click(qtbot, widget.train_button)
          qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
      beat.assert_responsive()   # fails when the GUI thread stalled over 0.5 s

* :func:`click`, :func:`type_text`, :func:`answer_file_dialog` -- press the real control (it must be visible and enabled, as for a user).
* :func:`assert_fits` -- the dock body fits ``width`` px without a horizontal scroll bar.
* :func:`assert_tooltips` -- every visible control explains itself.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import os
import sys
import threading
import time
import traceback

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractSlider,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QLineEdit,
    QListWidget,
    QScrollArea,
    QScrollBar,
    QWidget,
)

#: the longest the GUI thread may go without running its event loop (seconds)
STALL_LIMIT = 0.5
#: It holds for steps that add napari layers too. Their first paint builds vispy shader programs and draws new
#: textures (0.15-0.4 s per layer under the software OpenGL of the test machines); the widgets add one layer per
#: event-loop turn, read stores in their workers and render missing text glyphs a few per turn beforehand
#: (napari_casper._widgets.common.glyphs). With NAPARI_CASPER_TRACE_STALLS=1 the Heartbeat prints where a stall was
#: spent (and what other threads did); NAPARI_CASPER_STALL_LOG=file appends every block's longest stall to ``file``.
#: the dock width every widget must fit without horizontal scrolling (pixels)
DOCK_WIDTH = 420


class Heartbeat:
    """Measure the longest event-loop gap on the GUI thread while the block runs."""

    def __init__(self, interval_ms: int = 10, trace: bool | None = None):
        self.interval_ms = interval_ms
        self.gaps: list[float] = []
        self._last = 0.0
        self.longest_at = 0.0  # seconds after entering the block when the longest gap ended
        self._start = 0.0
        #: with NAPARI_CASPER_TRACE_STALLS=1, the GUI thread's stack is sampled during stalls and printed on exit
        #: (a diagnostic only: reading other threads' frames from a helper thread once crashed the interpreter)
        self.trace = bool(os.environ.get("NAPARI_CASPER_TRACE_STALLS")) if trace is None else trace
        self.samples: collections.Counter = collections.Counter()
        self.others: collections.Counter = collections.Counter()
        self._stop = threading.Event()
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        #: the longest garbage collection (any thread; it holds the GIL) during the block: (seconds, generation)
        self.longest_gc = (0.0, -1)
        self._gc_started = 0.0

    def _on_gc(self, phase: str, info: dict) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
        elif self._gc_started and now - self._gc_started > self.longest_gc[0]:
            self.longest_gc = (now - self._gc_started, info.get("generation", -1))

    def _tick(self) -> None:
        now = time.perf_counter()
        if now - self._last > max(self.gaps, default=0.0):
            self.longest_at = now - self._start
        self.gaps.append(now - self._last)
        self._last = now

    def _sample(self, gui_thread: int) -> None:
        while not self._stop.wait(0.01):
            if time.perf_counter() - self._last > 0.1:
                frames = sys._current_frames()
                frame = frames.get(gui_thread)
                if frame is not None:  # keyed by the stall it falls in (when that stall began, s into the block)
                    self.samples[(round(self._last - self._start, 2), _stack_line(frame, 12))] += 1
                for ident, other in frames.items():  # what else holds the GIL meanwhile (a starving worker)
                    if ident not in (gui_thread, threading.get_ident()):
                        self.others[_stack_line(other, 6)] += 1

    def __enter__(self) -> Heartbeat:
        self._start = self._last = time.perf_counter()
        self._timer.start()
        gc.callbacks.append(self._on_gc)
        if self.trace:
            self._stop.clear()
            threading.Thread(target=self._sample, args=(threading.get_ident(),), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._tick()  # the time since the last tick counts too (a handler that blocked until now)
        self._timer.stop()
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        self._stop.set()
        if os.environ.get("NAPARI_CASPER_STALL_LOG"):  # every block's longest stall, for a survey across the suite
            with open(os.environ["NAPARI_CASPER_STALL_LOG"], "a") as log:
                test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
                log.write(f"{self.longest:.3f}\t{self.longest_at:.2f}\t{test}\n")
        if self.trace and self.samples:
            print(f"\nGUI-thread stacks during stalls (10 ms samples of stalls over 0.1 s; longest gap {self.longest:.2f} s at {self.longest_at:.2f} s):")
            for began in sorted({began for began, _ in self.samples}):
                print(f" the stall that began {began:.2f} s in:")
                for (when, stack), count in self.samples.most_common():
                    if when == began:
                        print(f"  {count:3d} x {stack}")
            print("other threads meanwhile:")
            for stack, count in self.others.most_common(6):
                print(f"  {count:3d} x {stack}")

    @property
    def longest(self) -> float:
        """Longest gap between ticks, seconds."""
        return max(self.gaps, default=0.0)

    @property
    def ticks(self) -> int:
        return len(self.gaps)

    def assert_responsive(self, limit: float = STALL_LIMIT, what: str = "the flow") -> None:
        # (a block shorter than one tick has one gap: the whole block, checked like any other)
        assert self.longest <= limit, (
            f"the GUI thread stalled {self.longest:.2f} s during {what}, {self.longest_at:.2f} s in (limit {limit} s; "
            f"longest garbage collection {self.longest_gc[0]:.2f} s; NAPARI_CASPER_TRACE_STALLS=1 prints where)"
        )


def _stack_line(frame, depth: int) -> str:
    stack = traceback.extract_stack(frame)[-depth:]
    return " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(stack))


class Steps:
    """One :class:`Heartbeat` per named step of a flow; each step's longest stall is reported and checked.

    ``step("score")`` closes the previous step and starts the next; ``assert_responsive()`` checks every
    step against :data:`STALL_LIMIT`.
    """

    def __init__(self):
        self.longest: dict[str, float] = {}
        self.longest_gc: dict[str, float] = {}
        self._beat: Heartbeat | None = None
        self._name = ""

    def __call__(self, name: str) -> None:
        self.close()
        self._name, self._beat = name, Heartbeat().__enter__()

    def close(self) -> None:
        if self._beat is not None:
            self._beat.__exit__(None, None, None)
            self.longest[self._name] = max(self._beat.longest, self.longest.get(self._name, 0.0))
            self.longest_gc[self._name] = max(self._beat.longest_gc[0], self.longest_gc.get(self._name, 0.0))
            self._beat = None

    @contextlib.contextmanager
    def aside(self):
        """The test's own checks inside a step (reading a saved store back): not timed as the user's stall."""
        name = self._name
        self.close()
        try:
            yield
        finally:
            self._name, self._beat = name, Heartbeat().__enter__()

    def assert_responsive(self) -> None:
        self.close()
        print("longest GUI stall per step: " + ", ".join(f"{k} {v:.2f} s" for k, v in self.longest.items()))
        slow = {k: round(v, 2) for k, v in self.longest.items() if v > STALL_LIMIT}
        collections_ = {k: round(self.longest_gc[k], 2) for k in slow}
        assert not slow, (
            f"the GUI thread stalled over the limit ({STALL_LIMIT} s) in {slow}; "
            f"longest garbage collection in those steps {collections_}"
        )


def click(qtbot, button: QAbstractButton) -> None:
    """A real left click on ``button``, which must be visible and enabled as a user would find it."""
    assert button.isVisible(), f"{button.text()!r} is not visible"
    assert button.isEnabled(), f"{button.text()!r} is disabled"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def when_modal(kind: type, respond, within_ms: int = 10_000) -> None:
    """Call ``respond(dialog)`` once a modal dialog of ``kind`` is shown (polled every 20 ms from the event loop).

    Call it just before the click that opens the dialog (the dialog runs its own event loop). A dialog
    that has not opened within ``within_ms`` is no longer waited for."""
    deadline = time.perf_counter() + within_ms / 1000

    def poll() -> None:
        dialog = QApplication.activeModalWidget()
        if isinstance(dialog, kind) and dialog.isVisible():
            respond(dialog)
        elif time.perf_counter() < deadline:
            QTimer.singleShot(20, poll)

    QTimer.singleShot(0, poll)


def answer_file_dialog(qtbot, path, within_ms: int = 10_000) -> None:
    """Answer the next modal file dialog as a user does: select ``path`` in it and click its Open (or Save) button."""
    from qtpy.QtWidgets import QDialogButtonBox, QFileDialog

    def respond(dialog) -> None:
        dialog.selectFile(str(path))
        saving = dialog.acceptMode() == QFileDialog.AcceptMode.AcceptSave
        which = QDialogButtonBox.StandardButton.Save if saving else QDialogButtonBox.StandardButton.Open
        qtbot.mouseClick(dialog.findChild(QDialogButtonBox).button(which), Qt.MouseButton.LeftButton)

    when_modal(QFileDialog, respond, within_ms)


def answer_colour_dialog(qtbot, colour: str, within_ms: int = 10_000) -> None:
    """Answer the next modal colour dialog as a user does: set ``colour`` (e.g. ``"#123456"``) in it and click OK."""
    from qtpy.QtGui import QColor
    from qtpy.QtWidgets import QColorDialog, QDialogButtonBox

    def respond(dialog) -> None:
        dialog.setCurrentColor(QColor(colour))
        qtbot.mouseClick(dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok), Qt.MouseButton.LeftButton)

    when_modal(QColorDialog, respond, within_ms)


def open_folder_by_shortcut(viewer, qtbot, folder, monkeypatch) -> None:
    """napari's File > Open Folder... by its shortcut, pressed while the viewer runs its event loop (as a user
    presses it), its folder dialog answered with ``folder``; napari-casper is the chosen reader for stores."""
    from napari.settings import get_settings

    settings = get_settings()
    monkeypatch.setattr(type(settings), "save", lambda self, *a, **k: None)  # napari's own settings file untouched
    monkeypatch.setattr(settings.plugins, "extension2reader", {"*.zarr/": "napari-casper"})
    window = viewer.window._qt_window
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5_000)  # a shortcut reaches the active window only
    answer_file_dialog(qtbot, folder)
    modifiers = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    QTimer.singleShot(0, lambda: qtbot.keyClick(window, Qt.Key.Key_O, modifiers))


def wait_drawn(viewer, qtbot, timeout_ms: int = 10_000) -> None:
    """Until the canvas has drawn what it shows now (e.g. after a dock resized it), so that a flow timed
    next is not charged for a paint that an earlier step asked for."""
    draws = viewer.window._qt_viewer.canvas._scene_canvas.events.draw
    drawn = []

    def on_draw(*_) -> None:
        drawn.append(True)

    draws.connect(on_draw)
    try:
        viewer.window._qt_viewer.canvas._scene_canvas.update()
        qtbot.waitUntil(lambda: bool(drawn), timeout=timeout_ms)
    finally:
        draws.disconnect(on_draw)
    qtbot.wait(50)


def wait_warmed_up(qtbot, timeout_ms: int = 120_000) -> None:
    """Until every dock's background warm-up has started and finished. In a shown viewer a dock starts it
    after its first paint; it is part of opening the dock (its own stalls are checked by
    ``test_dock_opening.py``), not of the flow timed next."""
    from napari_casper._widgets.common.activity import WARMING

    qtbot.waitUntil(lambda: all(thread.finished.is_set() for thread in WARMING.values()), timeout=timeout_ms)


def type_text(qtbot, edit: QLineEdit, text: str, enter: bool = True) -> None:
    """Select what ``edit`` holds and type ``text`` over it (then Return, as a user confirms)."""
    assert edit.isVisible() and edit.isEnabled(), "the text field is hidden or disabled"
    edit.setFocus()
    edit.selectAll()
    qtbot.keyClick(edit, Qt.Key.Key_Backspace)
    qtbot.keyClicks(edit, text)
    if enter:
        qtbot.keyClick(edit, Qt.Key.Key_Return)


def choose(qtbot, combo: QComboBox, text: str) -> None:
    """Pick ``text`` in ``combo`` with the keyboard (focus it, type the item's first letters)."""
    index = combo.findText(text)
    assert index >= 0, f"{text!r} is not offered: {[combo.itemText(i) for i in range(combo.count())]}"
    combo.setFocus()
    while combo.currentIndex() != index:
        key = Qt.Key.Key_Down if combo.currentIndex() < index else Qt.Key.Key_Up
        qtbot.keyClick(combo, key)


def assert_fits(widget: QWidget, width: int = DOCK_WIDTH, height: int = 900) -> None:
    """``widget`` shown at ``width`` px needs no horizontal scrolling and clips nothing."""
    widget.resize(width, height)
    widget.show()
    QApplication.processEvents()
    assert widget.minimumSizeHint().width() <= width, f"needs {widget.minimumSizeHint().width()} px (dock: {width})"
    for area in [widget, *widget.findChildren(QScrollArea)]:
        if isinstance(area, QScrollArea):
            bar = area.horizontalScrollBar()
            assert bar.maximum() == 0, f"horizontal scrolling of {bar.maximum()} px at a {width} px dock"
    for child in widget.findChildren(QAbstractButton):
        if child.isVisible() and child.text():
            needed = child.fontMetrics().horizontalAdvance(child.text().replace("&", ""))
            assert child.width() >= needed, f"button {child.text()!r} is clipped ({child.width()} < {needed} px)"


def _inside_compound(child: QWidget, top: QWidget) -> bool:
    parent = child.parentWidget()
    while parent is not None and parent is not top:
        if isinstance(parent, QAbstractSpinBox | QComboBox):
            return True
        parent = parent.parentWidget()
    return False


CONTROLS = (QAbstractButton, QComboBox, QAbstractSpinBox, QLineEdit, QAbstractSlider, QListWidget)


def assert_tooltips(widget: QWidget) -> None:
    """Every visible control of ``widget`` has a tooltip."""
    missing = []
    for child in widget.findChildren(QWidget):
        if isinstance(child, CONTROLS) and child.isVisibleTo(widget) and not child.toolTip().strip():
            if isinstance(child, QScrollBar) or _inside_compound(child, widget):
                continue  # a scroll area's bars, a spin box's or combo box's own line edit
            label = getattr(child, "text", lambda: "")() if not isinstance(child, QComboBox) else child.currentText()
            missing.append(f"{type(child).__name__} {label!r} ({child.objectName() or 'no name'})")
    assert not missing, "controls without a tooltip: " + "; ".join(missing)


def menu_action(viewer, *titles: str):
    """The QAction reached from the viewer's menu bar through the menus and item named ``titles`` (as shown,
    without the ``&`` of shortcuts), e.g. ``("File", "Open Sample", "napari-casper", "Drosophila ...")``."""
    import re

    def shown(text: str) -> str:  # Qt: "&&" is a literal "&", "&x" underlines x
        return re.sub("&(&?)", r"\1", text)

    menu = viewer.window._qt_window.menuBar()
    *menus, item = titles
    for title in menus:
        found = [a for a in menu.actions() if a.menu() is not None and shown(a.text()) == title]
        assert found, f"no menu {title!r} among {[a.text() for a in menu.actions()]}"
        menu = found[0].menu()
        menu.aboutToShow.emit()  # napari (app-model) fills some menus as they open
    found = [a for a in menu.actions() if shown(a.text()) == item]
    assert found, f"no item {item!r} among {[a.text() for a in menu.actions()]}"
    return found[0]
