"""A layer the widgets add is painted the first time in an event-loop turn of its own (first_paint)."""

from __future__ import annotations

import numpy as np
import pytest
from gui_checks import Heartbeat

from napari_casper._widgets.common import background, first_paint

pytestmark = pytest.mark.gui


def test_new_layers_are_shown_one_per_turn_in_order_and_a_choice_made_meanwhile_stands(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    qtbot.wait(200)
    rng = np.random.default_rng(0)
    layers = [viewer.add_image(rng.random((300, 300)), name=f"image {i}") for i in range(3)]
    hidden_from_start = viewer.add_image(rng.random((50, 50)), name="hidden", visible=False)
    shown = []
    for layer in layers:
        layer.events.visible.connect(lambda event: shown.append((event.source.name, event.source.visible)))
    with Heartbeat() as beat:
        for layer in [*layers, hidden_from_start]:
            first_paint.reveal_later(viewer, layer)
        assert not any(layer.visible for layer in layers)  # nothing drawn in the turn that added them
        assert first_paint.revealing() and background.BackgroundRunner(lambda _: None).busy  # widgets wait for it
        layers[1].visible = False  # someone (a widget hiding an older gene, the user) decides meanwhile
        qtbot.waitUntil(lambda: not first_paint.revealing(), timeout=5_000)
    assert [layer.visible for layer in layers] == [True, False, True]
    assert not hidden_from_start.visible  # added hidden: left hidden
    assert [name for name, visible in shown if visible] == ["image 0", "image 2"]  # in the order they were added
    assert beat.ticks > 3  # the event loop turned between the reveals
    beat.assert_responsive(what="three new images shown one per turn")


def test_a_layer_removed_before_its_turn_is_not_touched(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_points(np.zeros((3, 2)), name="points")
    first_paint.reveal_later(viewer, layer)
    viewer.layers.remove(layer)
    qtbot.waitUntil(lambda: not first_paint.revealing(), timeout=5_000)
    assert "points" not in viewer.layers and not layer.visible


def test_steps_run_one_per_turn_in_order_and_a_failing_one_does_not_stop_the_rest(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    ran = []

    def failing():
        ran.append("fails")
        raise RuntimeError("a closed viewer")

    first_paint.in_turn(viewer, lambda: ran.append("first"))
    first_paint.in_turn(viewer, failing)
    first_paint.in_turn(viewer, lambda: ran.append("last"))
    assert ran == []  # not in the turn that asked for them
    qtbot.waitUntil(lambda: not first_paint.revealing(), timeout=5_000)
    assert ran == ["first", "fails", "last"]
