"""Canvas text glyphs rendered ahead of need, a few per event-loop turn.

vispy draws text (colour-bar ticks, the units overlay) from a glyph atlas that napari keeps per
canvas; a character not yet in it is rendered on the CPU (a signed distance field, ~8 ms each)
during the paint that first shows it. A new colour bar and its units line need ~40 new characters
at once on a fresh viewer: 0.3-0.8 s of one paint on the GUI thread. :func:`when_glyphs_ready`
renders the missing ones :data:`GLYPHS_PER_TURN` at a time between event-loop turns, then runs
what would have needed them; :func:`warm_glyphs` fills the atlas while the viewer is idle.
Rendering waits while a worker thread is busy (:func:`~napari_casper._widgets.common.activity.workers_busy`):
beside a busy Python worker each glyph takes ~30x longer on the GUI thread (the GIL changes hands at
every one of its ~800 small numpy calls), so four glyphs would stall the event loop ~0.6 s.

napari keeps the atlas on its canvas (``canvas.font_info().font_manager``), reached through
``viewer.window._qt_viewer``: where that is missing (another napari), text is drawn as napari does.
"""

from __future__ import annotations

import contextlib
import string
import weakref

#: every character napari-casper writes on the canvas (layer names, genes, units, tick labels), and the
#: ones vispy measures every text with (tall capitals and descenders)
MEASURING_GLYPHS = "ÅÉÑŐjgpqy"  # vispy renders these to measure any text, whatever it holds
GLYPHS = MEASURING_GLYPHS + string.digits + ".-+e" + string.ascii_letters + string.punctuation + " µ"
#: the characters of a colour bar's tick labels
TICK_GLYPHS = string.digits + ".-+e"
#: glyphs rendered per event-loop turn (~8 ms each under software OpenGL)
GLYPHS_PER_TURN = 4
#: the pause between two turns of rendering (a real timer: a zero-delay one is a posted event, and Qt
#: runs the ones posted meanwhile before any timer or paint, so nothing else would run in between)
TURN_GAP_MS = 5
#: while a napari-casper worker is busy, rendering waits (checking this often), for at most BUSY_WAIT_MS
#: when something waits to be shown, for at most IDLE_WAIT_MS when warming ahead
BUSY_CHECK_MS = 50
BUSY_WAIT_MS = 3000
IDLE_WAIT_MS = 120_000
_warmed: weakref.WeakSet = weakref.WeakSet()


def canvas_font(viewer):
    """The texture font the viewer's canvas draws its text with, or None where it cannot be reached."""
    try:
        info = viewer.window._qt_viewer.canvas.font_info()
        return info.font_manager.get_font(info.face, False, False)
    except (AttributeError, TypeError):
        return None


def missing_glyphs(viewer, text: str) -> list[str]:
    """The characters of ``text`` the canvas has not rendered yet (in order, once each)."""
    font = canvas_font(viewer)
    if font is None:
        return []
    rendered = getattr(font, "_glyphs", {})
    return [c for c in dict.fromkeys(text) if c.isprintable() and c not in rendered]


def when_glyphs_ready(viewer, text: str, then, *, max_wait_ms: int = BUSY_WAIT_MS) -> None:
    """Call ``then()`` once the canvas has every glyph of ``text`` (and the ones vispy measures any
    text with): at once when it has, otherwise after rendering the missing ones
    :data:`GLYPHS_PER_TURN` per event-loop turn."""
    from qtpy.QtCore import QTimer

    todo = missing_glyphs(viewer, MEASURING_GLYPHS + text)
    if not todo:
        then()
        return
    from napari_casper._widgets.common.activity import workers_busy

    font = canvas_font(viewer)
    waited = [0]

    def step() -> None:
        if workers_busy() and waited[0] < max_wait_ms:
            waited[0] += BUSY_CHECK_MS
            QTimer.singleShot(BUSY_CHECK_MS, step)
            return
        for char in todo[:GLYPHS_PER_TURN]:
            # an atlas that is full or a glyph Qt cannot draw: left for napari to draw as it does
            with contextlib.suppress(RuntimeError, ValueError):
                font[char]
        del todo[:GLYPHS_PER_TURN]
        if todo:
            QTimer.singleShot(TURN_GAP_MS, step)
        else:
            then()

    QTimer.singleShot(TURN_GAP_MS, step)


def warm_glyphs(viewer) -> None:
    """Render :data:`GLYPHS` into the viewer's canvas while it is idle (once per viewer)."""
    if viewer in _warmed:
        return
    _warmed.add(viewer)
    when_glyphs_ready(viewer, GLYPHS, lambda: None, max_wait_ms=IDLE_WAIT_MS)
