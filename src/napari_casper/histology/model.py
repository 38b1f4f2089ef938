"""CMRCNet-style image-expression model: contrastive alignment + cross-modal masked reconstruction.

- :class:`ExpressionEncoder` projects a spot's log-normalised, z-scored expression of the model
  genes (HVGs by default) into ``n_tokens`` gene tokens and a pooled embedding.
- :class:`HistologyExpressionModel` holds the image encoder (:mod:`.encoder`), the expression
  encoder, projection heads into one latent space and the reconstruction module.

Losses (Liu et al., MedIA 2025, "CMRCNet"):

- ``L_con``: symmetric InfoNCE between the image and expression embeddings of the spots of a
  batch, with a learnable temperature (CLIP's ``logit_scale``, capped at 100).
- ``L_rec``: a large fraction (``mask_ratio``) of the image tokens is replaced by a learned mask
  token; the masked tokens cross-attend to the expression tokens, are pooled and must
  reconstruct the image embedding of the *unmasked* patches (stop-gradient target, cosine MSE).
- total ``log(1 + L_con) + log(1 + L_rec)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from napari_casper.histology.encoder import MultiScaleEncoder


class ExpressionEncoder(nn.Module):
    """``(B, n_genes)`` z-scored log expression -> gene tokens ``(B, n_tokens, dim)`` and pooled ``(B, dim)``."""

    def __init__(self, n_genes: int, dim: int = 128, n_tokens: int = 8, hidden: int = 256, dropout: float = 0.1):
        super().__init__()
        self.n_tokens, self.dim = n_tokens, dim
        self.body = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(n_genes, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Dropout(dropout),
        )
        self.to_tokens = nn.Linear(hidden, n_tokens * dim)
        self.to_pooled = nn.Linear(hidden, dim)
        self.token_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        tokens = self.token_norm(self.to_tokens(h).view(-1, self.n_tokens, self.dim))
        return tokens, self.to_pooled(h)


class CrossModalReconstruction(nn.Module):
    """Masked image tokens cross-attend to expression tokens and predict the full image embedding."""

    def __init__(self, dim: int, out_dim: int, heads: int = 4):
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.attend = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, out_dim))

    def forward(self, image_tokens: torch.Tensor, expression_tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``mask``: ``(B, n_tokens)`` bool, True where an image token is hidden."""
        q = torch.where(mask.unsqueeze(-1), self.mask_token.expand_as(image_tokens), image_tokens)
        attended, _ = self.attend(q, expression_tokens, expression_tokens, need_weights=False)
        return self.head(self.norm(q + attended).mean(dim=1))


class HistologyExpressionModel(nn.Module):
    """Image encoder + expression encoder aligned in one latent space of width ``proj_dim``.

    Parameters
    ----------
    n_genes
        Number of model genes (expression encoder input).
    n_scales
        Context scales per spot.
    dim, proj_dim
        Token width; latent (embedding) width.
    width
        First CNN layer width.
    n_gene_tokens
        Expression tokens for the cross-attention (CMRCNet uses 8).
    n_features
        Width of a pretrained encoder's embeddings when they replace the patches (see :mod:`.pretrained`).
    """

    def __init__(
        self,
        n_genes: int,
        *,
        n_scales: int = 3,
        dim: int = 128,
        proj_dim: int = 64,
        width: int = 32,
        n_gene_tokens: int = 8,
        dropout: float = 0.1,
        n_features: int | None = None,
    ) -> None:
        super().__init__()
        self.image_encoder = MultiScaleEncoder(n_scales, dim, width, n_features, dropout)
        self.expression_encoder = ExpressionEncoder(n_genes, dim, n_gene_tokens, dropout=dropout)
        self.image_projection = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, proj_dim))
        self.expression_projection = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, proj_dim))
        self.reconstruction = CrossModalReconstruction(dim, proj_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def embed_image(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, n_scales, 3, P, P)`` in [0, 1] (or ``(B, n_scales, F)`` embeddings) -> L2-normalised ``(B, proj_dim)``."""
        _, pooled, _ = self.image_encoder(patches)
        return F.normalize(self.image_projection(pooled), dim=-1)

    def embed_expression(self, expression: torch.Tensor) -> torch.Tensor:
        """``(B, n_genes)`` z-scored log expression -> L2-normalised ``(B, proj_dim)`` embedding."""
        _, pooled = self.expression_encoder(expression)
        return F.normalize(self.expression_projection(pooled), dim=-1)

    def losses(
        self, patches: torch.Tensor, expression: torch.Tensor, *, mask_ratio: float = 0.5, generator=None
    ) -> dict[str, torch.Tensor]:
        """``{"loss", "contrastive", "reconstruction"}`` for a batch of paired spots."""
        tokens, pooled, _ = self.image_encoder(patches)
        z_img = F.normalize(self.image_projection(pooled), dim=-1)
        expr_tokens, expr_pooled = self.expression_encoder(expression)
        z_exp = F.normalize(self.expression_projection(expr_pooled), dim=-1)

        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        logits = scale * z_img @ z_exp.T
        target = torch.arange(len(logits), device=logits.device)
        l_con = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

        b, n = tokens.shape[:2]
        noise = torch.rand(b, n, generator=generator).to(tokens.device)
        n_mask = max(1, int(round(mask_ratio * n)))
        mask = noise.argsort(dim=1).argsort(dim=1) < n_mask  # exactly n_mask hidden tokens per spot
        recon = F.normalize(self.reconstruction(tokens, expr_tokens, mask), dim=-1)
        l_rec = ((recon - z_img.detach()) ** 2).sum(dim=-1).mean()

        loss = torch.log1p(l_con) + torch.log1p(l_rec)
        return {"loss": loss, "contrastive": l_con, "reconstruction": l_rec}
