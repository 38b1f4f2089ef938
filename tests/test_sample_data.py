"""Packaged sample data: loads without ../shared, stays small, matches its sources."""

from __future__ import annotations

import numpy as np

from napari_casper.io.samples import SAMPLE_DIR, load_drosophila, load_mob


def test_packaged_data_is_small():
    total = sum(f.stat().st_size for f in SAMPLE_DIR.iterdir() if f.is_file())
    assert total < 15e6


def test_drosophila_sample():
    sdata = load_drosophila()
    atlas, reference = sdata.tables["atlas"], sdata.tables["reference"]
    assert atlas.shape == (3039, 84)
    assert reference.n_obs == 1297 and set(atlas.var_names) <= set(reference.var_names)
    assert reference.n_vars >= 2000
    assert len(sdata.shapes["cells"]) == 3039
    assert sdata.images["embryo"].shape[0] == 1


def test_mob_sample():
    sdata = load_mob()
    table = sdata.tables["table"]
    assert table.shape == (379, 1000)
    assert "Penk" in table.var_names and table.var.loc["Penk", "gene_ids"] == "ENSMUSG00000045573"  # symbols; ids in var
    assert np.allclose(table.X.data, np.round(table.X.data))  # raw counts
    assert sdata.images["image"].shape == (3, 1905, 1905)


def test_sample_matches_shared_source(shared_data):
    import anndata as ad

    source = ad.read_h5ad(shared_data / "drosophila" / "bdtnp_insitu.h5ad")
    atlas = load_drosophila().tables["atlas"]
    np.testing.assert_allclose(atlas.X, source.X, rtol=1e-6)
    np.testing.assert_allclose(atlas.obsm["spatial"], source.obsm["spatial"][:, [0, 2]])
