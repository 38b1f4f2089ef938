"""Checkpoint round trip (identical predictions) and clear errors on gene or format mismatch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from histology_data import mob_sections  # noqa: F401 - fixture

from napari_casper.errors import CasperInputError, CheckpointMismatchError
from napari_casper.histology.checkpoint import load_predictor, save_predictor
from napari_casper.histology.config import HistologyConfig
from napari_casper.histology.train import train_histology


@pytest.fixture(scope="module")
def predictor(mob_sections):
    return train_histology(mob_sections[:2], HistologyConfig(epochs=2, predictor="ensemble", threads=1))


def test_round_trip_gives_identical_predictions(predictor, mob_sections, tmp_path):
    path = tmp_path / "histology.pt"
    save_predictor(predictor, path)
    loaded = load_predictor(path)
    test = mob_sections[3]
    for head in ("ridge", "retrieval", "ensemble", "crossmodal"):
        a = predictor.predict(test.image, test.coords, test.spot_diameter_px, head=head)
        b = loaded.predict(test.image, test.coords, test.spot_diameter_px, head=head)
        assert np.array_equal(a.expression, b.expression)
        assert np.array_equal(a.uncertainty, b.uncertainty)
    assert loaded.genes == predictor.genes and loaded.model_genes == predictor.model_genes
    assert loaded.head == predictor.head and loaded.config == predictor.config
    assert loaded.history["epochs"] == predictor.history["epochs"]


def test_gene_mismatch_is_a_clear_error(predictor, tmp_path):
    path = tmp_path / "histology.pt"
    save_predictor(predictor, path)
    load_predictor(path, expected_genes=predictor.genes[:3])
    with pytest.raises(CheckpointMismatchError, match="Penk_missing.*retrain"):
        load_predictor(path, expected_genes=["Penk_missing"])


def test_foreign_or_newer_files_are_refused(predictor, tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(CheckpointMismatchError, match="not a histology checkpoint"):
        load_predictor(other)
    path = tmp_path / "histology.pt"
    save_predictor(predictor, path)
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, path)
    with pytest.raises(CheckpointMismatchError, match="upgrade"):
        load_predictor(path)
    with pytest.raises(CasperInputError, match="does not exist"):
        load_predictor(tmp_path / "absent.pt")


def test_models_saved_before_the_encoder_option_still_load():
    """Their config records ``backbone_path`` (None unless --backbone was used, which --encoder replaced)."""
    saved = HistologyConfig().to_dict()
    del saved["encoder"], saved["spot_diameter_um"]
    assert HistologyConfig.from_dict({**saved, "backbone_path": None}).encoder is None
    with pytest.raises(CheckpointMismatchError, match="retrain it with --encoder"):
        HistologyConfig.from_dict({**saved, "backbone_path": "/models/uni.pt"})
