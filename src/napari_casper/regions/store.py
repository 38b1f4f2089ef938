"""Regions <-> SpatialData: a polygons shapes element plus a table of class, name, author, time.

Saving writes two elements, ``<name>`` (shapes: one polygon per region, in the data coordinates
of the layer they were drawn on, with that layer's affine as the transformation to the coordinate
system) and ``<name>_table`` (one row per region: ``class``, ``name``, ``author``, ``timestamp``,
``colour``, ``shape_type``; ``uns["region_classes"]`` keeps the whole legend). Each element is
written atomically by :func:`napari_casper.io.stores.write_new_element`; without an explicit name the
next free version is taken (``regions``, ``regions_2``, ...), so earlier annotations are never
replaced unless ``overwrite=True`` is asked for.
"""

from __future__ import annotations

import getpass
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from napari_casper.errors import CasperInputError
from napari_casper.regions.classes import RegionClasses
from napari_casper.regions.geometry import RegionSet, ellipse_corners_yx, polygon_vertices_yx, valid_polygon

TABLE_SUFFIX = "_table"
DEFAULT_REGIONS_NAME = "regions"
REGIONS_KIND = "casper_regions"
_REGION_KEY = "region"
_INSTANCE_KEY = "shape_id"


@dataclass(frozen=True)
class SavedRegions:
    """Where :func:`save_regions` put the regions (already re-read from disk)."""

    store: Path
    shapes_name: str
    table_name: str
    n_regions: int

    def message(self) -> str:
        return (
            f"Saved {self.n_regions} regions to {self.store} as shapes {self.shapes_name!r} "
            f"+ table {self.table_name!r}."
        )


def _current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"


def regions_to_elements(regions: RegionSet, name: str, *, author: str | None = None):
    """``(shapes element, table)`` for ``regions``, to be stored as ``name`` and ``name + "_table"``."""
    import anndata as ad
    import geopandas as gpd
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Affine

    if len(regions) == 0:
        raise CasperInputError("there are no regions to save: draw at least one shape first.")
    now = datetime.now(UTC).isoformat(timespec="seconds")
    n = len(regions)
    default_author = author or _current_user()
    authors = [a or default_author for a in (regions.authors or [""] * n)]
    timestamps = [t or now for t in (regions.timestamps or [""] * n)]
    transform = Affine(regions.affine, input_axes=("y", "x"), output_axes=("y", "x"))
    shapes = ShapesModel.parse(
        gpd.GeoDataFrame(geometry=[valid_polygon(p) for p in regions.data_polygons()], index=np.arange(n)),
        transformations={regions.coordinate_system: transform},
    )
    obs = pd.DataFrame(
        {
            "class": regions.classes,
            "name": regions.names,
            "author": authors,
            "timestamp": timestamps,
            "colour": regions.colours(),
            "shape_type": regions.shape_types,
            _REGION_KEY: pd.Categorical([name] * n),
            _INSTANCE_KEY: np.arange(n),
        },
        index=[str(i) for i in range(n)],
    )
    table = ad.AnnData(obs=obs)
    table.uns["region_classes"] = regions.palette.to_uns()
    table.uns["napari_casper"] = {"kind": REGIONS_KIND, "coordinate_system": regions.coordinate_system}
    return shapes, TableModel.parse(table, region=name, region_key=_REGION_KEY, instance_key=_INSTANCE_KEY)


def _element_names(sdata) -> set[str]:
    from napari_casper.io.stores import ELEMENT_GROUPS

    return {name for group in ELEMENT_GROUPS for name in getattr(sdata, group)}


def next_regions_name(sdata, base: str = DEFAULT_REGIONS_NAME) -> str:
    """The first of ``base``, ``base_2``, ... whose shapes *and* table names are both free."""
    from napari_casper.io.stores import next_free_name

    taken = _element_names(sdata)
    taken |= {n[: -len(TABLE_SUFFIX)] for n in taken if n.endswith(TABLE_SUFFIX)}
    return next_free_name(taken, base)


def save_regions(
    store: str | Path,
    regions: RegionSet,
    name: str | None = None,
    *,
    overwrite: bool = False,
    author: str | None = None,
) -> SavedRegions:
    """Write ``regions`` into the SpatialData store at ``store`` and check they are on disk.

    Parameters
    ----------
    name
        Shapes element name (the table is ``name + "_table"``). None takes the next free
        version of ``"regions"``. An existing name is refused unless ``overwrite``.
    overwrite
        Replace the elements ``name`` and ``name_table`` (each atomically).
    author
        Recorded per region when the regions carry no authors yet (default: the login name).
    """
    from napari_casper.io.stores import read_spatialdata, reconsolidate, write_new_element

    store = Path(store)
    current = read_spatialdata(store)
    existing = _element_names(current)
    if name is None:
        name = next_regions_name(current)
    table_name = name + TABLE_SUFFIX
    clash = sorted({name, table_name} & existing)
    if clash and not overwrite:
        raise CasperInputError(
            f"{store} already has {clash}; nothing was written. Save as a new version "
            f"(e.g. {next_regions_name(current, name)!r}) or tick overwrite to replace them."
        )
    shapes, table = regions_to_elements(regions, name, author=author)
    shapes_path = write_new_element(store, name, shapes, overwrite=overwrite)
    try:
        write_new_element(store, table_name, table, overwrite=overwrite)
    except Exception:
        if name not in existing:  # do not leave polygons without their classes behind
            shutil.rmtree(shapes_path, ignore_errors=True)
            reconsolidate(store)
        raise
    reread = read_spatialdata(store)
    if name not in reread.shapes or table_name not in reread.tables or len(reread.shapes[name]) != len(regions):
        raise CasperInputError(f"writing regions to {store} did not persist {name!r}: check the disk and permissions.")
    return SavedRegions(store, name, table_name, len(regions))


def list_region_elements(sdata) -> list[str]:
    """Names of shapes elements holding polygons (regions), saved by napari-casper or not."""
    names = []
    for name, shapes in sdata.shapes.items():
        kinds = set(shapes.geometry.geom_type)
        if kinds and kinds <= {"Polygon", "MultiPolygon"}:
            names.append(name)
    return names


def _as_sdata(source):
    if isinstance(source, (str, Path)):
        from napari_casper.io.stores import read_spatialdata

        return read_spatialdata(source)
    return source


def load_regions(source, name: str | None = None, *, coordinate_system: str | None = None) -> RegionSet:
    """Regions stored in element ``name`` of a SpatialData object or store, ready to edit.

    Classes, names, colours and authors come from the element's table (regions without one
    become class ``"other"``); rectangles and ellipses come back as such. ``coordinate_system``
    defaults to the one they were saved in.
    """
    from spatialdata.transformations import get_transformation

    from napari_casper.io.elements import affine_yx, spot_table

    sdata = _as_sdata(source)
    available = list_region_elements(sdata)
    if name is None:
        if len(available) != 1:
            raise CasperInputError(
                f"choose which regions to load: the data holds {available or 'no polygon shapes element'}."
            )
        name = available[0]
    if name not in available:
        raise CasperInputError(
            f"{name!r} is not a regions (polygons) element; the data holds {available}: pick one of those."
        )
    element = sdata.shapes[name]
    link = spot_table(sdata, name)
    table = sdata.tables[link.name] if link else None
    systems = sorted(get_transformation(element, get_all=True))
    saved_in = table.uns.get("napari_casper", {}).get("coordinate_system") if table is not None else None
    cs = coordinate_system or (saved_in if saved_in in systems else systems[0])
    if cs not in systems:
        raise CasperInputError(
            f"regions {name!r} are in coordinate system(s) {systems}, not {cs!r}: load them in one of those, "
            "or add a transformation to the element (spatialdata.transformations.set_transformation)."
        )
    affine = affine_yx(element, cs)
    defaults = {
        "class": "other",
        "name": "",
        "author": "unknown",
        "timestamp": "",
        "shape_type": "polygon",
        "colour": "",
    }
    info = pd.DataFrame({column: [default] * len(element) for column, default in defaults.items()}, index=element.index)
    palette = RegionClasses()
    if table is not None:
        obs = table.obs.set_index(link.instance_key).reindex(element.index)
        for column, default in defaults.items():
            if column in obs:
                info[column] = [default if pd.isna(v) else str(v) for v in obs[column]]
        palette = RegionClasses.from_uns(table.uns.get("region_classes")) or palette
        for cls, colour in zip(info["class"], info["colour"]):
            if colour and cls not in palette:
                palette.add(cls, colour)
    geometries, rows = [], []
    for geometry, (cls, label, author, stamp, saved_type, _) in zip(
        element.geometry, info.itertuples(index=False, name=None)
    ):
        parts = list(getattr(geometry, "geoms", [geometry]))  # a self-crossing outline saved as several parts
        for part in parts:
            shape_type = saved_type if len(parts) == 1 else "polygon"
            if shape_type == "ellipse":
                vertices = ellipse_corners_yx(part)
            else:
                vertices = polygon_vertices_yx(part)
                if not (shape_type == "rectangle" and len(vertices) == 4):
                    shape_type = "polygon"
            geometries.append(vertices)
            rows.append((shape_type, cls, label if len(parts) == 1 else "", author, stamp))
    shape_types, classes, names, authors, stamps = (list(column) for column in zip(*rows)) if rows else ([],) * 5
    return RegionSet(geometries, shape_types, classes, names, affine, cs, palette, authors, stamps)
