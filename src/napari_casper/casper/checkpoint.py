"""Save and load trained CASPER models.

A checkpoint is one ``torch.save`` file holding only tensors, strings, numbers, lists and dicts
(so it loads with ``weights_only=True``, never unpickling code): the network weights and the
arguments that rebuild it, the training config, the panel genes (ST and reference spelling), the
centroid labels, sizes and whole-transcriptome expression, the standardisation statistics, the
preprocessing report, the training history, the display group of each centroid (when every
reference cell is a centroid; optional, so older files still load), the calibration of trust and
intervals (optional too) and the library version. Loading restores the exact
float32 values, so predictions after a round trip are bit-identical on the same device.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from napari_casper import __version__
from napari_casper.casper.calibration import Calibration
from napari_casper.casper.centroids import Centroids
from napari_casper.casper.ensemble import NetworkEnsemble
from napari_casper.casper.model import CasperModel, TrainingHistory
from napari_casper.casper.network import CentroidCrossAttention
from napari_casper.errors import CasperInputError, CheckpointMismatchError
from napari_casper.io.outputs import atomic_path

FORMAT = "napari-casper/casper-model"
FORMAT_VERSION = 1
_NETWORK_ARGS = ("d_model", "hidden", "heads", "dropout", "similarity_prior", "prior_scale", "gene_residual")


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array).copy())


def save_checkpoint(model: CasperModel, path: str | Path) -> Path:
    """Write ``model`` to ``path`` (conventionally ``.pt``); parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = model.network
    cfg = model.config
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "network": {
            "n_panel": net.n_panel,
            "n_centroids": net.n_centroids,
            "members": net.size if isinstance(net, NetworkEnsemble) else 1,
            **{k: cfg[k] for k in _NETWORK_ARGS},
        },
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "config": dict(cfg),
        "panel_genes": list(model.panel_genes),
        "panel_reference_genes": list(model.panel_reference_genes),
        "centroids": {
            "labels": list(model.centroids.labels),
            "genes": list(model.centroids.genes),
            "expression": _tensor(model.centroids.expression),
            "sizes": _tensor(np.asarray(model.centroids.sizes, dtype=np.int64)),
            "method": model.centroids.method,
        },
        "st_mean": _tensor(model.st_mean),
        "st_std": _tensor(model.st_std),
        "centroid_mean": _tensor(model.centroid_mean),
        "centroid_std": _tensor(model.centroid_std),
        "st_normalization": model.st_normalization,
        "report": _plain(model.report),
        "history": _plain(model.history.to_dict()),
    }
    if model.centroid_groups is not None:
        payload["centroid_groups"] = [str(g) for g in model.centroid_groups]
    if model.calibration is not None:
        payload["calibration"] = {
            k: (_tensor(np.asarray(v, dtype=np.float64)) if isinstance(v, np.ndarray) else v)
            for k, v in vars(model.calibration).items()
        }
    with atomic_path(path) as scratch:  # a killed save leaves the earlier checkpoint intact; two saves are told
        torch.save(payload, scratch)
    return path


def _plain(value):
    """Convert numpy scalars/arrays inside nested containers to plain Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def load_checkpoint(
    path: str | Path,
    *,
    panel_genes: Iterable[str] | None = None,
    map_location: str | torch.device = "cpu",
) -> CasperModel:
    """Load a model written by :func:`save_checkpoint`.

    Parameters
    ----------
    panel_genes
        the genes of the ST data the model will be applied to; if given, every panel gene the
        model reads must be among them, else :class:`CheckpointMismatchError` says which are
        missing.

    Raises
    ------
    CheckpointMismatchError
        not a CASPER checkpoint, a newer format, internally inconsistent, or genes missing.
    """
    path = Path(path)
    if not path.exists():
        raise CasperInputError(f"model file {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not our file"
        # torch's message advises retrying with weights_only=False, which would run code from the file: never shown
        reason = str(err).split("\n")[0] if "weights_only" not in str(err) else "it holds objects other than tensors and plain values"
        raise CheckpointMismatchError(
            f"{path} is not a readable napari-casper checkpoint ({type(err).__name__}: {reason}); "
            "choose a file written by `napari-casper train` or the CASPER widget's Save checkpoint"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointMismatchError(f"{path} is not a napari-casper CASPER checkpoint")
    if payload["format_version"] > FORMAT_VERSION:
        raise CheckpointMismatchError(
            f"{path} was written by napari-casper {payload.get('library_version')} "
            f"(format {payload['format_version']}); this is {__version__} (format "
            f"{FORMAT_VERSION}): upgrade napari-casper to load it"
        )
    c = payload["centroids"]
    centroids = Centroids(
        labels=list(c["labels"]),
        expression=c["expression"].numpy(),
        genes=list(c["genes"]),
        sizes=c["sizes"].numpy(),
        method=c["method"],
    )
    net_args = dict(payload["network"])
    n_panel = net_args.pop("n_panel")
    n_centroids = net_args.pop("n_centroids")
    if n_panel != len(payload["panel_genes"]) or n_centroids != centroids.n_centroids:
        raise CheckpointMismatchError(
            f"{path} is inconsistent: the network reads {n_panel} panel genes and "
            f"{n_centroids} centroids but the file lists {len(payload['panel_genes'])} genes and "
            f"{centroids.n_centroids} centroids; re-train the model"
        )
    members = int(net_args.pop("members", 1))  # absent in files written before ensembles
    network = CentroidCrossAttention(n_panel, n_centroids, **net_args)
    if members > 1:
        network = NetworkEnsemble([network, *(CentroidCrossAttention(n_panel, n_centroids, **net_args) for _ in range(members - 1))])
    network.load_state_dict(payload["state_dict"])
    network.eval()
    model = CasperModel(
        network=network,
        config=dict(payload["config"]),
        panel_genes=list(payload["panel_genes"]),
        panel_reference_genes=list(payload["panel_reference_genes"]),
        centroids=centroids,
        st_mean=payload["st_mean"].numpy(),
        st_std=payload["st_std"].numpy(),
        centroid_mean=payload["centroid_mean"].numpy(),
        centroid_std=payload["centroid_std"].numpy(),
        st_normalization=payload["st_normalization"],
        report=dict(payload.get("report", {})),
        history=TrainingHistory.from_dict(payload.get("history", {})),
        library_version=str(payload.get("library_version", "unknown")),
        centroid_groups=list(payload["centroid_groups"]) if payload.get("centroid_groups") is not None else None,
        calibration=_calibration(payload.get("calibration")),
    )
    if panel_genes is not None:
        check_panel(model, panel_genes)
    return model


def _calibration(saved: dict | None) -> Calibration | None:
    """The saved calibration (None in files written before trust and intervals existed)."""
    if saved is None:
        return None
    return Calibration.from_dict({k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in saved.items()})


def check_panel(model: CasperModel, genes: Iterable[str]) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``genes`` contain all of the model's panel."""
    available = {str(g) for g in genes}
    missing = [g for g in model.panel_genes if g not in available]
    if missing:
        raise CheckpointMismatchError(
            f"the model was trained on {len(model.panel_genes)} panel genes but the ST data lacks "
            f"{len(missing)} of them (e.g. {missing[:5]}); use ST data measured with the same "
            "panel, or train a new model on this data"
        )
