"""Saved tumour regions as editable napari Shapes layer-data tuples (Qt-free).

A store written by the Regions widget holds each annotation as a shapes element plus a table of
class, name, author, timestamp, colour and origin (:mod:`napari_casper.regions.store`). Opening
the store shows every such annotation as a Shapes layer whose ``features`` carry those columns,
coloured by class, with the legend in ``metadata["napari_casper"]["classes"]`` so the Regions
widget recognises the layer and takes over its classes and colours.
"""

from __future__ import annotations

import numpy as np

from napari_casper.io.elements import METADATA_KEY, mean_scale

#: ``metadata["napari_casper"]["kind"]`` of a regions Shapes layer
REGIONS_LAYER_KIND = "regions"
#: per-shape columns of a regions layer's ``features``
FEATURE_COLUMNS = ("class", "name", "author", "timestamp", "origin")
#: face opacity of a region (edges are opaque)
FACE_ALPHA = 0.3
#: region edges are this fraction of a spot's diameter wide
EDGE_FRACTION = 1 / 8


def edge_width(spot_diameter: float, affine: np.ndarray, fraction: float = EDGE_FRACTION) -> float:
    """Edge width in the data units of a layer with ``affine`` for ``fraction`` of a spot diameter (world units)."""
    return max(float(spot_diameter) * fraction, 1e-9) / max(mean_scale(affine), 1e-12)


def class_colours(classes, palette) -> tuple[np.ndarray, np.ndarray]:
    """``(edge, face)`` RGBA arrays ``(n, 4)`` of shapes of ``classes`` in ``palette`` (a RegionClasses)."""
    edges = np.array([palette.rgba(c) for c in classes]).reshape(-1, 4)
    faces = edges.copy()
    faces[:, 3] = FACE_ALPHA
    return edges, faces


def regions_layer_kwargs(name: str, affine: np.ndarray, spot_diameter: float, coordinate_system: str, **metadata) -> dict:
    """``viewer.add_shapes`` keywords of an empty regions layer (features, text, edge width, metadata)."""
    import pandas as pd

    return {
        "name": name,
        "ndim": 2,
        "affine": affine,
        "text": {"string": "{class}", "color": "white", "size": 10},
        "edge_width": edge_width(spot_diameter, affine),
        "features": pd.DataFrame({c: pd.Series(dtype=object) for c in FEATURE_COLUMNS}),
        "metadata": {METADATA_KEY: {"kind": REGIONS_LAYER_KIND, "coordinate_system": coordinate_system, **metadata}},
    }


def region_layer(regions, name: str, spot_diameter: float, **metadata) -> tuple:
    """Shapes layer-data tuple of a :class:`~napari_casper.regions.RegionSet`, coloured by class, editable."""
    import pandas as pd

    kwargs = regions_layer_kwargs(
        name, regions.affine, spot_diameter, regions.coordinate_system, classes=regions.palette.to_uns(), **metadata
    )
    n = len(regions)
    kwargs["features"] = pd.DataFrame(
        {
            "class": regions.classes,
            "name": regions.names,
            "author": regions.authors or [""] * n,
            "timestamp": regions.timestamps or [""] * n,
            "origin": regions.origins,
        },
        dtype=object,
    )
    kwargs["shape_type"] = list(regions.shape_types)
    kwargs["edge_color"], kwargs["face_color"] = class_colours(regions.classes, regions.palette)
    return ([np.asarray(v) for v in regions.vertices], kwargs, "shapes")


def saved_regions_layers(sdata, coordinate_system: str, spot_layers: dict) -> list[tuple]:
    """Every annotation saved by the Regions widget in ``sdata`` (in ``coordinate_system``) as a Shapes layer.

    ``spot_layers`` are the spots' layer tuples (their ``size`` sets the edge width). Polygon
    elements saved by other tools are left out here; the widget's Load adds them on request.
    """
    from napari_casper.errors import CasperInputError
    from napari_casper.io.elements import spot_table
    from napari_casper.regions import list_region_elements, load_regions
    from napari_casper.regions.store import REGIONS_KIND

    sizes = [np.median(np.atleast_1d(kwargs["size"])) for _, kwargs, _ in spot_layers.values()]
    diameter = float(sizes[0]) if sizes else 1.0
    layers = []
    for name in list_region_elements(sdata):
        link = spot_table(sdata, name)
        if link is None or sdata.tables[link.name].uns.get("napari_casper", {}).get("kind") != REGIONS_KIND:
            continue
        try:
            regions = load_regions(sdata, name, coordinate_system=coordinate_system)
        except CasperInputError:  # saved in another coordinate system: not shown in this one
            continue
        if len(regions):
            layers.append(region_layer(regions, name, diameter, element=name))
    return layers
