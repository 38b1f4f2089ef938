"""Save and load a trained :class:`~napari_casper.histology.predict.HistologyPredictor`.

One ``torch.save`` file (read back with ``weights_only=True``: plain tensors, strings and
numbers, no pickled code) holding: a format tag and version, the package version, the training
config, the model genes with their z-scoring statistics, the output genes, the network
weights, the training bank (descriptors and expression of the training spots), the ridge
weights, the chosen head, the head-selection scores, the training history, and what the training
sections look like (``reach``: for the out-of-distribution score of a new slide; optional), and the
error model behind the uncertainty (``error_model``: its terms, their coefficients and the anchor genes; optional).

A model trained on a pretrained patch encoder records it in its config (kind, architecture, input
size, normalisation, the SHA-256 of its weights; not the weights themselves): loading finds the
encoder at its recorded path or at the one given, and refuses any other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from napari_casper import __version__
from napari_casper.errors import CasperInputError, CheckpointMismatchError

FORMAT = "napari-casper-histology"
FORMAT_VERSION = 1


def _t(array) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(array, dtype=np.float32)))


def _n(tensor) -> np.ndarray:
    return tensor.numpy()


def save_predictor(predictor, path) -> Path:
    """Write ``predictor`` to ``path`` (atomically: a temporary file, then a rename)."""
    heads = predictor.heads
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "config": predictor.config.to_dict(),
        "model_genes": list(predictor.model_genes),
        "expression_mean": _t(predictor.expression_mean),
        "expression_std": _t(predictor.expression_std),
        "genes": list(heads.genes),
        "state_dict": {k: v.detach().cpu() for k, v in predictor.model.state_dict().items()},
        "bank": {
            "embedding": _t(heads.bank.embedding),
            "embedding_z": _t(heads.bank.embedding_z),
            "features_z": _t(heads.bank.features_z),
            "expression": _t(heads.bank_expression),
            "expression_embedding": _t(heads.bank_expression_embedding),
        },
        # plain arrays (x_mean, x_std, coef, intercept) and alpha: no pickled sklearn objects
        "ridge": {k: v if k == "alpha" else _t(v) for k, v in heads.ridge.to_arrays().items()},
        "top_k": int(heads.top_k),
        "temperature": heads.temperature,
        "head": predictor.head,
        "selection": dict(predictor.selection),
        "history": predictor.history,
    }
    if predictor.error_model is not None:  # optional: without it the uncertainty is the neighbours' spread
        payload["error_model"] = predictor.error_model.to_payload()
    if predictor.reach is not None:  # optional: files without it load (no out-of-distribution score then)
        payload["reach"] = {k: _t(v) if isinstance(v, np.ndarray) else v for k, v in predictor.reach.to_payload().items()}
    from napari_casper.io.outputs import atomic_path

    path = Path(path)
    with atomic_path(path, ".pt") as scratch:  # the output's lock; an earlier model stays until the rename
        torch.save(payload, scratch)
    return path


def load_predictor(path, *, expected_genes=None, encoder=None):
    """Read a file written by :func:`save_predictor`.

    ``encoder``: for a model trained on a pretrained patch encoder, where that encoder is now (a
    path, or a loaded :class:`~napari_casper.histology.pretrained.PatchEncoder`); default: the
    path recorded at training. Not used by a model without one.

    Raises :class:`~napari_casper.errors.CheckpointMismatchError` when the file is not a
    histology checkpoint, was written by a newer format, does not predict every gene of
    ``expected_genes``, or needs an encoder that is missing or differs from the one given.
    """
    from napari_casper.histology.config import HistologyConfig
    from napari_casper.histology.fit import build_model
    from napari_casper.histology.predict import HistologyPredictor, PredictionHeads, SpotDescriptors
    from napari_casper.histology.regressors import RidgeRegressor

    path = Path(path)
    if not path.is_file():
        raise CasperInputError(f"histology checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unreadable for any reason: same advice
        # torch's message may advise weights_only=False, which would run code stored in the file: never repeat it
        reason = "it holds Python objects other than plain arrays" if "weights_only" in str(err) else type(err).__name__
        raise CheckpointMismatchError(
            f"{path} is not a readable napari-casper histology checkpoint ({reason}); use a model file written by "
            "napari-casper histology-train"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointMismatchError(
            f"{path} is not a histology checkpoint (a CASPER imputation checkpoint? use "
            "napari-casper impute for those)"
        )
    if int(payload["format_version"]) > FORMAT_VERSION:
        raise CheckpointMismatchError(
            f"{path} was written by napari-casper {payload.get('package_version')} (format "
            f"{payload['format_version']}); this is {__version__} (format {FORMAT_VERSION}): upgrade napari-casper"
        )
    config = HistologyConfig.from_dict(payload["config"])
    loaded_encoder = None
    if config.encoder is not None:
        from napari_casper.histology.pretrained import EncoderSpec, default_cache_dir, encoder_for

        loaded_encoder = encoder_for(EncoderSpec.from_dict(config.encoder), encoder)
        config.cache_dir = str(default_cache_dir())  # the embedding cache belongs to this machine
    model = build_model(len(payload["model_genes"]), config)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    bank = payload["bank"]
    r = payload["ridge"]
    ridge = RidgeRegressor.from_arrays(
        _n(r["x_mean"]), _n(r["x_std"]), _n(r["coef"]), _n(r["intercept"]), float(r["alpha"])
    )
    heads = PredictionHeads(
        genes=list(payload["genes"]),
        bank=SpotDescriptors(_n(bank["embedding"]), _n(bank["embedding_z"]), _n(bank["features_z"])),
        bank_expression=_n(bank["expression"]),
        bank_expression_embedding=_n(bank["expression_embedding"]),
        ridge=ridge,
        top_k=int(payload["top_k"]),
        temperature=payload["temperature"],
    )
    predictor = HistologyPredictor(
        model=model,
        config=config,
        model_genes=list(payload["model_genes"]),
        expression_mean=_n(payload["expression_mean"]),
        expression_std=_n(payload["expression_std"]),
        heads=heads,
        head=payload["head"],
        selection=dict(payload["selection"]),
        history=payload["history"],
        encoder=loaded_encoder,
    )
    if "reach" in payload:
        from napari_casper.histology.reach import TrainingReach

        predictor.reach = TrainingReach.from_payload(
            {k: _n(v) if isinstance(v, torch.Tensor) else v for k, v in payload["reach"].items()}
        )
    if "error_model" in payload:
        from napari_casper.histology.uncertainty import ErrorModel

        predictor.error_model = ErrorModel.from_payload(payload["error_model"])
    if expected_genes is not None:
        predictor.gene_columns(list(expected_genes))
    return predictor
