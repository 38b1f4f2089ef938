"""Layers on the GUI thread: add or update from layer-data tuples, find napari-casper spot layers, a layer's affine.

A layer of the same name and type is updated in place (data, colours, contrast) instead of
stacking a duplicate; its position in the layer list and the user's visibility choice stay.
"""

from __future__ import annotations

import numpy as np

from napari_casper.io.elements import METADATA_KEY


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
    if same_kind:
        _update(existing, data, kwargs, kind)
        return existing
    if existing is not None:
        viewer.layers.remove(existing)
    adder = getattr(viewer, f"add_{kind}")
    return adder(data, **kwargs)


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
