"""Bring your own patch encoder: a local pretrained image model (UNI, CONCH, Virchow, Phikon, a ResNet
trained on your own slides) whose frozen embeddings replace the small CNN trained from scratch.

Three kinds of local source, nothing is ever downloaded:

- a **TorchScript file** (``torch.jit.save`` of any ``(B, 3, S, S) -> (B, F)`` network);
- a **timm architecture name plus a weights file** (``.safetensors``, ``.pth``, ``.bin``; timm builds the
  network without its classifier and the file's weights are loaded into it);
- a **folder** as timm / Hugging Face write it (``config.json`` naming the ``architecture`` with its
  ``pretrained_cfg``, and ``model.safetensors`` or ``pytorch_model.bin``), or a Hugging Face cache folder
  ``models--org--name`` holding one snapshot.

Input size and normalisation are read from the source (timm's ``pretrained_cfg``) or given; the
magnification (``mpp``, microns per pixel the encoder was trained at) is given. :class:`EncoderSpec`
records all of it with a fingerprint of the weights (SHA-256), saved in the checkpoint, so that a model
is only ever used with the encoder it was trained on (the same weights, in whatever file). :func:`slide_embeddings` computes a slide's
embeddings once and caches them on disk, keyed by the slide, the encoder and the patch geometry.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from napari_casper.errors import CasperInputError, CheckpointMismatchError, TrainingCancelled
from napari_casper.runtime.control import CancelFlag, is_cancelled

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: patches embedded per forward pass (``cancel`` is checked between them)
EMBED_BATCH = 32
#: spots whose patches are read at a time (the patches of a whole slide at 224 px would not fit in memory)
READ_CHUNK = 256
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
_HEAD_PREFIXES = ("fc.", "head.", "classifier.", "head_dist.", "last_linear.")


@dataclass
class EncoderSpec:
    """What a patch encoder is, enough to find it again and to refuse a different one.

    ``kind`` is ``"torchscript"`` or ``"timm"``; ``source`` the path given; ``weights`` the file the
    weights were read from; ``fingerprint`` the SHA-256 of the weights themselves
    (:func:`weights_fingerprint`); ``mpp`` microns per pixel of the encoder's training patches
    (None: the patches cover the model's context scales, see :meth:`scales`).
    """

    kind: str
    source: str
    weights: str
    fingerprint: str
    architecture: str | None = None
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    mpp: float | None = None
    n_features: int = 0

    def describe(self) -> str:
        what = f"timm {self.architecture}" if self.kind == "timm" else "TorchScript"
        return f"{what} encoder {Path(self.weights).name} (sha256 {self.fingerprint[:12]})"

    def scales(self, context_scales, spot_diameter_um: float | None) -> tuple[float, ...]:
        """Patch sides in spot diameters that the encoder sees: its own field of view
        (``input_size * mpp`` microns) when the magnification and the spot size in microns are known,
        else the model's context scales."""
        if self.mpp and spot_diameter_um:
            return (float(self.input_size * self.mpp / spot_diameter_um),)
        return tuple(float(s) for s in context_scales)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> EncoderSpec:
        values = dict(values)
        values["mean"], values["std"] = tuple(values["mean"]), tuple(values["std"])
        return cls(**values)


def weights_fingerprint(net: torch.nn.Module) -> str:
    """SHA-256 of a network's weights: every parameter and buffer, by name, dtype, shape and bytes (the same
    weights give the same fingerprint whatever file, name or format they were saved in)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        values = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{values.dtype}:{tuple(values.shape)};".encode())
        digest.update(values.reshape(-1).view(torch.uint8).numpy().tobytes() if values.numel() else b"")
    return digest.hexdigest()


class PatchEncoder:
    """A loaded, frozen encoder: :meth:`embed` maps uint8 patches to features."""

    def __init__(self, spec: EncoderSpec, net: torch.nn.Module):
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.spec, self.net = spec, net
        with torch.no_grad():
            probe = net(torch.zeros(1, 3, spec.input_size, spec.input_size))
        spec.n_features = int(probe.reshape(1, -1).shape[1])
        self._mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)

    @torch.no_grad()
    def embed(self, patches: np.ndarray, *, cancel: CancelFlag | None = None) -> np.ndarray:
        """``(n, P, P, 3)`` uint8 -> ``(n, F)`` float32 (resized to the input size, normalised)."""
        out = np.empty((len(patches), self.spec.n_features), np.float32)
        side = self.spec.input_size
        for start in range(0, len(patches), EMBED_BATCH):
            if is_cancelled(cancel):
                raise TrainingCancelled("embedding patches cancelled")
            x = torch.from_numpy(np.ascontiguousarray(patches[start : start + EMBED_BATCH])).permute(0, 3, 1, 2).float() / 255.0
            if x.shape[-1] != side:
                x = torch.nn.functional.interpolate(x, size=side, mode="bilinear", align_corners=False, antialias=True)
            out[start : start + len(x)] = self.net((x - self._mean) / self._std).reshape(len(x), -1).numpy()
        return out


def _triple(values, name: str):
    if values is None:
        return None
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise CasperInputError(f"the encoder's {name} needs three numbers (R, G, B), got {len(values)}")
    return values


def _hub_snapshot(folder: Path) -> Path:
    """The snapshot folder of a Hugging Face cache folder ``models--org--name`` (the one ``refs/main`` names)."""
    snapshots = folder / "snapshots"
    if not snapshots.is_dir():
        return folder
    ref = folder / "refs" / "main"
    if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
        return snapshots / ref.read_text().strip()
    found = sorted(p for p in snapshots.iterdir() if p.is_dir())
    if len(found) != 1:
        raise CasperInputError(f"{folder} holds {len(found)} snapshots and no refs/main; give the snapshot folder itself")
    return found[0]


def _read_folder(folder: Path) -> tuple[str, Path, dict]:
    folder = _hub_snapshot(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CasperInputError(
            f"encoder folder {folder} has no config.json; give a timm / Hugging Face model folder, "
            "or a weights file with its timm architecture"
        )
    config = json.loads(config_file.read_text())
    architecture = config.get("architecture") or config.get("model_name")
    if not architecture:
        raise CasperInputError(f"{config_file} names no 'architecture'; give the timm architecture with the weights file instead")
    weights = next((folder / n for n in _WEIGHT_FILES if (folder / n).is_file()), None)
    if weights is None:
        raise CasperInputError(f"encoder folder {folder} holds none of {', '.join(_WEIGHT_FILES)}")
    return architecture, weights, dict(config.get("pretrained_cfg") or {})


def _state_dict(weights: Path) -> dict:
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(weights))
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unreadable for any reason: the same advice
        raise CasperInputError(f"cannot read weights {weights} ({type(err).__name__}); give a .safetensors or a state-dict .pth file") from err
    for key in ("state_dict", "model", "teacher"):  # checkpoints that wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise CasperInputError(f"{weights} holds no state dict of weights")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _timm_network(architecture: str, weights: Path) -> tuple[torch.nn.Module, dict]:
    try:
        import timm
    except ImportError as err:
        raise CasperInputError("a timm encoder needs timm: pip install 'napari-casper[encoders]' (or pip install timm)") from err
    try:
        net = timm.create_model(architecture, pretrained=False, num_classes=0)
    except RuntimeError as err:
        raise CasperInputError(f"timm knows no architecture {architecture!r} ({err}); see timm.list_models()") from err
    state = {k: v for k, v in _state_dict(weights).items() if not k.startswith(_HEAD_PREFIXES)}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        sample = (missing or unexpected)[:3]
        raise CasperInputError(
            f"the weights in {weights} do not fit timm {architecture}: {len(missing)} missing and {len(unexpected)} "
            f"unexpected parameters (e.g. {', '.join(sample)}); give the architecture these weights were trained with"
        )
    from timm.data import resolve_data_config

    return net, resolve_data_config({}, model=net)


def load_encoder(source, *, architecture: str | None = None, input_size: int | None = None, mean=None, std=None,
                 mpp: float | None = None) -> PatchEncoder:  # fmt: skip
    """Load a local patch encoder (see the module's docstring for the kinds of ``source``).

    ``input_size``, ``mean``, ``std`` override what the source says (ImageNet's statistics and
    224 px for a TorchScript file); ``mpp`` is the encoder's magnification in microns per pixel.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise CasperInputError(
            f"encoder {source} does not exist; give a local TorchScript file, a weights file with its timm "
            "architecture, or a timm / Hugging Face model folder (nothing is downloaded)"
        )
    data: dict = {}
    if path.is_dir():
        folder_arch, weights, data = _read_folder(path)
        architecture = architecture or folder_arch
        net, resolved = _timm_network(architecture, weights)
        data = {**resolved, **{k: v for k, v in data.items() if k in ("input_size", "mean", "std")}}
        kind = "timm"
    elif architecture:
        weights = path
        net, data = _timm_network(architecture, weights)
        kind = "timm"
    else:
        weights, kind = path, "torchscript"
        try:
            net = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:  # noqa: BLE001 - any load failure means the same thing to the user
            raise CasperInputError(
                f"{path} is not a TorchScript file ({type(err).__name__}); for a weights file give its timm architecture "
                "(--encoder-arch), or export the network with torch.jit.save(torch.jit.trace(model, example), path)"
            ) from err
    size = input_size or (data.get("input_size") or (3, 224, 224))[-1]
    spec = EncoderSpec(
        kind=kind, source=str(path), weights=str(weights), fingerprint=weights_fingerprint(net), architecture=architecture,
        input_size=int(size), mean=_triple(mean, "mean") or tuple(data.get("mean", IMAGENET_MEAN)),
        std=_triple(std, "std") or tuple(data.get("std", IMAGENET_STD)), mpp=float(mpp) if mpp else None,
    )  # fmt: skip
    return PatchEncoder(spec, net)


def encoder_for(spec: EncoderSpec, given: PatchEncoder | str | os.PathLike | None = None) -> PatchEncoder:
    """The encoder a trained model needs: ``given`` (a loaded encoder or a source) or, by default, the
    recorded source. Raises :class:`CheckpointMismatchError` when it is absent or its weights differ."""
    if isinstance(given, PatchEncoder):
        encoder = given
    else:
        source = given or spec.source
        if not Path(source).exists():
            raise CheckpointMismatchError(
                f"this model was trained on the {spec.describe()}, which is no longer at {spec.source}; "
                "give its current path (histology-predict --encoder PATH)"
            )
        options = {"architecture": spec.architecture} if spec.kind == "timm" else {}
        encoder = load_encoder(source, input_size=spec.input_size, mean=spec.mean, std=spec.std, mpp=spec.mpp, **options)
    if encoder.spec.fingerprint != spec.fingerprint:
        raise CheckpointMismatchError(
            f"this model was trained on the {spec.describe()}; {encoder.spec.describe()} is a different encoder. "
            "Give the encoder the model was trained with, or retrain with this one"
        )
    return encoder


def default_cache_dir() -> Path:
    """Where slide embeddings are cached: ``$NAPARI_CASPER_CACHE``, else ``$XDG_CACHE_HOME/napari-casper``
    (``~/.cache/napari-casper``). Safe to delete; it is filled again on use."""
    if os.environ.get("NAPARI_CASPER_CACHE"):
        return Path(os.environ["NAPARI_CASPER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "napari-casper"


def _cache_file(cache_dir, cache_key: str, spec: EncoderSpec, xy: np.ndarray, diameter: float, scales) -> Path:
    digest = hashlib.sha256(np.ascontiguousarray(xy, dtype=np.float64).tobytes())
    geometry = (cache_key, spec.fingerprint, spec.input_size, spec.mean, spec.std, float(diameter), tuple(scales))
    digest.update(repr(geometry).encode())
    return Path(cache_dir) / f"embeddings-{digest.hexdigest()[:24]}.npy"


def slide_embeddings(
    encoder: PatchEncoder, image, coords, spot_diameter_px: float, scales, *, cache_dir=None, cache_key: str | None = None,
    cancel: CancelFlag | None = None, progress=None,
) -> np.ndarray:  # fmt: skip
    """``(n_spots, n_scales, F)`` float32 embeddings of a slide's spots, read chunk by chunk.

    With ``cache_dir`` and ``cache_key`` (which must identify the image, e.g. its path, size and
    modification time), the result is stored and read back by any later call with the same slide,
    spots, encoder and patch geometry. ``progress(k, n)`` is called after every chunk.
    """
    from napari_casper.histology.patches import check_coords, extract_patches, preload_spots

    xy = check_coords(coords)
    cache_file = None
    if cache_dir is not None and cache_key is not None:
        cache_file = _cache_file(cache_dir, cache_key, encoder.spec, xy, spot_diameter_px, scales)
        if cache_file.is_file():
            cached = np.load(cache_file)
            if cached.shape == (len(xy), len(scales), encoder.spec.n_features):
                return cached
    out = np.empty((len(xy), len(scales), encoder.spec.n_features), np.float32)
    windows = preload_spots(image, xy, spot_diameter_px, scales, cancel=cancel)  # a lazy image is read once, not per chunk
    for start in range(0, len(xy), READ_CHUNK):
        block = extract_patches(windows, xy[start : start + READ_CHUNK], spot_diameter_px, scales=tuple(scales),
                                patch_size=encoder.spec.input_size, cancel=cancel)  # fmt: skip
        flat = encoder.embed(block.reshape(-1, *block.shape[2:]), cancel=cancel)
        out[start : start + len(block)] = flat.reshape(len(block), len(scales), -1)
        if progress is not None:
            progress(min(start + READ_CHUNK, len(xy)), len(xy))
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        scratch = cache_file.with_name(f"{cache_file.stem}.{os.getpid()}.tmp.npy")
        np.save(scratch, out)
        os.replace(scratch, cache_file)
    return out
