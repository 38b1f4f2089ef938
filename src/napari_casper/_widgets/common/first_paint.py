"""What costs a first paint, shown in an event-loop turn of its own: new layers, colour bars.

Adding a napari layer costs the GUI thread twice: at once (its Qt controls, its vispy visual) and at
the next paint (its shader programs are compiled and linked, its data uploaded: 0.15-0.4 s per layer
under software OpenGL). Qt delivers that paint in the same event-loop turn as the handler that added
the layer, so the two costs add up into one stall; a colour bar shown beside them adds its own
(0.05-0.07 s to show, more to draw). :func:`reveal_later` hides the freshly added layer (nothing of it
is drawn) and shows it again in a later turn, where its first paint stands alone; :func:`in_turn`
runs any such step (showing a colour bar) the same way. The steps run one at a time, in the order
they were asked for, each after the canvas has drawn what the previous one showed.

While steps wait, and until the canvas has drawn the last one, :func:`revealing` is True; the widgets
count it as busy and add their next layer only after it, so whoever waits for a widget also waits for
its layers to be shown, and no two first paints or additions share a turn.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable

#: the pause before a step (long enough for the event loop to turn in between)
REVEAL_GAP_MS = 120
#: a first paint that never comes (a hidden or closed window) holds nothing up for longer than this
PAINT_WAIT_MS = 2000

#: (weak viewer, step) in the order they were asked for; a step returns True when it showed something to draw
_queue: list = []
_pending: weakref.WeakSet = weakref.WeakSet()  # layers hidden until their turn
_changed: weakref.WeakSet = weakref.WeakSet()  # layers whose visibility someone else set while they waited
#: the token of the step whose paint is awaited (at most one: the next step starts after it)
_painting: list = []


def revealing() -> bool:
    """True while any step waits to run or the canvas has not yet drawn the last one."""
    return bool(_queue) or bool(_painting)


def is_pending(layer) -> bool:
    """True while ``layer`` waits to be shown."""
    return layer in _pending


def in_turn(viewer, step: Callable[[], bool | None]) -> None:
    """Run ``step()`` in an event-loop turn of its own, after everything asked for earlier has been drawn.

    ``step`` returns True when it showed something on ``viewer``'s canvas; what comes next then waits
    for the canvas to draw it.
    """
    _queue.append((weakref.ref(viewer), step))
    if len(_queue) == 1 and not _painting:
        _later(_next)


def reveal_later(viewer, layer) -> None:
    """Hide ``layer`` (just added to ``viewer``, not painted yet) and show it again in a later turn.

    A layer added hidden stays as it is. If anything sets its visibility while it waits (a widget
    hiding an older gene, the user's eye toggle), that choice stands and it is not shown by this.
    """
    if not layer.visible or layer in _pending:
        return
    layer.visible = False
    _show_later(viewer, layer)


def append_shown_later(viewer, layer):
    """Append ``layer`` (built, not in ``viewer`` yet) hidden, and show it in a later turn if it was to be shown.

    napari neither slices nor draws a hidden layer, so the append costs only its Qt controls and
    visual; its first slice and paint (data upload, shaders) come in the turn that shows it.
    """
    shown = layer.visible
    layer.visible = False
    viewer.layers.append(layer)
    if shown:
        _show_later(viewer, layer)
    return layer


def _show_later(viewer, layer) -> None:
    """Queue ``layer`` (hidden now) to be shown in a turn of its own, unless its visibility is set meanwhile."""
    _pending.add(layer)
    layer.events.visible.connect(_on_visible)
    layer_ref, viewer_ref = weakref.ref(layer), weakref.ref(viewer)

    def reveal() -> bool:
        layer, viewer = layer_ref(), viewer_ref()
        if layer is None:
            return False
        _pending.discard(layer)
        layer.events.visible.disconnect(_on_visible)
        changed = layer in _changed
        _changed.discard(layer)
        if changed or viewer is None or layer not in viewer.layers:
            return False
        layer.visible = True
        return True

    in_turn(viewer, reveal)


def _later(function, delay_ms: int = REVEAL_GAP_MS) -> None:
    from qtpy.QtCore import QTimer

    QTimer.singleShot(delay_ms, function)


def _on_visible(event) -> None:
    layer = getattr(event, "source", None)
    if layer is not None and layer in _pending:
        _changed.add(layer)


def _draw_events(viewer):
    """The viewer canvas's vispy draw event (napari's private canvas), or None where it cannot be reached."""
    try:
        return viewer.window._qt_viewer.canvas._scene_canvas.events.draw
    except AttributeError:
        return None


def _next() -> None:
    if not _queue:
        return
    viewer_ref, step = _queue.pop(0)
    viewer = viewer_ref()
    try:
        shown = viewer is not None and bool(step())
    except Exception:  # noqa: BLE001 - one failed step (a closed viewer) must not stop the ones after it
        logging.getLogger(__name__).exception("napari-casper: showing a layer or colour bar failed")
        shown = False
    draws = _draw_events(viewer) if shown else None
    if draws is None:  # nothing to draw, or no way to know when it is drawn: a pause instead
        if _queue:
            _later(_next)
        return
    # what comes next (the next step, a widget's next layer) waits for this one's first paint
    token = object()
    _painting.append(token)

    def painted(*_) -> None:
        if token not in _painting:
            return
        _painting.remove(token)
        draws.disconnect(painted)
        if _queue:
            _later(_next)

    draws.connect(painted, position="last")  # after the scene, so the paint is done
    _later(painted, PAINT_WAIT_MS)
