"""Shapes layers as the editable form of a :class:`~napari_casper.regions.RegionSet`.

Each shape's class, name, author and timestamp live in the layer's ``features``; edge and face
colours follow the class. Used by the Regions widget and its panels (GUI thread only).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_casper._widgets.common.layer_sync import layer_affine
from napari_casper.io.elements import METADATA_KEY, mean_scale
from napari_casper.regions import RegionClasses, RegionSet
from napari_casper.regions.geometry import fill_names

REGIONS_KIND = "regions"
PREVIEW_NAME = "suggested regions (preview)"
FACE_ALPHA = 0.3
FEATURE_COLUMNS = ("class", "name", "author", "timestamp")


def edge_width(spots_layer, affine: np.ndarray, fraction: float = 1 / 8) -> float:
    """Edge width, in the data units of a shapes layer with ``affine``, of ``fraction`` of a spot's diameter.

    Points sizes are world units (napari does not scale them, #6649); shapes edges scale with the affine.
    """
    world = max(float(np.median(np.atleast_1d(spots_layer.size))) * fraction, 1e-9)
    return world / max(mean_scale(affine), 1e-12)


def regions_layer_kwargs(name: str, affine: np.ndarray, spots_layer, coordinate_system: str, **metadata) -> dict:
    """``viewer.add_shapes`` keywords of an empty regions layer drawn over ``spots_layer``."""
    return {
        "name": name,
        "ndim": 2,
        "affine": affine,
        "text": {"string": "{class}", "color": "white", "size": 10},
        "edge_width": edge_width(spots_layer, affine),
        "features": pd.DataFrame({c: pd.Series(dtype=object) for c in FEATURE_COLUMNS}),
        "metadata": {METADATA_KEY: {"kind": REGIONS_KIND, "coordinate_system": coordinate_system, **metadata}},
    }


def is_regions_layer(layer) -> bool:
    return layer.metadata.get(METADATA_KEY, {}).get("kind") == REGIONS_KIND


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
    edges = np.array([classes.rgba(c) for c in names])
    faces = edges.copy()
    faces[:, 3] = FACE_ALPHA
    layer.edge_color = edges
    layer.face_color = faces
    layer.refresh_text()
    return grew


def layer_to_regions(layer, classes: RegionClasses, coordinate_system: str) -> RegionSet:
    """The shapes of ``layer`` as a :class:`RegionSet`; shapes without a name get one (kept on the layer)."""
    from napari_casper.errors import CasperInputError

    if len(layer.data) == 0:
        raise CasperInputError(f"layer {layer.name!r} has no shapes: draw regions (or suggest them) first.")
    features = layer.features

    def column(key: str, default: str) -> list[str]:
        values = features.get(key, pd.Series([None] * len(layer.data)))
        return [str(v) if isinstance(v, str) and v else default for v in values]

    kinds = column("class", "other")
    names = fill_names(column("name", ""), kinds)
    if names != column("name", ""):  # new shapes got names: keep them on the layer
        features = features.copy()
        features["name"] = names
        layer.features = features
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
    )


def append_regions(layer, regions: RegionSet) -> None:
    """Add ``regions`` to ``layer`` as shapes, re-expressed in the layer's data coordinates."""
    target = layer_affine(layer)
    if not np.allclose(target, regions.affine):
        regions = RegionSet.from_world_polygons(
            regions.world_geometries(),
            regions.classes,
            affine=target,
            coordinate_system=regions.coordinate_system,
            palette=regions.palette,
            names=regions.names,
        )
    start = len(layer.data)
    layer.add(regions.vertices, shape_type=regions.shape_types)
    features = layer.features.copy()
    rows = features.index[start:]
    features.loc[rows, "class"] = regions.classes
    features.loc[rows, "name"] = regions.names
    features.loc[rows, "author"] = regions.authors or [""] * len(regions)
    features.loc[rows, "timestamp"] = regions.timestamps or [""] * len(regions)
    layer.features = features
