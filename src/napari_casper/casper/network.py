"""CentroidCrossAttention: the CASPER model, made gene-agnostic.

Shapes: ``B`` spots, ``P`` panel genes (model inputs), ``C`` centroids, ``G`` genes to predict,
``H`` heads, ``D`` latent width.

* **ST encoder** ``(B, P) values + (P,) mask -> (B, D)`` query. The input is ``[x * mask, mask]``
  so its width is fixed whatever genes are hidden.
* **Centroid encoder** ``(C, P) + mask -> (C, D)`` keys and ``(C, D)`` values, computed once per
  batch (and cached by :class:`KeyValueCache` at inference), never per spot.
* **Cross-attention**: ``H``-head attention of each spot query over the centroids. The logits are
  the learned ``q.k / sqrt(D/H)`` plus a per-head scaled cosine similarity between the spot's and
  the centroid's visible standardised profiles (a parameter-free "cell-level evidence" prior that
  keeps attention anchored to expression similarity). Output: ``LayerNorm(q + W_o [heads])``.
* **Gene-agnostic decoder**: for any gene ``g`` with centroid profile ``e_g`` (``(C,)``)::

      pred[s, g] = sum_c attn[s, c] * e_g[c]  +  std_g * gamma * <hidden[s], phi(z(e_g))>

  ``phi`` is an MLP from the gene's standardised centroid profile to ``(D,)``. No parameter
  belongs to a gene, so any reference gene (in the panel or not) can be predicted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class MaskedProfileEncoder(nn.Module):
    """MLP over ``[x * mask, mask]``: ``(N, P)`` profile + ``(P,)`` mask -> ``(N, out)``."""

    def __init__(self, n_panel: int, out_features: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 * n_panel, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_features),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Linear([x * mask, mask]) computed without building the (N, 2P) input: the mask is
        # folded into the value weights and the mask half becomes a per-mask bias.
        first = self.net[0]
        n = x.shape[-1]
        weight = first.weight[:, :n] * mask
        bias = first.bias + first.weight[:, n:] @ mask
        return self.net[1:](torch.nn.functional.linear(x, weight, bias))


@dataclass
class KeyValueCache:
    """Per-centroid tensors that depend only on the mask, reused for every spot batch.

    ``keys``/``values``: ``(H, C, D/H)``; ``unit_profiles``: ``(C, P)`` L2-normalised masked
    centroid profiles for the cosine prior.
    """

    keys: torch.Tensor
    values: torch.Tensor
    unit_profiles: torch.Tensor


class GeneDecoding:
    """``decode`` and ``forward``, the same for one network and for an ensemble of them
    (:class:`~napari_casper.casper.ensemble.NetworkEnsemble`): both define ``encode_centroids``, ``attend``,
    ``embed_genes``, ``gene_residual`` and ``residual_scale``."""

    def decode(
        self,
        attention_mean: torch.Tensor,
        hidden: torch.Tensor,
        gene_profiles: torch.Tensor,
        gene_profiles_z: torch.Tensor,
        gene_std: torch.Tensor,
        gene_embeddings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predictions ``(B, G)`` in reference units.

        ``attention_mean`` ``(B, C)``; ``hidden`` ``(B, D)``; ``gene_profiles`` ``(C, G)`` centroid
        expression; ``gene_profiles_z`` the same standardised over centroids; ``gene_std`` ``(G,)``
        the standard deviation used for that.
        """
        pred = attention_mean @ gene_profiles
        if self.gene_residual:
            if gene_embeddings is None:
                gene_embeddings = self.embed_genes(gene_profiles_z)
            pred = pred + self.residual_scale * (hidden @ gene_embeddings.T) * gene_std
        return pred

    def forward(
        self,
        spot_panel: torch.Tensor,
        mask: torch.Tensor,
        centroid_panel: torch.Tensor,
        gene_profiles: torch.Tensor,
        gene_profiles_z: torch.Tensor,
        gene_std: torch.Tensor,
        exclude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict ``(B, G)`` for the genes whose centroid profiles are given (one mask)."""
        cache = self.encode_centroids(centroid_panel, mask)
        attention, hidden = self.attend(spot_panel, mask, cache, exclude)
        return self.decode(attention.mean(0), hidden, gene_profiles, gene_profiles_z, gene_std)


class CentroidCrossAttention(GeneDecoding, nn.Module):
    """Dual encoder + multi-head cross-attention over centroids + gene-agnostic decoder.

    Parameters
    ----------
    n_panel
        number of panel genes the encoders read (``P``).
    n_centroids
        number of centroids (``C``); the gene-embedding MLP reads a gene's profile over them.
    d_model, hidden, heads, dropout
        latent width ``D``, MLP hidden width, attention heads ``H`` (``D % H == 0``), dropout.
    similarity_prior
        add the scaled cosine similarity of visible profiles to the attention logits.
    prior_scale
        initial scale of that cosine prior (an inverse temperature; learned per head).
    gene_residual
        add the gene-embedding residual to the attention-weighted centroid mixture.
    """

    def __init__(
        self,
        n_panel: int,
        n_centroids: int,
        *,
        d_model: int = 64,
        hidden: int = 128,
        heads: int = 2,
        dropout: float = 0.1,
        similarity_prior: bool = True,
        prior_scale: float = 10.0,
        gene_residual: bool = True,
    ):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
        self.n_panel, self.n_centroids = n_panel, n_centroids
        self.d_model, self.heads = d_model, heads
        self.st_encoder = MaskedProfileEncoder(n_panel, d_model, hidden, dropout)
        self.centroid_encoder = MaskedProfileEncoder(n_panel, 2 * d_model, hidden, dropout)
        self.out_proj = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.similarity_prior = similarity_prior
        self.prior_scale = nn.Parameter(torch.full((heads,), float(prior_scale)))
        self.gene_residual = gene_residual
        self.gene_encoder = nn.Sequential(
            nn.Linear(n_centroids, hidden), nn.GELU(), nn.Linear(hidden, d_model)
        )
        self.residual_scale = nn.Parameter(torch.tensor(0.1))

    # -- encoders ---------------------------------------------------------------------------
    def encode_centroids(self, centroid_panel: torch.Tensor, mask: torch.Tensor) -> KeyValueCache:
        """Keys/values of all centroids for one mask: ``(C, P)`` -> :class:`KeyValueCache`."""
        C = centroid_panel.shape[0]
        dh = self.d_model // self.heads
        kv = self.centroid_encoder(centroid_panel, mask)
        keys, values = kv.split(self.d_model, dim=-1)
        unit = F.normalize(centroid_panel * mask, dim=-1)
        return KeyValueCache(
            keys=keys.reshape(C, self.heads, dh).transpose(0, 1),
            values=values.reshape(C, self.heads, dh).transpose(0, 1),
            unit_profiles=unit,
        )

    def attend(
        self, spot_panel: torch.Tensor, mask: torch.Tensor, cache: KeyValueCache, exclude: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention of spots over centroids; ``exclude`` ``(B,)`` names one centroid each query may
        not attend to (a reference cell's own centroid), or is None.

        Returns ``(attention (H, B, C), hidden (B, D))``.
        """
        B = spot_panel.shape[0]
        dh = self.d_model // self.heads
        query = self.st_encoder(spot_panel, mask)
        qh = query.reshape(B, self.heads, dh).transpose(0, 1)  # H, B, dh
        logits = qh @ cache.keys.transpose(1, 2) / math.sqrt(dh)  # H, B, C
        if self.similarity_prior:
            # unit_profiles are zero at masked genes, so x @ unit.T only sees visible genes
            norm = ((spot_panel * spot_panel) @ mask).clamp_min(1e-24).sqrt()
            cosine = (spot_panel @ cache.unit_profiles.T) / norm[:, None]  # B, C
            logits = logits + self.prior_scale[:, None, None] * cosine.unsqueeze(0)
        if exclude is not None:
            blocked = torch.zeros(B, logits.shape[-1], dtype=torch.bool, device=logits.device)
            blocked[torch.arange(B, device=logits.device), exclude] = True
            logits = logits.masked_fill(blocked.unsqueeze(0), float("-inf"))
        attention = torch.softmax(logits.float(), dim=-1).to(qh.dtype)
        mixed = (attention @ cache.values).transpose(0, 1).reshape(B, self.d_model)
        hidden = self.norm(query + self.out_proj(mixed))
        return attention, hidden

    def embed_genes(self, gene_profiles_z: torch.Tensor) -> torch.Tensor:
        """Gene embeddings ``(G, D)`` from standardised centroid profiles ``(C, G)``."""
        return self.gene_encoder(gene_profiles_z.T)


def standardize_profiles(profiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardise centroid profiles ``(C, G)`` per gene over centroids; returns ``(z, std)``."""
    mean = profiles.mean(dim=0, keepdim=True)
    std = profiles.std(dim=0, unbiased=False, keepdim=True)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return (profiles - mean) / std, std.squeeze(0)
