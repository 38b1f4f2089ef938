"""Masked-reconstruction training on real data: learning, early stopping, determinism, cancel."""

from __future__ import annotations

import threading

import anndata as ad
import numpy as np
import pytest
import torch
from conftest import drosophila_atlas, drosophila_reference, shared_path

from napari_casper.casper.imputation import CasperImputer
from napari_casper.casper.objective import pearson_per_gene
from napari_casper.casper.training import CasperConfig, train_casper
from napari_casper.errors import CasperInputError, TrainingCancelled

#: ten Drosophila atlas genes held out of the ST panel (never seen in training)
HELD_OUT = ["eve", "ftz", "h", "run", "odd", "prd", "sna", "gt", "Kr", "hb"]
FAST = dict(max_steps=60, steps_per_epoch=15, device="cpu", reference_weight=0.0)  # reference_weight: tests/test_reference_cells.py


def selected_epoch(records, window=3):
    """The epoch train_casper keeps: best mean of the last ``window`` validation scores."""
    scores = [r.val_score for r in records[1:]]
    smoothed = [np.mean(scores[max(0, i - window + 1) : i + 1]) for i in range(len(scores))]
    return int(np.argmax(smoothed)) + 1


@pytest.fixture(scope="module")
def drosophila():
    st = drosophila_atlas()
    ref = drosophila_reference()
    visible = [g for g in st.var_names if g not in HELD_OUT]
    return st, st[:, visible].copy(), ref


@pytest.fixture(scope="module")
def trained(drosophila):
    _, st_visible, ref = drosophila
    records = []
    model = train_casper(st_visible, ref, progress=records.append, **FAST)
    return model, records


def test_training_reduces_validation_loss(trained):
    model, records = trained
    assert records[0].epoch == 0 and np.isnan(records[0].train_loss)  # the untrained model
    assert [r.epoch for r in records] == list(range(len(records)))
    best = max(records[1:], key=lambda r: r.val_score)
    # epoch 0 is already a cosine-similarity soft kNN (the attention prior), so gains are modest
    assert best.val_loss < records[0].val_loss - 0.02  # 0.026 over 60 steps with 22 validation genes
    assert best.val_score > records[0].val_score + 0.01  # +0.013 (a prior of 0.568 at epoch 0)
    assert model.history.best_epoch == selected_epoch(records)
    assert records[-1].train_loss < records[1].train_loss
    assert len(model.history.validation_genes) >= 1
    assert not set(model.history.validation_genes) & set(HELD_OUT)


def test_held_out_genes_are_predicted(trained, drosophila):
    """Genes absent from the ST input are predicted well above the reference-mean predictor.

    The reference-mean predictor gives every spot the same value, so its Pearson r is 0.
    """
    model, _ = trained
    st, st_visible, _ = drosophila
    pred = CasperImputer(model, st_visible).predict(HELD_OUT)
    truth = np.asarray(st[:, HELD_OUT].X)
    r = pearson_per_gene(pred, truth)
    assert r.mean() > 0.4, r
    assert (r > 0).sum() >= 8


def test_training_is_deterministic(drosophila):
    _, st_visible, ref = drosophila
    a = train_casper(st_visible, ref, max_steps=15, steps_per_epoch=5, device="cpu", seed=3, reference_weight="auto")
    b = train_casper(st_visible, ref, max_steps=15, steps_per_epoch=5, device="cpu", seed=3)
    for (name, x), (_, y) in zip(a.network.state_dict().items(), b.network.state_dict().items()):
        assert torch.equal(x, y), name
    assert a.history.validation_genes == b.history.validation_genes


def test_cancel_keeps_the_best_model(drosophila):
    _, st_visible, ref = drosophila
    stop = threading.Event()
    seen = []

    def progress(record):
        seen.append(record)
        if record.epoch == 2:
            stop.set()

    with pytest.raises(TrainingCancelled) as info:
        train_casper(st_visible, ref, progress=progress, cancel=stop, **FAST)
    model = info.value.model
    assert model.history.stop_reason == "cancelled"
    assert [r.epoch for r in seen] == [0, 1, 2]  # stopped at the next batch
    assert model.history.best_epoch == selected_epoch(seen)
    assert not model.network.training


def test_callable_cancel_and_early_stopping(drosophila):
    _, st_visible, ref = drosophila
    calls = []
    with pytest.raises(TrainingCancelled):
        train_casper(st_visible, ref, cancel=lambda: calls.append(1) or len(calls) > 3, **FAST)
    assert len(calls) == 4  # checked before every batch
    model = train_casper(st_visible, ref, max_steps=400, steps_per_epoch=5, patience=1, device="cpu", reference_weight=0.0)
    assert model.history.stop_reason.startswith("early stop")
    assert model.history.records[-1].step < 400


def test_refit_uses_every_gene(drosophila):
    _, st_visible, ref = drosophila
    model = train_casper(st_visible, ref, max_steps=20, steps_per_epoch=5, device="cpu", refit=True, reference_weight=0.0)
    assert "refit on all genes and spots" in model.history.stop_reason
    assert model.config["refit"] and model.history.validation_genes


def test_labelled_rank_data_seqfish():
    st = ad.read_h5ad(shared_path("seqfish", "seqfish_cortex.h5ad"))
    ref = ad.read_h5ad(shared_path("seqfish", "tasic_scrna.h5ad"))
    model = train_casper(st, ref, label_key="cell_type", max_steps=10, steps_per_epoch=5, device="cpu", reference_weight=0.0)
    assert model.st_normalization == "none"  # ranks are not logged
    assert model.report["reference_normalization"] == "none"
    assert model.centroids.method == "label:cell_type"
    assert model.centroids.n_centroids == ref.obs["cell_type"].nunique()


def test_unknown_option_is_rejected(drosophila):
    _, st_visible, ref = drosophila
    with pytest.raises(CasperInputError, match="unknown CASPER option"):
        train_casper(st_visible, ref, learning_rat=0.1)
    assert CasperConfig.from_dict({"heads": 4}).heads == 4


def test_trust_and_intervals_meet_the_held_out_measurement(trained, drosophila):
    """Trust (expected r) and 90 % intervals, calibrated on validation genes only, checked against the
    measured values of the ten genes the training never saw."""
    from napari_casper.casper.calibration import pearson_columns, standardise_columns
    from napari_casper.casper.preprocess import prepare_st

    model, _ = trained
    st, st_visible, _ = drosophila
    assert len(model.calibration.genes) == round(0.3 * st_visible.n_vars)  # the validation genes
    imputer = CasperImputer(model, st_visible)
    prediction = imputer.predict(HELD_OUT)
    trust, low, high = imputer.intervals(HELD_OUT, prediction)
    measured = standardise_columns(prepare_st(st, HELD_OUT, normalize=model.st_normalization)[0])
    actual = pearson_columns(prediction, measured)
    coverage = ((measured >= low) & (measured <= high)).mean()
    print(f"mean r {actual.mean():.3f}, mean trust {trust.mean():.3f}, coverage {coverage:.3f}")
    assert 0.85 <= coverage <= 0.95  # nominal 90 %
    assert abs(trust.mean() - actual.mean()) < 0.1  # the level, from the validation genes' median
    assert np.corrcoef(trust, actual)[0, 1] > 0  # ranks in the right direction even on ten genes
    signs = imputer.trust_signs(HELD_OUT)  # what trust rests on: correlation-like, one row per gene
    assert signs.shape == (len(HELD_OUT), 3) and np.all(np.abs(signs) <= 1)
    np.testing.assert_allclose(model.calibration.trust(signs), trust)
    again, low_again, high_again = imputer.intervals(HELD_OUT, prediction, trust=model.calibration.trust(signs))
    np.testing.assert_allclose(again, trust)
    np.testing.assert_allclose(low_again, low)
    np.testing.assert_allclose(high_again, high)
