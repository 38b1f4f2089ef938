"""Masked-reconstruction training of CASPER, with early stopping, progress and cancellation.

Each step hides a random subset of panel genes from both the spot queries and the centroid keys
and scores the model on the hidden genes only, with a per-gene standardised MSE over the spots of
the batch (``2 * (1 - Pearson r)`` per gene; see ``docs/casper.md`` for why the loss must be
scale-free). Inner validation uses only the training data: a few *validation genes* are never
loss targets (they are still seen as inputs, randomly masked like the others) and a few
*validation spots* never enter a batch; the validation score is the mean Pearson r of the
validation genes, hidden, on the validation spots. The epoch with the best mean of the last
three scores is kept; by default (``refit``) a second run then trains on every gene and spot for
that many steps, so no data is lost to validation in the final model.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from anndata import AnnData

from napari_casper.casper.centroids import compute_centroids
from napari_casper.casper.model import CasperModel, EpochRecord, TrainingHistory
from napari_casper.casper.network import CentroidCrossAttention, standardize_profiles
from napari_casper.casper.preprocess import prepare_pair, standardize
from napari_casper.casper.reference_cells import ReferenceCells
from napari_casper.errors import TrainingCancelled
from napari_casper.runtime.control import CancelFlag, check_options, is_cancelled
from napari_casper.runtime.device import autocast, grad_scaler, select_device, torch_threads

#: ``progress(record)`` is called after every epoch with an :class:`EpochRecord`
ProgressCallback = Callable[[EpochRecord], None]
#: ``status(text)`` names the phase being run ("preparing genes and centroids", "refit: step 50 of 75")
StatusCallback = Callable[[str], None]
#: during the refit, ``status`` is called every this many steps
REFIT_STATUS_EVERY = 5


@dataclass
class CasperConfig:
    """Every option of CASPER training (all have defaults; see ``docs/casper.md``)."""

    # data
    label_key: str | None = None
    centroid_method: str = "auto"
    leiden_resolution: float = 1.0
    case_insensitive: bool = False
    normalize: str = "auto"
    normalize_reference: str = "auto"
    # model
    d_model: int = 64
    hidden: int = 128
    heads: int = 2
    dropout: float = 0.1
    similarity_prior: bool = True
    prior_scale: float = 10.0
    gene_residual: bool = True
    # supervision from the reference cells (panel genes in, other genes out; see reference_cells.py)
    reference_weight: float = 0.0
    reference_genes_per_step: int = 256
    # optimisation
    mask_fraction: float = 0.25
    batch_size: int = 512
    max_steps: int = 300
    steps_per_epoch: int = 25
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    val_gene_fraction: float = 0.15
    val_spot_fraction: float = 0.1
    patience: int = 6
    selection_window: int = 3
    refit: bool = True
    seed: int = 0
    device: str = "auto"
    mixed_precision: bool = True
    num_threads: int | None = 1

    @classmethod
    def from_dict(cls, data: dict | None = None, **overrides) -> CasperConfig:
        merged = {**(data or {}), **overrides}
        check_options(cls, merged, "CASPER")
        return cls(**merged)

    def to_dict(self) -> dict:
        return asdict(self)


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
    """Pearson r of each column of ``pred`` with the same column of ``target`` (NaN -> 0)."""
    p = pred - pred.mean(0)
    t = target - target.mean(0)
    denom = np.sqrt((p * p).sum(0) * (t * t).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (p * t).sum(0) / denom
    return np.nan_to_num(r)


class _Tensors:
    """Training tensors on the device: ST z-scores, centroid panel profiles (raw and z)."""

    def __init__(self, model: CasperModel, spot_z: np.ndarray, device: torch.device):
        self.spots = torch.as_tensor(spot_z, device=device)
        self.centroid_panel = torch.as_tensor(model.centroid_panel(), device=device)
        idx = model.centroids.gene_indices(model.panel_reference_genes)
        raw = torch.as_tensor(model.centroids.expression[:, idx], device=device)
        self.profiles = raw
        self.profiles_z, self.profiles_std = standardize_profiles(raw)


def _split(n_spots: int, n_panel: int, config: CasperConfig, rng: np.random.Generator):
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


def build_model(st: AnnData, reference: AnnData, config: CasperConfig) -> tuple[CasperModel, np.ndarray, object]:
    """Preprocess, compute centroids and create an untrained :class:`CasperModel`.

    Returns ``(model, spot_z, reference_expression)``: ``spot_z`` is the ``(n_spots, P)``
    standardised ST input, ``reference_expression`` the normalised reference (cells x genes).
    """
    pair = prepare_pair(
        st,
        reference,
        case_insensitive=config.case_insensitive,
        normalize=config.normalize,
        normalize_reference=config.normalize_reference,
    )
    centroids = compute_centroids(
        pair.reference_expression,
        pair.reference_genes,
        obs=reference.obs,
        label_key=config.label_key,
        method=config.centroid_method,
        resolution=config.leiden_resolution,
        seed=config.seed,
        cell_names=reference.obs_names,
    )
    ref_idx = centroids.gene_indices(pair.panel_reference_genes)
    ref_panel = pair.reference_expression[:, ref_idx]
    ref_panel = np.asarray(ref_panel.toarray() if hasattr(ref_panel, "toarray") else ref_panel)
    _, cmean, cstd = standardize(ref_panel)
    spot_z, st_mean, st_std = standardize(pair.st_expression)
    network = fresh_network(len(pair.panel_genes), centroids.n_centroids, config)
    report = dict(pair.report, centroids=f"{centroids.n_centroids} centroids ({centroids.method})")
    model = CasperModel(
        network=network,
        config=config.to_dict(),
        panel_genes=pair.panel_genes,
        panel_reference_genes=pair.panel_reference_genes,
        centroids=centroids,
        st_mean=st_mean,
        st_std=st_std,
        centroid_mean=cmean,
        centroid_std=cstd,
        st_normalization=pair.report["st_normalization"],
        report=report,
    )
    return model, spot_z, pair.reference_expression


def fresh_network(n_panel: int, n_centroids: int, config: CasperConfig) -> CentroidCrossAttention:
    """An untrained network, initialised from ``config.seed`` (the same weights for the same seed)."""
    torch.manual_seed(config.seed)
    return CentroidCrossAttention(
        n_panel,
        n_centroids,
        d_model=config.d_model,
        hidden=config.hidden,
        heads=config.heads,
        dropout=config.dropout,
        similarity_prior=config.similarity_prior,
        prior_scale=config.prior_scale,
        gene_residual=config.gene_residual,
    )


def _check_cancel(cancel, model: CasperModel | None, where: str) -> None:
    if is_cancelled(cancel):
        err = TrainingCancelled(f"training cancelled {where}")
        err.model = model
        raise err


def train_casper(
    st: AnnData,
    reference: AnnData,
    config: CasperConfig | dict | None = None,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelFlag | None = None,
    status: StatusCallback | None = None,
    **overrides,
) -> CasperModel:
    """Train CASPER on the ST panel ``st`` against the scRNA ``reference``.

    Parameters
    ----------
    st
        spots x panel genes (counts or normalised; see :mod:`napari_casper.casper.preprocess`).
    reference
        cells x genes scRNA-seq; every reference gene can be imputed afterwards.
    config
        a :class:`CasperConfig`, a dict of its fields, or ``None`` for defaults; ``**overrides``
        set individual fields (``train_casper(st, ref, max_steps=100)``).
    progress
        called with an :class:`EpochRecord` before training (epoch 0, the untrained model) and
        after every epoch (``steps_per_epoch`` batches).
    cancel
        a ``threading.Event`` or a callable returning True to stop; checked before every batch.
        On cancel the best weights so far are restored and :class:`TrainingCancelled` is raised
        with that model as ``err.model`` (None when cancelled before the first batch).
    status
        called with the name of each phase: "preparing genes and centroids", then (with
        ``refit``) "refit on all genes and spots: step s of S" every few refit steps.

    Returns
    -------
    CasperModel in eval mode, on the CPU. With ``refit=True`` (default) the validation run only
    chooses the number of steps (its best epoch); the returned model is then trained again with
    every gene and spot for that many steps, from the same preprocessing and centroids
    (``progress`` is not called during the refit, ``status`` is; a cancel during it raises
    with the validated model). With ``refit=False`` it is the
    validation run's best weights.
    """
    if isinstance(config, CasperConfig):
        config = CasperConfig.from_dict(config.to_dict(), **overrides)
    else:
        config = CasperConfig.from_dict(config, **overrides)
    start = time.perf_counter()
    with torch_threads(config.num_threads):
        _check_cancel(cancel, None, "before it started")
        if status is not None:
            status("preparing genes and centroids")
        prepared = build_model(st, reference, config)
        _check_cancel(cancel, None, "while preparing genes and centroids")
        model = _train(prepared, config, progress, cancel)
        if not (config.refit and model.history.validation_genes and model.history.best_epoch):
            return model
        # refit: same recipe on every gene and spot, for as many steps as validation chose
        best = model.history.records[model.history.best_epoch]
        refit = CasperConfig.from_dict(
            config.to_dict(), val_gene_fraction=0.0, val_spot_fraction=0.0,
            max_steps=max(best.step, config.steps_per_epoch), refit=False,
        )
        # the same genes, standardisation and centroids: only the network starts afresh
        base, spot_z, reference_expression = prepared
        again = copy.copy(base)
        again.network = fresh_network(base.network.n_panel, base.network.n_centroids, refit)
        again.history = TrainingHistory()
        try:
            final = _train((again, spot_z, reference_expression), refit, None, cancel, status=status)
        except TrainingCancelled as err:
            err.model = model  # the validated model is the best complete one
            raise
        final.config = config.to_dict()
        final.history = model.history
        final.history.stop_reason += f"; refit on all genes and spots for {refit.max_steps} steps"
        final.history.seconds = time.perf_counter() - start
        return final


def _train(prepared: tuple, config: CasperConfig, progress, cancel, status=None) -> CasperModel:
    """Train ``prepared`` = ``(model, spot_z, reference_expression)`` from :func:`build_model`;
    ``status`` reports refit steps."""
    device = select_device(config.device)
    start = time.perf_counter()
    model, spot_z, reference_expression = prepared
    net = model.network.to(device)
    data = _Tensors(model, spot_z, device)
    cells = ReferenceCells(model, reference_expression, device) if config.reference_weight > 0 else None
    n_spots, n_panel = spot_z.shape
    rng = np.random.default_rng(config.seed)
    val_genes, train_genes, val_spots, train_spots = _split(n_spots, n_panel, config, rng)
    history = TrainingHistory(validation_genes=[model.panel_genes[i] for i in val_genes])
    model.history = history
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    total_steps = max(config.max_steps, 4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.learning_rate,
        total_steps=total_steps,
        pct_start=max(0.1, 2.0 / total_steps),
    )
    scaler = grad_scaler(device, config.mixed_precision)  # fp16 on CUDA only; else a pass-through
    train_genes_t = torch.as_tensor(train_genes)
    train_spots_t = torch.as_tensor(train_spots)
    n_hidden = max(1, int(round(config.mask_fraction * n_panel)))
    batch = min(config.batch_size, len(train_spots))
    best_state = copy.deepcopy(net.state_dict())
    best_score, bad_epochs, losses, step, epoch = -np.inf, 0, [], 0, 0
    order = train_spots_t[torch.randperm(len(train_spots_t), generator=generator)]
    cursor = 0

    def finish(reason: str) -> CasperModel:
        net.load_state_dict(best_state)
        net.eval()
        model.network = net.cpu()
        history.stop_reason = reason
        history.seconds = time.perf_counter() - start
        return model

    # epoch 0: the untrained model, so the history shows what training gained
    val_loss, val_score = _validate(net, data, val_genes, val_spots, device, config)
    history.records.append(EpochRecord(0, 0, float("nan"), val_loss, val_score))
    if progress is not None:
        progress(history.records[-1])

    while step < config.max_steps:
        if is_cancelled(cancel):
            err = TrainingCancelled(
                f"training cancelled at step {step}; the best model so far "
                f"(epoch {history.best_epoch}) is kept in err.model"
            )
            err.model = finish("cancelled")
            raise err
        if cursor + batch > len(order):
            order = train_spots_t[torch.randperm(len(train_spots_t), generator=generator)]
            cursor = 0
        spots_idx = order[cursor : cursor + batch]
        cursor += batch
        hidden = _draw_hidden(n_panel, n_hidden, train_genes_t, generator)
        mask = torch.ones(n_panel, device=device)
        mask[hidden] = 0.0
        targets = hidden[torch.isin(hidden, train_genes_t)]
        net.train()
        with autocast(device, config.mixed_precision):
            pred = net(
                data.spots[spots_idx.to(device)],
                mask,
                data.centroid_panel,
                data.profiles[:, targets],
                data.profiles_z[:, targets],
                data.profiles_std[targets],
            )
        loss = correlation_loss(pred, data.spots[spots_idx.to(device)][:, targets])
        if cells is not None:
            loss = loss + config.reference_weight * _reference_loss(net, cells, data, mask, hidden, batch, config, generator)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        losses.append(float(loss.detach()))
        step += 1
        if status is not None and (step % REFIT_STATUS_EVERY == 0 or step == config.max_steps):
            status(f"refit on all genes and spots: step {step} of {config.max_steps}")
        if step % config.steps_per_epoch == 0 or step == config.max_steps:
            epoch += 1
            val_loss, val_score = _validate(net, data, val_genes, val_spots, device, config)
            record = EpochRecord(epoch, step, float(np.mean(losses)), val_loss, val_score)
            history.records.append(record)
            losses = []
            # select on the mean of the last `selection_window` validation scores: single
            # epochs are noisy (a handful of genes), and a lucky early epoch is under-trained
            recent = [r.val_score for r in history.records[1:]][-config.selection_window :]
            smoothed = float(np.mean(recent))
            if smoothed > best_score or not np.isfinite(best_score):
                best_score, bad_epochs = smoothed, 0
                best_state = copy.deepcopy(net.state_dict())
                history.best_epoch, history.best_val_score = epoch, val_score
            else:
                bad_epochs += 1
            if progress is not None:
                progress(record)
            if bad_epochs >= config.patience:
                return finish(f"early stop: no validation gain for {config.patience} epochs")
    return finish("max_steps reached")


def _reference_loss(net, cells: ReferenceCells, data: _Tensors, mask, hidden, batch: int, config, generator):
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


def _draw_hidden(n_panel: int, n_hidden: int, train_genes: torch.Tensor, generator) -> torch.Tensor:
    """Random hidden genes containing at least one training (non-validation) gene."""
    while True:
        hidden = torch.randperm(n_panel, generator=generator)[:n_hidden]
        if torch.isin(hidden, train_genes).any():
            return hidden


@torch.no_grad()
def _validate(net, data: _Tensors, val_genes, val_spots, device, config) -> tuple[float, float]:
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
