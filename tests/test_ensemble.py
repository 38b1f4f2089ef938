"""CASPER's ensemble of refits: the model predicts exactly the mean of its networks, everywhere it is used."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import drosophila_atlas, drosophila_reference

from napari_casper.casper.calibration import pearson_columns
from napari_casper.casper.checkpoint import load_checkpoint, save_checkpoint
from napari_casper.casper.ensemble import NetworkEnsemble
from napari_casper.casper.imputation import CasperImputer
from napari_casper.casper.network import CentroidCrossAttention, standardize_profiles
from napari_casper.casper.preprocess import prepare_st
from napari_casper.casper.training import train_casper
from napari_casper.errors import CasperInputError

HELD_OUT = ["eve", "ftz", "hb", "Kr", "odd", "run"]
QUICK = {"max_steps": 50, "steps_per_epoch": 10, "device": "cpu", "reference_weight": 0.0}


@pytest.fixture(scope="module")
def trained():
    st = drosophila_atlas()
    visible = st[:, [g for g in st.var_names if g not in HELD_OUT]].copy()
    model = train_casper(visible, drosophila_reference(), **QUICK)  # ensemble=2, the default
    return st, visible, model


def member(model, k: int):
    """``model`` with only its ``k``-th network."""
    alone = copy.copy(model)
    alone.network = model.network.members[k]
    return alone


def test_the_network_is_the_mean_of_its_members():
    torch.manual_seed(0)
    nets = [CentroidCrossAttention(10, 5, heads=2).eval() for _ in range(3)]
    for net, scale in zip(nets, (0.05, 0.3, 1.2)):  # different residual scales, as trained networks have
        net.residual_scale.data.fill_(scale)
    ensemble = NetworkEnsemble(nets).eval()
    x, centroids, profiles = torch.randn(7, 10), torch.randn(5, 10), torch.rand(5, 4)
    mask = torch.ones(10)
    mask[[2, 7]] = 0.0
    z, std = standardize_profiles(profiles)
    with torch.no_grad():
        expected = torch.stack([net(x, mask, centroids, profiles, z, std) for net in nets]).mean(0)
        torch.testing.assert_close(ensemble(x, mask, centroids, profiles, z, std), expected)
        attention, hidden = ensemble.attend(x, mask, ensemble.encode_centroids(centroids, mask))
    assert attention.shape == (2, 7, 5) and hidden.shape == (7, 3 * nets[0].d_model) == (7, ensemble.d_model)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 7))  # still attention: each head's rows sum to 1
    with pytest.raises(ValueError, match="same panel"):
        NetworkEnsemble([nets[0], CentroidCrossAttention(11, 5)])


def test_training_averages_two_refits_of_different_seeds(trained):
    st, visible, model = trained
    assert isinstance(model.network, NetworkEnsemble) and model.network.size == 2
    one, two = (CasperImputer(member(model, k), visible).predict(HELD_OUT) for k in range(2))
    assert not np.allclose(one, two)  # two networks, not one twice
    both = CasperImputer(model, visible).predict(HELD_OUT)
    np.testing.assert_allclose(both, (one + two) / 2, rtol=1e-4, atol=1e-5)
    # and the mean is at least as good as its networks on genes hidden from training (the reason for it)
    measured = prepare_st(st, HELD_OUT, normalize=model.st_normalization)[0]
    scores = [float(pearson_columns(p, measured).mean()) for p in (one, two, both)]
    assert scores[2] >= min(scores[:2]) and scores[2] > 0.4, scores


def test_an_ensemble_round_trips_and_a_single_network_file_still_loads(trained, tmp_path):
    _, visible, model = trained
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "ensemble.pt"))
    assert isinstance(loaded.network, NetworkEnsemble) and loaded.network.size == 2
    np.testing.assert_array_equal(CasperImputer(loaded, visible).predict(HELD_OUT), CasperImputer(model, visible).predict(HELD_OUT))
    # a file written before ensembles existed: one network, no "members" entry
    single = member(model, 0)
    path = save_checkpoint(single, tmp_path / "single.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["network"].pop("members") == 1
    torch.save(payload, path)
    old = load_checkpoint(path)
    assert isinstance(old.network, CentroidCrossAttention)
    np.testing.assert_array_equal(CasperImputer(old, visible).predict(HELD_OUT), CasperImputer(single, visible).predict(HELD_OUT))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_a_bad_ensemble_size_is_refused_before_training(bad):
    st = drosophila_atlas()
    with pytest.raises(CasperInputError, match="number of refits"):
        train_casper(st, drosophila_reference(), ensemble=bad, **QUICK)
