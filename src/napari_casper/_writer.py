"""npe2 writer: save Shapes/Points layers as new elements of a SpatialData store.

Writing into an existing store adds a new element named after the layer and never replaces
an element that is already there; a path that does not exist yet becomes a new store.
Shapes keep their true geometry, by the same code as the Regions widget
(:func:`napari_casper.regions.geometry.shape_geometry`,
:func:`napari_casper.regions.store.shapes_element`): polygons and rectangles as their vertices,
ellipses as 144-vertex polygons, paths and lines as thin outline polygons with their exact vertices
in the column ``line_wkt``, napari's type in the column ``shape_type``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_casper.errors import CasperInputError


def _layer_element(data, meta: dict, layer_type: str):
    from spatialdata.transformations import Affine

    affine = np.asarray(meta.get("affine", np.eye(3)), dtype=float)
    transform = Affine(affine, input_axes=("y", "x"), output_axes=("y", "x"))
    cs = meta.get("metadata", {}).get("napari_casper", {}).get("coordinate_system", "global")
    if layer_type == "points":
        from napari_casper.io.convert import spots_element

        xy = np.asarray(data)[:, ::-1]
        size = np.atleast_1d(meta.get("size", 1.0)).astype(float)
        scale = float(np.sqrt(abs(np.linalg.det(affine[:2, :2])))) or 1.0
        element = spots_element(xy, float(np.median(size)) / scale, transformation=transform, coordinate_system=cs)
        return element
    from napari_casper.regions.geometry import shape_geometry
    from napari_casper.regions.store import shapes_element

    shapes = list(data)
    if not shapes:
        raise CasperInputError("the Shapes layer is empty: draw at least one shape before saving.")
    shape_types = meta.get("shape_type", "polygon")
    shape_types = [shape_types] * len(shapes) if isinstance(shape_types, str) else [str(t) for t in shape_types]
    if len(shape_types) != len(shapes):
        raise CasperInputError(f"the Shapes layer has {len(shapes)} shapes but {len(shape_types)} shape types.")
    geometries = [shape_geometry(vertices, shape_type, i) for i, (vertices, shape_type) in enumerate(zip(shapes, shape_types))]
    return shapes_element(geometries, shape_types, {cs: transform})


def write_layers(path: str, layer_data: list[tuple]) -> list[str]:
    """Write each (data, meta, type) as a new element of the SpatialData store at ``path``."""
    import spatialdata as sd

    from napari_casper.io.store_writes import save_spatialdata, write_new_element
    from napari_casper.io.stores import is_spatialdata_store

    target = Path(path)
    if target.suffix != ".zarr":
        target = target.with_suffix(".zarr")
    if not target.exists():
        save_spatialdata(sd.SpatialData(), target)
    elif not is_spatialdata_store(target):
        raise CasperInputError(f"{target} exists and is not a SpatialData store: choose another path.")
    for data, meta, layer_type in layer_data:
        name = str(meta.get("name", layer_type)).replace(" ", "_").replace(":", "_")
        write_new_element(target, name, _layer_element(data, meta, layer_type))
    return [str(target)]
