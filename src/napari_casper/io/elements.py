"""SpatialData elements as napari-casper reads them: coordinate systems, affines, spot centres,
and which table annotates which spots.

Pure spatialdata/numpy/pandas; shared by the display layer, the CASPER workflow, regions and
histology.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_casper.errors import CasperInputError

if TYPE_CHECKING:
    import pandas as pd

#: key of napari-casper's entries in layer metadata and in table ``uns``
METADATA_KEY = "napari_casper"
#: ``uns["napari_casper"]["kind"]`` of tables that hold predictions, not measured expression
PREDICTION_KINDS = ("casper_predictions", "casper_imputed", "histology_predictions")
#: tables napari-casper writes that annotate spots without expression (each spot's tumour region)
ANNOTATION_KINDS = ("casper_region_assignment",)


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


def is_annotation_table(table) -> bool:
    """True for tables napari-casper wrote that annotate spots without expression (their regions)."""
    return table.uns.get(METADATA_KEY, {}).get("kind") in ANNOTATION_KINDS


def annotating_tables(sdata, element_name: str, *, measured_only: bool = True) -> list[str]:
    """Names of the tables that annotate ``element_name`` (measured expression only, by default;
    otherwise also predictions, never region assignments, which hold no genes)."""
    return [
        name
        for name, table in sdata.tables.items()
        if element_name in table_regions(table)
        and not is_annotation_table(table)
        and not (measured_only and is_prediction_table(table))
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


#: what :func:`spot_rows` does with spots that no table row annotates
MISSING_RULES = ("nan", "error", "drop")


@dataclass(frozen=True)
class SpotRows:
    """Which table row annotates which spot (the result of :func:`spot_rows`).

    ``rows[k]`` is the table row (position in the table) of spot ``spots[k]``, where ``spots``
    are positions in the instance ids asked for; ``rows[k]`` is -1 for a spot without a row
    (only under ``missing="nan"``). Under ``"nan"`` and ``"error"`` ``spots`` is ``0..n-1``.
    """

    rows: np.ndarray
    spots: np.ndarray

    @property
    def present(self) -> np.ndarray:
        """``(len(rows),)`` bool: the spot has a table row."""
        return self.rows >= 0

    def gather(self, per_row, fill=np.nan) -> np.ndarray:
        """``per_row`` values (one per table row, first axis) in spot order; ``fill`` where a spot has no row."""
        per_row = np.asarray(per_row)
        if self.present.all():
            return per_row[self.rows]
        dtype = per_row.dtype if per_row.dtype.kind in "fO" else np.result_type(per_row.dtype, np.asarray(fill).dtype)
        out = np.full((len(self.rows), *per_row.shape[1:]), fill, dtype=dtype)
        out[self.present] = per_row[self.rows[self.present]]
        return out

    def gather_obs(self, obs: pd.DataFrame) -> pd.DataFrame:
        """Rows of ``obs`` (a table's obs) in spot order, with a ``RangeIndex``; all-NaN rows where a spot has no row."""
        return obs.reset_index(drop=True).reindex(self.rows).reset_index(drop=True)


def region_rows(table, element_name: str) -> np.ndarray:
    """Positions of the rows of ``table`` that annotate element ``element_name`` (its ``region_key`` column)."""
    import pandas as pd

    region_key, _ = table_keys(table)
    column = table.obs[region_key]
    if isinstance(column.dtype, pd.CategoricalDtype):  # compare the few categories, not a million strings
        hit = np.flatnonzero(column.cat.categories.astype(str) == element_name)
        if len(column.cat.categories) == 1:
            return np.arange(table.n_obs) if hit.size else np.empty(0, dtype=np.int64)
        return np.flatnonzero(np.isin(column.cat.codes.to_numpy(), hit))
    return np.flatnonzero(column.astype(str).to_numpy() == element_name)


def table_keys(table) -> tuple[str, str]:
    attrs = table.uns.get("spatialdata_attrs", {})
    region_key, instance_key = attrs.get("region_key"), attrs.get("instance_key")
    if region_key not in table.obs or instance_key not in table.obs:
        raise CasperInputError(
            "the table does not say which spots its rows belong to (no region/instance key columns named in "
            "uns['spatialdata_attrs']); parse it with spatialdata.models.TableModel first."
        )
    return region_key, instance_key


def spot_rows(table, element_name: str, instance_ids, *, missing: str = "nan", table_name: str | None = None) -> SpotRows:
    """The row of ``table`` that annotates each spot ``instance_ids`` of element ``element_name``.

    The join of :func:`spatialdata.match_table_to_element` (rows whose ``region_key`` is the element
    and whose ``instance_key`` is the spot's id), computed as row positions instead of a reordered
    copy of the table, and keeping the spots without a row (spatialdata drops them silently).
    Measured at 1M spots: ~10 ms when the table lists the spots in order, ~40 ms for shuffled
    integer ids (a direct lookup table), ~1.5 s for string ids (hashing, as pandas does);
    ``match_table_to_element`` took 1.5-2.8 s with 50 genes.

    Parameters
    ----------
    table
        AnnData parsed by :class:`spatialdata.models.TableModel` (it may annotate several elements).
    element_name
        The element whose spots to look up.
    instance_ids
        The spots, in the order wanted (e.g. the element's index, a Points layer's rows).
    missing
        What happens to spots without a table row: ``"nan"`` keeps them with row -1 (callers show
        NaN there, :meth:`SpotRows.gather`); ``"error"`` raises :class:`CasperInputError`;
        ``"drop"`` leaves them out (``SpotRows.spots`` says which spots remain) and raises only
        when no spot has a row.
    table_name
        The table's name, for error messages.

    Raises
    ------
    CasperInputError
        The table lacks the spatialdata region/instance keys, repeats a spot id of the element,
        or (per ``missing``) misses spots.
    """
    if missing not in MISSING_RULES:
        raise ValueError(f"missing must be one of {MISSING_RULES}, not {missing!r}")
    _, instance_key = table_keys(table)
    label = f"table {table_name!r}" if table_name else "the table"
    mine = region_rows(table, element_name)
    ids = np.asarray(instance_ids)
    table_ids = table.obs[instance_key].to_numpy()
    if len(mine) == table.n_obs and len(ids) == table.n_obs and np.array_equal(table_ids, ids):
        rows = np.arange(table.n_obs, dtype=np.int64)  # the table lists the element's spots in order
    else:
        rows = _lookup(table_ids[mine], mine, ids)
        if rows is None:
            raise CasperInputError(
                f"{label} repeats spot ids of element {element_name!r}; each spot needs one row "
                "(drop the duplicate rows)."
            )
    spots = np.arange(len(rows), dtype=np.int64)
    lacking = int((rows < 0).sum())
    if lacking and missing == "error":
        raise CasperInputError(
            f"{lacking} of the {len(rows)} spots of {element_name!r} have no row in {label}: every spot needs "
            "one here; choose the table that annotates all of them, or drop the spots without a row."
        )
    if missing == "drop":
        if len(rows) and lacking == len(rows):
            raise CasperInputError(
                f"no row of {label} matches a spot of {element_name!r}: the instance ids of the table and "
                "the element disagree (check their types, e.g. int vs str)."
            )
        spots = np.flatnonzero(rows >= 0)
        rows = rows[spots]
    return SpotRows(rows, spots)


def _lookup(keys: np.ndarray, values: np.ndarray, ids: np.ndarray) -> np.ndarray | None:
    """``values[i]`` where ``keys[i] == id`` for each of ``ids`` (-1: no key); None when ``keys`` repeat."""
    import pandas as pd

    if len(keys) and keys.dtype.kind in "iu" and ids.dtype.kind in "iu" and keys.min() >= 0 and keys.max() < 4 * len(keys) + 1024:
        # small non-negative integer ids (the usual 0..n-1): a direct lookup table, ~5x faster than hashing
        size = int(keys.max()) + 1
        if np.bincount(keys, minlength=size).max() > 1:
            return None
        table = np.full(size, -1, dtype=np.int64)
        table[keys] = values
        rows = table.take(ids, mode="clip")
        outside = (ids < 0) | (ids >= size)
        if outside.any():
            rows[outside] = -1
        return rows
    index = pd.Index(keys)
    if not index.is_unique:
        return None
    position = index.get_indexer(ids)
    return np.where(position >= 0, values[np.maximum(position, 0)] if len(values) else -1, -1).astype(np.int64)


def spot_positions(sdata, element_name: str) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """Intrinsic ``(n, 2)`` (x, y) centres, per-spot diameters and instance ids of a spot element:
    circles, points, or cells drawn as polygons or labels (:mod:`napari_casper.io.element_centres`)."""
    kind = cell_element_kind(sdata, element_name)
    if kind == "polygons":
        from napari_casper.io.element_centres import polygon_centres

        return polygon_centres(sdata.shapes[element_name])  # centroids, equal-area discs
    if kind == "labels":
        from napari_casper.io.element_centres import label_centres

        return label_centres(element_levels(sdata.labels[element_name])[0])  # pixel means, equal-area discs
    if element_name in sdata.shapes:
        shapes = sdata.shapes[element_name]
        geom_type = set(shapes.geometry.geom_type)
        if geom_type != {"Point"} or "radius" not in shapes:
            raise CasperInputError(
                f"shapes element {element_name!r} holds {sorted(geom_type)}, not spots (circles with a "
                "'radius' column, or polygons); choose the element that holds the spots."
            )
        xy = np.c_[shapes.geometry.x.to_numpy(), shapes.geometry.y.to_numpy()]
        return xy, 2.0 * shapes["radius"].to_numpy(dtype=float), shapes.index
    if element_name in sdata.points:
        frame = sdata.points[element_name].compute()
        xy = frame[["x", "y"]].to_numpy(dtype=float)
        from napari_casper.io.convert import estimate_spot_diameter

        diameter = np.full(len(xy), estimate_spot_diameter(xy, 1.0, default=1.0))  # a lone point is drawn 1 unit wide
        return xy, diameter, frame.index
    raise CasperInputError(f"no shapes or points element named {element_name!r}.")


def spot_element_names(sdata) -> list[str]:
    """Names of elements that hold spots: circle shapes; points, polygons and labels that a table
    annotates (cells: their centres are the spots). Points without a table, such as millions of
    transcripts, are shown as a sample, not as spots."""
    names = [n for n, s in sdata.shapes.items() if "radius" in s and set(s.geometry.geom_type) == {"Point"}]
    annotated = [n for n, s in sdata.shapes.items() if holds_polygons(s) and _has_genes(sdata, n)]
    annotated += [n for n in sdata.labels if _has_genes(sdata, n)]
    return names + annotated + [n for n in sdata.points if annotating_tables(sdata, n, measured_only=False)]


def spot_element(sdata, element_name: str):
    """The element holding spots ``element_name`` (circles, points, polygons or labels)."""
    for group in ("shapes", "points", "labels"):
        if element_name in getattr(sdata, group):
            return getattr(sdata, group)[element_name]
    raise CasperInputError(f"no spot element named {element_name!r}; the spot elements are {spot_element_names(sdata)}.")


def _has_genes(sdata, element_name: str) -> bool:
    """Whether a table of measured genes annotates ``element_name`` (not regions, not predictions):
    what makes polygons or labels cells rather than drawn regions."""
    return any(sdata.tables[name].n_vars > 0 for name in annotating_tables(sdata, element_name))


def holds_polygons(shapes) -> bool:
    """Whether a shapes element holds polygons or multipolygons only (cells, bins or regions)."""
    kinds = set(shapes.geometry.geom_type)
    return bool(kinds) and kinds <= {"Polygon", "MultiPolygon"}


def element_levels(element) -> list:
    """The DataArrays of a raster element, finest first: one for a single-scale element, one per
    level (``scale0``, ``scale1``, ...) for a multiscale one (a DataTree)."""
    from xarray import DataTree

    if isinstance(element, DataTree):
        keys = sorted(element.keys(), key=lambda k: int(str(k).replace("scale", "")))
        return [next(iter(element[key].ds.data_vars.values())) for key in keys]
    return [element]


def cell_element_kind(sdata, element_name: str) -> str | None:
    """``"polygons"`` or ``"labels"`` when ``element_name`` holds cells drawn as such (their centres
    are used as spots), else None (circles and points are spots themselves)."""
    if element_name in sdata.labels:
        return "labels"
    if element_name in sdata.shapes and holds_polygons(sdata.shapes[element_name]):
        return "polygons"
    return None
