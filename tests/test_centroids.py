"""Reference centroids from a label column, Leiden clusters, or individual cells (real data)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from conftest import drosophila_reference, shared_path

from napari_casper.casper.centroids import compute_centroids
from napari_casper.casper.preprocess import dense
from napari_casper.errors import CasperInputError


@pytest.fixture(scope="module")
def tasic():
    return ad.read_h5ad(shared_path("seqfish", "tasic_scrna.h5ad"))


@pytest.fixture(scope="module")
def karaiskos():
    return drosophila_reference()


def test_label_centroids_are_group_means(tasic):
    c = compute_centroids(tasic.X, tasic.var_names, obs=tasic.obs, label_key="cell_type")
    types = sorted(tasic.obs["cell_type"].astype(str).unique())
    assert c.labels == types and c.method == "label:cell_type"
    X = dense(tasic.X)
    first = (tasic.obs["cell_type"].astype(str) == types[0]).to_numpy()
    np.testing.assert_allclose(c.expression[0], X[first].mean(0), rtol=1e-5)
    assert c.sizes.sum() == tasic.n_obs and c.expression.shape == (len(types), tasic.n_vars)


def test_leiden_centroids_cover_the_whole_transcriptome(karaiskos):
    coarse = compute_centroids(karaiskos.X, karaiskos.var_names, method="leiden", resolution=0.5)
    fine = compute_centroids(karaiskos.X, karaiskos.var_names, method="leiden", resolution=2.0)
    assert coarse.expression.shape[1] == karaiskos.n_vars == len(coarse.genes)
    assert 2 <= coarse.n_centroids < fine.n_centroids
    assert coarse.sizes.sum() == karaiskos.n_obs
    assert all(label.startswith("leiden_") for label in coarse.labels)


def test_cells_mode_is_auto_for_small_references(karaiskos):
    c = compute_centroids(karaiskos.X, karaiskos.var_names, cell_names=karaiskos.obs_names)
    assert c.method == "cells" and c.n_centroids == karaiskos.n_obs
    assert c.labels[:3] == list(karaiskos.obs_names[:3])


def test_bad_label_column(karaiskos):
    with pytest.raises(CasperInputError, match="not in the reference obs"):
        compute_centroids(karaiskos.X, karaiskos.var_names, obs=karaiskos.obs, label_key="nope")
    with pytest.raises(CasperInputError, match="unknown centroid method"):
        compute_centroids(karaiskos.X, karaiskos.var_names, method="kmeans")
