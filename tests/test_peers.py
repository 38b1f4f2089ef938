"""The peers the benchmark runs beside CASPER: ridge on reference cells, SpaGE (tissue-sc) and gimVI (scvi-tools)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from conftest import drosophila_subset

from napari_casper.errors import CasperInputError
from napari_casper.evaluate.metrics import pearson
from napari_casper.evaluate.protocol import resolve_method
from napari_casper.evaluate.ridge import impute_ridge

TARGETS = ["Ama", "Antp", "eve", "ftz", "odd", "h", "Kr", "hb"]


@pytest.fixture(scope="module")
def drosophila():
    st, ref = drosophila_subset()
    visible = st[:, [g for g in st.var_names if g not in TARGETS]].copy()
    return visible, ref, np.asarray(st[:, TARGETS].X, dtype=float)


def test_ridge_recovers_a_linear_map_whatever_each_modality_scale():
    """Targets that are a linear function of the panel in the reference are predicted at spots
    whose panel genes have another scale and offset (standardised within each modality)."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(6, 2))
    cells = rng.normal(size=(400, 6))
    spots = rng.normal(size=(150, 6))
    genes = [f"g{i}" for i in range(6)]
    reference = AnnData(np.c_[cells, cells @ weights], var=pd.DataFrame(index=genes + ["t0", "t1"]))
    st = AnnData(spots * 3.0 + 7.0, var=pd.DataFrame(index=genes))  # another platform's scale
    predicted = impute_ridge(st, reference, ["t0", "t1"], preprocessing="none", alphas=[1e-6])
    spot_z = (spots - spots.mean(0)) / spots.std(0)  # each spot's panel in its own modality's units
    expected = (spot_z * cells.std(0)) @ weights + cells.mean(0) @ weights  # the reference's map
    np.testing.assert_allclose(predicted, expected, atol=1e-3)


def test_ridge_and_spage_predict_drosophila_patterns(drosophila):
    visible, ref, truth = drosophila
    ridge = resolve_method("ridge")(visible, ref, TARGETS)
    assert ridge.shape == truth.shape and pearson(truth, ridge).mean() > 0.4
    pytest.importorskip("tissue", reason="spage needs tissue-sc (pip install napari-casper[peers])")
    spage = resolve_method("spage")(visible, ref, TARGETS)
    assert spage.shape == truth.shape and np.isfinite(spage).all() and pearson(truth, spage).mean() > 0.4


def test_gimvi_predicts_the_targets_from_the_shared_genes(drosophila):
    pytest.importorskip("scvi", reason="gimvi needs scvi-tools (pip install napari-casper[peers])")
    visible, ref, truth = drosophila
    gimvi = resolve_method("gimvi")
    first = gimvi(visible, ref, TARGETS, seed=0, epochs=15)
    assert first.shape == truth.shape and np.isfinite(first).all() and (first >= 0).all()  # log1p of rates
    assert np.array_equal(first, gimvi(visible, ref, TARGETS, seed=0, epochs=15))  # seeded: the same numbers
    assert pearson(truth, first).mean() > 0.0  # weak on Drosophila (issue #15: 0.22-0.26), but not noise


def test_peers_explain_bad_input(drosophila, monkeypatch):
    visible, ref, _ = drosophila
    with pytest.raises(CasperInputError, match="not in the reference"):
        impute_ridge(visible, ref, ["no_such_gene"])
    import builtins

    real_import = builtins.__import__

    def no_tissue(name, *args, **kwargs):
        if name.startswith("tissue"):
            raise ImportError("no tissue-sc")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tissue)
    with pytest.raises(CasperInputError, match=r"pip install 'napari-casper\[peers\]'"):
        resolve_method("spage")(visible, ref, TARGETS)
