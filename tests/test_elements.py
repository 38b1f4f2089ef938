"""io.elements.spot_rows: the one "which table row is which spot" join, and its missing-spot rules."""

from __future__ import annotations

import anndata as ad
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely import points
from spatialdata import SpatialData, match_table_to_element
from spatialdata.models import ShapesModel, TableModel

from napari_casper.errors import CasperInputError
from napari_casper.io.elements import spot_rows


def _two_region_table(ids_a, ids_b, *, as_str=False, seed=0):
    """Rows for regions "a" and "b", shuffled together; ``X[:, 0]`` codes (region, id) as region*1000 + id % 1000."""
    region = np.array(["a"] * len(ids_a) + ["b"] * len(ids_b))
    ids = np.r_[ids_a, ids_b].astype(int)
    code = np.where(region == "a", 0, 1000) + ids % 1000
    order = np.random.default_rng(seed).permutation(len(ids))
    region, ids, code = region[order], ids[order], code[order]
    obs = pd.DataFrame(
        {"region": pd.Categorical(region), "spot_id": ids.astype(str) if as_str else ids},
        index=[f"r{i}" for i in range(len(ids))],
    )
    X = np.c_[code, np.ones(len(ids))].astype(np.float32)
    return TableModel.parse(ad.AnnData(X, obs=obs), region=sorted(set(region)), region_key="region", instance_key="spot_id")


@pytest.fixture(params=["int", "str", "large int"])
def case(request):
    """Element "b" has spots 0..9 in a scrambled order; the table has rows for 7 of them (and for "a")."""
    offset = 10**9 if request.param == "large int" else 0  # ids far apart take the hashing path
    element_ids = np.array([7, 2, 9, 0, 5, 1, 8, 3, 6, 4]) + offset
    with_row = np.array([0, 1, 2, 3, 5, 7, 8]) + offset  # spots 4, 6, 9 have no row
    table = _two_region_table(np.arange(12) + offset, with_row, as_str=request.param == "str")
    if request.param == "str":
        element_ids = element_ids.astype(str)
    return table, element_ids, offset


def _truth(table, element_ids, offset):
    """Row of each element spot, by a plain Python scan of the table (-1: none)."""
    code = table.X[:, 0]
    want = [1000 + int(i) - offset for i in element_ids]
    return np.array([int(np.flatnonzero(code == w)[0]) if (code == w).any() else -1 for w in want])


def test_nan_rule_keeps_every_spot_and_marks_the_missing(case):
    table, element_ids, offset = case
    join = spot_rows(table, "b", element_ids, missing="nan")
    truth = _truth(table, element_ids, offset)
    np.testing.assert_array_equal(join.rows, truth)
    np.testing.assert_array_equal(join.spots, np.arange(len(element_ids)))
    assert (truth == -1).sum() == 3
    values = join.gather(table.X[:, 0])
    assert np.isnan(values[truth == -1]).all()
    np.testing.assert_array_equal(values[truth >= 0], [1000 + int(i) - offset for i in element_ids[truth >= 0]])
    obs = join.gather_obs(table.obs)
    assert obs["spot_id"].isna().sum() == 3 and list(obs.index) == list(range(len(element_ids)))


def test_drop_rule_leaves_out_the_missing(case):
    table, element_ids, offset = case
    join = spot_rows(table, "b", element_ids, missing="drop")
    truth = _truth(table, element_ids, offset)
    np.testing.assert_array_equal(join.spots, np.flatnonzero(truth >= 0))
    np.testing.assert_array_equal(join.rows, truth[truth >= 0])
    assert join.present.all()


def test_error_rule_names_the_missing_count(case):
    table, element_ids, offset = case
    with pytest.raises(CasperInputError, match="3 of the 10 spots of 'b' have no row in table 't'"):
        spot_rows(table, "b", element_ids, missing="error", table_name="t")
    complete = element_ids[_truth(table, element_ids, offset) >= 0]
    np.testing.assert_array_equal(
        spot_rows(table, "b", complete, missing="error").rows, _truth(table, complete, offset)
    )


def test_other_region_is_not_mixed_in(case):
    """Region "a" has rows for ids 0..11: none of them may stand in for a missing "b" spot."""
    table, element_ids, offset = case
    rows_a = spot_rows(table, "a", element_ids, missing="error").rows
    assert (table.obs["region"].to_numpy()[rows_a] == "a").all()
    np.testing.assert_array_equal(table.X[rows_a, 0], [int(i) - offset for i in element_ids])


def test_same_join_as_spatialdata():
    """Present spots get the rows spatialdata.match_table_to_element picks, in element order."""
    ids = np.array([7, 2, 9, 0, 5, 1, 8, 3, 6, 4])
    table = _two_region_table(np.arange(12), [0, 1, 2, 3, 5, 7, 8])
    rng = np.random.default_rng(1)
    shapes = ShapesModel.parse(
        gpd.GeoDataFrame({"radius": np.ones(10)}, geometry=points(rng.uniform(0, 100, (10, 2))), index=ids)
    )
    sdata = SpatialData(shapes={"b": shapes}, tables={"table": table})
    matched = match_table_to_element(sdata, "b", "table")
    join = spot_rows(table, "b", shapes.index, missing="drop")
    np.testing.assert_array_equal(table.obs_names[join.rows], matched.obs_names)


def test_ordered_table_and_clear_errors():
    table = _two_region_table(np.arange(5), [])
    table = table[np.argsort(table.obs["spot_id"].to_numpy())].copy()
    np.testing.assert_array_equal(spot_rows(table, "a", np.arange(5)).rows, np.arange(5))
    assert spot_rows(table, "b", np.arange(3)).rows.tolist() == [-1, -1, -1]
    with pytest.raises(CasperInputError, match="no row of the table matches a spot of 'b'"):
        spot_rows(table, "b", np.arange(3), missing="drop")
    twice = _two_region_table([0, 1, 2], [])
    twice.obs["spot_id"] = [1, 0, 1]  # spatialdata's parser refuses this; a table edited later may not
    with pytest.raises(CasperInputError, match="repeats spot ids of element 'a'"):
        spot_rows(twice, "a", [0, 1])
    bare = ad.AnnData(np.ones((2, 1)), obs=pd.DataFrame({"spot_id": [0, 1]}, index=["x", "y"]))
    with pytest.raises(CasperInputError, match="does not say which spots"):
        spot_rows(bare, "a", [0, 1])
    with pytest.raises(ValueError, match="missing must be one of"):
        spot_rows(table, "a", [0], missing="zero")
