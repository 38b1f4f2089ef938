"""Baselines (reference mean, SpaGE-like kNN, Tangram) on real data subsets."""

from __future__ import annotations

import sys

import anndata as ad
import numpy as np
import pytest
from conftest import data_path, drosophila_reference, drosophila_subset, mob_path, shared_path

from napari_casper.casper.preprocess import detect_normalization
from napari_casper.errors import CasperInputError
from napari_casper.evaluate.baselines import (
    impute_knn,
    impute_reference_mean,
    impute_tangram,
    impute_tangram_clusters,
)
from napari_casper.evaluate.metrics import pearson


def _looks_like_raw_counts(matrix) -> bool:
    """The baselines normalise with CASPER's own function, so they follow its count rule."""
    return detect_normalization(matrix) == "counts"


@pytest.fixture(scope="module")
def drosophila():
    """Every 4th BDTNP location, 8 held-out genes, reference restricted to 300 genes."""
    st, ref = drosophila_subset()
    targets = ["Ama", "Antp", "eve", "ftz", "odd", "h", "Kr", "hb"]
    assert set(targets) <= set(st.var_names)
    visible = st[:, [g for g in st.var_names if g not in targets]].copy()
    truth = np.asarray(st[:, targets].X, dtype=float)
    return visible, ref, targets, truth


@pytest.fixture(scope="module")
def seqfish():
    st = ad.read_h5ad(shared_path("seqfish", "seqfish_cortex.h5ad"))[::3].copy()
    ref = ad.read_h5ad(shared_path("seqfish", "tasic_scrna.h5ad"))[::2].copy()
    targets = list(st.var_names[:6])
    visible = st[:, list(st.var_names[6:])].copy()
    return visible, ref, targets


def test_reference_mean_is_constant_per_gene(drosophila):
    visible, ref, targets, _ = drosophila
    pred = impute_reference_mean(visible, ref, targets)
    assert pred.shape == (visible.n_obs, len(targets))
    expected = np.asarray(ref[:, targets].X.mean(axis=0)).ravel()
    np.testing.assert_allclose(pred, np.tile(expected, (visible.n_obs, 1)), rtol=1e-6)


def test_knn_predicts_drosophila_patterns(drosophila):
    visible, ref, targets, truth = drosophila
    pred = impute_knn(visible, ref, targets)
    assert pred.shape == truth.shape and np.isfinite(pred).all()
    assert pearson(truth, pred).mean() > 0.4
    weighted = impute_knn(visible, ref, targets, weighted=True)
    assert pearson(truth, weighted).mean() > 0.4
    np.testing.assert_array_equal(pred, impute_knn(visible, ref, targets, seed=5))


def test_knn_drops_all_zero_genes_instead_of_producing_nan(drosophila):
    visible, ref, targets, truth = drosophila
    zeroed = visible.copy()
    zeroed.X[:, :10] = 0.0  # z-scores of these would be 0/0
    pred = impute_knn(zeroed, ref, targets, k=500)
    assert np.isfinite(pred).all()
    assert pearson(truth, pred).mean() > 0.2
    tiny = impute_knn(zeroed, ref[:7].copy(), targets)  # k larger than the reference
    assert np.isfinite(tiny).all()


def test_count_detection_on_real_matrices():
    def read(*parts):
        return ad.read_h5ad(data_path(*parts)).X

    assert _looks_like_raw_counts(read("mob", "MOB1.h5ad"))
    assert not _looks_like_raw_counts(drosophila_reference().X)  # log data
    assert not _looks_like_raw_counts(read("seqfish", "tasic_scrna.h5ad"))  # ranks 0..101
    # the rule is CASPER's (preprocess.detect_normalization): integers with equal cell totals are normalised
    assert not _looks_like_raw_counts(np.array([[3, 0, 1], [0, 4, 0], [2, 2, 0]]))


def test_counts_are_normalised_and_logged():
    mob = ad.read_h5ad(mob_path("MOB1"))
    targets = list(mob.var_names[:5])
    visible = mob[:, list(mob.var_names[5:])].copy()
    auto = impute_reference_mean(visible, mob, targets)
    forced = impute_reference_mean(visible, mob, targets, preprocessing="counts")
    raw = impute_reference_mean(visible, mob, targets, preprocessing="none")
    np.testing.assert_allclose(auto, forced)
    assert auto.max() < raw.max()  # log1p of normalised counts


def test_bad_inputs_name_the_fix(drosophila):
    visible, ref, targets, _ = drosophila
    with pytest.raises(CasperInputError, match="not in the reference"):
        impute_knn(visible, ref, ["no_such_gene"])
    renamed = visible.copy()
    renamed.var_names = [f"x{g}" for g in visible.var_names]
    with pytest.raises(CasperInputError, match="no gene names are shared"):
        impute_knn(renamed, ref, targets)
    with pytest.raises(CasperInputError, match="no gene names are shared"):
        impute_tangram(renamed, ref, targets, num_epochs=2)
    with pytest.raises(CasperInputError, match="preprocessing"):
        impute_knn(visible, ref, targets, preprocessing="log")


def test_tangram_cells_mode_leaves_caller_gene_names_alone(drosophila):
    visible, ref, targets, truth = drosophila
    visible, ref, truth = visible[::2].copy(), ref[::3].copy(), truth[::2]  # keep it quick
    st_names, ref_names = list(visible.var_names), list(ref.var_names)
    pred = impute_tangram(visible, ref, targets, num_epochs=30)
    assert pred.shape == truth.shape and np.isfinite(pred).all()
    assert pearson(truth, pred).mean() > 0.3
    assert list(visible.var_names) == st_names and "Ance" in st_names  # not lowercased
    assert list(ref.var_names) == ref_names
    again = impute_tangram(visible, ref, targets, num_epochs=30)
    np.testing.assert_allclose(pred, again, rtol=1e-5)  # seeded (tangram skips seed 0)


def test_tangram_clusters_from_labels_and_from_leiden(seqfish):
    visible, ref, targets = seqfish
    labelled = impute_tangram_clusters(visible, ref, targets, label_key="cell_type", num_epochs=20)
    assert labelled.shape == (visible.n_obs, len(targets)) and np.isfinite(labelled).all()
    leiden = impute_tangram_clusters(visible, ref, targets, num_epochs=20)
    assert leiden.shape == labelled.shape and np.isfinite(leiden).all()
    assert "cell_type" in ref.obs and "leiden" not in ref.obs  # nothing written to the caller's data
    with pytest.raises(CasperInputError, match="label column 'missing'"):
        impute_tangram_clusters(visible, ref, targets, label_key="missing")


def test_missing_tangram_names_the_install_command(drosophila, monkeypatch):
    visible, ref, targets, _ = drosophila
    monkeypatch.setitem(sys.modules, "tangram", None)  # makes `import tangram` fail
    with pytest.raises(CasperInputError, match=r"pip install napari-casper\[all\]"):
        impute_tangram(visible, ref, targets)


def test_every_method_gets_log1p_of_counts_per_1e4():
    """One normalisation: the baselines scale raw counts to 1e4 per spot, as CASPER does (not to the median)."""
    mob = ad.read_h5ad(mob_path("MOB1"))
    counts = mob.X.toarray().astype(np.float64)
    expected = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)[:, :5].mean(axis=0)
    pred = impute_reference_mean(mob[:, 5:].copy(), mob, list(mob.var_names[:5]))
    np.testing.assert_allclose(pred[0], expected, rtol=1e-5)
