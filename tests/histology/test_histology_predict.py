"""Predicting a held-out MOB section from H&E only: layer markers, uncertainty, lazy images."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from histology_data import mob_sections  # noqa: F401 - fixture

from napari_casper.errors import CasperInputError, CheckpointMismatchError
from napari_casper.evaluate.metrics import pearson
from napari_casper.histology.config import HistologyConfig
from napari_casper.histology.evaluate import MARKERS
from napari_casper.histology.genes import log_normalised, resolve_genes
from napari_casper.histology.train import train_histology

# Measured (MOB4 held out, trained on MOB1-3 for 8 epochs, ensemble head, CPU): Penk 0.70,
# Cdhr1 0.49, Nrgn 0.73, mean 0.64 (Doc2g has no verified id in these files); HEG-50 0.474,
# where the handcrafted ridge baseline scores 0.400 on this fold.
MIN_MARKER_PCC = 0.45
MIN_HEG50_PCC = 0.40


@pytest.fixture(scope="module")
def predictor(mob_sections):
    config = HistologyConfig(epochs=8, predictor="ensemble", threads=1, seed=0)
    return train_histology(mob_sections[:3], config)


@pytest.fixture(scope="module")
def prediction(predictor, mob_sections):
    test = mob_sections[3]
    return predictor.predict(test.image, test.coords, test.spot_diameter_px)


def test_layer_markers_are_predicted_on_a_held_out_section(prediction, mob_sections):
    test = mob_sections[3]
    markers = resolve_genes(MARKERS["mob"], test.expression, prediction.genes)
    assert {"Penk", "Cdhr1", "Nrgn"} <= set(markers)
    columns = [prediction.genes.index(g) for g in markers.values()]
    truth = log_normalised(test.expression, [prediction.genes[c] for c in columns])
    r = pearson(truth, prediction.expression[:, columns])
    print(dict(zip(markers, np.round(r, 3))))
    assert r.mean() > MIN_MARKER_PCC
    assert (r > 0).all()


def test_all_genes_correlate_on_average(prediction, mob_sections):
    truth = log_normalised(mob_sections[3].expression, prediction.genes)
    r = pearson(truth, prediction.expression)
    heg = np.argsort(-truth.mean(0))[:50]
    print(f"all genes {r.mean():.3f}, HEG-50 {r[heg].mean():.3f}")
    assert r[heg].mean() > MIN_HEG50_PCC


def test_outputs_uncertainty_and_anndata(prediction, mob_sections):
    n = mob_sections[3].n_spots
    assert prediction.expression.shape == prediction.uncertainty.shape == (n, len(prediction.genes))
    assert (prediction.uncertainty >= 0).all() and np.isfinite(prediction.expression).all()
    adata = prediction.to_anndata(mob_sections[3].expression.obs_names)
    assert adata.n_obs == n and "uncertainty" in adata.layers
    assert np.allclose(adata.obsm["spatial"], mob_sections[3].coords)
    assert adata.obsm["histology_embedding"].shape[0] == n


def test_lazy_image_gene_subset_and_head_override(predictor, prediction, mob_sections):
    test = mob_sections[3]
    genes = prediction.genes[:5]
    lazy = da.from_array(test.image, chunks=(512, 512, 3))
    sub = predictor.predict(lazy, test.coords, test.spot_diameter_px, genes=genes)
    assert sub.genes == genes
    assert np.allclose(sub.expression, prediction.expression[:, :5], atol=1e-5)
    ridge = predictor.predict(test.image, test.coords, test.spot_diameter_px, genes=genes, head="ridge")
    assert ridge.head == "ridge" and not np.allclose(ridge.expression, sub.expression)


def test_bad_requests_are_explained(predictor, mob_sections):
    test = mob_sections[3]
    with pytest.raises(CheckpointMismatchError, match="not trained"):
        predictor.predict(test.image, test.coords, test.spot_diameter_px, genes=["NotAGene"])
    with pytest.raises(CasperInputError, match="at least 20 spots"):
        predictor.predict(test.image, test.coords[:5], test.spot_diameter_px)
