"""Training on real MOB sections: the loss drops, progress and cancellation, head selection."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from histology_data import mob_sections  # noqa: F401 - fixture

from napari_casper.errors import CasperInputError, TrainingCancelled
from napari_casper.histology.config import HistologyConfig
from napari_casper.histology.fit import auto_epochs, fit_encoder
from napari_casper.histology.genes import log_normalised
from napari_casper.histology.patches import normalize_stain
from napari_casper.histology.sections import HistologySection
from napari_casper.histology.train import train_histology


def _training_pairs(sections, n_genes=300):
    genes = list(sections[0].expression.var_names)
    expr = np.concatenate([log_normalised(s.expression, genes) for s in sections])
    top = np.argsort(-expr.var(0))[:n_genes]
    z = (expr[:, top] - expr[:, top].mean(0)) / (expr[:, top].std(0) + 1e-6)
    patches = np.concatenate([normalize_stain(s.patches((1, 2, 4), 32)) for s in sections])
    return patches, z


def test_loss_drops_and_progress_is_reported(mob_sections):
    patches, z = _training_pairs(mob_sections[:2])
    records = []
    config = HistologyConfig(epochs=5, threads=1, seed=0)
    model, history = fit_encoder(patches, z, config, progress=records.append)
    print("\n".join(f"epoch {r.epoch}: loss {r.loss:.3f} (con {r.contrastive:.3f}, rec {r.reconstruction:.3f}) val {r.val_loss:.3f}" for r in records))
    assert [r.epoch for r in records] == [1, 2, 3, 4, 5] and records[0].n_epochs == 5
    assert records[-1].loss < 0.85 * records[0].loss
    assert records[-1].contrastive < records[0].contrastive
    assert records[-1].reconstruction < records[0].reconstruction
    assert min(r.val_loss for r in records) < records[0].val_loss  # it generalises to held-out spots
    assert history.best_val_loss == min(r.val_loss for r in records)
    assert not model.training


def test_cancel_flag_stops_training_and_keeps_the_best_model(mob_sections):
    patches, z = _training_pairs(mob_sections[:1])
    cancel = threading.Event()
    records = []

    def progress(record):
        records.append(record)
        cancel.set()  # cancel after the first epoch

    with pytest.raises(TrainingCancelled) as err:
        fit_encoder(patches, z, HistologyConfig(epochs=10, threads=1), progress=progress, cancel=cancel)
    assert len(records) == 1
    assert err.value.model is not None and err.value.history.best_epoch == 1


def test_auto_epochs_and_input_errors(mob_sections):
    assert auto_epochs(1100, 128) == 15 and auto_epochs(330, 128) == 30 and auto_epochs(100_000, 128) == 10
    sec = mob_sections[0]
    with pytest.raises(CasperInputError, match="predictor"):
        train_histology([sec], HistologyConfig(predictor="magic"))
    no_expression = HistologySection(sec.image, sec.coords, sec.spot_diameter_px)
    with pytest.raises(CasperInputError, match="no expression"):
        train_histology([no_expression])
    other = sec.expression.copy()
    other.var_names = [f"other{i}" for i in range(other.n_vars)]
    renamed = HistologySection(sec.image, sec.coords, sec.spot_diameter_px, expression=other)
    with pytest.raises(CasperInputError, match="share only 0 genes"):
        train_histology([sec, renamed])


def _subset(sec, n):
    return HistologySection(sec.image, sec.coords[:n], sec.spot_diameter_px, expression=sec.expression[:n], name=sec.name)


def test_head_is_chosen_by_leave_one_section_out(mob_sections):
    config = HistologyConfig(epochs=2, inner_epochs=1, threads=1, n_model_genes=200)
    predictor = train_histology([_subset(s, 150) for s in mob_sections[:2]], config)
    assert set(predictor.selection) == {"ridge", "retrieval", "ensemble", "crossmodal"}
    assert predictor.head == max(predictor.selection, key=predictor.selection.get)
    assert len(predictor.history["epochs"]) == 2
