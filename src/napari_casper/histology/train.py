"""Training a histology-to-expression predictor: :func:`train_histology` and its options.

:func:`train_histology` (the public entry point) prepares the sections, chooses the prediction
head by leave-one-section-out validation on the *training* sections (a model trained without
section ``v`` predicts ``v``), trains the final model on every section with
:func:`~napari_casper.histology.fit.fit_encoder` (the training loop, in :mod:`.fit`) and returns a
ready :class:`~napari_casper.histology.predict.HistologyPredictor`.

``progress`` gets an :class:`EpochLog` after every epoch of every model (the loss curve);
``phase`` gets a :class:`~napari_casper.histology.fit.Phase` at every step of the whole run, one
overall progress over every phase ("reading section 2 of 3", "features", "choosing the head:
model 2 of 3, epoch 1 of 8", "final model: epoch 3 of 12", "prediction heads"); ``cancel`` (a
``threading.Event`` or a callable) is checked every few spots while patches are read, before
every batch, and around every step that cannot be interrupted, and raises
:class:`~napari_casper.errors.TrainingCancelled` (within about a second in every phase).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from napari_casper.casper.preprocess import standardize
from napari_casper.errors import CasperInputError
from napari_casper.histology.config import HistologyConfig
from napari_casper.histology.fit import (
    EpochLog,
    FitHistory,
    Phase,
    embed_expression,
    fit_encoder,
    limited_threads,
    planned_epochs,
    run_cancellable,
)
from napari_casper.histology.genes import common_genes, log_normalised
from napari_casper.histology.model import HistologyExpressionModel
from napari_casper.runtime.control import CancelFlag


class Steps:
    """One overall progress over the phases of a run: every call says what runs and how far the whole run is."""

    def __init__(self, phase: Callable[[Phase], None] | None, total: int):
        self.phase, self.total, self.done = phase, max(1, int(total)), 0

    def say(self, text: str, advance: int = 0) -> None:
        """``advance`` units are finished; ``text`` runs now."""
        self.done = min(self.total, self.done + advance)
        if self.phase is not None:
            self.phase(Phase(text, self.done, self.total))


@dataclass
class _Prepared:
    """Targets of the training sections: common genes, log-normalised expression per section."""

    genes: list[str]  # output genes
    expression: list[np.ndarray]  # per section, (n_spots, n_genes) log-normalised
    raw_patches: list[np.ndarray]
    features_z: list[np.ndarray]
    features: list[np.ndarray]  # the handcrafted features before section standardisation (a slide's reach)
    encoded: list[np.ndarray] | None = None  # per section, (n_spots, n_scales, F) pretrained embeddings
    coords: list[np.ndarray] | None = None  # per section, (n_spots, 2) spot centres (pixels)

    def network_input(self, i: int) -> np.ndarray:
        """What the network sees of section ``i``: its pretrained embeddings, else its raw patches."""
        return self.raw_patches[i] if self.encoded is None else self.encoded[i]


def _prepare(sections, config: HistologyConfig, steps: Steps | None = None, cancel: CancelFlag | None = None, encoder=None) -> _Prepared:
    from napari_casper.histology.features import handcrafted_features
    from napari_casper.histology.predict import section_standardize

    steps = steps or Steps(None, 1)

    genes = common_genes(sections)
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
    raw = []
    for i, s in enumerate(sections):
        text = f"reading section {i + 1} of {len(sections)} ({s.name})"
        steps.say(text, advance=int(i > 0))
        report = None if steps.phase is None else (lambda k, n, text=text: steps.say(f"{text}: spot {k} of {n}"))
        raw.append(s.patches(config.scales, config.patch_size, cache, cancel=cancel, progress=report))
    encoded = None
    if encoder is not None:
        encoded = []
        for i, s in enumerate(sections):
            text = f"embedding section {i + 1} of {len(sections)} ({s.name}) with the {encoder.spec.describe()}"
            steps.say(text, advance=1)
            report = None if steps.phase is None else (lambda k, n, text=text: steps.say(f"{text}: spot {k} of {n}"))
            encoded.append(s.embeddings(encoder, config.input_scales(), config.cache_dir, cancel=cancel, progress=report))
    steps.say("features", advance=1)
    features = [handcrafted_features(r, cancel=cancel) for r in raw]
    steps.say("features", advance=1)
    coords = [np.asarray(s.coords, dtype=np.float64) for s in sections]
    return _Prepared(genes, expression, raw, [section_standardize(f) for f in features], features, encoded, coords)


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
    history: FitHistory
    model_genes: list[int]
    mean: np.ndarray
    std: np.ndarray


def _n_spots(data: _Prepared, members: Sequence[int]) -> int:
    return int(sum(len(data.expression[i]) for i in members))


def _fit_on(data: _Prepared, members: Sequence[int], config: HistologyConfig, stage: str, progress, cancel,
            steps: Steps | None = None, what: str = "final model") -> _Fitted:  # fmt: skip
    from napari_casper.histology.predict import network_ready

    steps = steps or Steps(None, 1)
    expression = np.concatenate([data.expression[i] for i in members])
    columns = choose_model_genes(expression, data.genes, config)
    z, mean, std = standardize(expression[:, columns])
    patches = np.concatenate([network_ready(data.network_input(i), cancel=cancel) for i in members])
    n_epochs = planned_epochs(len(patches), config)
    steps.say(f"{what}: epoch 1 of {n_epochs}")

    def on_epoch(record: EpochLog) -> None:
        if progress is not None:
            progress(record)
        if record.epoch < record.n_epochs:
            steps.say(f"{what}: epoch {record.epoch + 1} of {record.n_epochs}", advance=1)

    model, history = fit_encoder(patches, z, config, stage=stage, progress=on_epoch, cancel=cancel)
    steps.say(f"{what}: prediction heads", advance=1)
    return _Fitted(model, history, columns, mean, std)


def _heads_for(data: _Prepared, members, fitted: _Fitted, config: HistologyConfig, cancel):
    from napari_casper.histology.predict import PredictionHeads, SpotDescriptors, describe_section

    bank = SpotDescriptors.concat(
        [describe_section(fitted.model, data.network_input(i), config, features_z=data.features_z[i], cancel=cancel) for i in members]
    )
    expression = np.concatenate([data.expression[i] for i in members])
    z, _, _ = standardize(expression[:, fitted.model_genes], fitted.mean, fitted.std)
    groups = np.concatenate([np.full(len(data.expression[i]), i) for i in members])
    return run_cancellable(  # the ridge's cross-validation is one uninterruptible second or two
        PredictionHeads.fit, bank, embed_expression(fitted.model, z), expression, data.genes, groups,
        top_k=config.top_k, temperature=config.retrieval_temperature, cancel=cancel,
    )  # fmt: skip


def validation_score(truth: np.ndarray, prediction: np.ndarray, n_top: int = 50) -> float:
    """Head-selection score on one validation section: mean of HEG-50 and HVG-50 mean PCC."""
    from napari_casper.evaluate.metrics import pearson

    r = pearson(truth, prediction)
    heg = np.argsort(-truth.mean(axis=0), kind="stable")[:n_top]
    hvg = np.argsort(-truth.var(axis=0), kind="stable")[:n_top]
    return float((r[heg].mean() + r[hvg].mean()) / 2)


def select_head(data: _Prepared, names: Sequence[str], config: HistologyConfig, progress=None, cancel=None, steps=None,
                errors: dict | None = None, anchors: np.ndarray | None = None) -> dict:  # fmt: skip
    """Leave-one-section-out choice of the prediction head, on training sections only.

    For every section ``v``: train on the others (``config.inner_epochs`` epochs), predict ``v``
    with every head, score with :func:`validation_score`. Returns ``{head: mean score}``. With a
    dict ``errors``, each head's :func:`~napari_casper.histology.uncertainty.fold_record` of every
    held-out section (at the genes ``anchors``) is appended under the head's name.
    """
    from napari_casper.histology.predict import HEADS, describe_section
    from napari_casper.histology.uncertainty import fold_record

    inner = dataclasses.replace(config, epochs=config.inner_epochs or config.epochs)
    scores: dict[str, list[float]] = {h: [] for h in HEADS}
    n = len(data.expression)
    for v in range(n):
        members = [i for i in range(n) if i != v]
        stage = f"inner {v + 1}/{n} (without {names[v]})"
        what = f"choosing the head: model {v + 1} of {n} (without {names[v]})"
        fitted = _fit_on(data, members, inner, stage, progress, cancel, steps, what)
        heads = _heads_for(data, members, fitted, inner, cancel)
        query = describe_section(fitted.model, data.network_input(v), inner, features_z=data.features_z[v], cancel=cancel)
        for h in HEADS:
            pred, spread = heads.predict(h, query)
            scores[h].append(validation_score(data.expression[v], pred))
            if errors is not None:  # what the uncertainty is learned from: this head's honest errors on v
                errors.setdefault(h, []).append(fold_record(pred, spread, data.expression[v], anchors, data.coords[v]))
        if steps is not None:
            steps.say(f"{what}: scored", advance=1)
    return {h: float(np.mean(v)) for h, v in scores.items()}


def train_histology(
    sections,
    config: HistologyConfig | None = None,
    *,
    progress: Callable[[EpochLog], None] | None = None,
    cancel: CancelFlag | None = None,
    phase: Callable[[Phase], None] | None = None,
    encoder=None,
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
        ``threading.Event`` (or callable) checked while patches are read, before every batch and
        around every uninterruptible step; raises :class:`~napari_casper.errors.TrainingCancelled`.
    phase
        Called with a :class:`~napari_casper.histology.fit.Phase` (what runs now, overall units
        done of the whole run) at every step: one progress for every model trained.
    encoder
        A pretrained patch encoder (:func:`~napari_casper.histology.pretrained.load_encoder`): its
        frozen embeddings of every section, computed once (and cached on disk under
        ``config.cache_dir``, by default :func:`~napari_casper.histology.pretrained.default_cache_dir`),
        replace the CNN trained from scratch. The model records which encoder it needs.

    Returns
    -------
    :class:`~napari_casper.histology.predict.HistologyPredictor`
    """
    from napari_casper.histology.predict import HEADS, HistologyPredictor
    from napari_casper.histology.reach import TrainingReach, stain_means
    from napari_casper.histology.uncertainty import ErrorModel, anchor_genes

    config = config or HistologyConfig()
    if encoder is not None:
        from napari_casper.histology.pretrained import default_cache_dir

        config = dataclasses.replace(config, encoder=encoder.spec.to_dict(), cache_dir=config.cache_dir or str(default_cache_dir()))
    elif config.encoder is not None:
        raise CasperInputError("config.encoder names a pretrained encoder: pass the loaded encoder (encoder=load_encoder(...))")
    sections = list(sections)
    if not sections:
        raise CasperInputError("no training sections given")
    if config.predictor not in ("auto", *HEADS):
        raise CasperInputError(f"unknown predictor {config.predictor!r}; choose auto or one of {HEADS}")
    head = config.predictor
    if head == "auto" and len(sections) < 2:
        head = "ensemble"
    n, n_spots = len(sections), [s.n_spots for s in sections]
    inner = dataclasses.replace(config, epochs=config.inner_epochs or config.epochs)
    models = [planned_epochs(sum(n_spots) - k, inner) for k in n_spots] if head == "auto" else []
    models.append(planned_epochs(sum(n_spots), config))
    # sections (read, embedded), features, epochs + heads per model
    steps = Steps(phase, n * (1 + (encoder is not None)) + 1 + sum(e + 1 for e in models))
    with limited_threads(config):
        data = _prepare(sections, config, steps, cancel, encoder)
        names = [s.name for s in sections]
        selection: dict = {}
        error_model = None  # without held-out sections (one section, or a fixed head) the uncertainty is the spread
        if head == "auto":
            anchors = anchor_genes(np.concatenate(data.expression))
            errors: dict = {}
            selection = select_head(data, names, config, progress, cancel, steps, errors=errors, anchors=anchors)
            head = max(selection, key=selection.get)
            # the uncertainty learns from the chosen head's errors on sections it never saw
            error_model = ErrorModel.fit(anchors, errors[head])
        members = list(range(len(sections)))
        fitted = _fit_on(data, members, config, "final", progress, cancel, steps, "final model")
        heads = _heads_for(data, members, fitted, config, cancel)
        appearance = data.features if data.encoded is None else [e.mean(axis=1) for e in data.encoded]
        reach = TrainingReach.fit(
            np.concatenate([appearance[i] for i in members]),
            np.concatenate([np.full(len(data.expression[i]), i) for i in members]),
            [stain_means(data.raw_patches[i]) for i in members],
            appearance_of="handcrafted" if data.encoded is None else "encoder",
        )
        steps.say(f"trained: head {head}", advance=1)
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
        reach=reach,
        encoder=encoder,
        error_model=error_model,
    )
