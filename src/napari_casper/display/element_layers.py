"""SpatialData elements other than images and spots, as napari layer-data tuples (no napari import).

* labels (single or multiscale) -> a Labels layer, lazily (the dask arrays of the store); when a
  table annotates the labels, its obs columns are the layer's features, keyed by label id, so
  hovering a cell reads its row;
* polygons and multipolygons -> a Shapes layer of outlines (each part of a multipolygon a polygon
  of the same instance). Above :data:`LARGE_POLYGON_SET` polygons (napari triangulates every one
  on the GUI thread: Xenium's 36k cell boundaries would take minutes) they are drawn into a label
  image instead, one label per instance;
* points without a table (transcripts: often millions) -> a Points layer of at most
  :data:`MAX_POINTS_SHOWN` of them, evenly subsampled, its name saying how many there are.

Whatever is not shown is listed by :func:`element_layers` with the reason, for the reader to say.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_casper.display.cell_raster import polygon_rings
from napari_casper.io.elements import (
    METADATA_KEY,
    affine_yx,
    annotating_tables,
    element_levels,
    holds_polygons,
    region_rows,
    table_keys,
)

#: above this many polygons they are rasterised into a label image instead of napari Shapes
LARGE_POLYGON_SET = 5_000
#: the longer side of that label image, pixels
POLYGON_RASTER_SIDE = 4096
#: a points element without a table is shown subsampled to at most this many points
MAX_POINTS_SHOWN = 100_000


def labels_features(sdata, name: str) -> pd.DataFrame | None:
    """The obs columns of the table annotating labels element ``name``, with napari's ``index`` (the label id)."""
    tables = annotating_tables(sdata, name, measured_only=False)
    if not tables:
        return None
    table = sdata.tables[tables[0]]
    region_key, instance_key = table_keys(table)
    obs = table.obs.iloc[region_rows(table, name)]  # a table may annotate several elements
    features = obs.drop(columns=[region_key, instance_key]).reset_index(drop=True)
    features.insert(0, "index", obs[instance_key].to_numpy())
    return features


def labels_layer(sdata, name: str, coordinate_system: str) -> tuple:
    """Labels layer-data tuple for labels element ``name`` (lazy; multiscale when the element is)."""
    element = sdata.labels[name]
    levels = element_levels(element)
    data = [level.transpose("y", "x").data for level in levels]
    kwargs = {
        "name": name,
        "affine": affine_yx(element, coordinate_system),
        "multiscale": len(data) > 1,
        "opacity": 0.6,
        "metadata": {METADATA_KEY: {"element": name, "kind": "labels"}},
    }
    features = labels_features(sdata, name)
    if features is not None:
        kwargs["features"] = features
    return (data if len(data) > 1 else data[0], kwargs, "labels")


def polygons_layer(sdata, name: str, coordinate_system: str) -> tuple:
    """A Shapes layer of the outlines of polygon element ``name``, or a label image above
    :data:`LARGE_POLYGON_SET` polygons (one label per instance, in the element's coordinates)."""
    shapes = sdata.shapes[name]
    affine = affine_yx(shapes, coordinate_system)
    rings, owners, holes = polygon_rings(shapes)
    meta = {"element": name, "kind": "polygons", "n_polygons": len(rings), "holes_not_drawn": holes}
    if len(rings) > LARGE_POLYGON_SET:
        return polygons_raster(rings, owners, name, affine, meta)
    return (
        [ring[:, ::-1] for ring in rings],
        {
            "name": name,
            "affine": affine,
            "shape_type": "polygon",
            "features": pd.DataFrame({"instance": np.asarray(owners)}),
            "face_color": "transparent",
            "edge_color": "#00e5ff",
            "edge_width": 0.0 if not rings else max(np.ptp(np.vstack(rings), axis=0).max() / 200.0, 1e-6),
            "metadata": {METADATA_KEY: meta},
        },
        "shapes",
    )


def polygons_raster(rings: list[np.ndarray], owners: list, name: str, affine: np.ndarray, meta: dict) -> tuple:
    """Many polygons drawn into an int32 label image (label = position of the instance + 1)."""
    from napari_casper.display.cell_raster import draw_polygons

    codes, instances = pd.factorize(pd.Index(owners))
    image, to_element = draw_polygons(rings, codes + 1, side=POLYGON_RASTER_SIDE)
    features = pd.DataFrame({"index": np.arange(1, len(instances) + 1), "instance": np.asarray(instances)})
    meta = {**meta, "raster_pixel": float(to_element[0, 0])}
    kwargs = {
        "name": f"{name} ({len(rings):,} polygons as labels)",
        "affine": affine @ to_element,
        "opacity": 0.6,
        "features": features,
        "metadata": {METADATA_KEY: meta},
    }
    return (image, kwargs, "labels")


def subsampled_points_layer(sdata, name: str, coordinate_system: str) -> tuple:
    """A Points layer of at most :data:`MAX_POINTS_SHOWN` points of element ``name`` (evenly spaced rows)."""
    element = sdata.points[name]
    every = element[["x", "y"]].compute().to_numpy(dtype=float)  # one pass over the points (x, y only)
    total = len(every)
    step = max(1, int(np.ceil(total / MAX_POINTS_SHOWN)))
    xy = every[::step]
    label = f"{name} ({len(xy):,} of {total:,} points)" if step > 1 else name
    affine = affine_yx(element, coordinate_system)
    span = float(np.ptp(xy, axis=0).max()) if len(xy) else 1.0
    kwargs = {
        "name": label,
        "affine": affine,
        "size": max(span / 400.0, 1e-6),
        "face_color": "#ff7f0e",
        "border_width": 0.0,
        "metadata": {METADATA_KEY: {"element": name, "kind": "points", "n_points": total, "shown_every": step}},
    }
    return (xy[:, ::-1].copy(), kwargs, "points")


def element_layers(sdata, coordinate_system: str, shown: set[str]) -> tuple[list[tuple], list[tuple[str, str]]]:
    """Layer tuples for the labels, polygon shapes and table-less points of ``sdata`` not in ``shown``
    (the images and spots already made), and ``(element, reason)`` for each element left out."""
    from spatialdata.transformations import get_transformation

    layers, skipped = [], []

    def placed(element, name) -> bool:
        systems = list(get_transformation(element, get_all=True))
        if coordinate_system in systems:
            return True
        skipped.append((name, f"not in coordinate system {coordinate_system!r} (it is in {systems})"))
        return False

    for name, element in sdata.labels.items():
        if placed(element, name):
            if set(element_levels(element)[0].dims) - {"y", "x"}:
                skipped.append((name, "3-D labels are not shown (2-D only)"))
                continue
            layers.append(labels_layer(sdata, name, coordinate_system))
    for name, shapes in sdata.shapes.items():
        if name in shown or not placed(shapes, name):
            continue
        kinds = set(shapes.geometry.geom_type)
        if holds_polygons(shapes):
            layers.append(polygons_layer(sdata, name, coordinate_system))
        elif kinds == {"Point"}:
            skipped.append((name, "points without a 'radius' column: not circles"))
        else:
            skipped.append((name, f"geometry {sorted(kinds)} is not shown (circles, polygons and multipolygons are)"))
    for name, element in sdata.points.items():
        if name not in shown and placed(element, name):
            layers.append(subsampled_points_layer(sdata, name, coordinate_system))
    for name, element in sdata.images.items():
        if name not in shown:
            placed(element, name)
    return layers, skipped
