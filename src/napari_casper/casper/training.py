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

from napari_casper.casper.calibration import Calibration, calibrate, complete
from napari_casper.casper.centroids import compute_centroids
from napari_casper.casper.ensemble import NetworkEnsemble
from napari_casper.casper.model import CasperModel, EpochRecord, TrainingHistory
from napari_casper.casper.network import CentroidCrossAttention
from napari_casper.casper.objective import (
    TrainingTensors,
    correlation_loss,
    draw_hidden,
    reference_loss,
    split_validation,
    validate,
)
from napari_casper.casper.preprocess import prepare_pair, standardize
from napari_casper.casper.reference_cells import ReferenceCells
from napari_casper.errors import CasperInputError, TrainingCancelled
from napari_casper.runtime.control import CancelFlag, check_options, is_cancelled
from napari_casper.runtime.device import autocast, grad_scaler, select_device, torch_threads

#: ``progress(record)`` is called after every epoch with an :class:`EpochRecord`
ProgressCallback = Callable[[EpochRecord], None]
#: ``status(text)`` names the phase being run ("preparing genes and centroids", "refit: step 50 of 75")
StatusCallback = Callable[[str], None]
#: ``reference_weight="auto"`` compares the validation run without reference cells to one with this weight
AUTO_REFERENCE_WEIGHT = 1.0
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
    reference_weight: float | str = "auto"
    reference_genes_per_step: int = 256
    # optimisation
    mask_fraction: float = 0.25
    batch_size: int = 512
    max_steps: int = 300
    steps_per_epoch: int = 25
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    val_gene_fraction: float = 0.3
    val_spot_fraction: float = 0.1
    patience: int = 6
    selection_window: int = 3
    refit: bool = True
    ensemble: int = 2
    calibrate: bool = True
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
    with the validated model); with ``ensemble=K`` (default 2) the refit is trained ``K`` times,
    from seeds ``seed .. seed + K - 1``, and the model predicts their mean
    (:class:`~napari_casper.casper.ensemble.NetworkEnsemble`). With ``refit=False`` it is the
    validation run's best weights.
    """
    if isinstance(config, CasperConfig):
        config = CasperConfig.from_dict(config.to_dict(), **overrides)
    else:
        config = CasperConfig.from_dict(config, **overrides)
    if isinstance(config.ensemble, bool) or not isinstance(config.ensemble, int) or config.ensemble < 1:
        raise CasperInputError(
            f"ensemble={config.ensemble!r}: give the number of refits to average, a whole number of 1 or more "
            "(1: a single network; the default 2)"
        )
    start = time.perf_counter()
    with torch_threads(config.num_threads):
        _check_cancel(cancel, None, "before it started")
        if status is not None:
            status("preparing genes and centroids")
        prepared = build_model(st, reference, config)
        _check_cancel(cancel, None, "while preparing genes and centroids")
        model, config = _validate_weights(prepared, config, progress, cancel, status)
        calibration = _calibrate(model, prepared, config, cancel, status)
        if not (config.refit and model.history.validation_genes and model.history.best_epoch):
            model.calibration = calibration and complete(calibration, model, prepared[2])
            return model
        # refit: same recipe on every gene and spot, for as many steps as validation chose
        best = model.history.records[model.history.best_epoch]
        refit = CasperConfig.from_dict(
            config.to_dict(), val_gene_fraction=0.0, val_spot_fraction=0.0,
            max_steps=max(best.step, config.steps_per_epoch), refit=False,
        )
        # the same genes, standardisation and centroids: only the network starts afresh
        reference_expression = prepared[2]
        try:
            final = _train(_fresh_copy(prepared, refit), refit, None, cancel, status=status)
            final.network = _more_refits(final.network, prepared, refit, config.ensemble, cancel, status)
        except TrainingCancelled as err:
            err.model = model  # the validated model is the best complete one
            raise
        final.config = model.config
        final.calibration = calibration and complete(calibration, final, reference_expression)
        final.history = model.history
        final.history.stop_reason += f"; refit on all genes and spots for {refit.max_steps} steps" + (
            f", {config.ensemble} networks averaged" if config.ensemble > 1 else ""
        )
        final.history.seconds = time.perf_counter() - start
        return final


def _more_refits(first, prepared: tuple, refit: CasperConfig, size: int, cancel, status):
    """``first`` (the refit's network) alone, or with ``size - 1`` more refits from the next seeds, as one
    :class:`~napari_casper.casper.ensemble.NetworkEnsemble` (the mean of their predictions)."""
    if size <= 1:
        return first
    networks = [first]
    for k in range(1, size):
        again = CasperConfig.from_dict(refit.to_dict(), seed=refit.seed + k)
        phase = f"refit {k + 1} of {size} (seed {again.seed})"
        networks.append(_train(_fresh_copy(prepared, again), again, None, cancel, status=status, phase=phase).network)
    return NetworkEnsemble(networks).eval()


def _fresh_copy(prepared: tuple, config: CasperConfig) -> tuple:
    """``prepared`` with a copy of its model whose network starts afresh (same genes, statistics, centroids)."""
    base, spot_z, reference_expression = prepared
    again = copy.copy(base)
    again.network = fresh_network(base.network.n_panel, base.network.n_centroids, config)
    again.history = TrainingHistory()
    return again, spot_z, reference_expression


def _validate_weights(prepared: tuple, config: CasperConfig, progress, cancel, status) -> tuple[CasperModel, CasperConfig]:
    """The validation run; with ``reference_weight="auto"`` two of them, without and with the reference
    cells (weight :data:`AUTO_REFERENCE_WEIGHT`), and the better validation score is kept. Returns the
    selected model and the config with its weight (model.config records the choice)."""
    auto = config.reference_weight == "auto"
    chosen = CasperConfig.from_dict(config.to_dict(), reference_weight=0.0 if auto else float(config.reference_weight))
    model = _train(prepared, chosen, progress, cancel)
    if auto and model.history.validation_genes and model.history.best_epoch:
        second = CasperConfig.from_dict(config.to_dict(), reference_weight=AUTO_REFERENCE_WEIGHT)
        try:
            other = _train(_fresh_copy(prepared, second), second, None, cancel, status, phase="validation with the reference cells")
        except TrainingCancelled as err:
            err.model = model
            raise
        scores = (model.history.best_val_score, other.history.best_val_score)
        if scores[1] > scores[0]:
            model, chosen = other, second
        model.history.stop_reason += (
            f"; reference cells: weight {chosen.reference_weight:g} chosen by validation r "
            f"({scores[0]:.3f} without, {scores[1]:.3f} with)"
        )
    model.config = chosen.to_dict()
    return model, chosen


def _calibrate(model: CasperModel, prepared: tuple, config: CasperConfig, cancel, status) -> Calibration | None:
    """Trust and intervals calibrated on the validation genes of the validation run's model (None
    without validation genes or with ``calibrate=False``)."""
    if not (config.calibrate and model.history.validation_genes):
        return None
    _check_cancel(cancel, model, "before calibrating")
    if status is not None:
        status("calibrating trust and intervals on the validation genes")
    validation = np.array([model.panel_genes.index(g) for g in model.history.validation_genes])
    with torch.no_grad():
        return calibrate(model, prepared[1], validation, prepared[2], seed=config.seed)


def _train(prepared: tuple, config: CasperConfig, progress, cancel, status=None, phase: str = "refit on all genes and spots") -> CasperModel:
    """Train ``prepared`` = ``(model, spot_z, reference_expression)`` from :func:`build_model`;
    ``status`` reports the steps as ``"<phase>: step s of S"``."""
    device = select_device(config.device)
    start = time.perf_counter()
    model, spot_z, reference_expression = prepared
    net = model.network.to(device)
    data = TrainingTensors(model, spot_z, device)
    cells = ReferenceCells(model, reference_expression, device) if config.reference_weight > 0 else None
    n_spots, n_panel = spot_z.shape
    rng = np.random.default_rng(config.seed)
    val_genes, train_genes, val_spots, train_spots = split_validation(n_spots, n_panel, config, rng)
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
    val_loss, val_score = validate(net, data, val_genes, val_spots, device, config)
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
        hidden = draw_hidden(n_panel, n_hidden, train_genes_t, generator)
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
            loss = loss + config.reference_weight * reference_loss(net, cells, data, mask, hidden, batch, config, generator)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        losses.append(float(loss.detach()))
        step += 1
        if status is not None and (step % REFIT_STATUS_EVERY == 0 or step == config.max_steps):
            status(f"{phase}: step {step} of {config.max_steps}")
        if step % config.steps_per_epoch == 0 or step == config.max_steps:
            epoch += 1
            val_loss, val_score = validate(net, data, val_genes, val_spots, device, config)
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
