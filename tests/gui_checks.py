"""What every GUI test checks the way a user meets it: real clicks, a responsive event loop, a dock that fits.

* :class:`Heartbeat` -- a 10 ms timer on the GUI thread; the longest gap between its ticks is the longest
  time the event loop could not run (a handler on the GUI thread, a layer added, a blocking call).
  Use it around the user's flow, not around the test's own screenshots or assertions::

      with Heartbeat() as beat:
          click(qtbot, widget.train_button)
          qtbot.waitUntil(lambda: not widget.busy, timeout=120_000)
      beat.assert_responsive()   # fails when the GUI thread stalled over 0.5 s

* :func:`click`, :func:`type_text` -- press the real control (it must be visible and enabled, as for a user).
* :func:`assert_fits` -- the dock body fits ``width`` px without a horizontal scroll bar.
* :func:`assert_tooltips` -- every visible control explains itself.
"""

from __future__ import annotations

import time

from qtpy.QtCore import QTimer, Qt
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
#: the dock width every widget must fit without horizontal scrolling (pixels)
DOCK_WIDTH = 420


class Heartbeat:
    """Measure the longest event-loop gap on the GUI thread while the block runs."""

    def __init__(self, interval_ms: int = 10):
        self.interval_ms = interval_ms
        self.gaps: list[float] = []
        self._last = 0.0
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now

    def __enter__(self) -> Heartbeat:
        self._last = time.perf_counter()
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._tick()  # the time since the last tick counts too (a handler that blocked until now)
        self._timer.stop()

    @property
    def longest(self) -> float:
        """Longest gap between ticks, seconds."""
        return max(self.gaps, default=0.0)

    @property
    def ticks(self) -> int:
        return len(self.gaps)

    def assert_responsive(self, limit: float = STALL_LIMIT, what: str = "the flow") -> None:
        assert self.ticks > 1, "the heartbeat never ticked: the event loop did not run at all"
        assert self.longest <= limit, f"the GUI thread stalled {self.longest:.2f} s during {what} (limit {limit} s)"


def click(qtbot, button: QAbstractButton) -> None:
    """A real left click on ``button``, which must be visible and enabled as a user would find it."""
    assert button.isVisible(), f"{button.text()!r} is not visible"
    assert button.isEnabled(), f"{button.text()!r} is disabled"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


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
