"""Every option of histology training and prediction: :class:`HistologyConfig`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from napari_casper.runtime.control import check_options


@dataclass
class HistologyConfig:
    """Every option of histology training and prediction (all have defaults; see ``docs/histology.md``)."""

    # patches
    scales: tuple[float, ...] = (1.0, 2.0, 4.0)
    patch_size: int = 32
    # genes
    n_model_genes: int = 1000
    model_genes: list[str] | None = None
    predict_genes: list[str] | None = None
    # network
    dim: int = 128
    proj_dim: int = 64
    width: int = 24
    n_gene_tokens: int = 8
    dropout: float = 0.1
    # a pretrained patch encoder (EncoderSpec.to_dict(), see histology.pretrained); None: the CNN
    encoder: dict | None = None
    # spot diameter in microns (55 Visium, 100 legacy ST): with the encoder's mpp, its field of view
    spot_diameter_um: float | None = None
    # optimisation
    epochs: int | None = None
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    mask_ratio: float = 0.5
    stain_jitter: float = 0.05
    val_fraction: float = 0.1
    keep: str = "best"
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    # prediction head
    predictor: str = "auto"
    top_k: int = 50
    test_time_augmentation: bool = False
    retrieval_temperature: float | None = 0.1
    inner_epochs: int | None = None
    cache_dir: str | None = None
    # the training sections' spot diameter in their full-resolution image pixels (recorded by the
    # widget and histology-train; the default spot size for virtual spots on a new slide)
    spot_diameter_px: float | None = None
    # genes the user asked for, in order, with the name each was asked by (e.g. a symbol for a
    # var name); shown first by the widget. Not used by training.
    gene_labels: dict[str, str] | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["scales"] = list(self.scales)
        return out

    def input_scales(self) -> tuple[float, ...]:
        """Patch sides (in spot diameters) of the network's input: the context scales, or the
        pretrained encoder's own (:meth:`~napari_casper.histology.pretrained.EncoderSpec.scales`)."""
        if self.encoder is None:
            return tuple(self.scales)
        from napari_casper.histology.pretrained import EncoderSpec

        return EncoderSpec.from_dict(self.encoder).scales(self.scales, self.spot_diameter_um)

    @classmethod
    def from_dict(cls, values: dict) -> HistologyConfig:
        values = dict(values)
        if values.pop("backbone_path", None) is not None:  # models written before 0.2 record it (None unless used)
            from napari_casper.errors import CheckpointMismatchError

            raise CheckpointMismatchError(
                "this model was trained with a frozen TorchScript backbone (--backbone), which --encoder replaced: "
                "retrain it with --encoder PATH (the same file works)"
            )
        check_options(cls, values, "histology")
        out = cls(**values)
        out.scales = tuple(float(s) for s in out.scales)
        return out
