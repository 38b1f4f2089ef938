"""Image-expression model: contrastive and cross-modal reconstruction losses on real MOB spots."""

from __future__ import annotations

import math

import numpy as np
import torch
from histology_data import mob_sections  # noqa: F401 - fixture

from napari_casper.histology.genes import log_normalised
from napari_casper.histology.model import HistologyExpressionModel
from napari_casper.runtime.device import torch_threads


def _pairs(mob_sections, n=64):
    sec = mob_sections[0]
    patches = torch.from_numpy(sec.patches((1, 2, 4), 32)[:n]).permute(0, 1, 4, 2, 3).float() / 255
    genes = list(sec.expression.var_names[:200])
    expr = log_normalised(sec.expression, genes)[:n]
    expr = (expr - expr.mean(0)) / (expr.std(0) + 1e-6)
    return patches, torch.as_tensor(expr)


def test_losses_are_finite_and_combined_as_in_cmrcnet(mob_sections):
    torch.manual_seed(0)
    patches, expr = _pairs(mob_sections)
    model = HistologyExpressionModel(expr.shape[1], dim=64, proj_dim=32, width=16)
    out = model.losses(patches, expr, mask_ratio=0.5, generator=torch.Generator().manual_seed(0))
    l_con, l_rec = float(out["contrastive"]), float(out["reconstruction"])
    assert np.isfinite([l_con, l_rec]).all()
    assert abs(float(out["loss"]) - (math.log1p(l_con) + math.log1p(l_rec))) < 1e-5
    # an untrained model is near chance: InfoNCE ~ log(batch size)
    assert abs(l_con - math.log(len(patches))) < 1.5
    out["loss"].backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert grads["logit_scale"] is not None  # learnable temperature
    assert grads["reconstruction.mask_token"] is not None and grads["reconstruction.mask_token"].abs().sum() > 0
    assert grads["image_encoder.trunk.layers.0.0.weight"].abs().sum() > 0


def test_embeddings_are_unit_vectors_in_one_space(mob_sections):
    patches, expr = _pairs(mob_sections, n=16)
    model = HistologyExpressionModel(expr.shape[1], dim=64, proj_dim=32, width=16).eval()
    with torch.no_grad():
        zi, ze = model.embed_image(patches), model.embed_expression(expr)
    assert zi.shape == ze.shape == (16, 32)
    assert torch.allclose(zi.norm(dim=1), torch.ones(16), atol=1e-5)
    assert torch.allclose(ze.norm(dim=1), torch.ones(16), atol=1e-5)


def test_a_few_steps_align_the_modalities(mob_sections):
    torch.manual_seed(0)
    patches, expr = _pairs(mob_sections, n=64)
    model = HistologyExpressionModel(expr.shape[1], dim=64, proj_dim=32, width=16)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    with torch_threads(1):
        for _ in range(15):
            out = model.losses(patches, expr, generator=gen)
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
            losses.append(float(out["contrastive"]))
    assert losses[-1] < 0.7 * losses[0]
