"""Shapes layers as the editable form of a :class:`~napari_casper.regions.RegionSet`.

Each shape's class, name, author and timestamp live in the layer's ``features``; edge and face
colours follow the class. Used by the Regions widget and its panels (GUI thread only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from napari_casper._widgets.common.layer_sync import layer_affine
from napari_casper.display.regions import REGIONS_LAYER_KIND, class_colours
from napari_casper.display.regions import edge_width as region_edge_width
from napari_casper.display.regions import regions_layer_kwargs as empty_layer_kwargs
from napari_casper.io.elements import METADATA_KEY
from napari_casper.regions import RegionClasses, RegionSet
from napari_casper.regions.geometry import DRAWN, ORIGINS, fill_names

if TYPE_CHECKING:
    import pandas as pd

PREVIEW_NAME = "suggested regions (preview)"
#: the outlines learned from a few strokes, before they are accepted
LEARNED_PREVIEW_NAME = "learned regions (preview)"
#: layers that show a preview, never regions to save or learn from
PREVIEW_NAMES = (PREVIEW_NAME, LEARNED_PREVIEW_NAME)
#: shapes a layer takes per event-loop turn when regions are added (napari triangulates each
#: polygon on the GUI thread)
ADD_BATCH = 2


def spot_diameter(spots_layer) -> float:
    """Median spot diameter of a spots Points layer, world units (Points sizes are not scaled by the affine, #6649)."""
    return float(np.median(np.atleast_1d(spots_layer.size)))


def edge_width(spots_layer, affine: np.ndarray, fraction: float = 1 / 8) -> float:
    """Edge width, in the data units of a shapes layer with ``affine``, of ``fraction`` of a spot's diameter."""
    return region_edge_width(spot_diameter(spots_layer), affine, fraction)


def regions_layer_kwargs(name: str, affine: np.ndarray, spots_layer, coordinate_system: str, **metadata) -> dict:
    """``viewer.add_shapes`` keywords of an empty regions layer drawn over ``spots_layer``."""
    return empty_layer_kwargs(name, affine, spot_diameter(spots_layer), coordinate_system, **metadata)


def is_regions_layer(layer) -> bool:
    return layer.metadata.get(METADATA_KEY, {}).get("kind") == REGIONS_LAYER_KIND


def saved_regions_note(layer) -> str:
    """What the user reads about a regions layer opened from a store ("" for other layers or an empty one)."""
    if not is_regions_layer(layer) or not len(layer.data):
        return ""
    classes = ", ".join(dict.fromkeys(map(str, layer.features["class"])))
    return f"regions layer {layer.name!r}: {len(layer.data)} saved region(s) ({classes}), editable."


def recolour(layer, classes: RegionClasses) -> bool:
    """Colour every shape by its class (unknown classes join the legend); True when the legend grew."""
    if len(layer.data) == 0:
        return False
    names = [c if isinstance(c, str) and c else "other" for c in layer.features["class"]]
    grew = False
    for cls in names:
        if cls not in classes:
            classes.add(cls)
            grew = True
    edges, faces = class_colours(names, classes)
    if not (np.array_equal(layer.edge_color, edges) and np.array_equal(layer.face_color, faces)):
        layer.edge_color = edges
        layer.face_color = faces
    layer.refresh_text()
    return grew


def keep_active(viewer, add_layer):
    """Call ``add_layer()`` (which adds a layer) and give the active layer back: napari makes a new layer the
    active one, and a preview must not become the layer the user draws in."""
    from napari_casper._widgets.common.first_paint import reveal_later

    active = viewer.layers.selection.active
    added = add_layer()
    reveal_later(viewer, added)  # its first paint in a turn of its own
    if active is not None and active in viewer.layers:
        viewer.layers.selection.active = active
    return added


def layer_to_regions(layer, classes: RegionClasses, coordinate_system: str) -> RegionSet:
    """The shapes of ``layer`` as a :class:`RegionSet`; shapes without a name get one (kept on the layer)."""
    import pandas as pd

    from napari_casper.errors import CasperInputError

    if len(layer.data) == 0:
        raise CasperInputError(f"layer {layer.name!r} has no shapes: draw regions (or add suggested outlines) first.")
    features = layer.features

    def column(key: str, default: str) -> list[str]:
        values = features.get(key, pd.Series([None] * len(layer.data)))
        return [str(v) if isinstance(v, str) and v else default for v in values]

    kinds = column("class", "other")
    names = fill_names(column("name", ""), kinds)
    if names != column("name", ""):  # new shapes got names: keep them on the layer, in place (assigning a
        layer.features["name"] = names  # new frame re-derives the defaults from the last shape: every new
        # shape would then be drawn with that shape's name and class)
    return RegionSet(
        list(layer.data),
        list(layer.shape_type),
        kinds,
        names,
        layer_affine(layer),
        coordinate_system,
        classes,
        column("author", ""),
        column("timestamp", ""),
        [o if o in ORIGINS else DRAWN for o in column("origin", DRAWN)],
    )


def append_regions(layer, regions: RegionSet) -> list[tuple]:
    """Batches ``[(vertices, shape_types, features), ...]`` that add ``regions`` to ``layer``, in its data coordinates.

    Add each with :func:`add_batch`, one per event-loop turn: napari triangulates every new
    polygon on the GUI thread, so a few hundred at once would freeze it.
    """
    import pandas as pd

    target = layer_affine(layer)
    if not np.allclose(target, regions.affine):
        moved = RegionSet.from_world_polygons(
            regions.world_geometries(),
            regions.classes,
            affine=target,
            coordinate_system=regions.coordinate_system,
            palette=regions.palette,
            names=regions.names,
            origins=regions.origins,
        )
        if len(moved) == len(regions):  # no shape split into parts: authors and times still line up
            moved.authors, moved.timestamps = regions.authors, regions.timestamps
        regions = moved
    n = len(regions)
    features = pd.DataFrame(
        {
            "class": regions.classes,
            "name": regions.names,
            "author": regions.authors if regions.authors and len(regions.authors) == n else [""] * n,
            "timestamp": regions.timestamps if regions.timestamps and len(regions.timestamps) == n else [""] * n,
            "origin": regions.origins,
        },
        dtype=object,
    )
    return [
        (regions.vertices[i : i + ADD_BATCH], regions.shape_types[i : i + ADD_BATCH], features.iloc[i : i + ADD_BATCH])
        for i in range(0, n, ADD_BATCH)
    ]


def add_batch(layer, vertices: list, shape_types: list, rows: pd.DataFrame) -> None:
    """Add shapes to ``layer`` and give them ``rows`` of features (class, name, author, timestamp, origin)."""
    import pandas as pd

    start = len(layer.data)
    layer.add(vertices, shape_type=shape_types)
    index = layer.features.index[start:]
    for column in rows.columns:
        if column not in layer.features:
            layer.features[column] = pd.Series([""] * len(layer.features), dtype=object, index=layer.features.index)
        layer.features.loc[index, column] = rows[column].to_numpy()
