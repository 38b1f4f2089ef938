"""Li et al. 2022 metrics: identities, reference values, edge cases, and a real-data check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import drosophila_atlas
from scipy import stats

from napari_casper.evaluate.metrics import (
    AS_METRICS,
    MISSING_SCORE,
    accuracy_score,
    jensen_shannon,
    mape,
    pearson,
    rmse_zscore,
    score_genes,
    spearman,
    ssim,
)


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    true = rng.gamma(2.0, 1.0, size=(300, 12))
    pred = true * rng.uniform(0.2, 2.0, size=12) + rng.normal(0, 1.0, size=(300, 12))
    return true, pred


def test_pearson_and_spearman_match_scipy(pair):
    true, pred = pair
    expected_r = [stats.pearsonr(true[:, j], pred[:, j])[0] for j in range(true.shape[1])]
    expected_rho = [stats.spearmanr(true[:, j], pred[:, j])[0] for j in range(true.shape[1])]
    np.testing.assert_allclose(pearson(true, pred), expected_r, atol=1e-12)
    np.testing.assert_allclose(spearman(true, pred), expected_rho, atol=1e-12)


def test_rmse_on_zscores_is_sqrt_two_one_minus_pcc(pair):
    true, pred = pair
    np.testing.assert_allclose(
        rmse_zscore(true, pred), np.sqrt(2 * (1 - pearson(true, pred))), atol=1e-12
    )
    # and it is the RMSE of scipy's (population) z-scores
    direct = np.sqrt(((stats.zscore(true) - stats.zscore(pred)) ** 2).mean(axis=0))
    np.testing.assert_allclose(rmse_zscore(true, pred), direct, atol=1e-12)


def test_perfect_and_anticorrelated_predictions():
    x = np.linspace(0.0, 5.0, 50)[:, None]
    np.testing.assert_allclose(pearson(x, 3 * x + 1), [1.0])
    np.testing.assert_allclose(rmse_zscore(x, 3 * x + 1), [0.0], atol=1e-7)
    np.testing.assert_allclose(pearson(x, -x), [-1.0])
    np.testing.assert_allclose(rmse_zscore(x, -x), [2.0])
    np.testing.assert_allclose(ssim(x, x), [1.0])
    np.testing.assert_allclose(jensen_shannon(x, 2 * x), [0.0], atol=1e-12)  # scale-free


def _ssim_li2022(a: np.ndarray, b: np.ndarray) -> float:
    """Li et al.'s cal_ssim, written out term by term on max-scaled vectors."""
    a, b = a / a.max(), b / b.max()
    mu1, mu2 = a.mean(), b.mean()
    s1, s2 = np.sqrt(((a - mu1) ** 2).mean()), np.sqrt(((b - mu2) ** 2).mean())
    s12 = ((a - mu1) * (b - mu2)).mean()
    c1, c2 = 0.01**2, 0.03**2
    c3 = c2 / 2
    return (
        (2 * mu1 * mu2 + c1) / (mu1**2 + mu2**2 + c1)
        * (2 * s1 * s2 + c2) / (s1**2 + s2**2 + c2)
        * (s12 + c3) / (s1 * s2 + c3)
    )  # fmt: skip


def test_ssim_matches_li2022_formula(pair):
    true, pred = pair
    pred = np.abs(pred)
    expected = [_ssim_li2022(true[:, j], pred[:, j]) for j in range(true.shape[1])]
    np.testing.assert_allclose(ssim(true, pred), expected, rtol=1e-12)


def test_js_matches_scipy_jensenshannon_squared(pair):
    true, pred = pair
    pred = np.abs(pred)
    p = true / true.sum(axis=0)
    q = pred / pred.sum(axis=0)
    from scipy.spatial.distance import jensenshannon

    expected = [jensenshannon(p[:, j], q[:, j]) ** 2 for j in range(true.shape[1])]
    np.testing.assert_allclose(jensen_shannon(true, pred), expected, atol=1e-12)
    assert np.all(jensen_shannon(true, pred) <= np.log(2) + 1e-12)


def test_js_clips_negative_predictions_and_handles_all_zero():
    true = np.array([[1.0], [2.0], [3.0]])
    assert np.isfinite(jensen_shannon(true, -true)).all()
    # an all-zero vector is the uniform distribution
    uniform = np.ones((3, 1))
    np.testing.assert_allclose(jensen_shannon(true, np.zeros((3, 1))), jensen_shannon(true, uniform))


def test_mape_ignores_zero_measurements():
    true = np.array([[0.0], [2.0], [4.0]])
    pred = np.array([[9.0], [1.0], [5.0]])
    np.testing.assert_allclose(mape(true, pred), [(0.5 + 0.25) / 2])
    assert np.isnan(mape(np.zeros((3, 1)), pred))[0]


def test_constant_vectors_score_zero_with_a_note_not_nan():
    rng = np.random.default_rng(1)
    true = rng.normal(size=(40, 3))
    true[:, 2] = 7.0  # constant measurement
    pred = rng.normal(size=(40, 3))
    pred[:, 0] = 1.5  # constant prediction (the reference-mean baseline)
    table = score_genes(true, pred, ["a", "b", "c"])
    assert not table[["PCC", "SRCC", "SSIM", "RMSE", "JS"]].isna().any().any()
    assert table.loc[0, "PCC"] == 0.0 and table.loc[0, "SRCC"] == 0.0
    assert table.loc[2, "PCC"] == 0.0
    assert table.loc[0, "RMSE"] == pytest.approx(np.sqrt(2))
    assert "constant prediction" in table.loc[0, "note"]
    assert table.loc[1, "note"] == ""
    assert "constant measurement" in table.loc[2, "note"]


def test_missing_prediction_scores_like_li2022():
    true = np.arange(20, dtype=float).reshape(10, 2)
    pred = true.copy()
    pred[:, 1] = np.nan
    pred[3, 0] = np.inf  # any non-finite value makes the gene missing
    table = score_genes(true, pred, ["x", "y"])
    for metric, value in MISSING_SCORE.items():
        if np.isnan(value):
            assert table[metric].isna().all()
        else:
            assert (table[metric] == value).all(), metric
    assert table["note"].str.startswith("missing prediction").all()


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="shapes differ"):
        score_genes(np.zeros((5, 2)), np.zeros((5, 3)))


def test_accuracy_score_ranks_per_metric_direction():
    means = pd.DataFrame(
        {
            "PCC": [0.6, 0.5, 0.0],
            "SSIM": [0.5, 0.4, 0.1],
            "RMSE": [0.9, 1.0, 1.41],  # lower is better
            "JS": [0.2, 0.1, 0.3],  # lower is better
        },
        index=["good", "ok", "trivial"],
    )
    score = accuracy_score(means)
    # good: ranks 3,3,3,2 of 3; ok: 2,2,2,3; trivial: 1,1,1,1
    np.testing.assert_allclose(score.to_numpy(), [11 / 12, 9 / 12, 4 / 12])
    assert set(AS_METRICS) == set(means.columns)


def test_accuracy_score_ties_share_average_rank():
    means = pd.DataFrame({m: [0.5, 0.5] for m in AS_METRICS}, index=["a", "b"])
    np.testing.assert_allclose(accuracy_score(means).to_numpy(), [0.75, 0.75])


def test_real_drosophila_gene_against_itself_and_a_shuffle():
    atlas = drosophila_atlas()
    true = np.asarray(atlas.X[:, :10], dtype=float)
    rng = np.random.default_rng(0)
    shuffled = true[rng.permutation(true.shape[0])]
    same = score_genes(true, true, list(atlas.var_names[:10]))
    assert np.allclose(same[["PCC", "SRCC", "SSIM"]], 1.0)
    assert np.allclose(same[["RMSE", "JS"]], 0.0, atol=1e-7)
    noise = score_genes(true, shuffled)
    assert np.abs(noise["PCC"]).max() < 0.1
    np.testing.assert_allclose(noise["RMSE"], np.sqrt(2 * (1 - noise["PCC"])), atol=1e-12)
    assert (noise["SSIM"] < same["SSIM"]).all()
    assert (noise["JS"] > 0.01).all()
