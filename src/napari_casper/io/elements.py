"""SpatialData elements as napari-casper reads them: coordinate systems, affines, spot centres,
and which table annotates which spots.

Pure spatialdata/numpy/pandas; shared by the display layer, the CASPER workflow, regions and
histology.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from napari_casper.errors import CasperInputError

#: key of napari-casper's entries in layer metadata and in table ``uns``
METADATA_KEY = "napari_casper"
#: ``uns["napari_casper"]["kind"]`` of tables that hold predictions, not measured expression
PREDICTION_KINDS = ("casper_predictions", "casper_imputed", "histology_predictions")


@dataclass(frozen=True)
class SpotTable:
    """The table annotating a spot element, and how its rows map to the element's instances."""

    name: str
    region_key: str
    instance_key: str


def default_coordinate_system(sdata) -> str:
    """``"global"`` when present, otherwise the first coordinate system of the object."""
    systems = list(sdata.coordinate_systems)
    if not systems:
        raise CasperInputError("the SpatialData object has no coordinate system: its elements carry no transformation.")
    return "global" if "global" in systems else systems[0]


def affine_yx(element, coordinate_system: str) -> np.ndarray:
    """The 3x3 affine (napari's (y, x) axis order) from ``element`` to ``coordinate_system``."""
    from spatialdata.transformations import get_transformation

    transforms = get_transformation(element, get_all=True)
    if coordinate_system not in transforms:
        raise CasperInputError(
            f"the element is not in coordinate system {coordinate_system!r} (it is in {sorted(transforms)}): "
            "choose one of those, or add a transformation to it."
        )
    return np.asarray(
        transforms[coordinate_system].to_affine_matrix(input_axes=("y", "x"), output_axes=("y", "x")), dtype=float
    )


def mean_scale(affine: np.ndarray) -> float:
    """Mean linear scale of a 3x3 affine (how much one data unit grows in world units)."""
    return float(np.sqrt(abs(np.linalg.det(affine[:2, :2]))))


def table_regions(table) -> list[str]:
    """The elements a SpatialData table annotates (``uns["spatialdata_attrs"]["region"]``, as a list)."""
    region = table.uns.get("spatialdata_attrs", {}).get("region")
    return [region] if isinstance(region, str) else list(region or [])


def is_prediction_table(table) -> bool:
    """True for tables napari-casper wrote with predictions (CASPER, batch imputation, histology)."""
    return table.uns.get(METADATA_KEY, {}).get("kind") in PREDICTION_KINDS


def annotating_tables(sdata, element_name: str, *, measured_only: bool = True) -> list[str]:
    """Names of the tables that annotate ``element_name`` (measured expression only, by default)."""
    return [
        name
        for name, table in sdata.tables.items()
        if element_name in table_regions(table) and not (measured_only and is_prediction_table(table))
    ]


def spot_table(sdata, element_name: str) -> SpotTable | None:
    """The table that annotates ``element_name``, or None.

    A measured table when there is one: napari-casper's prediction tables beside it (e.g. a batch
    imputation written into the store) are never taken for the measurements. Spots that only
    predictions annotate (saved histology spots) get their prediction table; CASPER results
    tables are left out, they are shown as their own layers.
    """
    names = annotating_tables(sdata, element_name) or [
        name
        for name in annotating_tables(sdata, element_name, measured_only=False)
        if sdata.tables[name].uns[METADATA_KEY]["kind"] != "casper_predictions"
    ]
    if not names:
        return None
    attrs = sdata.tables[names[0]].uns["spatialdata_attrs"]
    return SpotTable(names[0], attrs["region_key"], attrs["instance_key"])


def spot_positions(sdata, element_name: str) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """Intrinsic ``(n, 2)`` (x, y) centres, per-spot diameters and instance ids of a spot element."""
    if element_name in sdata.shapes:
        shapes = sdata.shapes[element_name]
        geom_type = set(shapes.geometry.geom_type)
        if geom_type != {"Point"} or "radius" not in shapes:
            raise CasperInputError(
                f"shapes element {element_name!r} holds {sorted(geom_type)}, not spots (circles with a "
                "'radius' column); choose the element that holds the spots."
            )
        xy = np.c_[shapes.geometry.x.to_numpy(), shapes.geometry.y.to_numpy()]
        return xy, 2.0 * shapes["radius"].to_numpy(dtype=float), shapes.index
    if element_name in sdata.points:
        frame = sdata.points[element_name].compute()
        xy = frame[["x", "y"]].to_numpy(dtype=float)
        from napari_casper.io.convert import estimate_spot_diameter

        diameter = np.full(len(xy), estimate_spot_diameter(xy, 1.0) if len(xy) > 1 else 1.0)
        return xy, diameter, frame.index
    raise CasperInputError(f"no shapes or points element named {element_name!r}.")


def spot_element_names(sdata) -> list[str]:
    """Names of elements that hold spots: circle shapes and points."""
    names = [n for n, s in sdata.shapes.items() if "radius" in s and set(s.geometry.geom_type) == {"Point"}]
    return names + list(sdata.points)
