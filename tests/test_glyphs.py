"""Canvas glyphs are rendered a few per event-loop turn before the text that needs them is shown,
and not while a napari-casper worker is busy (beside a busy Python worker they run ~30x slower)."""

from __future__ import annotations

import threading
import time

import pytest
from gui_checks import Heartbeat

from napari_casper._widgets.common import activity, background, glyphs

pytestmark = pytest.mark.gui


def test_missing_glyphs_are_rendered_in_short_turns_then_the_text_shows(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    font = glyphs.canvas_font(viewer)
    assert font is not None, "napari's canvas font is not reachable: text would be drawn in one paint"
    text = "casper:Penk: predicted log-normalised expression 0123456789"
    assert glyphs.missing_glyphs(viewer, text)
    shown = []
    with Heartbeat() as beat:
        glyphs.when_glyphs_ready(viewer, text, lambda: shown.append(glyphs.missing_glyphs(viewer, text)))
        assert shown == []  # not at once: the glyphs are missing
        qtbot.waitUntil(lambda: bool(shown), timeout=20_000)
    assert shown == [[]]  # every glyph was there when the text was shown
    beat.assert_responsive(0.3, what="rendering 30 glyphs four per turn")  # ~35 ms a turn alone
    again = []
    glyphs.when_glyphs_ready(viewer, text, lambda: again.append(True))
    assert again == [True]  # all rendered: runs at once


def test_glyphs_wait_while_a_worker_is_busy(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    release = threading.Event()
    runner = background.BackgroundRunner(lambda text: None)
    runner.run(release.wait, lambda _: None, 30)
    qtbot.waitUntil(activity.workers_busy, timeout=5_000)
    shown = []
    glyphs.when_glyphs_ready(viewer, "xyzXYZ%", lambda: shown.append(time.perf_counter()))
    qtbot.wait(400)
    assert shown == [] and glyphs.missing_glyphs(viewer, "xyzXYZ%")  # nothing rendered beside the worker
    released = time.perf_counter()
    release.set()
    qtbot.waitUntil(lambda: bool(shown), timeout=10_000)
    assert shown[0] >= released and not activity.workers_busy()
    assert glyphs.missing_glyphs(viewer, "xyzXYZ%") == []


def test_a_new_colour_bar_waits_for_its_tick_and_units_glyphs(make_napari_viewer, qtbot):
    """The first continuous layer's colour bar is shown once the canvas has every character of its
    tick labels and its units line: nothing is left for the paint that shows them to render."""
    import numpy as np

    from napari_casper._widgets.common.layer_sync import add_or_update, units_lines
    from napari_casper.display.value_layers import SpotGeometry, value_layer

    viewer = make_napari_viewer(show=True)
    rng = np.random.default_rng(0)
    geometry = SpotGeometry(yx=rng.uniform(0, 100, (50, 2)), size=np.full(50, 3.0), affine=np.eye(3), element="spots", coordinate_system="global")
    layer = add_or_update(viewer, value_layer(geometry, rng.normal(size=50), "casper:Penk"))
    qtbot.waitUntil(lambda: layer.face_colorbar.visible and bool(units_lines(viewer)), timeout=20_000)
    needed = glyphs.TICK_GLYPHS + "".join(units_lines(viewer))
    assert glyphs.missing_glyphs(viewer, needed) == []
