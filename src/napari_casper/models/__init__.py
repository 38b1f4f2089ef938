"""CASPER network and the trained-model bundle."""

from napari_casper.models.bundle import CasperModel, EpochRecord, TrainingHistory
from napari_casper.models.casper import CentroidCrossAttention, KeyValueCache

__all__ = ["CasperModel", "CentroidCrossAttention", "EpochRecord", "KeyValueCache", "TrainingHistory"]
