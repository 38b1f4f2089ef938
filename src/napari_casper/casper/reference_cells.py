"""Reference cells as a second source of supervision: their panel genes in, any other gene out.

Masked reconstruction on the spots teaches CASPER to predict a hidden *panel* gene from the
visible ones; the reference cells measure every gene, so they can also teach it to predict genes
the panel never had. Each training step (with ``reference_weight > 0``) draws a batch of reference
cells and a sample of reference genes that are not visible in that step, encodes the cells'
visible panel genes exactly like spots (each modality standardised with its own statistics:
the cells with the reference's, as the centroid keys are) and adds the same scale-free
correlation loss on the drawn genes, weighted by ``reference_weight``.

When every reference cell is its own centroid (``centroid_method="cells"``), a cell would find
itself among the keys and copy its own profile; its own centroid is therefore excluded from its
attention (a leave-one-out mixture, as for a spot).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from napari_casper.casper.network import standardize_profiles
from napari_casper.casper.preprocess import dense, standardize


@dataclass
class ReferenceBatch:
    """One step's reference supervision: cell panel z-scores, targets and the genes' centroid terms."""

    panel: torch.Tensor  # (B, P)
    exclude: torch.Tensor | None  # (B,) each cell's own centroid, or None
    profiles: torch.Tensor  # (C, G)
    profiles_z: torch.Tensor  # (C, G)
    profiles_std: torch.Tensor  # (G,)
    targets: torch.Tensor  # (B, G)


class ReferenceCells:
    """The reference cells of a model's training, ready to draw supervision batches from.

    Parameters
    ----------
    model
        the :class:`~napari_casper.casper.model.CasperModel` being trained (its panel, centroids
        and centroid statistics).
    expression
        ``(n_cells, n_genes)`` normalised reference matrix (dense or sparse) in the centroids'
        gene order, as :func:`~napari_casper.casper.preprocess.prepare_pair` returns it.
    device
        where the batches are built.
    """

    def __init__(self, model, expression, device: torch.device):
        self.device = device
        self.expression = expression.tocsr() if sp.issparse(expression) else np.asarray(expression, dtype=np.float32)
        panel_idx = model.centroids.gene_indices(model.panel_reference_genes)
        panel = dense(self.expression[:, panel_idx])
        self.panel = torch.as_tensor(standardize(panel, model.centroid_mean, model.centroid_std)[0], device=device)
        self.n_cells = self.panel.shape[0]
        self.own_centroid = (
            torch.arange(self.n_cells, device=device)
            if model.centroids.method == "cells" and model.centroids.n_centroids == self.n_cells
            else None
        )
        self.centroid_expression = torch.as_tensor(model.centroids.expression, device=device)
        # targets: genes that vary over the centroids (a gene constant there cannot be told apart)
        varies = model.centroids.expression.std(axis=0) > 1e-6
        varies[panel_idx] = False
        self.other_genes = np.flatnonzero(varies)
        self.panel_idx = panel_idx

    def draw(
        self, n_cells: int, n_genes: int, hidden_panel: torch.Tensor, generator: torch.Generator
    ) -> ReferenceBatch | None:
        """A batch of ``n_cells`` cells and ``n_genes`` non-panel genes plus the hidden panel genes."""
        cells = torch.randperm(self.n_cells, generator=generator)[: min(n_cells, self.n_cells)]
        picks = torch.randperm(len(self.other_genes), generator=generator)[: min(n_genes, len(self.other_genes))]
        genes = np.concatenate([self.other_genes[picks.numpy()], self.panel_idx[hidden_panel.cpu().numpy()]])
        if len(genes) == 0:
            return None
        rows = cells.numpy()
        targets = dense(self.expression[rows][:, genes])
        profiles = self.centroid_expression[:, torch.as_tensor(genes, device=self.device)]
        profiles_z, profiles_std = standardize_profiles(profiles)
        cells_d = cells.to(self.device)
        return ReferenceBatch(
            panel=self.panel[cells_d],
            exclude=None if self.own_centroid is None else self.own_centroid[cells_d],
            profiles=profiles,
            profiles_z=profiles_z,
            profiles_std=profiles_std,
            targets=torch.as_tensor(targets, device=self.device),
        )
