"""Checkpoints: bit-exact round trip, and clear errors for mismatching or foreign files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import drosophila_atlas, drosophila_reference

from napari_casper import __version__
from napari_casper.casper.checkpoint import load_checkpoint, save_checkpoint
from napari_casper.casper.imputation import CasperImputer
from napari_casper.casper.training import train_casper
from napari_casper.errors import CheckpointMismatchError

HELD_OUT = ["eve", "ftz", "hb", "Kr"]


@pytest.fixture(scope="module")
def setup():
    st = drosophila_atlas()
    ref = drosophila_reference()
    visible = st[:, [g for g in st.var_names if g not in HELD_OUT]].copy()
    model = train_casper(visible, ref, max_steps=30, steps_per_epoch=10, device="cpu", reference_weight=0.0)
    return visible, model


def test_round_trip_is_bit_exact(setup, tmp_path):
    visible, model = setup
    path = save_checkpoint(model, tmp_path / "sub" / "model.pt")
    loaded = load_checkpoint(path, panel_genes=visible.var_names)
    for (name, a), (_, b) in zip(model.network.state_dict().items(), loaded.network.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.panel_genes == model.panel_genes
    assert loaded.centroids.labels == model.centroids.labels
    np.testing.assert_array_equal(loaded.centroids.expression, model.centroids.expression)
    assert loaded.config == model.config and loaded.library_version == __version__
    assert loaded.history.best_epoch == model.history.best_epoch
    genes = HELD_OUT + ["Hsp83"]  # Hsp83: a reference gene that is not in the atlas panel
    before = CasperImputer(model, visible).predict(genes)
    after = CasperImputer(loaded, visible).predict(genes)
    np.testing.assert_array_equal(before, after)
    # trust and intervals travel with the model: the same numbers after the round trip
    assert loaded.calibration.genes == model.calibration.genes and loaded.calibration.quantile == model.calibration.quantile
    np.testing.assert_array_equal(loaded.calibration.reference_accuracy, model.calibration.reference_accuracy)
    for a, b in zip(CasperImputer(model, visible).intervals(genes), CasperImputer(loaded, visible).intervals(genes)):
        np.testing.assert_array_equal(a, b)


def test_mismatching_genes_raise(setup, tmp_path):
    visible, model = setup
    path = save_checkpoint(model, tmp_path / "model.pt")
    fewer = visible[:, visible.var_names[5:]].copy()
    with pytest.raises(CheckpointMismatchError, match="lacks 5 of them"):
        load_checkpoint(path, panel_genes=fewer.var_names)
    with pytest.raises(CheckpointMismatchError, match="same panel"):
        CasperImputer(load_checkpoint(path), fewer)


def test_foreign_and_newer_files_raise(setup, tmp_path):
    _, model = setup
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="not a readable"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointMismatchError, match="not a napari-casper"):
        load_checkpoint(other)
    path = save_checkpoint(model, tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, path)
    with pytest.raises(CheckpointMismatchError, match="upgrade napari-casper"):
        load_checkpoint(path)


class _Payload:
    """An object a checkpoint must never hold (loading it would need unpickling code)."""


def test_a_file_with_code_objects_is_refused_without_unsafe_advice(tmp_path):
    crafted = tmp_path / "crafted.pt"
    torch.save({"format": "napari-casper", "payload": _Payload()}, crafted)
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(crafted)
    message = str(err.value)
    assert "not a readable napari-casper checkpoint" in message and "napari-casper train" in message
    assert "weights_only" not in message and "\n" not in message  # torch's advice to load unsafely is never passed on


def test_save_replaces_an_earlier_checkpoint_atomically(setup, tmp_path):
    _, model = setup
    path = tmp_path / "model.pt"
    save_checkpoint(model, path)
    first = path.read_bytes()
    save_checkpoint(model, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no scratch, no lock left behind
    assert load_checkpoint(path).panel_genes == model.panel_genes and len(path.read_bytes()) == len(first)


def test_the_imputer_refuses_a_gene_in_two_columns_and_an_empty_section(setup):
    import anndata as ad

    from napari_casper.errors import CasperInputError

    visible, model = setup
    doubled = ad.concat([visible, visible[:, :1]], axis=1)  # the first panel gene twice
    doubled.obsm["spatial"] = visible.obsm["spatial"]
    with pytest.raises(CasperInputError, match="in more than one column"):
        CasperImputer(model, doubled)
    with pytest.raises(CasperInputError, match="has no spots"):
        CasperImputer(model, visible[:0].copy())
