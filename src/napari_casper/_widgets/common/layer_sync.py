"""Layers on the GUI thread: add or update from layer-data tuples, find napari-casper spot layers, a layer's affine.

A layer of the same name and type is updated in place (data, colours, contrast) instead of
stacking a duplicate; its position in the layer list and the user's visibility choice stay.

Every continuous napari-casper layer (metadata ``units``: value layers, the Genes layer, the
overview of a large spot set) is :func:`decorate`-d: napari's colour bar overlay on the canvas
(``colorbar`` of an Image, ``face_colorbar`` of Points), its units on the canvas (the viewer's
text overlay lists ``<layer>: <units>`` for every such layer shown, top layer first, beside the
stacked colour bars), and, for a raster, the spot id and value under the cursor in the status
line (napari's own status of an Image is only the pixel value). :func:`add_or_update` decorates
what it adds; :func:`watch` decorates every such layer a viewer gets, e.g. from the reader.
"""

from __future__ import annotations

import weakref

import numpy as np

from napari_casper._widgets.common.first_paint import append_shown_later, in_turn, is_pending
from napari_casper.io.elements import METADATA_KEY

#: metadata kinds of continuous layers (a colour bar and units)
CONTINUOUS_KINDS = ("values", "spots_overview")
#: put before every units line: napari places the colour bars left of the units text by the text's measured
#: width, which falls about 10 px short of the drawn text (the padding between them), so the top tick label
#: touched the text ("4casper:hb"); two spaces widen the measured box by about 11 px and nothing visible moves
UNITS_INDENT = "  "
_decorated: weakref.WeakSet = weakref.WeakSet()
_watched: weakref.WeakSet = weakref.WeakSet()


def add_or_update(viewer, layer_tuple: tuple):
    """Show ``(data, kwargs, kind)`` in ``viewer``; returns the layer."""
    data, kwargs, kind = layer_tuple
    name = kwargs["name"]
    existing = viewer.layers[name] if name in viewer.layers else None
    same_kind = existing is not None and type(existing).__name__.lower() == kind
    # napari cannot shrink a Points layer whose features colour it in place (IndexError in its
    # view); a layer whose point count changes is replaced instead
    if same_kind and kind == "points" and len(existing.data) != len(data):
        same_kind = False
    # an Image layer is multiscale or not for life
    if same_kind and kind == "image" and bool(existing.multiscale) != bool(kwargs.get("multiscale", False)):
        same_kind = False
    if same_kind:
        _update(existing, data, kwargs, kind)
        layer = existing
    else:
        if existing is not None:
            viewer.layers.remove(existing)
        from napari.layers import Layer

        layer = append_shown_later(viewer, Layer.create(data, kwargs, kind))  # its first paint in a later turn
    decorate(viewer, layer)
    return layer


def add_or_show(viewer, layer_tuple: tuple):
    """:func:`add_or_update`, and the layer shown: at once when it existed, after its first paint when new."""
    layer = add_or_update(viewer, layer_tuple)
    if not is_pending(layer):
        layer.visible = True
    return layer


def is_continuous(layer) -> bool:
    """A napari-casper layer of continuous values (it names its units)."""
    meta = layer.metadata.get(METADATA_KEY, {})
    return meta.get("kind") in CONTINUOUS_KINDS and bool(meta.get("units"))


def colour_bar(layer):
    """The layer's colour bar overlay (Image: ``colorbar``; Points: ``face_colorbar``); None for other layers."""
    return getattr(layer, "colorbar", None) or getattr(layer, "face_colorbar", None)


def decorate(viewer, layer) -> None:
    """Give a continuous napari-casper layer its colour bar, units and (rasters) hover text; others are left alone.

    The colour bar and the units appear one event-loop turn after another, each after a paint,
    once the canvas has the glyphs they need (:mod:`napari_casper._widgets.common.glyphs`): the
    first draw of a new layer, of a colour bar and of new characters each compile shaders or
    render glyphs on the GUI thread (0.2-0.9 s each under software OpenGL), so they are not
    paid in one stall.
    """
    if not is_continuous(layer):
        return
    if layer not in _decorated:
        _decorated.add(layer)
        if type(layer).__name__ == "Image":
            _show_spot_in_status(layer)
        layer.events.visible.connect(lambda *_: show_units(viewer))
        layer.events.name.connect(lambda *_: show_units(viewer))
    watch(viewer)
    from napari_casper._widgets.common.glyphs import TICK_GLYPHS, when_glyphs_ready

    lines = "".join(units_lines(viewer))  # every units line shown with it (this layer's name and units among them)
    text = TICK_GLYPHS + layer.name + str(layer.metadata[METADATA_KEY]["units"]) + lines
    # the colour bar and the units in turns of their own, after the layer's first paint (first_paint)
    when_glyphs_ready(viewer, text, lambda: (in_turn(viewer, lambda: _show_colour_bar(layer)), in_turn(viewer, lambda: show_units(viewer))))


def _show_colour_bar(layer) -> bool:
    """Show the layer's colour bar; True when it was hidden (the canvas then draws it)."""
    bar = colour_bar(layer)
    if bar is not None and not bar.visible:
        bar.visible = True
        return True
    return False


def watch(viewer) -> None:
    """Decorate the continuous napari-casper layers ``viewer`` has and gets (the reader's, a sample's)."""
    if viewer in _watched:
        return
    _watched.add(viewer)
    viewer.layers.events.inserted.connect(lambda event: decorate(viewer, event.value))
    viewer.layers.events.removed.connect(lambda *_: show_units(viewer))
    viewer.layers.events.moved.connect(lambda *_: show_units(viewer))
    from napari_casper._widgets.common.glyphs import warm_glyphs

    warm_glyphs(viewer)
    for layer in list(viewer.layers):
        decorate(viewer, layer)


def units_lines(viewer) -> list[str]:
    """``<layer>: <units>`` of every shown continuous layer, top layer first (the order of the colour bars)."""
    return [
        f"{layer.name}: {layer.metadata[METADATA_KEY]['units']}"
        for layer in reversed(list(viewer.layers))
        if layer.visible and is_continuous(layer)
    ]


def show_units(viewer) -> None:
    """Write :func:`units_lines` into the viewer's text overlay (top right, above the colour bars).

    A line with characters the canvas has not rendered yet (a new layer's name, when another
    layer's visibility changes first) waits for them (:func:`~napari_casper._widgets.common.glyphs.when_glyphs_ready`)
    rather than rendering them all in the next paint."""
    from napari_casper._widgets.common.glyphs import MEASURING_GLYPHS, missing_glyphs, when_glyphs_ready

    lines = units_lines(viewer)
    overlay = viewer.canvas.overlays["text"]
    text = units_text(lines)
    if text != overlay.text and missing_glyphs(viewer, MEASURING_GLYPHS + text):
        when_glyphs_ready(viewer, text, lambda: show_units(viewer))
        return
    write_units(viewer, lines)


def units_text(lines: list[str]) -> str:
    """The text overlay's text for the units ``lines`` (each indented by :data:`UNITS_INDENT`)."""
    return "\n".join(UNITS_INDENT + line for line in lines)


def write_units(viewer, lines: list[str]) -> None:
    """Put ``lines`` in the viewer's text overlay now (top right, beside the colour bars; hidden when empty)."""
    overlay = viewer.canvas.overlays["text"]
    text = units_text(lines)
    if overlay.text != text:
        overlay.text = text
    if lines and overlay.position != "top_right":
        overlay.position = "top_right"
        overlay.font_size = 10
    if overlay.visible != bool(lines):
        overlay.visible = bool(lines)


def _show_spot_in_status(layer) -> None:
    """Make the raster's status line name the spot under the cursor and its value (``SpotHover`` in its metadata)."""
    original = type(layer).get_status

    def get_status(position=None, *, view_direction=None, dims_displayed=None, world=False, value=None):
        status = original(layer, position, view_direction=view_direction, dims_displayed=dims_displayed, world=world)
        hover = layer.metadata.get(METADATA_KEY, {}).get("hover")
        if position is None or hover is None:
            return status
        where = np.asarray(position, dtype=float) if world else np.asarray(layer.data_to_world(position), dtype=float)
        text = hover.describe(where[-2:])
        status["value"] = text
        status["coordinates"] = f"{status['coords']}: {text}" if text else status["coords"]
        return status

    layer.get_status = get_status  # napari asks the active layer for its status by this name


def _update(layer, data, kwargs: dict, kind: str) -> None:
    if kind == "image":
        layer.data = data
        layer.affine = kwargs["affine"]
        if "contrast_limits" in kwargs:
            layer.contrast_limits = kwargs["contrast_limits"]
        if "colormap" in kwargs:
            layer.colormap = kwargs["colormap"]
    elif kind == "points":
        if layer.data.shape != np.shape(data) or not np.array_equal(layer.data, data):
            layer.data = data
        layer.size = kwargs.get("size", layer.size)
        layer.features = kwargs.get("features", layer.features)
        face = kwargs.get("face_color")
        if "face_colormap" in kwargs:
            layer.face_colormap = kwargs["face_colormap"]
        if isinstance(face, str) and face in layer.features:
            layer.face_color = face  # colour by the feature, then fix the window
            if "face_contrast_limits" in kwargs:
                layer.face_contrast_limits = kwargs["face_contrast_limits"]
        elif face is not None:
            layer.face_color = face
    layer.metadata.update(kwargs.get("metadata", {}))
    layer.refresh()


def layer_affine(layer) -> np.ndarray:
    """3x3 (y, x) affine from the layer's data coordinates to world (scale, translate, rotate, affine)."""
    origin = np.asarray(layer.data_to_world(np.zeros(layer.ndim)), dtype=float)[-2:]
    columns = []
    for axis in (layer.ndim - 2, layer.ndim - 1):
        unit = np.zeros(layer.ndim)
        unit[axis] = 1.0
        columns.append(np.asarray(layer.data_to_world(unit), dtype=float)[-2:] - origin)
    matrix = np.eye(3)
    matrix[:2, 0], matrix[:2, 1], matrix[:2, 2] = columns[0], columns[1], origin
    return matrix


def spot_layers(viewer, *, with_table: bool = True) -> list:
    """Points layers that napari-casper opened from SpatialData (with a measured table, by default)."""
    return [
        layer
        for layer in viewer.layers
        if type(layer).__name__ == "Points"
        and layer.metadata.get(METADATA_KEY, {}).get("kind") == "spots"
        and layer.metadata[METADATA_KEY].get("sdata") is not None
        and (layer.metadata[METADATA_KEY].get("table") or not with_table)
    ]
