"""Strict K-fold-over-genes protocol: hiding, splitting, scoring, method registry."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from conftest import drosophila_subset

from napari_casper.casper.imputation import impute_with_casper
from napari_casper.errors import CasperInputError, PeerMethodFailed
from napari_casper.evaluate.metrics import METRICS
from napari_casper.evaluate.protocol import METHODS, resolve_method, run_benchmark, split_genes


@pytest.fixture(scope="module")
def drosophila():
    """BDTNP atlas (every 4th location) + the Karaiskos reference restricted to 300 genes."""
    return drosophila_subset()


def _with_unshared_genes(st: ad.AnnData) -> ad.AnnData:
    """``st`` plus two genes the reference lacks: one unknown, one a case variant."""
    rng = np.random.default_rng(0)
    extra = ad.AnnData(
        rng.uniform(0, 2, size=(st.n_obs, 2)).astype(np.float32),
        obs=st.obs,
    )
    extra.var_names = ["NOT_IN_REFERENCE", "ANTP"]  # the reference has "Antp", not "ANTP"
    return ad.concat([st, extra], axis=1, merge="same")


def test_held_out_genes_are_hidden_from_every_spot(drosophila):
    st, ref = drosophila
    st = _with_unshared_genes(st)
    st.obsm["spatial"] = np.arange(st.n_obs * 3, dtype=float).reshape(-1, 3)
    st.raw = st  # all genes, held-out ones included
    st.obsm["X_pca"] = np.asarray(st.X[:, :5])  # an embedding computed over all genes
    st.layers["counts"] = st.X.copy()
    ref_names = ref.var_names.copy()
    calls = []

    def spy(visible, reference, targets, *, seed=0):
        assert not set(targets) & set(visible.var_names), "a held-out gene reached the method"
        assert set(visible.var_names) == set(st.var_names) - set(targets)
        assert list(visible.obs_names) == list(st.obs_names)
        assert visible.raw is None and "X_pca" not in visible.obsm and not visible.uns
        np.testing.assert_array_equal(visible.obsm["spatial"], st.obsm["spatial"])
        assert visible.layers["counts"].shape == visible.shape
        assert set(targets) <= set(reference.var_names)
        calls.append(list(targets))
        return np.zeros((visible.n_obs, len(targets)))

    result = run_benchmark(st, ref, {"spy": spy}, n_folds=5, seed=3)
    assert len(calls) == 5
    evaluated = [g for fold in calls for g in fold]
    assert len(evaluated) == len(set(evaluated)) == 84  # each shared gene once
    assert "NOT_IN_REFERENCE" not in evaluated and "ANTP" not in evaluated  # exact match only
    assert result.split.n_st_genes == 86 and len(result.split.shared) == 84
    assert "84 shared (exact case-sensitive match)" in result.notes[0]
    assert ref.var_names.equals(ref_names)
    assert "ANTP" in st.var_names  # the caller's data is untouched


def test_split_is_seeded_balanced_and_skips_constant_genes(drosophila):
    st, ref = drosophila
    st = st.copy()
    st.X[:, 5] = 0.0  # constant over spots: PCC undefined, never held out
    a = split_genes(st, ref, n_folds=10, seed=0)
    b = split_genes(st, ref, n_folds=10, seed=0)
    c = split_genes(st, ref, n_folds=10, seed=1)
    assert a.folds == b.folds and a.folds != c.folds
    assert a.constant == [st.var_names[5]]
    assert sorted(a.evaluated) == sorted(set(st.var_names) - {st.var_names[5]})
    assert {len(f) for f in a.folds} == {8, 9}  # 83 genes in 10 folds
    limited = split_genes(st, ref, n_folds=2, seed=0, genes_limit=6)
    assert len(limited.evaluated) == 6 and [len(f) for f in limited.folds] == [3, 3]


def test_bad_inputs_name_the_fix(drosophila):
    st, ref = drosophila
    renamed = ref.copy()
    renamed.var_names = [g.swapcase() for g in ref.var_names]
    renamed.var_names_make_unique()
    with pytest.raises(CasperInputError, match="no gene names are shared.*harmonise the case"):
        run_benchmark(st, renamed, ["mean"])
    with pytest.raises(CasperInputError, match="folds"):
        run_benchmark(st, ref, ["mean"], n_folds=200)
    with pytest.raises(CasperInputError, match="unknown imputation method 'magic'"):
        resolve_method("magic")
    with pytest.raises(CasperInputError, match="label column 'nope'"):
        run_benchmark(st, ref, ["mean"], label_key="nope")


def test_method_returning_a_wrong_shape_fails_loudly(drosophila):
    st, ref = drosophila

    def broken(visible, reference, targets, *, seed=0):
        return np.zeros((visible.n_obs, len(targets) + 1))

    with pytest.raises(RuntimeError, match="returned shape"):
        run_benchmark(st, ref, {"broken": broken}, n_folds=2, genes_limit=4)


def test_a_peer_that_fails_in_one_fold_scores_that_fold_as_missing_and_the_run_goes_on(drosophila):
    """A peer's own failure (gimVI diverging to NaN in one Drosophila fold) is recorded, not a crash."""
    st, ref = drosophila
    from napari_casper.evaluate.baselines import impute_knn

    def fails_once(visible, reference, targets, *, seed=0):
        if "first" not in calls:
            calls.append("first")
            raise PeerMethodFailed("its training diverged to NaN")
        return impute_knn(visible, reference, targets, seed=seed)

    calls: list = []
    result = run_benchmark(st, ref, {"peer": fails_once}, n_folds=2, genes_limit=10)
    table = result.per_gene
    first, second = table[table["fold"] == 0], table[table["fold"] == 1]
    assert (first["note"] == "missing prediction: scored as in Li et al. 2022").all() and (first["PCC"] == 0).all()
    assert (second["note"] == "").all() and second["PCC"].mean() > 0.3
    assert any("peer fold 1: its training diverged to NaN" in note and "5 genes" in note for note in result.notes)


def test_knn_and_mean_on_two_folds_of_drosophila(drosophila):
    st, ref = drosophila
    result = run_benchmark(st, ref, ["knn", "mean"], n_folds=2, seed=0, genes_limit=20)
    table = result.per_gene
    assert list(table.columns) == ["method", "gene", "fold", *METRICS, "note"]
    assert len(table) == 40 and set(table["fold"]) == {0, 1}
    summary = result.summary.set_index("method")
    assert summary.loc["knn", "PCC_mean"] > 0.4  # full data, 10 folds: 0.588
    assert summary.loc["mean", "PCC_mean"] == 0.0  # constant predictor
    assert summary.loc["knn", "AS"] > summary.loc["mean", "AS"]
    assert (summary["runtime_s"] > 0).all() and (summary["n_genes"] == 20).all()
    assert list(result.runtimes.columns) == ["method", "fold", "seconds"]
    again = run_benchmark(st, ref, ["knn", "mean"], n_folds=2, seed=0, genes_limit=20)
    assert again.per_gene.equals(table)  # deterministic for a seed


def test_label_key_reaches_methods_that_take_it(drosophila):
    st, ref = drosophila
    ref = ref.copy()
    ref.obs["group"] = np.where(np.arange(ref.n_obs) % 2, "a", "b")
    seen = {}

    def labelled(visible, reference, targets, *, seed=0, label_key=None):
        seen["label_key"] = label_key
        return np.ones((visible.n_obs, len(targets)))

    def configurable(visible, reference, targets, *, seed=0, **config):
        seen["config"] = config
        return np.ones((visible.n_obs, len(targets)))

    def unlabelled(visible, reference, targets, *, seed=0):
        return np.ones((visible.n_obs, len(targets)))

    run_benchmark(
        st,
        ref,
        {"l": labelled, "c": configurable, "u": unlabelled},
        n_folds=2,
        genes_limit=2,
        label_key="group",
    )
    assert seen["label_key"] == "group"
    assert seen["config"] == {"label_key": "group"}


def test_every_registered_baseline_resolves():
    for name in ("knn", "mean", "tangram", "tangram_clusters"):
        assert callable(resolve_method(name))
    assert resolve_method("casper") is METHODS["casper"] is impute_with_casper


@pytest.mark.slow
def test_casper_runs_under_the_protocol(drosophila):
    st, ref = drosophila
    short = {"casper": {"max_steps": 25, "device": "cpu"}}  # a smoke test, not a benchmark
    result = run_benchmark(
        st, ref, ["casper"], n_folds=2, seed=0, genes_limit=6, method_options=short
    )
    assert len(result.per_gene) == 6
    assert np.isfinite(result.per_gene["PCC"]).all()
    assert result.summary.loc[0, "PCC_mean"] > 0.0
