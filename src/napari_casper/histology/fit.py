"""The image-expression network: build it, train it on paired spots, embed with it.

:func:`fit_encoder` is the training loop (contrastive alignment + cross-modal masked
reconstruction) over paired (patches, expression) spots; it is what the benchmark calls per
fold and what :func:`~napari_casper.histology.train.train_histology` calls for every model.
:func:`embed_patches` / :func:`embed_expression` give the trained network's embeddings.

Device: CUDA > MPS > CPU (``config.device``). Reproducible on CPU for a given seed. ``progress``
gets an :class:`EpochLog` after every epoch; ``cancel`` (a ``threading.Event`` or a callable) is
checked before every batch and raises :class:`~napari_casper.errors.TrainingCancelled`.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from napari_casper.errors import CasperInputError, TrainingCancelled
from napari_casper.histology.model import HistologyExpressionModel
from napari_casper.histology.patches import augment_batch
from napari_casper.runtime.control import CancelFlag, is_cancelled
from napari_casper.runtime.device import select_device, torch_threads

if TYPE_CHECKING:
    from napari_casper.histology.config import HistologyConfig


@dataclass
class EpochLog:
    """One epoch of training, as given to ``progress``.

    ``stage`` says which model is training (``"inner 1/3 (without MOB2)"``, ``"final"``).
    Losses are means over the epoch's batches; ``val_loss`` is on held-out spots of the
    training data and decides which weights are kept.
    """

    stage: str
    epoch: int
    n_epochs: int
    loss: float
    contrastive: float
    reconstruction: float
    val_loss: float
    seconds: float


@dataclass
class Phase:
    """Where a whole training or prediction run is, as given to ``phase``: one overall progress.

    ``text`` names the phase ("reading section 2 of 3 (MOB2)", "features", "final model: epoch 3
    of 12", "choosing the head: model 2 of 3 (without MOB2), epoch 1 of 8", "predicting");
    ``done`` of ``total`` units of the whole run are finished (``done`` never goes back).
    """

    text: str
    done: int
    total: int


@dataclass
class FitHistory:
    """One :func:`fit_encoder` run: its epochs, the epoch whose weights were kept (lowest ``val_loss``), the time taken.

    (CASPER's counterpart is :class:`napari_casper.casper.model.TrainingHistory`: evaluation
    periods scored by held-out-gene correlation, saved in the checkpoint.)
    """

    epochs: list[EpochLog] = field(default_factory=list)
    best_epoch: int = -1
    best_val_loss: float = float("inf")
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


#: the validation loss is computed on at most this many held-out spots (one batch)
MAX_VALIDATION_SPOTS = 512
#: optimisation steps aimed at when ``epochs`` is None, and the epoch range allowed
TARGET_STEPS = 120
EPOCH_RANGE = (10, 30)


def validation_size(n_spots: int, config: HistologyConfig) -> int:
    """Spots held out for the validation loss (none below 50 spots)."""
    return min(MAX_VALIDATION_SPOTS, int(round(config.val_fraction * n_spots))) if n_spots >= 50 else 0


def planned_epochs(n_spots: int, config: HistologyConfig) -> int:
    """Epochs :func:`fit_encoder` will run on ``n_spots`` paired spots with ``config``."""
    return config.epochs or auto_epochs(n_spots - validation_size(n_spots, config), config.batch_size)


def run_cancellable(function: Callable, *args, cancel: CancelFlag | None = None, what: str = "histology training", **kwargs):
    """``function(*args, **kwargs)``, with Cancel taking effect within 50 ms even when it cannot be interrupted.

    The call runs in a helper thread (a ridge cross-validation, a tissue detection: one C call of a
    second or more); when ``cancel`` is set first, :class:`TrainingCancelled` is raised at once and
    the helper's result is dropped when it ends. Only for calls without side effects.
    """
    if cancel is None:
        return function(*args, **kwargs)
    if is_cancelled(cancel):
        raise TrainingCancelled(f"{what} cancelled")
    box: dict = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["result"] = function(*args, **kwargs)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = err
        finally:
            done.set()

    threading.Thread(target=target, daemon=True, name=f"{what} (cancellable)").start()
    while not done.wait(0.05):
        if is_cancelled(cancel):
            raise TrainingCancelled(f"{what} cancelled")
    if "error" in box:
        raise box["error"]
    return box["result"]


def auto_epochs(n_train_spots: int, batch_size: int) -> int:
    """Epochs giving about :data:`TARGET_STEPS` optimisation steps, clipped to :data:`EPOCH_RANGE`.

    Measured: MOB (about 1100 training spots, 9 batches per epoch) keeps its best validation
    loss around epoch 5-12; HER2 (about 330 spots, 2 batches) around epoch 15-35.
    """
    steps_per_epoch = max(1, n_train_spots // max(2, batch_size))
    return int(np.clip(round(TARGET_STEPS / steps_per_epoch), *EPOCH_RANGE))


def cpu_threads(config: HistologyConfig) -> int:
    """Torch CPU threads: ``config.threads``, else half the cores (at most 4).

    Small convolutions gain little from many threads, and on shared cores OpenMP threads wait
    on each other: measured on 2 busy cores, one training step took 0.56 s with 1 thread and
    3.8 s with 2.
    """
    if config.threads:
        return int(config.threads)
    return max(1, min(4, (os.cpu_count() or 2) // 2))


@contextlib.contextmanager
def limited_threads(config: HistologyConfig):
    """Run the block with :func:`cpu_threads` torch *and* BLAS threads (numpy's ridge / retrieval).

    On 2 busy cores a multi-threaded OpenBLAS made the ridge fits 3x slower than one thread.
    """
    from threadpoolctl import threadpool_limits

    n = cpu_threads(config)
    with threadpool_limits(limits=n, user_api="blas"), torch_threads(n):
        yield


def patches_to_tensor(patches: np.ndarray) -> torch.Tensor:
    """The network's input as a tensor: ``(n, S, P, P, 3)`` uint8 patches -> ``(n, S, 3, P, P)`` uint8
    (converted to float per batch); ``(n, S, F)`` pretrained embeddings as they are (float32)."""
    if np.asarray(patches).ndim == 3:
        return torch.as_tensor(np.asarray(patches, dtype=np.float32))
    return torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 1, 4, 2, 3).contiguous()


def _as_float(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    if batch.dtype != torch.uint8:  # embeddings
        return batch.to(device)
    return batch.to(device).float().div_(255.0)


def _augmented(batch: torch.Tensor, device, generator, config: HistologyConfig) -> torch.Tensor:
    """A training batch: patches flipped, rotated and stain-jittered; embeddings as they are (the
    network's dropout on them stands in)."""
    x = _as_float(batch, device)
    return augment_batch(x, generator, stain_jitter=config.stain_jitter) if batch.dtype == torch.uint8 else x


def build_model(n_genes: int, config: HistologyConfig) -> HistologyExpressionModel:
    """A fresh (untrained) network for ``n_genes`` model genes with the sizes in ``config``."""
    return HistologyExpressionModel(
        n_genes,
        n_scales=len(config.input_scales()),
        dim=config.dim,
        proj_dim=config.proj_dim,
        width=config.width,
        n_gene_tokens=config.n_gene_tokens,
        dropout=config.dropout,
        n_features=config.encoder["n_features"] if config.encoder else None,
    )


def fit_encoder(
    patches: np.ndarray,
    expression: np.ndarray,
    config: HistologyConfig,
    *,
    stage: str = "final",
    progress: Callable[[EpochLog], None] | None = None,
    cancel: CancelFlag | None = None,
) -> tuple[HistologyExpressionModel, FitHistory]:
    """Train the image-expression model on paired spots.

    Parameters
    ----------
    patches
        ``(n_spots, n_scales, P, P, 3)`` uint8 multi-scale patches, or ``(n_spots, n_scales, F)``
        embeddings of the pretrained encoder ``config.encoder``.
    expression
        ``(n_spots, n_model_genes)`` z-scored log-normalised expression of the model genes.
    config
        Options (epochs, batch size, learning rate, mask ratio, ...).

    Returns
    -------
    The model (on CPU, eval mode) with the weights of the epoch with the lowest validation
    loss (``config.keep="best"``; validation = ``val_fraction`` of the spots, at most
    :data:`MAX_VALIDATION_SPOTS`, never in a batch) or of the last epoch (``"last"``), and the
    training history.
    """
    if len(patches) != len(expression):
        raise CasperInputError(f"{len(patches)} patch sets for {len(expression)} expression rows")
    if patches.shape[1] != len(config.input_scales()):
        raise CasperInputError(f"patches have {patches.shape[1]} scales, the network takes {len(config.input_scales())}")
    if (patches.ndim == 3) != (config.encoder is not None):
        raise CasperInputError("a network with a pretrained encoder trains on its embeddings, one without on patches")
    if len(patches) < 8:
        raise CasperInputError(f"only {len(patches)} training spots; histology training needs at least 8")
    if config.keep not in ("best", "last"):
        raise CasperInputError(f"keep must be 'best' or 'last', got {config.keep!r}")
    device = select_device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    n = len(patches)
    order = rng.permutation(n)
    n_val = validation_size(n, config)
    val_idx, train_idx = order[:n_val], order[n_val:]
    images = patches_to_tensor(patches)
    expr = torch.as_tensor(np.asarray(expression, dtype=np.float32))

    with torch_threads(cpu_threads(config)):
        model = build_model(expr.shape[1], config).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        batch = max(2, min(config.batch_size, len(train_idx)))
        steps_per_epoch = max(1, len(train_idx) // batch)
        n_epochs = planned_epochs(n, config)
        total_steps = max(1, n_epochs * steps_per_epoch)
        warmup = max(1, total_steps // 20)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser,
            lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(step, total_steps) / total_steps)),
        )
        history = FitHistory()
        best_state = copy.deepcopy(model.state_dict())
        start = time.perf_counter()
        for epoch in range(n_epochs):
            t0 = time.perf_counter()
            model.train()
            perm = torch.from_numpy(rng.permutation(train_idx))
            sums = np.zeros(3)
            for s in range(steps_per_epoch + 1):  # the last check is before the validation loss
                if is_cancelled(cancel):
                    _finish(model, best_state, history, start)
                    err = TrainingCancelled(
                        f"histology training ({stage}) cancelled at epoch {epoch + 1}; "
                        "the best weights so far are in the exception's .model"
                    )
                    err.model, err.history = model, history
                    raise err
                if s == steps_per_epoch:
                    break
                idx = perm[s * batch : (s + 1) * batch]
                x = _augmented(images[idx], device, generator, config)
                out = model.losses(x, expr[idx].to(device), mask_ratio=config.mask_ratio, generator=generator)
                if is_cancelled(cancel):  # checked again between forward and backward: Cancel waits half a step at most
                    continue  # the next turn of the loop raises
                optimiser.zero_grad(set_to_none=True)
                out["loss"].backward()
                optimiser.step()
                schedule.step()
                sums += [out["loss"].item(), out["contrastive"].item(), out["reconstruction"].item()]
            means = sums / steps_per_epoch
            val = _validation_loss(model, images, expr, val_idx, device, config) if n_val else means[0]
            record = EpochLog(stage, epoch + 1, n_epochs, *map(float, means), float(val), time.perf_counter() - t0)
            history.epochs.append(record)
            if val < history.best_val_loss:
                history.best_val_loss, history.best_epoch = float(val), epoch + 1
                if config.keep == "best":
                    best_state = copy.deepcopy(model.state_dict())
            if config.keep == "last":
                best_state = copy.deepcopy(model.state_dict())
            if progress is not None:
                progress(record)
        _finish(model, best_state, history, start)
    return model, history


def _finish(model, best_state, history: FitHistory, start: float) -> None:
    model.load_state_dict(best_state)
    model.cpu().eval()
    history.seconds = time.perf_counter() - start


@torch.no_grad()
def _validation_loss(model, images, expr, val_idx, device, config: HistologyConfig) -> float:
    """Total loss on the held-out spots, all in one batch, without augmentation, fixed mask."""
    model.eval()
    idx = torch.from_numpy(val_idx)
    generator = torch.Generator().manual_seed(12345)
    out = model.losses(
        _as_float(images[idx], device), expr[idx].to(device), mask_ratio=config.mask_ratio, generator=generator
    )
    return float(out["loss"])


@torch.no_grad()
def embed_patches(
    model: HistologyExpressionModel, patches: np.ndarray, *, batch_size: int = 256, device="auto", threads=None,
    tta: bool = False, cancel: CancelFlag | None = None,
) -> np.ndarray:
    """``(n_spots, proj_dim)`` L2-normalised image embeddings of ``(n, S, P, P, 3)`` uint8 patches
    (or of ``(n, S, F)`` pretrained embeddings).

    ``tta``: average the embeddings of the 8 flips/rotations (test-time augmentation; tissue has
    no orientation, and training saw all 8), then renormalise; not for pretrained embeddings.
    """
    dev = select_device(device)
    model = model.to(dev).eval()
    images = patches_to_tensor(patches)
    out = []
    with torch_threads(threads):
        for start in range(0, len(images), batch_size):
            if is_cancelled(cancel):
                raise TrainingCancelled("histology prediction cancelled")
            x = _as_float(images[start : start + batch_size], dev)
            if not tta or x.ndim == 3:
                out.append(model.embed_image(x).cpu())
                continue
            views = [torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4)]
            mean = torch.stack([model.embed_image(v) for v in views]).mean(dim=0)
            out.append(torch.nn.functional.normalize(mean, dim=-1).cpu())
    model.cpu()
    return torch.cat(out).numpy() if out else np.zeros((0, model.image_projection[-1].out_features), np.float32)


@torch.no_grad()
def embed_expression(model: HistologyExpressionModel, expression: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """``(n_spots, proj_dim)`` L2-normalised expression embeddings (model on CPU)."""
    model = model.cpu().eval()
    x = torch.as_tensor(np.asarray(expression, dtype=np.float32))
    return torch.cat([model.embed_expression(x[s : s + batch_size]) for s in range(0, len(x), batch_size)]).numpy()


def warm_up() -> None:
    """Run torch's first-use imports once, ahead of use: the first ``AdamW`` imports ``torch._dynamo``
    (seconds). The Histology widget calls this in a background thread when it opens (with the
    imports of the modules training and prediction need), so that no Train or Predict click pays for it.
    """
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
