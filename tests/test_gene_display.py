"""One-gene-at-a-time reading of spot tables (core, no napari)."""

from __future__ import annotations

import anndata as ad
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import mob_path, shared_path
from spatialdata.models import TableModel
from test_value_layers import sample_levels

from napari_casper.display.gene_display import GeneSwitcher, TableGenes
from napari_casper.display.value_layers import POINTS_LIMIT, SpotGeometry
from napari_casper.errors import CasperInputError


def _table(X, ids, genes, element="spots"):
    obs = pd.DataFrame({"region": pd.Categorical([element] * len(ids)), "spot_id": ids}, index=[str(i) for i in ids])
    return TableModel.parse(ad.AnnData(X, obs=obs, var=pd.DataFrame(index=genes)), region=element, region_key="region", instance_key="spot_id")


@pytest.fixture(scope="module")
def raw_counts():
    """Raw counts of a real section: the packaged MOB1 (379 spots x 1000 genes, sparse)."""
    return ad.read_h5ad(mob_path("MOB1"))


@pytest.mark.parametrize("kind", ["csr", "dense", "dask"])
def test_columns_follow_the_element_order_and_log1p_raw_counts(raw_counts, kind):
    counts = raw_counts.X.toarray().astype(np.float32)
    X = {"csr": sp.csr_matrix(counts), "dense": counts, "dask": da.from_array(counts, chunks=(100, 50))}[kind]
    ids = np.arange(raw_counts.n_obs) * 3 + 7
    table = _table(X, ids, list(raw_counts.var_names))
    display_order = np.random.default_rng(0).permutation(ids)
    genes = TableGenes(table, "spots", display_order)
    assert genes.transform == "log1p"  # raw counts are detected as counts
    gene = str(raw_counts.var_names[5])
    row = (display_order - 7) // 3
    np.testing.assert_allclose(genes.values(gene), np.log1p(counts[row, 5]), rtol=1e-6)
    np.testing.assert_allclose(genes.values(gene.lower()), genes.values(gene))  # case-insensitive
    assert TableGenes(table, "spots", display_order, transform="none").values(gene).max() == counts[:, 5].max()


def test_spots_without_rows_are_nan_and_other_regions_ignored():
    X = np.arange(12, dtype=np.float32).reshape(6, 2) / 10
    obs = pd.DataFrame({"region": pd.Categorical(["a"] * 3 + ["b"] * 3), "spot_id": [0, 1, 2, 0, 1, 2]}, index=list("uvwxyz"))
    table = TableModel.parse(ad.AnnData(X, obs=obs, var=pd.DataFrame(index=["g1", "g2"])), region=["a", "b"], region_key="region", instance_key="spot_id")
    values = TableGenes(table, "b", [2, 5, 0]).values("g2")
    np.testing.assert_allclose(values[[0, 2]], [1.1, 0.7], rtol=1e-6)
    assert np.isnan(values[1])


def test_clear_errors():
    table = _table(np.ones((3, 2), np.float32), [0, 1, 2], ["g1", "g2"])
    with pytest.raises(CasperInputError, match="not in this table"):
        TableGenes(table, "spots", [0, 1, 2]).values("nope")
    with pytest.raises(CasperInputError, match="no rows for spot element"):
        TableGenes(table, "other", [0, 1, 2])
    with pytest.raises(CasperInputError, match="unknown transform"):
        TableGenes(table, "spots", [0, 1, 2], transform="sqrt")


def test_switcher_renders_each_spot_at_its_centre():
    """Above the Points limit the raster shows, at every cell centre, that cell's value."""
    n = POINTS_LIMIT + 5000
    adata = ad.read_h5ad(shared_path("xenium", "xenium_mouse_brain.h5ad"))[:n]
    xy = np.asarray(adata.obsm["spatial"], dtype=float)[:, :2]
    table = _table(adata.X, np.arange(n), list(adata.var_names))
    geometry = SpotGeometry(yx=xy[:, ::-1], size=np.full(n, 8.0), affine=np.eye(3), element="spots", coordinate_system="global")
    switcher = GeneSwitcher(geometry, TableGenes(table, "spots", np.arange(n)), "spots/table")
    data, kwargs, kind = switcher.layer_tuple(str(adata.var_names[0]))
    assert kind == "image" and switcher.is_raster
    assert kwargs["name"] == f"genes: {adata.var_names[0]} (spots/table)" and kwargs["metadata"]["napari_casper"]["units"] == "log1p counts"
    gene = str(adata.var_names[10])
    levels, limits = switcher.switch(gene)
    assert [lv.shape for lv in levels] == [lv.shape for lv in data] and limits[0] <= limits[1]
    assert switcher.name == f"genes: {gene} (spots/table)"
    # world (y, x) of each cell -> raster pixel through the layer's affine
    shown = sample_levels(levels, kwargs["affine"], xy[:, ::-1])
    expected = np.log1p(adata.X[:, 10].toarray().ravel())
    assert np.mean(np.isclose(shown, expected, rtol=1e-5)) > 0.95
    # the hover reads the new gene's values
    assert switcher.hover.describe(xy[3, ::-1]) == f"spot: 3, value: {expected[3]:.4g}"


def test_a_table_layer_such_as_uncertainty_is_read_instead_of_x():
    X = np.arange(6, dtype=np.float32).reshape(3, 2)
    table = _table(X, [0, 1, 2], ["g1", "g2"])
    table.layers["uncertainty"] = X / 10
    genes = TableGenes(table, "spots", [2, 0, 1], layer="uncertainty", transform="none")
    np.testing.assert_allclose(genes.values("g2"), [0.5, 0.1, 0.3], rtol=1e-6)
    with pytest.raises(CasperInputError, match="no layer 'spread'"):
        TableGenes(table, "spots", [0, 1, 2], layer="spread")
