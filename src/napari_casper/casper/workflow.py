"""The CASPER workflow on one SpatialData spot element: the state the napari widget drives.

Qt-free: the widget, the CLI's ``run-sample`` and scripts all go through
:class:`CasperWorkflow`. It holds the measured table of a spot element (rows in the
element's order), the scRNA reference, the trained model and the predictions made so far.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from napari_casper.errors import CasperInputError


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
        **config,
    ):
        """Fit CASPER; keyword ``config`` are :class:`~napari_casper.casper.training.CasperConfig` fields.

        ``progress`` receives a dict per epoch (epoch, step, train_loss, val_loss, val_score).
        When ``cancel`` is set, training stops within one batch and the best model so far is
        kept (``self.cancelled`` is then True).
        """
        from dataclasses import asdict

        from napari_casper.casper.imputation import CasperImputer
        from napari_casper.casper.training import train_casper
        from napari_casper.errors import TrainingCancelled

        self.history = []
        self.cancelled = False

        def record(epoch_record) -> None:
            event = asdict(epoch_record)
            self.history.append(event)
            if progress is not None:
                progress(event)

        try:
            model = train_casper(
                self.st,
                self.reference,
                label_key=self.label_key,
                leiden_resolution=self.leiden_resolution,
                centroid_method=self.centroid_method,
                progress=record,
                cancel=cancel,
                **config,
            )
        except TrainingCancelled as stop:
            model = stop.model
            self.cancelled = True
        self.imputer = CasperImputer(model, self.st, device=config.get("device", "auto"))
        self.predictions.clear()
        self.checkpoint_path = None
        self._groups = None
        return self.imputer

    def _require_model(self):
        if self.imputer is None:
            raise CasperInputError("no trained model yet: train CASPER or load a checkpoint first.")
        return self.imputer

    def save_checkpoint(self, path: str | Path) -> Path:
        from napari_casper.casper.checkpoint import save_checkpoint

        path = save_checkpoint(self._require_model().model, path)
        self.checkpoint_path = str(path)
        return Path(path)

    def load_checkpoint(self, path: str | Path):
        from napari_casper.casper.checkpoint import load_checkpoint
        from napari_casper.casper.imputation import CasperImputer

        self.imputer = CasperImputer(load_checkpoint(path, panel_genes=self.st.var_names), self.st)
        self._groups = None
        self.checkpoint_path = str(path)
        self.predictions.clear()
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
        read as a cell-type map. Otherwise the centroids are shown as they are.
        """
        if self._groups is not None:
            return self._groups
        model = self._require_model().model
        names = self.centroid_names
        if not model.centroids.method.startswith("cells"):
            self._groups = (names, None)
            return self._groups
        position = pd.Index(self.reference.obs_names.astype(str)).get_indexer(names)
        if self.label_key is not None:
            cell_groups = self.reference.obs[self.label_key].astype(str).to_numpy()[position]
            group_names = sorted(set(cell_groups))
        else:
            from napari_casper.casper.centroids import leiden_clusters
            from napari_casper.casper.preprocess import normalize_matrix

            expression, _ = normalize_matrix(self.reference.X)
            clusters = leiden_clusters(expression, resolution=self.leiden_resolution)[position]
            cell_groups = np.array([f"leiden_{c}" for c in clusters])
            group_names = sorted(set(cell_groups), key=lambda g: int(g.split("_")[1]))
        column = {g: j for j, g in enumerate(group_names)}
        onehot = np.zeros((len(names), len(group_names)), dtype=np.float32)
        onehot[np.arange(len(names)), [column[g] for g in cell_groups]] = 1.0
        self._groups = (group_names, onehot)
        return self._groups

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

        genes = list(genes) if genes is not None else list(self.predictions)
        return predictions_table(
            self.spots_element,
            self.instance_ids,
            self.predict(genes).reset_index(drop=True),
            attention=self.display_attention(),
            centroid_names=self.display_names,
            checkpoint=self.checkpoint_path,
        )

    def save_results(self, store: str | Path, genes: Sequence[str] | None = None) -> str:
        """Write the results table as a new element of ``store``; returns its name."""
        from napari_casper.casper.results import save_predictions

        return save_predictions(store, self.results_table(genes))
