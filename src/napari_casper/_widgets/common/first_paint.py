"""A new layer's first paint in an event-loop turn of its own.

Adding a napari layer costs the GUI thread twice: at once (its Qt controls, its vispy visual) and at
the next paint (its shader programs are compiled and linked, its data uploaded: 0.15-0.4 s per layer
under software OpenGL). Qt delivers that paint in the same event-loop turn as the handler that added
the layer, so the two costs add up into one stall. :func:`reveal_later` hides the freshly added layer
(nothing of it is drawn) and shows it again :data:`REVEAL_GAP_MS` later, where its first paint stands
alone; several layers are revealed one per turn, in the order they were added.

While layers wait, and until the canvas has drawn the last one shown, :func:`revealing` is True; the
widgets count it as busy and add their next layer only after it, so whoever waits for a widget also
waits for its layers to be shown, and no two first paints or additions share a turn.
"""

from __future__ import annotations

import weakref

#: the time between adding a layer and showing it (long enough for the event loop to turn in between)
REVEAL_GAP_MS = 120

_queue: list = []  # (weak viewer, weak layer) in the order they were added
_pending: weakref.WeakSet = weakref.WeakSet()
_changed: weakref.WeakSet = weakref.WeakSet()  # layers whose visibility someone else set while they waited
#: a layer was just shown and the canvas has not drawn it yet (its first paint is still to come)
_painting: list = []
#: a first paint that never comes (a hidden or closed window) holds nothing up for longer than this
PAINT_WAIT_MS = 2000


def revealing() -> bool:
    """True while any layer waits to be shown or to be drawn the first time."""
    return bool(_queue) or bool(_painting)


def is_pending(layer) -> bool:
    """True while ``layer`` waits to be shown."""
    return layer in _pending


def reveal_later(viewer, layer) -> None:
    """Hide ``layer`` (just added to ``viewer``, not painted yet) and show it again in a later turn.

    A layer added hidden stays as it is. If anything sets its visibility while it waits (a widget
    hiding an older gene, the user's eye toggle), that choice stands and it is not shown by this.
    """
    if not layer.visible or layer in _pending:
        return
    layer.visible = False
    _pending.add(layer)
    layer.events.visible.connect(_on_visible)
    _queue.append((weakref.ref(viewer), weakref.ref(layer)))
    if len(_queue) == 1 and not _painting:
        _later(_reveal_next)


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


def _reveal_next() -> None:
    if not _queue:
        return
    viewer_ref, layer_ref = _queue.pop(0)
    viewer, layer = viewer_ref(), layer_ref()
    shown = False
    if layer is not None:
        _pending.discard(layer)
        layer.events.visible.disconnect(_on_visible)
        if layer not in _changed and viewer is not None and layer in viewer.layers:
            layer.visible = shown = True
        _changed.discard(layer)
    draws = _draw_events(viewer) if shown else None
    if draws is None:  # nothing to draw, or no way to know when it is drawn: a pause instead
        if _queue:
            _later(_reveal_next)
        return
    # what comes next (the next layer, a widget's next step) waits for this layer's first paint
    token = object()
    _painting.append(token)

    def painted(*_) -> None:
        if token not in _painting:
            return
        _painting.remove(token)
        draws.disconnect(painted)
        if _queue:
            _later(_reveal_next)

    draws.connect(painted, position="last")  # after the scene, so the paint is done
    _later(painted, PAINT_WAIT_MS)
