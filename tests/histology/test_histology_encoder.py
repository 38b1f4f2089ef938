"""Multi-scale encoder: shapes, scale attention, and tokens made of a pretrained encoder's embeddings."""

from __future__ import annotations

import pytest
import torch
from histology_data import mob_sections  # noqa: F401 - fixture

from napari_casper.errors import CasperInputError
from napari_casper.histology.encoder import FEATURE_TOKENS, TOKEN_GRID, FeatureTrunk, MultiScaleEncoder


def _batch(mob_sections, n=8, size=32):
    patches = mob_sections[0].patches((1, 2, 4), size)[:n]
    return torch.from_numpy(patches).permute(0, 1, 4, 2, 3).float() / 255


def test_tokens_pooled_and_scale_weights(mob_sections):
    torch.manual_seed(0)
    enc = MultiScaleEncoder(n_scales=3, dim=64, width=16).eval()
    tokens, pooled, weights = enc(_batch(mob_sections))
    assert tokens.shape == (8, 3 * TOKEN_GRID**2, 64)
    assert pooled.shape == (8, 64)
    assert weights.shape == (8, 3) and torch.allclose(weights.sum(dim=1), torch.ones(8))
    # 64 px patches give the same token layout
    tokens64, _, _ = enc(_batch(mob_sections, n=2, size=64))
    assert tokens64.shape == (2, 48, 64)
    with pytest.raises(CasperInputError, match="scales"):
        enc(_batch(mob_sections)[:, :2])


def test_pretrained_embeddings_become_trainable_tokens():
    torch.manual_seed(0)
    enc = MultiScaleEncoder(n_scales=1, dim=32, n_features=20, dropout=0.0)
    assert isinstance(enc.trunk, FeatureTrunk)
    features = torch.randn(6, 1, 20)  # (spots, scales, features) from a frozen encoder
    tokens, pooled, weights = enc(features)
    assert tokens.shape == (6, FEATURE_TOKENS, 32) and pooled.shape == (6, 32) and weights.shape == (6, 1)
    pooled.sum().backward()
    assert enc.trunk.layers[-1].weight.grad is not None  # the projection of the embeddings trains
    # different embeddings give different spot embeddings
    assert not torch.allclose(pooled[0], pooled[1])
