"""NetworkEnsemble: several trained CASPER networks that predict as one (the mean of their predictions).

Training refits the final network more than once, from different seeds (``CasperConfig.ensemble``), and
averages them: the networks agree on what the data pin down and differ by chance elsewhere, so the mean
is more accurate than any one of them (measured in docs/benchmarks.md).

The ensemble is exactly one network of the same interface as
:class:`~napari_casper.casper.network.CentroidCrossAttention`, so everything that encodes, attends and
decodes (imputation, batch imputation, trust, checkpoints) takes it as it is. A member's prediction is
``attn_k @ profiles + gamma_k * (hidden_k . phi_k(z(e_g))) * std_g``, linear in its attention and its
hidden state, so the mean over ``K`` members is

* the member-mean attention (per head) times the centroid profiles, plus
* the concatenated hidden states ``(B, K*D)`` dotted with the concatenated gene embeddings, each
  member's scaled by ``gamma_k / K`` (``residual_scale`` of the ensemble is 1).

Attention maps stay interpretable: head ``h`` is the mean of every member's head ``h``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from napari_casper.casper.network import CentroidCrossAttention, GeneDecoding, KeyValueCache


@dataclass
class EnsembleCache:
    """One :class:`KeyValueCache` per member, for one mask."""

    members: list[KeyValueCache]


class NetworkEnsemble(GeneDecoding, nn.Module):
    """The mean of ``members`` (trained :class:`CentroidCrossAttention` of one shape); ``decode`` and
    ``forward`` are the single network's (:class:`GeneDecoding`), on the ensemble's attention, hidden state and
    gene embeddings."""

    def __init__(self, members: list[CentroidCrossAttention]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one network")
        first = members[0]
        shape = (first.n_panel, first.n_centroids, first.d_model, first.heads, first.gene_residual)
        if any((m.n_panel, m.n_centroids, m.d_model, m.heads, m.gene_residual) != shape for m in members):
            raise ValueError("the networks of an ensemble must have the same panel, centroids, width and heads")
        self.members = nn.ModuleList(members)
        self.n_panel, self.n_centroids, self.heads, self.gene_residual = first.n_panel, first.n_centroids, first.heads, first.gene_residual
        self.d_model = first.d_model * len(members)  # the width of the concatenated hidden state
        self.register_buffer("residual_scale", torch.tensor(1.0))  # the members' own scales are in embed_genes

    @property
    def size(self) -> int:
        return len(self.members)

    def encode_centroids(self, centroid_panel: torch.Tensor, mask: torch.Tensor) -> EnsembleCache:
        return EnsembleCache([m.encode_centroids(centroid_panel, mask) for m in self.members])

    def attend(
        self, spot_panel: torch.Tensor, mask: torch.Tensor, cache: EnsembleCache, exclude: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(attention (H, B, C): the members' mean, hidden (B, K*D): theirs side by side)``."""
        outputs = [m.attend(spot_panel, mask, c, exclude) for m, c in zip(self.members, cache.members)]
        attention = torch.stack([a for a, _ in outputs]).mean(0)
        return attention, torch.cat([h for _, h in outputs], dim=-1)

    def embed_genes(self, gene_profiles_z: torch.Tensor) -> torch.Tensor:
        """``(G, K*D)``: each member's gene embeddings times its residual scale over ``K``."""
        return torch.cat([m.embed_genes(gene_profiles_z) * (m.residual_scale / self.size) for m in self.members], dim=-1)
