"""Regions <-> SpatialData: a polygons shapes element plus a table of class, name, author, time.

Saving writes two elements, ``<name>`` (shapes: one polygon per region, in the data coordinates
of the layer they were drawn on, with that layer's affine as the transformation to the coordinate
system) and ``<name>_table`` (one row per region: ``class``, ``name``, ``author``, ``timestamp``,
``colour``, ``shape_type``, ``origin`` (drawn / suggested); ``uns["region_classes"]`` keeps the whole legend). Both elements
are written as one commit by :func:`napari_casper.io.store_writes.write_new_elements`; without an explicit name the
next free version is taken (``regions``, ``regions_2``, ...), so earlier annotations are never
replaced unless ``overwrite=True`` is asked for.

:func:`shapes_element` and :func:`element_geometries` are how any napari shape is written to
and read from a shapes element, here and by the ``File > Save Layers`` writer. spatialdata 0.7
shapes elements hold only ``Polygon``, ``MultiPolygon`` and ``Point``, so a path or line is
stored as a thin outline polygon (:func:`line_outline`) with its exact vertices as WKT in the
column ``line_wkt``; the column ``shape_type`` keeps napari's type, so ellipses and rectangles
come back as such.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from napari_casper.errors import CasperInputError
from napari_casper.regions.classes import RegionClasses
from napari_casper.regions.geometry import DRAWN, RegionSet, shape_vertices, valid_polygon

TABLE_SUFFIX = "_table"
#: the table of each spot's region, beside a saved regions element ``name`` (annotating the spots)
SPOTS_SUFFIX = "_spots"
SPOT_ASSIGNMENT_KIND = "casper_region_assignment"
DEFAULT_REGIONS_NAME = "regions"
REGIONS_KIND = "casper_regions"
_REGION_KEY = "region"
_INSTANCE_KEY = "shape_id"
#: shapes-element columns: napari's shape type, and the exact WKT of a path or line ("" otherwise)
SHAPE_TYPE_COLUMN = "shape_type"
LINE_COLUMN = "line_wkt"
#: half-width of the outline polygon that stands in for a path or line in a shapes element,
#: as a fraction of the line's length
LINE_HALF_WIDTH = 1e-3


@dataclass(frozen=True)
class SavedRegions:
    """Where :func:`save_regions` put the regions (already re-read from disk)."""

    store: Path
    shapes_name: str
    table_name: str
    n_regions: int
    #: the table of each spot's region class and name (annotating the spots), when spots were given
    spots_table: str | None = None
    spots_element: str | None = None

    def message(self) -> str:
        text = f"Saved {self.n_regions} regions to {self.store} as shapes {self.shapes_name!r} + table {self.table_name!r}"
        if self.spots_table:
            text += f", and each spot's region as table {self.spots_table!r} annotating {self.spots_element!r}"
        return text + "."


def line_outline(line):
    """The thin polygon standing in for ``line`` in a shapes element: flat ends, half-width
    :data:`LINE_HALF_WIDTH` times the line's length."""
    return line.buffer(LINE_HALF_WIDTH * line.length, cap_style="flat", join_style="mitre")


def stored_geometry(geometry) -> tuple[object, str]:
    """``(polygon, line_wkt)``: what a SpatialData shapes element holds for a true geometry.

    Polygons are made valid (:func:`valid_polygon`) and ``line_wkt`` is ``""``; a
    ``LineString`` becomes its :func:`line_outline` and ``line_wkt`` its exact WKT.
    """
    import shapely

    if geometry.geom_type == "LineString":
        return line_outline(geometry), shapely.to_wkt(geometry, rounding_precision=-1)
    return valid_polygon(geometry), ""


def restored_geometry(stored, line_wkt: str | None = None):
    """The true geometry of a stored one: the line recorded in ``line_wkt`` while ``stored`` is
    still its outline (not edited elsewhere), else ``stored`` itself."""
    import shapely

    if not isinstance(line_wkt, str) or not line_wkt:
        return stored
    try:
        line = shapely.from_wkt(line_wkt)
    except shapely.errors.ShapelyError:
        return stored
    if line is None or line.geom_type != "LineString" or line.length == 0:
        return stored
    outline = line_outline(line)
    return line if stored.symmetric_difference(outline).area <= 1e-3 * outline.area else stored


def shapes_element(geometries: list, shape_types: list[str], transformations: dict):
    """A SpatialData shapes element holding ``geometries`` (one row each, index ``0..n-1``).

    Parameters
    ----------
    geometries
        ``n`` true shapely geometries in (x, y) data coordinates
        (:func:`napari_casper.regions.geometry.shape_geometry`).
    shape_types
        ``n`` napari shape types, kept in the column ``shape_type``.
    transformations
        ``{coordinate system: spatialdata transformation}`` from data coordinates.
    """
    import geopandas as gpd
    from spatialdata.models import ShapesModel

    stored = [stored_geometry(g) for g in geometries]
    frame = gpd.GeoDataFrame(
        {SHAPE_TYPE_COLUMN: [str(t) for t in shape_types], LINE_COLUMN: [wkt for _, wkt in stored]},
        geometry=[polygon for polygon, _ in stored],
        index=np.arange(len(stored)),
    )
    return ShapesModel.parse(frame, transformations=transformations)


def element_geometries(element) -> list:
    """The true geometries (``LineString`` for stored paths and lines) of a shapes element's rows."""
    lines = element[LINE_COLUMN] if LINE_COLUMN in element else [""] * len(element)
    return [restored_geometry(g, wkt) for g, wkt in zip(element.geometry, lines)]


def _current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"


def regions_to_elements(regions: RegionSet, name: str, *, author: str | None = None):
    """``(shapes element, table)`` for ``regions``, to be stored as ``name`` and ``name + "_table"``."""
    import anndata as ad
    import pandas as pd
    from spatialdata.models import TableModel
    from spatialdata.transformations import Affine

    if len(regions) == 0:
        raise CasperInputError("there are no regions to save: draw at least one shape first.")
    now = datetime.now(UTC).isoformat(timespec="seconds")
    n = len(regions)
    default_author = author or _current_user()
    authors = [a or default_author for a in (regions.authors or [""] * n)]
    timestamps = [t or now for t in (regions.timestamps or [""] * n)]
    transform = Affine(regions.affine, input_axes=("y", "x"), output_axes=("y", "x"))
    shapes = shapes_element(regions.data_geometries(), regions.shape_types, {regions.coordinate_system: transform})
    obs = pd.DataFrame(
        {
            "class": regions.classes,
            "name": regions.names,
            "author": authors,
            "timestamp": timestamps,
            "colour": regions.colours(),
            "shape_type": regions.shape_types,
            "origin": regions.origins,
            _REGION_KEY: pd.Categorical([name] * n),
            _INSTANCE_KEY: np.arange(n),
        },
        index=[str(i) for i in range(n)],
    )
    table = ad.AnnData(obs=obs)
    table.uns["region_classes"] = regions.palette.to_uns()
    table.uns["napari_casper"] = {"kind": REGIONS_KIND, "coordinate_system": regions.coordinate_system}
    return shapes, TableModel.parse(table, region=name, region_key=_REGION_KEY, instance_key=_INSTANCE_KEY)


def spot_assignment_table(spots, regions: RegionSet, name: str, *, precedence: str = "drawn"):
    """A table annotating the spots of ``spots`` (:class:`~napari_casper.regions.spots.SpotContext`):
    each spot's region ``class`` and region ``name`` (``outside`` for spots in none; where regions
    overlap, ``precedence`` decides), saved beside regions ``name``."""
    import anndata as ad
    import pandas as pd
    from spatialdata.models import TableModel

    from napari_casper.regions.spots import spot_region_labels

    labels = spot_region_labels(spots, regions, precedence=precedence)
    obs = pd.DataFrame(
        {
            "class": labels["class"].to_numpy(),
            "name": labels["name"].to_numpy(),
            "region": pd.Categorical([spots.element] * spots.n_spots),
            "spot_id": np.asarray(spots.instance_ids),
        },
        index=[str(i) for i in range(spots.n_spots)],
    )
    table = ad.AnnData(obs=obs)
    table.uns["napari_casper"] = {"kind": SPOT_ASSIGNMENT_KIND, "regions": name, "precedence": precedence}
    return TableModel.parse(table, region=spots.element, region_key="region", instance_key="spot_id")


def next_regions_name(sdata, base: str = DEFAULT_REGIONS_NAME) -> str:
    """The first of ``base``, ``base_2``, ... whose shapes *and* table names are both free."""
    from napari_casper.io.stores import element_names, next_free_name

    taken = element_names(sdata)
    taken |= {n[: -len(TABLE_SUFFIX)] for n in taken if n.endswith(TABLE_SUFFIX)}
    return next_free_name(taken, base)


def save_regions(
    store: str | Path,
    regions: RegionSet,
    name: str | None = None,
    *,
    overwrite: bool = False,
    author: str | None = None,
    spots=None,
    precedence: str = "drawn",
) -> SavedRegions:
    """Write ``regions`` into the SpatialData store at ``store`` and check they are on disk.

    Parameters
    ----------
    name
        Shapes element name (the table is ``name + "_table"``). None takes the next free
        version of ``"regions"``. An existing name is refused unless ``overwrite``.
    overwrite
        Replace the elements ``name`` and ``name_table`` (together, atomically).
    author
        Recorded per region when the regions carry no authors yet (default: the login name).
    spots
        A :class:`~napari_casper.regions.spots.SpotContext`: each of its spots' region class and name
        is saved too, as table ``name + "_spots"`` annotating the spots (cells drawn as labels or
        polygons included), in the same commit; ``precedence`` settles overlaps.
    """
    from napari_casper.io.store_writes import finish_interrupted_writes, write_new_elements
    from napari_casper.io.stores import element_names, read_spatialdata

    store = Path(store)
    finish_interrupted_writes(store)  # a killed save's elements count when the next free name is chosen
    current = read_spatialdata(store)
    existing = element_names(current)
    if name is None:
        name = next_regions_name(current)
    table_name = name + TABLE_SUFFIX
    spots_table = name + SPOTS_SUFFIX if spots is not None else None
    clash = sorted({name, table_name, spots_table} & existing)  # (None is no element's name)
    if clash and not overwrite:
        raise CasperInputError(
            f"{store} already has {clash}; nothing was written. Save as a new version "
            f"(e.g. {next_regions_name(current, name)!r}) or tick overwrite to replace them."
        )
    shapes, table = regions_to_elements(regions, name, author=author)
    elements = {name: shapes, table_name: table}
    if spots_table:
        elements[spots_table] = spot_assignment_table(spots, regions, name, precedence=precedence)
    write_new_elements(store, elements, overwrite=overwrite)  # one commit: all or none
    reread = read_spatialdata(store)
    if name not in reread.shapes or table_name not in reread.tables or len(reread.shapes[name]) != len(regions):
        raise CasperInputError(f"writing regions to {store} did not persist {name!r}: check the disk and permissions.")
    return SavedRegions(store, name, table_name, len(regions), spots_table, spots.element if spots is not None else None)


def list_region_elements(sdata) -> list[str]:
    """Names of shapes elements holding polygons (regions), saved by napari-casper or not."""
    from napari_casper.io.elements import holds_polygons

    return [name for name, shapes in sdata.shapes.items() if holds_polygons(shapes)]


def _as_sdata(source):
    if isinstance(source, (str, Path)):
        from napari_casper.io.stores import read_spatialdata

        return read_spatialdata(source)
    return source


def load_regions(source, name: str | None = None, *, coordinate_system: str | None = None) -> RegionSet:
    """Regions stored in element ``name`` of a SpatialData object or store, ready to edit.

    Classes, names, colours and authors come from the element's table (regions without one
    become class ``"other"``); rectangles, ellipses, paths and lines come back as such. ``coordinate_system``
    defaults to the one they were saved in.
    """
    import pandas as pd
    from spatialdata.transformations import get_transformation

    from napari_casper.io.elements import affine_yx, spot_rows, spot_table

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
        "origin": DRAWN,
    }
    info = pd.DataFrame({column: [default] * len(element) for column, default in defaults.items()}, index=element.index)
    if SHAPE_TYPE_COLUMN in element:  # saved by this plugin (regions or File > Save Layers)
        info["shape_type"] = [str(v) if isinstance(v, str) and v else "polygon" for v in element[SHAPE_TYPE_COLUMN]]
    palette = RegionClasses()
    if table is not None:
        obs = spot_rows(table, name, element.index, missing="nan", table_name=link.name).gather_obs(table.obs)
        for column, default in defaults.items():
            if column in obs:
                info[column] = [default if pd.isna(v) else str(v) for v in obs[column]]
        palette = RegionClasses.from_uns(table.uns.get("region_classes")) or palette
        for cls, colour in zip(info["class"], info["colour"]):
            if colour and cls not in palette:
                palette.add(cls, colour)
    geometries, rows = [], []
    for geometry, (cls, label, author, stamp, saved_type, _, origin) in zip(
        element_geometries(element), info.itertuples(index=False, name=None)
    ):
        shapes = shape_vertices(geometry, saved_type)  # a self-crossing outline saved as several parts
        for vertices, shape_type in shapes:
            geometries.append(vertices)
            rows.append((shape_type, cls, label if len(shapes) == 1 else "", author, stamp, origin))
    shape_types, classes, names, authors, stamps, origins = (list(c) for c in zip(*rows)) if rows else ([],) * 6
    return RegionSet(geometries, shape_types, classes, names, affine, cs, palette, authors, stamps, origins)
