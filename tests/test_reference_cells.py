"""Reference cells as supervision: the batches they give, and a cell never copying its own centroid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import drosophila_atlas, drosophila_reference

from napari_casper.casper.preprocess import dense
from napari_casper.casper.reference_cells import ReferenceCells
from napari_casper.casper.training import CasperConfig, build_model


def _prepared(method: str):
    st = drosophila_atlas()
    reference = drosophila_reference()[:300].copy()
    return build_model(st, reference, CasperConfig(centroid_method=method, seed=0))


def test_batches_hold_the_cells_values_of_genes_hidden_from_them():
    model, _, expression = _prepared("cells")
    cells = ReferenceCells(model, expression, torch.device("cpu"))
    hidden = torch.tensor([3, 7])
    batch = cells.draw(40, 25, hidden, torch.Generator().manual_seed(0))
    assert batch.panel.shape == (40, len(model.panel_genes)) and batch.targets.shape == (40, 27)
    # the panel genes visible to the cells are never targets; the hidden ones are, last
    genes = [model.centroids.genes.index(g) for g in model.panel_reference_genes]
    visible = set(genes) - {genes[3], genes[7]}
    drawn = cells.other_genes.tolist() + [genes[3], genes[7]]
    assert not visible & set(cells.other_genes.tolist()) and len(drawn) > 27
    # each row is one reference cell: its panel z-scores (reference statistics) and its values of the drawn genes
    rows = batch.exclude.numpy()  # with every cell a centroid, a cell's own centroid is its row
    np.testing.assert_allclose(batch.targets[:, -2:].numpy(), dense(expression[rows][:, [genes[3], genes[7]]]), rtol=1e-6)
    z = (dense(expression[rows][:, genes]) - model.centroid_mean) / model.centroid_std
    np.testing.assert_allclose(batch.panel.numpy(), z, rtol=1e-4, atol=1e-5)


def test_a_cell_never_attends_to_its_own_centroid():
    model, _, expression = _prepared("cells")
    cells = ReferenceCells(model, expression, torch.device("cpu"))
    batch = cells.draw(64, 10, torch.tensor([0]), torch.Generator().manual_seed(1))
    net = model.network.eval()
    mask = torch.ones(len(model.panel_genes))
    mask[0] = 0.0
    cache = net.encode_centroids(torch.as_tensor(model.centroid_panel()), mask)
    rows = torch.arange(64)
    with torch.no_grad():
        free, _ = net.attend(batch.panel, mask, cache)
        kept_out, _ = net.attend(batch.panel, mask, cache, batch.exclude)
    # the cosine prior alone puts a cell's largest weight on itself (identical visible profile) ...
    assert (free.mean(0).argmax(1) == batch.exclude).float().mean() > 0.9
    # ... which the supervision must not learn from: excluded, it gets none, and the rest sums to 1
    assert float(kept_out[:, rows, batch.exclude].abs().max()) == 0.0
    np.testing.assert_allclose(kept_out.sum(-1).numpy(), 1.0, rtol=1e-5)


def test_clusters_as_centroids_exclude_nothing():
    model, _, expression = _prepared("leiden")
    cells = ReferenceCells(model, expression, torch.device("cpu"))
    assert cells.own_centroid is None
    assert cells.draw(16, 5, torch.tensor([1]), torch.Generator().manual_seed(0)).exclude is None


def test_auto_trains_with_and_without_the_reference_cells_and_keeps_the_better_validation():
    from napari_casper.casper.training import train_casper

    st = drosophila_atlas()
    reference = drosophila_reference()[:300].copy()
    phases = []
    model = train_casper(st, reference, max_steps=30, steps_per_epoch=10, device="cpu", status=phases.append)
    assert any(p.startswith("validation with the reference cells: step") for p in phases)
    reason = model.history.stop_reason
    scores = [float(x) for x in reason.split("validation r (")[1].split(")")[0].replace(" without", "").replace(" with", "").split(", ")]
    chosen = 1.0 if scores[1] > scores[0] else 0.0
    assert f"reference cells: weight {chosen:g} chosen" in reason and model.config["reference_weight"] == chosen
    for weight in (0.0, 1.0):  # the choice is the same as training each alone would score
        alone = train_casper(st, reference, max_steps=30, steps_per_epoch=10, device="cpu", reference_weight=weight, refit=False, calibrate=False)
        assert alone.history.best_val_score == pytest.approx(scores[int(weight)], abs=1e-3)
