"""Compact multi-scale image encoder, trainable from scratch on a CPU in minutes.

One small CNN is shared by every context scale (1x/2x/4x spot diameter). Each scale's feature
map is pooled to a 4 x 4 grid of tokens; tokens get a learned scale embedding and position
embedding. The spot embedding is an attention pooling over the per-scale summaries (a learned
query scores each scale), so the model learns how much context to use.

With a pretrained patch encoder (:mod:`.pretrained`, the user's own), the CNN is not used: the
encoder's frozen embeddings, computed once per slide, are the input, and :class:`FeatureTrunk`
turns each scale's embedding into a few tokens; the rest of the model is the same.
"""

from __future__ import annotations

import torch
from torch import nn

from napari_casper.errors import CasperInputError

#: grid side of the tokens taken from each scale's feature map
TOKEN_GRID = 4
#: tokens made of one scale's pretrained embedding (a 2 x 2 grid)
FEATURE_TOKENS = 4
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


class FeatureTrunk(nn.Module):
    """Frozen embeddings of a pretrained encoder (:mod:`.pretrained`) -> a few trainable tokens per scale.

    ``(N, F)`` float features -> ``(N, dim, 2, 2)``: layer norm, dropout (the features cannot be
    augmented like pixels, so the dropout stands in), one linear map to ``FEATURE_TOKENS`` tokens.
    """

    def __init__(self, n_features: int, dim: int = 128, dropout: float = 0.1):
        super().__init__()
        self.dim = dim
        self.layers = nn.Sequential(nn.LayerNorm(n_features), nn.Dropout(dropout), nn.Linear(n_features, dim * FEATURE_TOKENS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = int(FEATURE_TOKENS**0.5)
        return self.layers(x).view(-1, self.dim, side, side)


class MultiScaleEncoder(nn.Module):
    """Shared trunk over scales + scale embedding + attention pooling over scales.

    Parameters
    ----------
    n_scales
        Number of context scales per spot.
    dim
        Token and embedding width.
    width
        Channel width of the first CNN layer (not used with ``n_features``).
    n_features
        Width of a pretrained encoder's embeddings: the input is then ``(B, n_scales, F)`` embeddings
        instead of patches (see :class:`FeatureTrunk`).
    dropout
        Dropout on the pretrained embeddings.
    """

    def __init__(self, n_scales: int = 3, dim: int = 128, width: int = 32, n_features: int | None = None, dropout: float = 0.1):
        super().__init__()
        self.n_scales, self.dim = n_scales, dim
        self.trunk = FeatureTrunk(n_features, dim, dropout) if n_features else ConvTrunk(dim, width)
        n_tok = FEATURE_TOKENS if n_features else TOKEN_GRID * TOKEN_GRID
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
            ``(B, n_scales, 3, P, P)`` float in [0, 1], or ``(B, n_scales, F)`` pretrained embeddings.

        Returns
        -------
        tokens ``(B, n_scales * n_tokens, dim)``, pooled embedding ``(B, dim)``, and the scale
        attention weights ``(B, n_scales)``.
        """
        b, s = patches.shape[:2]
        if s != self.n_scales:
            raise CasperInputError(f"the encoder was built for {self.n_scales} scales, got {s}")
        x = patches.flatten(0, 1)
        if isinstance(self.trunk, ConvTrunk):
            x = (x - self.pixel_mean) / self.pixel_std
        grid = self.trunk(x)  # (B*S, dim, side, side)
        tokens = grid.flatten(2).transpose(1, 2).reshape(b, s, -1, self.dim)
        tokens = tokens + self.scale_embedding + self.position_embedding
        summaries = self.summary_norm(tokens.mean(dim=2))  # (B, S, dim)
        scores = self.pool_key(summaries) @ self.pool_query / self.dim**0.5
        weights = torch.softmax(scores, dim=1)
        pooled = (weights.unsqueeze(-1) * summaries).sum(dim=1)
        return self.token_norm(tokens.flatten(1, 2)), pooled, weights
