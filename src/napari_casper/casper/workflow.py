"""The CASPER workflow on one SpatialData spot element: the state the napari widget drives.

Qt-free: the widget, the CLI's ``run-sample`` and scripts all go through
:class:`CasperWorkflow`. It holds the measured table of a spot element (rows in the
element's order), the scRNA reference, the trained model and the predictions made so far.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from napari_casper.errors import CasperInputError
from napari_casper.runtime.control import is_cancelled


@dataclass
class CasperWorkflow:
    """Train CASPER on one spot element and impute genes for its spots.

    Parameters
    ----------
    st
        Spots x panel genes, rows in the spot element's order (as the layer draws them).
    reference
        scRNA-seq reference, cells x genes.
    spots_element
        Name of the SpatialData element the spots belong to.
    instance_ids
        ``(n_spots,)`` instance ids of the spots (written into the results table).
    label_key
        Reference obs column for cell-type centroids.
    leiden_resolution
        Resolution for Leiden clusters.
    centroid_method
        ``"label"``, ``"leiden"``, ``"cells"`` (every reference cell is a centroid) or
        ``"auto"`` (the label column if named, else cells for small references, else Leiden).
    """

    st: ad.AnnData
    reference: ad.AnnData
    spots_element: str = "spots"
    instance_ids: np.ndarray | None = None
    label_key: str | None = None
    leiden_resolution: float = 1.0
    centroid_method: str = "auto"
    imputer: object | None = None
    checkpoint_path: str | None = None
    history: list[dict] = field(default_factory=list)
    cancelled: bool = False
    _groups: tuple | None = field(default=None, repr=False)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    trusts: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if self.st.n_obs == 0:
            raise CasperInputError("the spot element has 0 spots: choose an element with spots to train on.")
        if self.reference is None:
            raise CasperInputError("no scRNA-seq reference chosen: pick a reference table or open an .h5ad file.")
        if self.label_key is not None and self.label_key not in self.reference.obs:
            raise CasperInputError(
                f"the reference has no column {self.label_key!r} (it has {list(self.reference.obs.columns)}): "
                "choose another column or 'Leiden clusters'."
            )
        if self.instance_ids is None:
            self.instance_ids = np.arange(self.st.n_obs)

    @classmethod
    def from_layer_metadata(cls, meta: dict, reference: ad.AnnData | None, **kwargs) -> CasperWorkflow:
        """Build from a spots layer's ``metadata["napari_casper"]`` (sdata, element, table, ids)."""
        sdata, element, table_name = meta.get("sdata"), meta.get("element"), meta.get("table")
        if sdata is None or table_name is None:
            raise CasperInputError("this spots layer has no table of measured genes: open a SpatialData object with a table.")
        from napari_casper.io.elements import spot_positions, spot_rows

        table = sdata.tables[table_name]
        ids = meta.get("instance_ids")
        ids = np.asarray(spot_positions(sdata, element)[2] if ids is None else ids)
        join = spot_rows(table, element, ids, missing="error", table_name=table_name)
        st = ad.AnnData(table.X[join.rows], var=table.var[[]].copy())
        st.obs_names = [str(i) for i in ids]
        return cls(st=st, reference=reference, spots_element=element, instance_ids=ids, **kwargs)

    # -- genes ---------------------------------------------------------------------------
    @property
    def reference_genes(self) -> list[str]:
        """Every gene CASPER can predict (all reference genes)."""
        return [str(g) for g in self.reference.var_names]

    @property
    def panel_genes(self) -> list[str]:
        return [str(g) for g in self.st.var_names]

    def measured(self, gene: str) -> np.ndarray | None:
        """Measured values of ``gene`` per spot, or None when the panel lacks it."""
        if gene not in self.st.var_names:
            return None
        column = self.st[:, gene].X
        return np.asarray(column.toarray() if hasattr(column, "toarray") else column, dtype=float).ravel()

    # -- training ------------------------------------------------------------------------
    def train(
        self,
        *,
        progress: Callable[[dict], None] | None = None,
        cancel=None,
        status: Callable[[str], None] | None = None,
        **config,
    ):
        """Fit CASPER; keyword ``config`` are :class:`~napari_casper.casper.training.CasperConfig` fields
        (or ``epochs``: ``max_steps`` = epochs x ``steps_per_epoch``).

        ``progress`` receives a dict per epoch (epoch, step, train_loss, val_loss, val_score);
        ``status`` the name of each phase ("preparing genes and centroids", "refit on all genes
        and spots: step s of S", "clustering the reference", "encoding the spots"). When
        ``cancel`` is set, the running phase stops within a second and the best model so far is
        kept (``self.cancelled`` is then True; with no model yet, :class:`TrainingCancelled`
        is raised). When every reference cell is a centroid, the cells' Leiden clusters (used
        to show attention) are computed in a child process while the model trains.
        """
        from napari_casper.casper.training import CasperConfig, train_casper
        from napari_casper.errors import TrainingCancelled

        say = status or (lambda text: None)
        epochs = config.pop("epochs", None)
        if epochs is not None:
            config["max_steps"] = int(epochs) * int(config.get("steps_per_epoch", CasperConfig.steps_per_epoch))
        self.history = []
        self.cancelled = False

        def record(epoch_record) -> None:
            event = asdict(epoch_record)
            self.history.append(event)
            if progress is not None:
                progress(event)

        job = self._start_clustering()
        try:
            try:
                model = train_casper(
                    self.st,
                    self.reference,
                    label_key=self.label_key,
                    leiden_resolution=self.leiden_resolution,
                    centroid_method=self.centroid_method,
                    progress=record,
                    cancel=cancel,
                    status=say,
                    **config,
                )
            except TrainingCancelled as stop:
                if getattr(stop, "model", None) is None:
                    raise
                model = stop.model
                self.cancelled = True
            if not self.cancelled:
                try:
                    model.centroid_groups = self._centroid_groups(model, job, cancel, say)
                except TrainingCancelled:  # the model is complete: keep it, cluster later if asked
                    self.cancelled = True
            elif job is not None and job.done:  # cancelled, but the clusters are ready anyway
                model.centroid_groups = self._centroid_groups(model, job, None, say)
        finally:
            if job is not None:
                job.stop()
        self._install(model, device=config.get("device", "auto"), status=say)
        self.checkpoint_path = None
        return self.imputer

    def _needs_clusters(self, method: str | None = None) -> bool:
        """True when the centroids are reference cells with no label column: they are shown per Leiden cluster."""
        from napari_casper.casper.centroids import MAX_CELL_CENTROIDS

        if self.label_key is not None:
            return False
        method = method or self.centroid_method
        if method.startswith("cells"):
            return True
        return method == "auto" and self.reference.n_obs <= MAX_CELL_CENTROIDS

    def _start_clustering(self, method: str | None = None):
        from napari_casper.casper.reference_groups import ClusterJob

        if not self._needs_clusters(method):
            return None
        return ClusterJob(self.reference.X, resolution=self.leiden_resolution)

    def _centroid_groups(self, model, job, cancel, say) -> list[str] | None:
        """The display group of each centroid (cells only): its label, or its Leiden cluster."""
        if not model.centroids.method.startswith("cells"):
            return None
        position = pd.Index(self.reference.obs_names.astype(str)).get_indexer(model.centroids.labels)
        if (position < 0).any():
            raise CasperInputError("the model's centroid cells are not the cells of this reference: choose the reference it was trained with.")
        if self.label_key is not None:
            return [str(g) for g in self.reference.obs[self.label_key].astype(str).to_numpy()[position]]
        if job is None:
            job = self._start_clustering("cells")
        if not job.done:
            say("clustering the reference")
        clusters = job.result(cancel)
        return [f"leiden_{c}" for c in np.asarray(clusters)[position]]

    def _install(self, model, *, device: str = "auto", status=None) -> None:
        from napari_casper.casper.imputation import CasperImputer

        if status is not None:
            status("encoding the spots")
        self.imputer = CasperImputer(model, self.st, device=device)
        self.predictions.clear()
        self.trusts.clear()
        self._groups = None

    def _require_model(self):
        if self.imputer is None:
            raise CasperInputError("no trained model yet: train CASPER or load a checkpoint first.")
        return self.imputer

    def save_checkpoint(self, path: str | Path) -> Path:
        from napari_casper.casper.checkpoint import save_checkpoint

        path = save_checkpoint(self._require_model().model, path)
        self.checkpoint_path = str(path)
        return Path(path)

    def load_checkpoint(self, path: str | Path, *, cancel=None, status: Callable[[str], None] | None = None):
        """Load a model saved by :meth:`save_checkpoint` for these spots.

        ``status`` names the phases ("loading checkpoint", "clustering the reference" for an
        older file that lacks its centroids' groups, "encoding the spots"); a ``cancel``
        raises :class:`TrainingCancelled` and leaves this workflow as it was.
        """
        from napari_casper.casper.checkpoint import load_checkpoint
        from napari_casper.errors import TrainingCancelled

        say = status or (lambda text: None)
        say("loading checkpoint")
        model = load_checkpoint(path, panel_genes=self.st.var_names)
        if is_cancelled(cancel):
            raise TrainingCancelled("loading the checkpoint was cancelled")
        if model.centroid_groups is None and model.centroids.method.startswith("cells"):
            model.centroid_groups = self._centroid_groups(model, None, cancel, say)  # an older checkpoint
        if is_cancelled(cancel):
            raise TrainingCancelled("loading the checkpoint was cancelled")
        self._install(model, status=say)
        self.checkpoint_path = str(path)
        self.history = [asdict(r) for r in model.history.records]
        self.cancelled = False
        return self.imputer

    # -- imputation ----------------------------------------------------------------------
    def predict(self, genes: Sequence[str]) -> pd.DataFrame:
        """``(n_spots, len(genes))`` predictions (cached per gene)."""
        genes = [str(g) for g in genes]
        if not genes:
            raise CasperInputError("no gene chosen: type a gene name from the reference.")
        unknown = [g for g in genes if g not in set(self.reference_genes)]
        if unknown:
            raise CasperInputError(f"genes not in the reference: {unknown[:5]}; only reference genes can be imputed.")
        todo = [g for g in genes if g not in self.predictions]
        if todo:
            values = np.asarray(self._require_model().predict(todo))
            for j, gene in enumerate(todo):
                self.predictions[gene] = values[:, j]
        return pd.DataFrame({g: self.predictions[g] for g in genes}, index=self.st.obs_names)

    def trust(self, genes: Sequence[str]) -> pd.Series:
        """Expected Pearson r of each gene's prediction (NaN for a model without calibration), cached."""
        imputer = self._require_model()
        todo = [str(g) for g in genes if str(g) not in self.trusts]
        if todo and imputer.calibrated:
            self.trusts.update(zip(todo, imputer.trust(todo)))
        return pd.Series([self.trusts.get(str(g), np.nan) for g in genes], index=list(map(str, genes)), dtype=float)

    def interval_widths(self, genes: Sequence[str]) -> pd.DataFrame | None:
        """Per-spot widths of each gene's 90 % interval (None for a model without calibration)."""
        trust = self.trust(genes)
        if trust.isna().any():
            return None
        return pd.DataFrame(self._require_model().interval_widths(trust.to_numpy()), columns=trust.index, index=self.st.obs_names)

    def attention(self, head: int | None = None) -> np.ndarray:
        """``(n_spots, n_centroids)`` attention weights (mean over heads, or one head)."""
        imputer = self._require_model()
        if head is None:
            return np.asarray(imputer.attention())
        if not 0 <= head < self.n_heads:
            raise CasperInputError(f"head {head} does not exist: the model has {self.n_heads} head(s).")
        return np.asarray(imputer.attention_per_head()[head])

    @property
    def n_heads(self) -> int:
        return int(self._require_model().model.config.get("heads", 1))

    @property
    def centroid_names(self) -> list[str]:
        return [str(c) for c in self._require_model().centroid_labels]

    def _attention_groups(self) -> tuple[list[str], np.ndarray | None]:
        """Group names and the ``(n_centroids, n_groups)`` 0/1 map used for display.

        When every reference cell is a centroid, attention to 1000s of cells is summed over
        the Leiden clusters of those cells (or their label column), which is what a user can
        read as a cell-type map; the groups come with the model (computed while training, or
        saved in the checkpoint). Otherwise the centroids are shown as they are.
        """
        if self._groups is not None:
            return self._groups
        model = self._require_model().model
        names = self.centroid_names
        if not model.centroids.method.startswith("cells"):
            self._groups = (names, None)
            return self._groups
        if model.centroid_groups is None:  # cancelled while clustering: cluster now (in the caller's worker)
            model.centroid_groups = self._centroid_groups(model, None, None, lambda text: None)
        cell_groups = list(model.centroid_groups)
        leiden = all(g.startswith("leiden_") and g[7:].isdigit() for g in cell_groups)
        group_names = sorted(set(cell_groups), key=(lambda g: int(g[7:])) if leiden else str)
        column = {g: j for j, g in enumerate(group_names)}
        onehot = np.zeros((len(names), len(group_names)), dtype=np.float32)
        onehot[np.arange(len(names)), [column[g] for g in cell_groups]] = 1.0
        self._groups = (group_names, onehot)
        return self._groups

    @property
    def groups_ready(self) -> bool:
        """True when :attr:`display_names` is cheap (no clustering left to do)."""
        if self.imputer is None:
            return False
        model = self.imputer.model
        return self._groups is not None or not model.centroids.method.startswith("cells") or model.centroid_groups is not None

    @property
    def display_names(self) -> list[str]:
        """Names of the attention targets shown to the user (centroids, or cell clusters)."""
        return self._attention_groups()[0]

    def display_attention(self, head: int | None = None) -> np.ndarray:
        """``(n_spots, len(display_names))`` attention, summed per cluster for cell centroids."""
        weights = self.attention(head)
        onehot = self._attention_groups()[1]
        return weights if onehot is None else weights @ onehot

    def predict_hidden(self, gene: str) -> np.ndarray:
        """Prediction of a measured panel ``gene`` with that gene masked out of the input.

        The model sees every other panel gene, as in masked-reconstruction training, so the
        prediction cannot copy the measurement: its correlation with the measured values is
        an honest held-out score.
        """
        from napari_casper.casper.imputation import CasperImputer

        imputer = self._require_model()
        if gene not in imputer.model.panel_genes:
            raise CasperInputError(f"{gene!r} is not a panel gene of the model: only measured genes can be compared.")
        masked = CasperImputer(imputer.model, self.st, device=str(imputer.device), hide_genes=[gene])
        return masked.predict([gene])[:, 0]

    def correlation(self, gene: str) -> float | None:
        """PCC over spots of the measured ``gene`` and its prediction with the gene hidden.

        None when the panel did not measure ``gene``.
        """
        measured = self.measured(gene)
        if measured is None or gene not in self._require_model().model.panel_genes:
            return None
        predicted = self.predict_hidden(gene)
        if measured.std() == 0 or predicted.std() == 0:
            return 0.0
        return float(np.corrcoef(measured, predicted)[0, 1])

    # -- results -------------------------------------------------------------------------
    def results_table(self, genes: Sequence[str] | None = None) -> ad.AnnData:
        """Results table for the spot element: predicted genes, attention, centroid names."""
        from napari_casper.casper.results import predictions_table
        from napari_casper.display.legend import hex_colours
        from napari_casper.display.value_layers import category_colours

        genes = list(genes) if genes is not None else list(self.predictions)
        return predictions_table(
            self.spots_element,
            self.instance_ids,
            self.predict(genes).reset_index(drop=True),
            attention=self.display_attention(),
            centroid_names=self.display_names,
            checkpoint=self.checkpoint_path,
            centroid_colours=hex_colours(category_colours(self.display_names)),
        )

    def save_results(self, store: str | Path, genes: Sequence[str] | None = None) -> str:
        """Write the results table as a new element of ``store``; returns its name."""
        from napari_casper.casper.results import save_predictions

        return save_predictions(store, self.results_table(genes))
