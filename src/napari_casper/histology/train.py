"""Training of the image-expression model: contrastive alignment + cross-modal masked reconstruction.

:func:`fit_encoder` is the training loop over paired (patches, expression) spots; it is what the
benchmark calls per fold. :func:`train_histology` (the public entry point) prepares the sections,
chooses the prediction head by leave-one-section-out validation on the *training* sections (a
model trained without section ``v`` predicts ``v``), trains the final model on every section and
returns a ready :class:`~napari_casper.histology.predict.HistologyPredictor`.

Device: CUDA > MPS > CPU (``config.device``). Reproducible on CPU for a given seed. ``progress``
gets an :class:`EpochLog` after every epoch; ``cancel`` (a ``threading.Event`` or a callable) is
checked before every batch and raises :class:`~napari_casper.errors.TrainingCancelled`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch

from napari_casper.device import select_device, torch_threads
from napari_casper.errors import CasperInputError, TrainingCancelled
from napari_casper.histology.model import HistologyExpressionModel
from napari_casper.histology.patches import augment_batch
from napari_casper.preprocess import standardize

CancelFlag = threading.Event | Callable[[], bool]


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
    backbone_path: str | None = None
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
    # widget; the default spot size for virtual spots on a new slide of the same resolution)
    spot_diameter_px: float | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["scales"] = list(self.scales)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "HistologyConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise CasperInputError(
                f"unknown histology option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        out = cls(**values)
        out.scales = tuple(float(s) for s in out.scales)
        return out


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
class TrainingHistory:
    epochs: list[EpochLog] = field(default_factory=list)
    best_epoch: int = -1
    best_val_loss: float = float("inf")
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "epochs": [asdict(e) for e in self.epochs],
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "seconds": self.seconds,
        }


#: the validation loss is computed on at most this many held-out spots (one batch)
MAX_VALIDATION_SPOTS = 512
#: optimisation steps aimed at when ``epochs`` is None, and the epoch range allowed
TARGET_STEPS = 120
EPOCH_RANGE = (10, 30)


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
    n = cpu_threads(config)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn (scanpy)
        blas = contextlib.nullcontext()
    else:
        blas = threadpool_limits(limits=n, user_api="blas")
    with blas, torch_threads(n):
        yield


def is_cancelled(cancel: CancelFlag | None) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


def patches_to_tensor(patches: np.ndarray) -> torch.Tensor:
    """``(n, S, P, P, 3)`` uint8 -> ``(n, S, 3, P, P)`` uint8 tensor (converted to float per batch)."""
    return torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 1, 4, 2, 3).contiguous()


def _as_float(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    return batch.to(device).float().div_(255.0)


def build_model(n_genes: int, config: HistologyConfig) -> HistologyExpressionModel:
    """A fresh (untrained) network for ``n_genes`` model genes with the sizes in ``config``."""
    return HistologyExpressionModel(
        n_genes,
        n_scales=len(config.scales),
        dim=config.dim,
        proj_dim=config.proj_dim,
        width=config.width,
        n_gene_tokens=config.n_gene_tokens,
        dropout=config.dropout,
        backbone_path=config.backbone_path,
    )


def fit_encoder(
    patches: np.ndarray,
    expression: np.ndarray,
    config: HistologyConfig,
    *,
    stage: str = "final",
    progress: Callable[[EpochLog], None] | None = None,
    cancel: CancelFlag | None = None,
) -> tuple[HistologyExpressionModel, TrainingHistory]:
    """Train the image-expression model on paired spots.

    Parameters
    ----------
    patches
        ``(n_spots, n_scales, P, P, 3)`` uint8 multi-scale patches.
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
    if patches.shape[1] != len(config.scales):
        raise CasperInputError(f"patches have {patches.shape[1]} scales, config.scales has {len(config.scales)}")
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
    n_val = min(MAX_VALIDATION_SPOTS, int(round(config.val_fraction * n))) if n >= 50 else 0
    val_idx, train_idx = order[:n_val], order[n_val:]
    images = patches_to_tensor(patches)
    expr = torch.as_tensor(np.asarray(expression, dtype=np.float32))

    with torch_threads(cpu_threads(config)):
        model = build_model(expr.shape[1], config).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        batch = max(2, min(config.batch_size, len(train_idx)))
        steps_per_epoch = max(1, len(train_idx) // batch)
        n_epochs = config.epochs or auto_epochs(len(train_idx), config.batch_size)
        total_steps = max(1, n_epochs * steps_per_epoch)
        warmup = max(1, total_steps // 20)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser,
            lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(step, total_steps) / total_steps)),
        )
        history = TrainingHistory()
        best_state = copy.deepcopy(model.state_dict())
        start = time.perf_counter()
        for epoch in range(n_epochs):
            t0 = time.perf_counter()
            model.train()
            perm = torch.from_numpy(rng.permutation(train_idx))
            sums = np.zeros(3)
            for s in range(steps_per_epoch):
                if is_cancelled(cancel):
                    _finish(model, best_state, history, start)
                    err = TrainingCancelled(
                        f"histology training ({stage}) cancelled at epoch {epoch + 1}; "
                        "the best weights so far are in the exception's .model"
                    )
                    err.model, err.history = model, history
                    raise err
                idx = perm[s * batch : (s + 1) * batch]
                x = augment_batch(_as_float(images[idx], device), generator, stain_jitter=config.stain_jitter)
                out = model.losses(x, expr[idx].to(device), mask_ratio=config.mask_ratio, generator=generator)
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


def _finish(model, best_state, history: TrainingHistory, start: float) -> None:
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
    """``(n_spots, proj_dim)`` L2-normalised image embeddings of ``(n, S, P, P, 3)`` uint8 patches.

    ``tta``: average the embeddings of the 8 flips/rotations (test-time augmentation; tissue has
    no orientation, and training saw all 8), then renormalise.
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
            if not tta:
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


# --- the public entry point -----------------------------------------------------------------


@dataclass
class _Prepared:
    """Targets of the training sections: common genes, log-normalised expression per section."""

    genes: list[str]  # output genes
    expression: list[np.ndarray]  # per section, (n_spots, n_genes) log-normalised
    raw_patches: list[np.ndarray]
    features_z: list[np.ndarray]


def log_normalised(adata, genes: Sequence[str]) -> np.ndarray:
    """``(n_spots, len(genes))`` float32 log-normalised expression (raw counts -> log1p per 1e4)."""
    from napari_casper.preprocess import dense, normalize_matrix

    values, _ = normalize_matrix(adata.X, "auto")
    index = adata.var_names.get_indexer(list(genes))
    return dense(values)[:, index]


def _common_genes(sections) -> list[str]:
    for s in sections:
        if s.expression is None:
            raise CasperInputError(f"training section {s.name} has no expression; give spots x genes counts")
        if not s.expression.var_names.is_unique:
            raise CasperInputError(
                f"section {s.name} has duplicated gene names; call adata.var_names_make_unique() first"
            )
    common = set(sections[0].expression.var_names)
    for s in sections[1:]:
        common &= set(s.expression.var_names)
    genes = [g for g in sections[0].expression.var_names if g in common]
    if len(genes) < 10:
        raise CasperInputError(
            f"the training sections share only {len(genes)} genes; use sections measured on the same "
            "gene panel (same gene naming)"
        )
    return genes


def _prepare(sections, config: HistologyConfig) -> _Prepared:
    from napari_casper.histology.features import handcrafted_features
    from napari_casper.histology.predict import section_standardize

    genes = _common_genes(sections)
    expression = [log_normalised(s.expression, genes) for s in sections]
    if config.predict_genes:
        missing = [g for g in config.predict_genes if g not in set(genes)]
        if missing:
            raise CasperInputError(
                f"predict_genes not measured in every training section: {', '.join(missing[:10])}"
            )
        keep = [genes.index(g) for g in config.predict_genes]
    else:  # every gene that varies over the training spots
        keep = np.flatnonzero(np.concatenate(expression).std(axis=0) > 0).tolist()
    genes = [genes[i] for i in keep]
    expression = [e[:, keep] for e in expression]
    cache = config.cache_dir
    raw = [s.patches(config.scales, config.patch_size, cache) for s in sections]
    features = [section_standardize(handcrafted_features(r)) for r in raw]
    return _Prepared(genes, expression, raw, features)


def choose_model_genes(expression: np.ndarray, genes: Sequence[str], config: HistologyConfig) -> list[int]:
    """Indices of the expression-encoder genes: ``config.model_genes`` or the most variable ones."""
    if config.model_genes:
        index = {g: i for i, g in enumerate(genes)}
        missing = [g for g in config.model_genes if g not in index]
        if missing:
            raise CasperInputError(
                f"model_genes not among the usable training genes: {', '.join(missing[:10])}"
            )
        return [index[g] for g in config.model_genes]
    variance = expression.var(axis=0)
    n = min(config.n_model_genes, int((variance > 0).sum()))
    return np.argsort(-variance, kind="stable")[:n].tolist()


@dataclass
class _Fitted:
    model: HistologyExpressionModel
    history: TrainingHistory
    model_genes: list[int]
    mean: np.ndarray
    std: np.ndarray


def _fit_on(data: _Prepared, members: Sequence[int], config: HistologyConfig, stage: str, progress, cancel) -> _Fitted:
    from napari_casper.histology.patches import normalize_stain

    expression = np.concatenate([data.expression[i] for i in members])
    columns = choose_model_genes(expression, data.genes, config)
    z, mean, std = standardize(expression[:, columns])
    patches = np.concatenate([normalize_stain(data.raw_patches[i]) for i in members])
    model, history = fit_encoder(patches, z, config, stage=stage, progress=progress, cancel=cancel)
    return _Fitted(model, history, columns, mean, std)


def _heads_for(data: _Prepared, members, fitted: _Fitted, config: HistologyConfig, cancel):
    from napari_casper.histology.predict import PredictionHeads, SpotDescriptors, describe_section

    bank = SpotDescriptors.concat(
        [describe_section(fitted.model, data.raw_patches[i], config, features_z=data.features_z[i], cancel=cancel) for i in members]
    )
    expression = np.concatenate([data.expression[i] for i in members])
    z, _, _ = standardize(expression[:, fitted.model_genes], fitted.mean, fitted.std)
    groups = np.concatenate([np.full(len(data.expression[i]), i) for i in members])
    return PredictionHeads.fit(
        bank, embed_expression(fitted.model, z), expression, data.genes, groups,
        top_k=config.top_k, temperature=config.retrieval_temperature,
    )


def validation_score(truth: np.ndarray, prediction: np.ndarray, n_top: int = 50) -> float:
    """Head-selection score on one validation section: mean of HEG-50 and HVG-50 mean PCC."""
    from napari_casper.evaluate.metrics import pearson

    r = pearson(truth, prediction)
    heg = np.argsort(-truth.mean(axis=0), kind="stable")[:n_top]
    hvg = np.argsort(-truth.var(axis=0), kind="stable")[:n_top]
    return float((r[heg].mean() + r[hvg].mean()) / 2)


def select_head(data: _Prepared, names: Sequence[str], config: HistologyConfig, progress=None, cancel=None) -> dict:
    """Leave-one-section-out choice of the prediction head, on training sections only.

    For every section ``v``: train on the others (``config.inner_epochs`` epochs), predict ``v``
    with every head, score with :func:`validation_score`. Returns ``{head: mean score}``.
    """
    from napari_casper.histology.predict import HEADS, describe_section

    inner = dataclasses.replace(config, epochs=config.inner_epochs or config.epochs)
    scores: dict[str, list[float]] = {h: [] for h in HEADS}
    n = len(data.expression)
    for v in range(n):
        members = [i for i in range(n) if i != v]
        stage = f"inner {v + 1}/{n} (without {names[v]})"
        fitted = _fit_on(data, members, inner, stage, progress, cancel)
        heads = _heads_for(data, members, fitted, inner, cancel)
        query = describe_section(fitted.model, data.raw_patches[v], inner, features_z=data.features_z[v], cancel=cancel)
        for h in HEADS:
            pred, _ = heads.predict(h, query)
            scores[h].append(validation_score(data.expression[v], pred))
    return {h: float(np.mean(v)) for h, v in scores.items()}


def train_histology(
    sections,
    config: HistologyConfig | None = None,
    *,
    progress: Callable[[EpochLog], None] | None = None,
    cancel: CancelFlag | None = None,
):
    """Train a histology-to-expression predictor on sections with H&E and measured expression.

    Parameters
    ----------
    sections
        :class:`~napari_casper.histology.sections.HistologySection` objects, each with
        ``expression`` (spots x genes raw counts, rows in ``coords`` order). Two or more
        sections let the prediction head be chosen by leave-one-section-out validation.
    config
        :class:`HistologyConfig` (defaults: 32 px patches at 1x/2x/4x spot diameter, epochs
        from the number of training spots, see :func:`auto_epochs`).
        ``config.predictor="auto"`` picks the head by inner validation (one extra model per
        section); a head name (``"ridge"``, ``"retrieval"``, ``"ensemble"``, ``"crossmodal"``)
        skips it. With a single section ``"auto"`` means ``"ensemble"``.
    progress
        Called with an :class:`EpochLog` after every epoch of every model trained.
    cancel
        ``threading.Event`` (or callable) checked before every batch; raises
        :class:`~napari_casper.errors.TrainingCancelled`.

    Returns
    -------
    :class:`~napari_casper.histology.predict.HistologyPredictor`
    """
    from napari_casper.histology.predict import HEADS, HistologyPredictor

    config = config or HistologyConfig()
    sections = list(sections)
    if not sections:
        raise CasperInputError("no training sections given")
    if config.predictor not in ("auto", *HEADS):
        raise CasperInputError(f"unknown predictor {config.predictor!r}; choose auto or one of {HEADS}")
    with limited_threads(config):
        data = _prepare(sections, config)
        names = [s.name for s in sections]
        selection: dict = {}
        head = config.predictor
        if head == "auto":
            if len(sections) >= 2:
                selection = select_head(data, names, config, progress, cancel)
                head = max(selection, key=selection.get)
            else:
                head = "ensemble"
        members = list(range(len(sections)))
        fitted = _fit_on(data, members, config, "final", progress, cancel)
        heads = _heads_for(data, members, fitted, config, cancel)
    return HistologyPredictor(
        model=fitted.model,
        config=config,
        model_genes=[data.genes[i] for i in fitted.model_genes],
        expression_mean=fitted.mean,
        expression_std=fitted.std,
        heads=heads,
        head=head,
        selection=selection,
        history=fitted.history.to_dict(),
    )
