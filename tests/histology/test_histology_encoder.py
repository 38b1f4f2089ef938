"""Multi-scale encoder: shapes, scale attention, and an optional frozen local TorchScript backbone."""

from __future__ import annotations

import pytest
import torch
from histology_data import mob_sections  # noqa: F401 - fixture

from napari_casper.errors import CasperInputError
from napari_casper.histology.encoder import TOKEN_GRID, FrozenBackbone, MultiScaleEncoder


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


class _TinyBackbone(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 3, stride=4)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def test_frozen_backbone_from_a_local_file(mob_sections, tmp_path):
    path = tmp_path / "backbone.pt"
    torch.jit.save(torch.jit.script(_TinyBackbone()), str(path))
    enc = MultiScaleEncoder(n_scales=3, dim=32, backbone_path=str(path))
    assert isinstance(enc.trunk, FrozenBackbone)
    assert not any(p.requires_grad for p in enc.trunk.net.parameters())
    before = [p.clone() for p in enc.trunk.net.parameters()]
    _, pooled, _ = enc(_batch(mob_sections, n=4))
    pooled.sum().backward()
    assert enc.trunk.project.weight.grad is not None  # the projection trains
    assert all(torch.equal(a, b) for a, b in zip(before, enc.trunk.net.parameters()))
    enc.train()
    assert not enc.trunk.net.training  # frozen backbone stays in eval mode


def test_missing_or_bad_backbone_file_is_explained(tmp_path):
    with pytest.raises(CasperInputError, match="nothing is downloaded"):
        MultiScaleEncoder(backbone_path=str(tmp_path / "absent.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torchscript file")
    with pytest.raises(CasperInputError, match="TorchScript"):
        MultiScaleEncoder(backbone_path=str(bad))
