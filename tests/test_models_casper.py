"""CentroidCrossAttention: shapes, attention, masking and gene-agnostic decoding."""

from __future__ import annotations

import pytest
import torch

from napari_casper.casper.network import CentroidCrossAttention, standardize_profiles

P, C, B = 12, 30, 40


@pytest.fixture()
def net():
    torch.manual_seed(0)
    return CentroidCrossAttention(P, C, d_model=16, hidden=32, heads=4).eval()


@pytest.fixture()
def inputs():
    g = torch.Generator().manual_seed(1)
    spots = torch.randn(B, P, generator=g)
    centroid_panel = torch.randn(C, P, generator=g)
    profiles = torch.rand(C, 50, generator=g) * 3
    return spots, centroid_panel, profiles


def test_attention_shapes_and_normalisation(net, inputs):
    spots, centroid_panel, _ = inputs
    mask = torch.ones(P)
    cache = net.encode_centroids(centroid_panel, mask)
    assert cache.keys.shape == (4, C, 4) and cache.values.shape == (4, C, 4)
    attention, hidden = net.attend(spots, mask, cache)
    assert attention.shape == (4, B, C) and hidden.shape == (B, 16)
    torch.testing.assert_close(attention.sum(-1), torch.ones(4, B))


def test_hidden_values_do_not_leak(net, inputs):
    """A masked gene's value must not influence the prediction (query nor keys)."""
    spots, centroid_panel, profiles = inputs
    mask = torch.ones(P)
    mask[[2, 5, 7]] = 0.0
    z, std = standardize_profiles(profiles)
    before = net(spots, mask, centroid_panel, profiles, z, std)
    spots2, cent2 = spots.clone(), centroid_panel.clone()
    spots2[:, [2, 5, 7]] = 100.0
    cent2[:, [2, 5, 7]] = -100.0
    after = net(spots2, mask, cent2, profiles, z, std)
    torch.testing.assert_close(before, after)


def test_decoder_is_gene_agnostic(net, inputs):
    """Any number of genes, in any order, with no per-gene parameter; columns are independent."""
    spots, centroid_panel, profiles = inputs
    mask = torch.ones(P)
    z, std = standardize_profiles(profiles)
    full = net(spots, mask, centroid_panel, profiles, z, std)
    assert full.shape == (B, 50)
    pick = [7, 3]
    z2, std2 = standardize_profiles(profiles[:, pick])
    part = net(spots, mask, centroid_panel, profiles[:, pick], z2, std2)
    torch.testing.assert_close(part, full[:, pick])
    n_params = sum(p.numel() for p in net.parameters())
    bigger = CentroidCrossAttention(P, C, d_model=16, hidden=32, heads=4)
    assert n_params == sum(p.numel() for p in bigger.parameters())


def test_mixture_only_decoder_is_a_convex_combination(inputs):
    spots, centroid_panel, profiles = inputs
    net = CentroidCrossAttention(P, C, d_model=16, hidden=32, heads=2, gene_residual=False).eval()
    z, std = standardize_profiles(profiles)
    pred = net(spots, torch.ones(P), centroid_panel, profiles, z, std)
    assert torch.all(pred <= profiles.max(0).values + 1e-5)
    assert torch.all(pred >= profiles.min(0).values - 1e-5)


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="divisible"):
        CentroidCrossAttention(P, C, d_model=10, heads=4)
