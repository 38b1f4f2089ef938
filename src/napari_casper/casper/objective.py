"""What CASPER's training optimises and how it validates: the scale-free loss, the tensors it reads,
the validation split and score, the hidden genes of a step, and the reference cells' loss term."""

from __future__ import annotations

import numpy as np
import torch

from napari_casper.casper.calibration import pearson_columns
from napari_casper.casper.model import CasperModel
from napari_casper.casper.network import standardize_profiles
from napari_casper.casper.reference_cells import ReferenceCells
from napari_casper.runtime.device import autocast


def correlation_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-gene standardised MSE over spots, averaged over genes: ``(B, G), (B, G) -> ()``.

    Both sides are z-scored per gene over the ``B`` spots, so the loss equals
    ``mean_g 2 * (1 - r_g)`` and ignores each gene's offset and scale.
    """
    pred = pred.float()
    target = target.float()
    pz = (pred - pred.mean(0)) / (pred.std(0, unbiased=False) + 1e-6)
    tz = (target - target.mean(0)) / (target.std(0, unbiased=False) + 1e-6)
    return ((pz - tz) ** 2).mean()


def pearson_per_gene(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pearson r of each column of ``pred`` with the same column of ``target`` (NaN -> 0), in the inputs' precision."""
    return pearson_columns(pred, target, dtype=None)


class TrainingTensors:
    """Training tensors on the device: ST z-scores, centroid panel profiles (raw and z)."""

    def __init__(self, model: CasperModel, spot_z: np.ndarray, device: torch.device):
        self.spots = torch.as_tensor(spot_z, device=device)
        self.centroid_panel = torch.as_tensor(model.centroid_panel(), device=device)
        idx = model.centroids.gene_indices(model.panel_reference_genes)
        raw = torch.as_tensor(model.centroids.expression[:, idx], device=device)
        self.profiles = raw
        self.profiles_z, self.profiles_std = standardize_profiles(raw)


def split_validation(n_spots: int, n_panel: int, config, rng: np.random.Generator):
    n_val_genes = int(round(config.val_gene_fraction * n_panel))
    n_val_genes = min(max(n_val_genes, 1), n_panel - 2) if config.val_gene_fraction > 0 else 0
    n_val_spots = int(round(config.val_spot_fraction * n_spots))
    n_val_spots = min(max(n_val_spots, 3), n_spots - 3) if n_val_genes else 0
    genes = rng.permutation(n_panel)
    spots = rng.permutation(n_spots)
    return (
        np.sort(genes[:n_val_genes]),
        np.sort(genes[n_val_genes:]),
        np.sort(spots[:n_val_spots]),
        np.sort(spots[n_val_spots:]),
    )


def reference_loss(net, cells: ReferenceCells, data: TrainingTensors, mask, hidden, batch: int, config, generator):
    """The correlation loss of a batch of reference cells on genes not visible in this step."""
    drawn = cells.draw(batch, config.reference_genes_per_step, hidden, generator)
    if drawn is None:
        return torch.zeros((), device=mask.device)
    with autocast(mask.device, config.mixed_precision):
        pred = net(
            drawn.panel, mask, data.centroid_panel,
            drawn.profiles, drawn.profiles_z, drawn.profiles_std, exclude=drawn.exclude,
        )
    return correlation_loss(pred, drawn.targets)


def draw_hidden(n_panel: int, n_hidden: int, train_genes: torch.Tensor, generator) -> torch.Tensor:
    """Random hidden genes containing at least one training (non-validation) gene."""
    while True:
        hidden = torch.randperm(n_panel, generator=generator)[:n_hidden]
        if torch.isin(hidden, train_genes).any():
            return hidden


@torch.no_grad()
def validate(net, data: TrainingTensors, val_genes, val_spots, device, config) -> tuple[float, float]:
    """Validation loss and mean Pearson r of the hidden validation genes on validation spots."""
    if len(val_genes) == 0:
        return float("nan"), float("nan")
    net.eval()
    genes = torch.as_tensor(val_genes, device=device)
    mask = torch.ones(data.spots.shape[1], device=device)
    mask[genes] = 0.0
    spots = data.spots[torch.as_tensor(val_spots, device=device)]
    with autocast(device, config.mixed_precision):
        pred = net(
            spots, mask, data.centroid_panel,
            data.profiles[:, genes], data.profiles_z[:, genes], data.profiles_std[genes],
        )
    target = spots[:, genes]
    loss = float(correlation_loss(pred, target))
    score = float(pearson_per_gene(pred.float().cpu().numpy(), target.cpu().numpy()).mean())
    return loss, score
