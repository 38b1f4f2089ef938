"""Training on real MOB sections: the loss drops, progress and cancellation, head selection."""

from __future__ import annotations

import threading
import time

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
    with pytest.raises(CasperInputError, match="no (expression|counts)"):
        train_histology([no_expression])
    other = sec.expression.copy()
    other.var_names = [f"other{i}" for i in range(other.n_vars)]
    renamed = HistologySection(sec.image, sec.coords, sec.spot_diameter_px, expression=other)
    with pytest.raises(CasperInputError, match="share only 0 genes"):
        train_histology([sec, renamed])


def _subset(sec, n):
    return HistologySection(sec.image, sec.coords[:n], sec.spot_diameter_px, expression=sec.expression[:n], name=sec.name)


def test_head_is_chosen_by_leave_one_section_out_with_one_overall_progress(mob_sections):
    config = HistologyConfig(epochs=2, inner_epochs=1, threads=1, n_model_genes=200)
    phases = []
    predictor = train_histology([_subset(s, 150) for s in mob_sections[:2]], config, phase=phases.append)
    assert set(predictor.selection) == {"ridge", "retrieval", "ensemble", "crossmodal"}
    assert predictor.head == max(predictor.selection, key=predictor.selection.get)
    assert len(predictor.history["epochs"]) == 2
    texts = [p.text for p in phases]
    print("\n".join(dict.fromkeys(t.split(": spot")[0] for t in texts)))
    for name in ("reading section 1 of 2 (MOB1)", "reading section 2 of 2 (MOB2)", "features",
                 "choosing the head: model 1 of 2 (without MOB1): epoch 1 of 1", "choosing the head: model 2 of 2 (without MOB2): prediction heads",
                 "final model: epoch 2 of 2", "final model: prediction heads", "trained: head"):  # fmt: skip
        assert any(t.startswith(name) for t in texts), name
    # one progress over the three models: one total, never going back, ending at the total
    assert len({p.total for p in phases}) == 1 and phases[-1].done == phases[-1].total
    assert [p.done for p in phases] == sorted(p.done for p in phases)


@pytest.mark.serial
@pytest.mark.parametrize("phase", ["reading section 1 of 1", "features", "final model: epoch 1", "final model: prediction heads"])
def test_cancel_takes_effect_within_a_second_in_every_phase(mob_sections, phase):
    cancel = threading.Event()
    clicked = []

    def on_phase(report):
        if not cancel.is_set() and report.text.startswith(phase):
            clicked.append(time.perf_counter())
            cancel.set()

    section = HistologySection(mob_sections[0].image, mob_sections[0].coords, mob_sections[0].spot_diameter_px,
                               expression=mob_sections[0].expression, name="MOB1")  # fmt: skip (a fresh patch cache)
    with pytest.raises(TrainingCancelled):
        train_histology([section], HistologyConfig(epochs=2, threads=1, n_model_genes=100, predictor="ensemble"), phase=on_phase, cancel=cancel)
    latency = time.perf_counter() - clicked[0]
    print(f"cancelled at {phase!r} after {latency:.3f} s")
    assert latency < 1.0
