"""Input checks, gene matching and normalisation detection on the real data sets."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import drosophila_atlas, drosophila_reference, shared_path

from napari_casper.casper.preprocess import (
    detect_normalization,
    match_genes,
    normalize_matrix,
    prepare_pair,
    standardize,
)
from napari_casper.errors import CasperInputError


@pytest.fixture(scope="module")
def drosophila():
    st = drosophila_atlas()
    ref = drosophila_reference()
    return st, ref


@pytest.fixture(scope="module")
def seqfish():
    st = ad.read_h5ad(shared_path("seqfish", "seqfish_cortex.h5ad"))
    ref = ad.read_h5ad(shared_path("seqfish", "tasic_scrna.h5ad"))
    return st, ref


def test_exact_and_case_insensitive_matching(drosophila):
    st, ref = drosophila
    exact = match_genes(st.var_names, ref.var_names)
    assert exact.n_matched == 84 and exact.n_panel == 84 and not exact.unmatched
    assert "84 of 84 panel genes" in exact.summary()
    upper = [g.upper() for g in st.var_names]
    assert match_genes(upper, ref.var_names).n_matched < 84
    relaxed = match_genes(upper, ref.var_names, case_insensitive=True)
    # Karaiskos has e.g. both "Gk" and "gk": such genes are left out as ambiguous, not guessed
    assert relaxed.ambiguous == ["GK", "TRN"]
    assert relaxed.n_matched == 82 and "ambiguous" in relaxed.summary()
    pairs = dict(zip(relaxed.st_genes, relaxed.reference_genes))
    assert pairs["EVE"] == "eve" and pairs["ANTP"] == "Antp"  # the reference spelling is returned


def test_normalisation_detection_on_real_data(drosophila, seqfish):
    st, ref = drosophila
    assert detect_normalization(st.X) == "none"  # relative in-situ intensities 0..2.4
    assert detect_normalization(ref.X) == "none"  # already log-normalised scRNA
    assert detect_normalization(seqfish[0].X) == "none"  # ranks 0..101: never logged
    assert detect_normalization(seqfish[1].X) == "none"
    xenium = ad.read_h5ad(shared_path("xenium", "xenium_mouse_brain.h5ad"))
    counts = xenium.X[:2000]
    assert detect_normalization(counts) == "counts"
    normed, decision = normalize_matrix(counts)
    assert decision == "counts" and sp.issparse(normed)
    # log1p(counts per 1e4): re-detecting must not log again
    assert detect_normalization(normed) == "none"
    assert detect_normalization(counts, already_logged=True) == "none"
    cpm = sp.csr_matrix(counts, dtype=np.float32)
    cpm = sp.diags(1e6 / np.maximum(np.asarray(cpm.sum(1)).ravel(), 1)) @ cpm
    assert detect_normalization(cpm) == "log1p"


def test_prepare_pair_reports_and_does_not_mutate(drosophila):
    st, ref = drosophila
    before_st, before_ref = st.X.copy(), ref.X.copy()
    pair = prepare_pair(st, ref)
    assert pair.st_expression.shape == (3039, 84)
    assert pair.report["n_matched"] == 84 and pair.report["st_normalization"] == "none"
    np.testing.assert_array_equal(st.X, before_st)
    assert (before_ref != ref.X).nnz == 0


def test_all_zero_genes_are_dropped(drosophila):
    st, ref = drosophila
    st2 = st[:, :20].copy()
    st2.X[:, 3] = 0.0
    pair = prepare_pair(st2, ref)
    assert st2.var_names[3] not in pair.panel_genes
    assert pair.report["dropped_constant_genes"] == [st2.var_names[3]]
    assert len(pair.panel_genes) == 19


@pytest.mark.parametrize(
    ("value", "message"), [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (-1.0, "negative")]
)
def test_bad_values_are_rejected(drosophila, value, message):
    st, ref = drosophila
    bad = st[:, :20].copy()
    bad.X[5, 2] = value
    with pytest.raises(CasperInputError, match=message):
        prepare_pair(bad, ref)


def test_too_few_and_no_shared_genes(drosophila):
    st, ref = drosophila
    with pytest.raises(CasperInputError, match="at least 5"):
        prepare_pair(st[:, :4].copy(), ref)
    renamed = st[:, :10].copy()
    renamed.var_names = [f"notagene{i}" for i in range(10)]
    with pytest.raises(CasperInputError, match="no ST panel gene is in the reference"):
        prepare_pair(renamed, ref)


def test_standardize_reuses_statistics():
    rng = np.random.default_rng(0)
    X = rng.gamma(2.0, size=(50, 4)).astype(np.float32)
    X[:, 2] = 1.0  # constant column -> std 1, no NaN
    Z, mean, std = standardize(X)
    assert np.isfinite(Z).all() and std[2] == 1.0
    Z2, _, _ = standardize(X, mean, std)
    np.testing.assert_array_equal(Z, Z2)
