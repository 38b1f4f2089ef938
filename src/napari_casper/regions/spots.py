"""Spots in a coordinate system, their table rows, and which region each spot lies in.

:class:`SpotContext` ties one spot element to its table: ``rows[i]`` is the table row of spot
``i``, ``coords[i]`` its centre in the coordinate system, so scores, region membership and
statistics all line up. Point-in-polygon tests run in that shared coordinate system.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from napari_casper.errors import CasperInputError
from napari_casper.regions.geometry import RegionSet, apply_affine_xy

if TYPE_CHECKING:
    import pandas as pd

#: label of spots outside every region in :func:`assign_spots_to_regions`
OUTSIDE = "outside"


@dataclass
class SpotContext:
    """One spot element, its table, and the coordinate system everything is compared in.

    Attributes
    ----------
    rows
        ``(n_spots,)`` table row of each spot (spots without a row are left out).
    instance_ids
        ``(n_spots,)`` the spots' ids in the element.
    coords
        ``(n_spots, 2)`` spot centres, (x, y) in ``coordinate_system``.
    diameter
        Median spot diameter in ``coordinate_system`` units.
    """

    sdata: object
    element: str
    table_name: str
    coordinate_system: str
    rows: np.ndarray
    instance_ids: np.ndarray
    coords: np.ndarray
    diameter: float
    _expression: dict = field(default_factory=dict, repr=False)

    @property
    def table(self):
        return self.sdata.tables[self.table_name]

    @property
    def n_spots(self) -> int:
        return len(self.rows)

    def expression(self, normalize: str = "auto"):
        """``(n_spots, n_genes)`` normalised expression (CSR if sparse) and the decision taken.

        Raw counts become ``log1p(normalize_total(1e4))`` (see :mod:`napari_casper.casper.preprocess`).
        Cached per ``normalize`` mode.
        """
        from napari_casper.casper.preprocess import check_values, normalize_matrix

        if normalize not in self._expression:
            table = self.table
            X = table.X[self.rows]
            check_values(X, f"table {self.table_name!r}")
            self._expression[normalize] = normalize_matrix(X, normalize, already_logged="log1p" in table.uns)
        return self._expression[normalize]

    def to_element_order(self, values, element_ids) -> np.ndarray:
        """Per-spot ``values`` (rows order) re-ordered to ``element_ids`` (e.g. a Points layer's rows).

        Spots without a table row get NaN.
        """
        from napari_casper.io.elements import spot_rows

        per_row = np.full(self.table.n_obs, np.nan, dtype=object)
        per_row[self.rows] = np.asarray(values, dtype=object)
        return spot_rows(self.table, self.element, element_ids, missing="nan", table_name=self.table_name).gather(per_row)


def spot_context(
    sdata, spots: str = "spots", table: str | None = None, coordinate_system: str | None = None
) -> SpotContext:
    """Build a :class:`SpotContext` (validated: the element exists, has a table and is in the coordinate system)."""
    from napari_casper.io.elements import (
        affine_yx,
        default_coordinate_system,
        mean_scale,
        spot_element,
        spot_element_names,
        spot_positions,
        spot_rows,
        spot_table,
        table_regions,
    )

    if spots not in spot_element_names(sdata):
        raise CasperInputError(
            f"no spot element named {spots!r}; the data has spot elements {spot_element_names(sdata)}: "
            "choose one of those."
        )
    link = spot_table(sdata, spots)
    if table is None:
        if link is None:
            raise CasperInputError(
                f"no table annotates spots {spots!r}: region statistics and scores need expression per spot "
                "(add a table with spatialdata.models.TableModel.parse(..., region=...))."
            )
        table = link.name
    if table not in sdata.tables:
        raise CasperInputError(f"no table named {table!r}; the data has tables {list(sdata.tables)}.")
    attrs = sdata.tables[table].uns.get("spatialdata_attrs", {})
    if spots not in table_regions(sdata.tables[table]):
        raise CasperInputError(
            f"table {table!r} does not annotate spots {spots!r} (it annotates {attrs.get('region')!r}): pick its table."
        )
    cs = coordinate_system or default_coordinate_system(sdata)
    element = spot_element(sdata, spots)
    affine = affine_yx(element, cs)
    xy, diameters, ids = spot_positions(sdata, spots)
    join = spot_rows(sdata.tables[table], spots, ids, missing="drop", table_name=table)
    return SpotContext(
        sdata,
        spots,
        table,
        cs,
        join.rows,
        np.asarray(ids)[join.spots],
        apply_affine_xy(affine, xy[join.spots]),
        float(np.median(diameters)) * mean_scale(affine),
    )


def _check_same_system(spots: SpotContext, regions: RegionSet) -> None:
    if regions.coordinate_system != spots.coordinate_system:
        raise CasperInputError(
            f"the regions are in coordinate system {regions.coordinate_system!r} but the spots are compared in "
            f"{spots.coordinate_system!r}: load the regions in {spots.coordinate_system!r} "
            f"(load_regions(..., coordinate_system={spots.coordinate_system!r})) or use the spots in "
            f"{regions.coordinate_system!r}."
        )


def region_membership(spots: SpotContext, regions: RegionSet) -> np.ndarray:
    """``(n_spots, n_regions)`` bool: spot centre strictly inside region ``j`` (shapely ``contains``)."""
    import shapely

    _check_same_system(spots, regions)
    inside = np.zeros((spots.n_spots, len(regions)), dtype=bool)
    if len(regions):
        tree = shapely.STRtree(shapely.points(spots.coords))
        region_at, spot_at = tree.query(regions.world_polygons(), predicate="contains")
        inside[spot_at, region_at] = True
    return inside


#: which region a spot in overlapping regions belongs to: hand-drawn ones first (the default),
#: suggested ones first, or simply the last (top-most) shape
PRECEDENCES = {
    "drawn": "hand-drawn regions win over suggestions",
    "suggested": "suggested regions win over hand-drawn ones",
    "last": "the top-most (last) shape wins",
}


def winning_region(inside: np.ndarray, origins, precedence: str = "drawn") -> np.ndarray:
    """``(n_spots,)`` index of the region each spot belongs to (-1: none) from ``inside`` ``(n_spots, n_regions)``.

    Among the regions holding a spot, those of the preferred origin (``precedence``, see
    :data:`PRECEDENCES`) win; among equals the last (top-most) one wins.
    """
    if precedence not in PRECEDENCES:
        raise CasperInputError(f"precedence {precedence!r} is not one of {list(PRECEDENCES)}.")
    n_regions = inside.shape[1]
    rank = np.arange(n_regions, dtype=float)
    if precedence != "last":
        rank += n_regions * (np.asarray(origins, dtype=object) == precedence)
    scores = np.where(inside, rank[None, :], -1.0)
    return np.where(inside.any(axis=1), np.argmax(scores, axis=1) if n_regions else -1, -1)


def spot_region_labels(
    spots: SpotContext, regions: RegionSet, *, outside: str = OUTSIDE, precedence: str = "drawn"
) -> pd.DataFrame:
    """Class and region name of every spot; where regions overlap, ``precedence`` decides (:func:`winning_region`)."""
    import pandas as pd

    inside = region_membership(spots, regions)
    last = winning_region(inside, regions.origins, precedence)
    classes = np.array(list(regions.classes) + [outside], dtype=object)
    names = np.array(list(regions.names) + [outside], dtype=object)
    categories = list(dict.fromkeys([*regions.palette.names, outside]))
    return pd.DataFrame(
        {
            "class": pd.Categorical(classes[last], categories=categories),
            "name": pd.Categorical(names[last], categories=list(dict.fromkeys([*regions.names, outside]))),
        },
        index=spots.instance_ids,
    )


def assign_spots_to_regions(
    spots: SpotContext,
    regions: RegionSet,
    *,
    key_added: str = "region_class",
    name_key: str | None = "region_name",
    outside: str = OUTSIDE,
    precedence: str = "drawn",
) -> pd.Series:
    """Write each spot's region class into ``obs[key_added]`` of the spots' table (in memory).

    Membership is the spot centre inside the polygon, in the shared coordinate system; where
    regions overlap, ``precedence`` decides (default: hand-drawn regions win over suggested ones,
    then the last one). Spots outside every region get ``outside``; table rows
    of other elements get NaN. The region name goes to ``obs[name_key]`` (unless None).

    Returns
    -------
    pandas.Series
        The class per spot, indexed by the spots' instance ids.
    """
    import pandas as pd

    labels = spot_region_labels(spots, regions, outside=outside, precedence=precedence)
    table = spots.table
    for key, column in ((key_added, "class"), (name_key, "name")):
        if key is None:
            continue
        values = pd.Series(pd.NA, index=table.obs_names, dtype=object)
        values.iloc[spots.rows] = labels[column].astype(str).to_numpy()
        table.obs[key] = pd.Categorical(values, categories=labels[column].cat.categories)
    return labels["class"]
