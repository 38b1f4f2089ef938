"""Lazy imputation: genes outside the panel, one gene at a time, chunked zarr/h5ad output."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from conftest import drosophila_atlas, drosophila_reference

from napari_casper.casper.batch.output import write_imputation
from napari_casper.casper.imputation import CasperImputer, impute_with_casper
from napari_casper.casper.training import train_casper
from napari_casper.errors import CasperInputError

HELD_OUT = ["eve", "ftz", "hb", "Kr", "run"]


@pytest.fixture(scope="module")
def data():
    st = drosophila_atlas()
    ref = drosophila_reference()
    visible = st[:, [g for g in st.var_names if g not in HELD_OUT]].copy()
    return st, visible, ref


@pytest.fixture(scope="module")
def imputer(data):
    _, visible, ref = data
    model = train_casper(visible, ref, max_steps=40, steps_per_epoch=10, device="cpu", reference_weight=0.0)
    return CasperImputer(model, visible)


def test_predicts_reference_genes_absent_from_the_panel(imputer, data):
    st, _, ref = data
    absent = [g for g in ref.var_names if g not in set(st.var_names)][:3]
    pred = imputer.predict(absent)
    assert pred.shape == (st.n_obs, 3) and np.isfinite(pred).all()
    assert (pred.std(0) > 0).all()
    assert len(imputer.genes) == ref.n_vars


def test_one_gene_equals_its_column(imputer):
    many = imputer.predict(HELD_OUT)
    one = imputer.predict_gene("hb")
    assert one.shape == (imputer.n_spots,)
    np.testing.assert_allclose(one, many[:, HELD_OUT.index("hb")], rtol=1e-5, atol=1e-5)


def test_attention_maps(imputer):
    att = imputer.attention()
    assert att.shape == (imputer.n_spots, len(imputer.centroid_labels))
    np.testing.assert_allclose(att.sum(1), 1.0, rtol=1e-4)
    heads = imputer.attention_per_head(slice(0, 25))
    assert heads.shape == (imputer.model.config["heads"], 25, att.shape[1])
    np.testing.assert_allclose(heads.mean(0), att[:25], rtol=1e-4, atol=1e-6)
    # the hidden states of the ensemble's networks side by side (two refits by default)
    assert imputer.hidden_state().shape == (imputer.n_spots, imputer.model.network.size * imputer.model.config["d_model"])


@pytest.mark.parametrize("suffix", [".zarr", ".h5ad"])
def test_chunked_output_equals_in_memory(imputer, tmp_path, suffix):
    genes = imputer.genes[:37] + HELD_OUT
    path = write_imputation(imputer, genes, tmp_path / f"out{suffix}", spot_chunk=700, gene_chunk=8)
    out = ad.read_zarr(path) if suffix == ".zarr" else ad.read_h5ad(path)
    assert list(out.var_names) == genes and list(out.obs_names) == list(imputer.obs_names)
    # blocks are computed independently: equal up to float32 summation order
    np.testing.assert_allclose(np.asarray(out.X), imputer.predict(genes), rtol=1e-5, atol=1e-5)
    lazy = imputer.to_dask(genes, spot_chunk=1000, gene_chunk=16)
    assert lazy.chunks[1][0] == 16
    np.testing.assert_allclose(lazy[:, 40:].compute(), imputer.predict(genes[40:]), rtol=1e-5, atol=1e-5)
    with pytest.raises(CasperInputError, match="already exists"):
        write_imputation(imputer, genes, path)


def test_unknown_gene_raises(imputer):
    with pytest.raises(CasperInputError, match="not in the model's reference"):
        imputer.predict(["eve", "no-such-gene"])


def test_benchmark_contract(data):
    st, visible, ref = data
    pred = impute_with_casper(visible, ref, HELD_OUT, seed=1, max_steps=20, steps_per_epoch=10, device="cpu")
    assert pred.shape == (st.n_obs, len(HELD_OUT)) and pred.dtype == np.float32
    r = [np.corrcoef(pred[:, j], np.asarray(st[:, g].X).ravel())[0, 1] for j, g in enumerate(HELD_OUT)]
    assert np.mean(r) > 0.3
