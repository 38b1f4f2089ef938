"""CasperModel: a trained network plus everything needed to use it on new data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from napari_casper import __version__
from napari_casper.casper.calibration import Calibration
from napari_casper.casper.centroids import Centroids
from napari_casper.casper.ensemble import NetworkEnsemble
from napari_casper.casper.network import CentroidCrossAttention


@dataclass
class EpochRecord:
    """One evaluation point of training (``epoch`` counts evaluation periods from 1)."""

    epoch: int
    step: int
    train_loss: float
    val_loss: float
    val_score: float


@dataclass
class TrainingHistory:
    """What happened during training: per-epoch records, the best epoch and why it stopped."""

    records: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_val_score: float = float("nan")
    stop_reason: str = ""
    validation_genes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainingHistory:
        data = dict(data)
        data["records"] = [EpochRecord(**r) for r in data.get("records", [])]
        return cls(**data)


@dataclass
class CasperModel:
    """A trained CASPER model.

    Attributes
    ----------
    network
        the :class:`CentroidCrossAttention` module (in eval mode after training), or a
        :class:`~napari_casper.casper.ensemble.NetworkEnsemble` of several (the default training averages two refits).
    config
        the training configuration as a plain dict (see :class:`napari_casper.casper.training.CasperConfig`).
    panel_genes
        ST names of the panel genes the encoders read, in input order.
    panel_reference_genes
        the reference names of the same genes.
    centroids
        reference centroids over the whole transcriptome (what can be imputed).
    st_mean, st_std
        ``(P,)`` per-gene standardisation of the (normalised) training ST data.
    centroid_mean, centroid_std
        ``(P,)`` standardisation of centroid panel profiles (reference cell-level statistics).
    st_normalization
        normalisation applied to the training ST data (re-applied to ST data at imputation).
    report
        preprocessing facts (genes matched, dropped, normalisation decisions).
    history
        the :class:`TrainingHistory`.
    library_version
        napari-casper version that trained the model.
    centroid_groups
        when every reference cell is a centroid: the display group (Leiden cluster or label) of
        each centroid, in centroid order, so attention can be shown per cell type without
        clustering the reference again (None: not computed).
    calibration
        trust per gene and conformal intervals, calibrated on the validation genes
        (:mod:`napari_casper.casper.calibration`; None: trained without validation genes).
    """

    network: CentroidCrossAttention | NetworkEnsemble
    config: dict
    panel_genes: list[str]
    panel_reference_genes: list[str]
    centroids: Centroids
    st_mean: np.ndarray
    st_std: np.ndarray
    centroid_mean: np.ndarray
    centroid_std: np.ndarray
    st_normalization: str
    report: dict = field(default_factory=dict)
    history: TrainingHistory = field(default_factory=TrainingHistory)
    library_version: str = __version__
    centroid_groups: list[str] | None = None
    calibration: Calibration | None = None

    @property
    def reference_genes(self) -> list[str]:
        """Every gene this model can impute."""
        return self.centroids.genes

    def centroid_panel(self) -> np.ndarray:
        """``(C, P)`` standardised centroid profiles of the panel genes (the key-encoder input)."""
        idx = self.centroids.gene_indices(self.panel_reference_genes)
        return ((self.centroids.expression[:, idx] - self.centroid_mean) / self.centroid_std).astype(
            np.float32
        )

    def to(self, device: torch.device | str) -> CasperModel:
        self.network.to(device)
        return self
