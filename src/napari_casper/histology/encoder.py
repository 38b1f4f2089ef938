"""Compact multi-scale image encoder, trainable from scratch on a CPU in minutes.

One small CNN is shared by every context scale (1x/2x/4x spot diameter). Each scale's feature
map is pooled to a 4 x 4 grid of tokens; tokens get a learned scale embedding and position
embedding. The spot embedding is an attention pooling over the per-scale summaries (a learned
query scores each scale), so the model learns how much context to use.

Optionally a *frozen* backbone replaces the CNN trunk: a TorchScript module loaded from a local
file given by the user (``torch.jit.save`` of any ``(B, 3, H, W) -> (B, F)`` network, e.g. a
histology foundation model exported on a machine that has it). Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from napari_casper.errors import CasperInputError

#: grid side of the tokens taken from each scale's feature map
TOKEN_GRID = 4
#: H&E patches are normalised with these per-channel statistics (typical stained tissue)
PIXEL_MEAN = (0.70, 0.55, 0.72)
PIXEL_STD = (0.18, 0.20, 0.15)


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.GELU(),
    )


class ConvTrunk(nn.Module):
    """Small CNN, three stride-2 blocks: ``(N, 3, P, P)`` -> ``(N, dim, 4, 4)`` token grid (P = 32 typical)."""

    def __init__(self, dim: int = 128, width: int = 32) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            _block(3, width, 2),
            _block(width, width * 2, 2),
            _block(width * 2, width * 4, 2),
            nn.AdaptiveAvgPool2d(TOKEN_GRID),
            nn.Conv2d(width * 4, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class FrozenBackbone(nn.Module):
    """A user's TorchScript feature extractor, frozen, followed by a trainable projection.

    Parameters
    ----------
    path
        Local file written by ``torch.jit.save``; the module maps ``(B, 3, S, S)`` ImageNet-
        normalised float images to ``(B, F)`` features.
    dim
        Token width of the rest of the model.
    input_size
        Side ``S`` the patches are resized to before the backbone.
    """

    IMAGENET_MEAN = (0.485, 0.456, 0.406)
    IMAGENET_STD = (0.229, 0.224, 0.225)

    def __init__(self, path: str | Path, dim: int = 128, input_size: int = 224) -> None:
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise CasperInputError(
                f"backbone weights file {path} does not exist; give the path of a local TorchScript "
                "file (torch.jit.save), nothing is downloaded"
            )
        try:
            net = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:  # noqa: BLE001 - any load failure means the same thing to the user
            raise CasperInputError(
                f"could not load {path} as a TorchScript module ({err}); export the backbone with "
                "torch.jit.save(torch.jit.script(model) or torch.jit.trace(model, example), path)"
            ) from err
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net
        self.path = str(path)
        self.input_size = int(input_size)
        with torch.no_grad():
            n_features = int(net(torch.zeros(1, 3, self.input_size, self.input_size)).reshape(1, -1).shape[1])
        self.project = nn.Linear(n_features, dim * TOKEN_GRID * TOKEN_GRID)
        self.dim = dim
        self.register_buffer("mean", torch.tensor(self.IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True):  # the backbone stays in eval mode (frozen BatchNorm)
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, 3, P, P)`` in [0, 1] -> ``(N, dim, 4, 4)``."""
        x = nn.functional.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        with torch.no_grad():
            feats = self.net((x - self.mean) / self.std).reshape(x.shape[0], -1)
        return self.project(feats).view(-1, self.dim, TOKEN_GRID, TOKEN_GRID)


class MultiScaleEncoder(nn.Module):
    """Shared trunk over scales + scale embedding + attention pooling over scales.

    Parameters
    ----------
    n_scales
        Number of context scales per spot.
    dim
        Token and embedding width.
    width
        Channel width of the first CNN layer (ignored with a backbone).
    backbone_path
        Optional local TorchScript file used as a frozen trunk (see :class:`FrozenBackbone`).
    """

    def __init__(self, n_scales: int = 3, dim: int = 128, width: int = 32, backbone_path: str | None = None):
        super().__init__()
        self.n_scales, self.dim = n_scales, dim
        self.trunk = FrozenBackbone(backbone_path, dim) if backbone_path else ConvTrunk(dim, width)
        n_tok = TOKEN_GRID * TOKEN_GRID
        self.scale_embedding = nn.Parameter(torch.randn(1, n_scales, 1, dim) * 0.02)
        self.position_embedding = nn.Parameter(torch.randn(1, 1, n_tok, dim) * 0.02)
        self.pool_query = nn.Parameter(torch.randn(dim) * 0.02)
        self.pool_key = nn.Linear(dim, dim)
        self.summary_norm = nn.LayerNorm(dim)
        self.token_norm = nn.LayerNorm(dim)
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1))

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode a batch.

        Parameters
        ----------
        patches
            ``(B, n_scales, 3, P, P)`` float in [0, 1].

        Returns
        -------
        tokens ``(B, n_scales * 16, dim)``, pooled embedding ``(B, dim)``, and the scale
        attention weights ``(B, n_scales)``.
        """
        b, s = patches.shape[:2]
        if s != self.n_scales:
            raise CasperInputError(f"the encoder was built for {self.n_scales} scales, got {s}")
        x = patches.flatten(0, 1)
        if isinstance(self.trunk, ConvTrunk):
            x = (x - self.pixel_mean) / self.pixel_std
        grid = self.trunk(x)  # (B*S, dim, 4, 4)
        tokens = grid.flatten(2).transpose(1, 2).reshape(b, s, -1, self.dim)
        tokens = tokens + self.scale_embedding + self.position_embedding
        summaries = self.summary_norm(tokens.mean(dim=2))  # (B, S, dim)
        scores = self.pool_key(summaries) @ self.pool_query / self.dim**0.5
        weights = torch.softmax(scores, dim=1)
        pooled = (weights.unsqueeze(-1) * summaries).sum(dim=1)
        return self.token_norm(tokens.flatten(1, 2)), pooled, weights
