"""Prediction heads on the learned embedding, and the trained predictor used on new H&E slides.

Every spot is described by its image embedding (from the trained encoder) and its handcrafted
features (:mod:`.features`), each **standardised within its own section** (so staining and
scanning differences between slides cancel out; the statistics come from the slide's own
spots, never from expression). Heads:

- ``"ridge"``: ridge regression from ``[embedding, features]`` to log expression (alpha by
  leave-one-section-out CV on the training sections);
- ``"retrieval"``: mean expression, weighted by a softmax of the similarity, of the ``top_k`` training spots most
  cosine-similar on ``[embedding, features]`` (each block scaled to equal weight);
- ``"ensemble"``: the mean of the two;
- ``"crossmodal"``: CMRCNet/BLEEP inference, the mean expression of the ``top_k`` training
  spots whose *expression* embedding is most similar to the query's image embedding.

Which head is used is chosen by leave-one-section-out validation on the training sections
(:func:`~napari_casper.histology.train.train_histology`). The uncertainty of every prediction
is its expected absolute error per spot and gene, from the spread of the ``top_k`` retrieved
neighbours' expression, the spot's spread and level over the anchor genes (each also averaged over the
spots around it on the slide), and the gene's spread, combined as learned on the leave-one-section-out predictions of training
(:mod:`~napari_casper.histology.uncertainty`); a model trained on one section (no held-out errors to
learn from) reports the neighbours' spread itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from anndata import AnnData

from napari_casper.casper.preprocess import standardize
from napari_casper.errors import CasperInputError, CheckpointMismatchError
from napari_casper.histology.features import handcrafted_features
from napari_casper.histology.head_names import HEADS
from napari_casper.histology.patches import check_coords, normalize_stain
from napari_casper.histology.regressors import RidgeRegressor, fit_ridge, retrieve

#: fewest spots of one slide for its own standardisation statistics
MIN_SECTION_SPOTS = 20
#: spots embedded per batch: ``cancel`` is checked between batches (256 took ~1 s on 2 loaded cores)
EMBED_BATCH = 64


def section_standardize(values: np.ndarray) -> np.ndarray:
    """Z-score the columns of one section's ``(n_spots, d)`` values with that section's statistics."""
    return standardize(values)[0]


@dataclass
class SpotDescriptors:
    """What the heads see of a section's spots.

    Attributes
    ----------
    embedding
        ``(n, proj_dim)`` L2-normalised image embedding (for cross-modal retrieval).
    embedding_z, features_z
        Section-standardised embedding and handcrafted features.
    """

    embedding: np.ndarray
    embedding_z: np.ndarray
    features_z: np.ndarray

    @property
    def joint(self) -> np.ndarray:
        """``[embedding_z, features_z]`` for ridge."""
        return np.concatenate([self.embedding_z, self.features_z], axis=1)

    @property
    def balanced(self) -> np.ndarray:
        """``joint`` with each block divided by sqrt(its width), so both weigh equally in a cosine."""
        e, f = self.embedding_z, self.features_z
        return np.concatenate([e / np.sqrt(e.shape[1]), f / np.sqrt(f.shape[1])], axis=1)

    @classmethod
    def concat(cls, parts: list[SpotDescriptors]) -> SpotDescriptors:
        return cls(*(np.concatenate([getattr(p, a) for p in parts]) for a in ("embedding", "embedding_z", "features_z")))


def network_ready(inputs: np.ndarray, *, cancel=None) -> np.ndarray:
    """What the network takes: ``(n, S, P, P, 3)`` uint8 patches stain-normalised (:func:`normalize_stain`, per
    section); ``(n, S, F)`` pretrained embeddings as they are."""
    return inputs if inputs.ndim == 3 else normalize_stain(inputs, cancel=cancel)


def describe_section(model, raw_patches: np.ndarray, config, *, features_z=None, cancel=None) -> SpotDescriptors:
    """Stain-normalise, embed and featurise one section's ``(n, S, P, P, 3)`` uint8 patches (or embed
    its ``(n, S, F)`` pretrained embeddings; ``features_z`` must then be given).

    ``features_z`` (section-standardised handcrafted features) may be passed when already computed.
    """
    from napari_casper.histology.fit import cpu_threads, embed_patches

    if len(raw_patches) < MIN_SECTION_SPOTS:
        raise CasperInputError(
            f"only {len(raw_patches)} spots: histology prediction standardises each slide with its own "
            f"statistics and needs at least {MIN_SECTION_SPOTS} spots; predict on all spots of the "
            "slide (e.g. virtual spots over the detected tissue) and subset afterwards"
        )
    if raw_patches.ndim == 3 and features_z is None:
        raise CasperInputError("describe_section: pass features_z with pretrained embeddings (they hold no pixels)")
    inputs = network_ready(raw_patches, cancel=cancel)
    embedding = embed_patches(
        model, inputs, batch_size=EMBED_BATCH, device=config.device, threads=cpu_threads(config),
        tta=config.test_time_augmentation, cancel=cancel,
    )
    if features_z is None:
        features_z = section_standardize(handcrafted_features(raw_patches, cancel=cancel))
    return SpotDescriptors(embedding, section_standardize(embedding), features_z)


@dataclass
class PredictionHeads:
    """The training spots ("bank") and the fitted ridge, for every head.

    Attributes
    ----------
    genes
        Output genes, the columns of ``bank_expression``.
    bank
        Descriptors of the training spots.
    bank_expression
        ``(n_bank, n_genes)`` log-normalised expression of the training spots.
    bank_expression_embedding
        ``(n_bank, proj_dim)`` expression embeddings of the training spots.
    ridge
        Ridge from ``bank.joint`` to ``bank_expression``.
    top_k
        Neighbours used by retrieval and for the uncertainty.
    temperature
        Softmax temperature of the retrieval weights (cosine units); ``None``: equal weights.
    """

    genes: list[str]
    bank: SpotDescriptors
    bank_expression: np.ndarray
    bank_expression_embedding: np.ndarray
    ridge: RidgeRegressor
    top_k: int = 50
    temperature: float | None = 0.1

    @classmethod
    def fit(
        cls, bank: SpotDescriptors, expression_embedding, expression, genes, groups, top_k: int = 50,
        temperature: float | None = 0.1,
    ) -> PredictionHeads:
        ridge = fit_ridge(bank.joint, expression, groups=groups)
        return cls(
            list(genes), bank, np.asarray(expression, np.float32), np.asarray(expression_embedding, np.float32),
            ridge, top_k, temperature,
        )

    def predict(self, head: str, query: SpotDescriptors, columns: np.ndarray | None = None):
        """``(prediction, uncertainty)``, both ``(n_query, n_genes)``, with head ``head``.

        ``columns`` restricts the output to those gene indices.
        """
        if head not in HEADS:
            raise CasperInputError(f"unknown prediction head {head!r}; choose one of {HEADS}")
        cols = slice(None) if columns is None else columns
        bank_y = self.bank_expression[:, cols]
        retrieved, spread = retrieve(
            query.balanced, self.bank.balanced, bank_y, k=self.top_k, temperature=self.temperature
        )
        if head == "retrieval":
            return retrieved, spread
        if head == "crossmodal":
            pred, _ = retrieve(query.embedding, self.bank_expression_embedding, bank_y, k=self.top_k)
            return pred, spread
        ridge = self.ridge_predict(query.joint, columns)
        if head == "ridge":
            return ridge, spread
        return (ridge + retrieved) / 2, spread

    def ridge_predict(self, X: np.ndarray, columns=None) -> np.ndarray:
        return self.ridge.predict(X, columns)


@dataclass
class HistologyPrediction:
    """Predicted expression of a slide's spots.

    Attributes
    ----------
    expression
        ``(n_spots, n_genes)`` float32 predicted log-normalised expression (``log1p`` of counts
        per 10,000).
    uncertainty
        ``(n_spots, n_genes)`` float32 expected absolute error of ``expression`` (same units), learned
        from held-out training sections (:mod:`~napari_casper.histology.uncertainty`); for a model
        trained on one section, the weighted std of the ``top_k`` most similar training spots'
        expression (high where similar-looking training spots disagree).
    genes
        Column names.
    coords
        ``(n_spots, 2)`` ``(x, y)`` image pixels.
    embedding
        ``(n_spots, proj_dim)`` image embedding (L2-normalised).
    head
        The prediction head used.
    reach
        How far the slide lies from the training sections
        (:class:`~napari_casper.histology.reach.SlideReach`; None for models saved before it existed).
    """

    expression: np.ndarray
    uncertainty: np.ndarray
    genes: list[str]
    coords: np.ndarray
    embedding: np.ndarray
    head: str
    reach: object = None

    def to_anndata(self, obs_names=None) -> AnnData:
        """Spots x genes AnnData: ``X`` prediction, ``layers["uncertainty"]``, ``obsm["spatial"]`` and
        ``obsm["histology_embedding"]``."""
        import pandas as pd

        names = [f"spot{i}" for i in range(len(self.coords))] if obs_names is None else list(map(str, obs_names))
        adata = AnnData(
            X=self.expression,
            obs=pd.DataFrame(index=pd.Index(names, dtype=str)),
            var=pd.DataFrame(index=pd.Index(self.genes, dtype=str)),
        )
        adata.layers["uncertainty"] = self.uncertainty
        adata.obsm["spatial"] = np.asarray(self.coords, dtype=np.float64)
        adata.obsm["histology_embedding"] = self.embedding
        adata.uns["histology_prediction"] = {"head": self.head, "values": "log1p(counts per 1e4)"}
        if self.reach is not None:
            adata.uns["histology_prediction"]["out_of_distribution"] = self.reach.to_dict()
        return adata


@dataclass
class HistologyPredictor:
    """A trained histology-to-expression model, ready to predict on H&E-only slides.

    Built by :func:`~napari_casper.histology.train.train_histology`; saved and loaded with
    :meth:`save` / :meth:`load`.

    Attributes
    ----------
    model
        The image-expression network (CPU, eval mode).
    config
        :class:`~napari_casper.histology.train.HistologyConfig` used for training.
    model_genes
        Genes of the expression encoder; ``expression_mean`` / ``expression_std`` z-score them.
    heads
        Training bank and ridge (:class:`PredictionHeads`); ``heads.genes`` are the output genes.
    head
        The head used by :meth:`predict` (chosen by inner validation, see ``selection``).
    selection
        ``{head: mean validation score}`` of the leave-one-section-out choice (empty when not run).
    history
        Training history of the final model (dict).
    reach
        What the training sections look like (:class:`~napari_casper.histology.reach.TrainingReach`), to tell
        how far a new slide lies from them; None for models saved before it existed.
    encoder
        The pretrained patch encoder (:class:`~napari_casper.histology.pretrained.PatchEncoder`) whose
        embeddings the network takes; None for the network's own CNN.
    error_model
        :class:`~napari_casper.histology.uncertainty.ErrorModel` turning the neighbours' spread into an
        expected absolute error; None (the spread itself) for one training section or older files.
    """

    model: object
    config: object
    model_genes: list[str]
    expression_mean: np.ndarray
    expression_std: np.ndarray
    heads: PredictionHeads
    head: str
    selection: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)
    reach: object = None
    encoder: object = None
    error_model: object = None

    @property
    def genes(self) -> list[str]:
        """Genes this predictor outputs."""
        return self.heads.genes

    def gene_columns(self, genes) -> np.ndarray | None:
        """Indices of ``genes`` among the output genes; :class:`CheckpointMismatchError` if any is missing."""
        if genes is None:
            return None
        index = {g: i for i, g in enumerate(self.genes)}
        missing = [g for g in genes if g not in index]
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise CheckpointMismatchError(
                f"{len(missing)} requested gene(s) were not trained by this histology model: {shown}. "
                f"It predicts {len(self.genes)} genes (see .genes); retrain with these genes in the "
                "training sections or request only trained genes"
            )
        return np.array([index[g] for g in genes], dtype=int)

    def predict(
        self,
        image,
        coords,
        spot_diameter_px: float,
        *,
        genes=None,
        head: str | None = None,
        cancel=None,
        phase=None,
        cache_key: str | None = None,
    ) -> HistologyPrediction:
        """Predict expression at spots of an H&E image.

        Parameters
        ----------
        image
            ``(H, W, 3)`` uint8 array-like (numpy, dask, xarray; read window by window).
        coords
            ``(n_spots, 2)`` spot centres, ``(x, y)`` pixels of ``image``; use every spot of the
            slide (at least 20): each slide is standardised with its own spots' statistics.
        spot_diameter_px
            Spot diameter in pixels of ``image`` (the physical spot size the model was trained
            with, e.g. 100 um for legacy ST, expressed in this image's pixels).
        genes
            Subset of :attr:`genes` to return (default all).
        head
            Override the chosen head (one of :data:`HEADS`).
        cancel
            ``threading.Event`` or callable; checked every few spots while patches are read, between
            feature chunks and embedding batches; raises :class:`~napari_casper.errors.TrainingCancelled`.
        phase
            Called with a :class:`~napari_casper.histology.fit.Phase` ("reading patches: spot 200 of
            517", "features and embedding", "predicting"), one overall progress over the three.
        cache_key
            Identifies the image (e.g. its path, size and modification time): with a pretrained encoder,
            the slide's embeddings are cached under ``config.cache_dir`` by this key and read back next time.
        """
        from napari_casper.histology.fit import Phase
        from napari_casper.histology.patches import extract_patches

        xy = check_coords(coords)
        self.gene_columns(genes)  # unknown genes fail before the patches are read
        n = len(xy)
        units = (3 + (self.encoder is not None)) * max(1, n)  # reading, (embedding,) features, predicting
        report = None if phase is None else (lambda k, total: phase(Phase(f"reading patches: spot {k} of {total}", k, units)))
        raw = extract_patches(
            image, xy, spot_diameter_px, scales=self.config.scales, patch_size=self.config.patch_size, cancel=cancel, progress=report
        )
        encoded = None
        if self.encoder is not None:
            from napari_casper.histology.pretrained import slide_embeddings

            text = f"embedding with the {self.encoder.spec.describe()}"
            report = None if phase is None else (lambda k, total: phase(Phase(f"{text}: spot {k} of {total}", n + k, units)))
            encoded = slide_embeddings(
                self.encoder, image, xy, spot_diameter_px, self.config.input_scales(), cache_dir=self.config.cache_dir,
                cache_key=cache_key, cancel=cancel, progress=report,
            )  # fmt: skip
        return self.predict_patches(raw, xy, genes=genes, head=head, cancel=cancel, phase=phase, encoded=encoded,
                                    _done=n * (1 + (encoded is not None)))  # fmt: skip

    def predict_patches(self, raw_patches, coords, *, genes=None, head=None, cancel=None, phase=None, encoded=None,
                        _done: int = 0) -> HistologyPrediction:  # fmt: skip
        """As :meth:`predict`, from already extracted ``(n, S, P, P, 3)`` uint8 patches (and, for a model with a
        pretrained encoder, the slide's ``(n, S', F)`` embeddings ``encoded``)."""
        from napari_casper.histology.fit import Phase, limited_threads, run_cancellable

        columns = self.gene_columns(genes)
        use = head or self.head
        n = max(1, len(raw_patches))
        total = _done + 2 * n
        with limited_threads(self.config):
            if phase is not None:
                phase(Phase("features and embedding", _done, total))
            features = handcrafted_features(raw_patches, cancel=cancel)  # also the slide's appearance (reach)
            if (encoded is None) != (self.encoder is None):
                raise CasperInputError(
                    "this model takes a pretrained encoder's embeddings: pass encoded=" if encoded is None
                    else "this model has no pretrained encoder: do not pass encoded="
                )  # fmt: skip
            inputs = raw_patches if encoded is None else encoded
            query = describe_section(self.model, inputs, self.config, features_z=section_standardize(features), cancel=cancel)
            if phase is not None:
                phase(Phase(f"predicting ({use} head)", _done + n, total))
            pred, spread = run_cancellable(self.heads.predict, use, query, columns, cancel=cancel, what="histology prediction")
            if self.error_model is not None:
                spread = self._expected_error(use, query, pred, spread, coords, columns, cancel)
            if phase is not None:
                phase(Phase("predicted", total, total))
        names = self.genes if columns is None else [self.genes[i] for i in columns]
        reach = None
        if self.reach is not None:
            from napari_casper.histology.reach import stain_means

            appearance = encoded.mean(axis=1) if self.reach.appearance_of == "encoder" else features
            reach = self.reach.measure(appearance, stain_means(raw_patches))
        return HistologyPrediction(pred, spread, names, np.asarray(coords, float), query.embedding, use, reach)

    def _expected_error(self, head: str, query, pred: np.ndarray, spread: np.ndarray, coords, columns=None, cancel=None) -> np.ndarray:
        """The error model's expected absolute error from ``spread`` (written into it) at spots ``coords``; the
        spot terms come from the anchor genes: sliced from ``pred`` and ``spread`` when they hold every gene
        (``columns`` None), else predicted for the anchors alone."""
        from napari_casper.histology.fit import run_cancellable
        from napari_casper.histology.uncertainty import nearby_mean, spot_terms

        model = self.error_model
        if columns is None:
            anchor_pred, anchor_spread = pred[:, model.anchors], spread[:, model.anchors]  # copies, before the in-place write
        else:
            anchor_pred, anchor_spread = run_cancellable(
                self.heads.predict, head, query, model.anchors, cancel=cancel, what="histology uncertainty"
            )
        nearby = nearby_mean(coords) if model.needs_nearby else None
        return model.expected_error(spread, *spot_terms(anchor_pred, anchor_spread), nearby, inplace=True)
