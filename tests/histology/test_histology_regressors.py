"""Ridge (alpha by CV) and top-k retrieval: exact on constructed data, sensible on real MOB features."""

from __future__ import annotations

import numpy as np
from histology_data import mob_sections  # noqa: F401 - fixture

from napari_casper.histology.features import handcrafted_features
from napari_casper.histology.regressors import cosine_topk, fit_ridge, retrieve


def test_ridge_recovers_a_linear_map_from_real_features(mob_sections):
    X = handcrafted_features(mob_sections[0].patches((1, 2, 4), 32)).astype(np.float64)
    rng = np.random.default_rng(0)
    W = rng.normal(size=(X.shape[1], 5))
    Y = (X - X.mean(0)) / X.std(0) @ W + 3.0
    model = fit_ridge(X, Y, alphas=(1e-6, 1.0, 100.0))
    assert model.alpha == 1e-6  # no noise: the smallest penalty wins
    assert np.allclose(model.predict(X), Y, atol=1e-3)
    noisy = Y + rng.normal(scale=30.0, size=Y.shape)
    assert fit_ridge(X, noisy, alphas=(1e-6, 1.0, 1e4)).alpha > 1e-6  # noise: CV shrinks


def test_grouped_cv_uses_whole_sections(mob_sections):
    X = np.concatenate([handcrafted_features(s.patches((1, 2, 4), 32)) for s in mob_sections[:2]])
    groups = np.repeat([0, 1], [mob_sections[0].n_spots, mob_sections[1].n_spots])
    Y = X[:, :3] * 2
    model = fit_ridge(X, Y, groups=groups)
    assert set(model.cv_mse) == {float(a) for a in model.cv_mse}
    assert np.corrcoef(model.predict(X)[:, 0], Y[:, 0])[0, 1] > 0.99


def test_retrieval_weighted_mean_and_spread():
    bank = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    values = np.array([[1.0], [3.0], [100.0]])
    idx, sim = cosine_topk(np.array([[1.0, 0.0]]), bank, k=2)
    assert list(idx[0]) == [0, 1] and sim[0, 0] > sim[0, 1]
    mean, spread = retrieve(np.array([[1.0, 0.0]]), bank, values, k=2)
    assert np.allclose(mean, 2.0) and np.allclose(spread, 1.0)  # equal weights: mean 2, std 1
    sharp, _ = retrieve(np.array([[1.0, 0.0]]), bank, values, k=2, temperature=1e-4)
    assert np.allclose(sharp, 1.0, atol=1e-3)  # a cold softmax keeps only the best match
    chunked, _ = retrieve(np.array([[1.0, 0.0]] * 5), bank, values, k=3, chunk_values=3)
    full, _ = retrieve(np.array([[1.0, 0.0]] * 5), bank, values, k=3)
    assert np.allclose(chunked, full)


def test_retrieval_in_blocks_on_two_threads_equals_one_pass():
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(3)
    bank, query, expression = rng.normal(size=(60, 8)), rng.normal(size=(45, 8)), rng.random((60, 30))
    with threadpool_limits(limits=1, user_api="blas"):
        whole = retrieve(query, bank, expression, k=7, temperature=0.1)
    with threadpool_limits(limits=2, user_api="blas"):
        blocks = retrieve(query, bank, expression, k=7, temperature=0.1, chunk_values=200)  # 7 rows a block
    for a, b in zip(whole, blocks):
        np.testing.assert_array_equal(a, b)
    # the definition: the softmax-weighted mean of the 7 most cosine-similar bank spots
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sim = unit(query) @ unit(bank).T
    top = np.argsort(-sim, axis=1)[:, :7]
    w = np.exp((np.take_along_axis(sim, top, 1) - np.take_along_axis(sim, top, 1).max(1, keepdims=True)) / 0.1)
    w /= w.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(whole[0], np.einsum("qk,qkg->qg", w, expression[top]), rtol=1e-5)
