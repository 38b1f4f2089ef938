"""The CASPER dock widget: data -> train -> impute -> attention -> save.

Long work (training, imputation) runs in napari worker threads; their progress reaches the
GUI thread through a Qt signal, and layers are only added there. Errors become napari
notifications that say what to do; the widget stays usable.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QFileDialog, QLabel, QPushButton, QWidget

from napari_casper._widgets.casper.attention_panel import AttentionPanel
from napari_casper._widgets.casper.data_panel import DataPanel
from napari_casper._widgets.casper.impute_panel import ImputePanel
from napari_casper._widgets.common.background import BackgroundRunner, RunsInBackground, notify_info, progress_relay
from napari_casper._widgets.common.layer_sync import add_or_update
from napari_casper._widgets.common.layout import scrolled_body
from napari_casper._widgets.common.train_panel import TrainPanel
from napari_casper.errors import CasperInputError
from napari_casper.io.elements import METADATA_KEY


def grid_of(viewer):
    """The viewer's grid settings (``viewer.canvas.grid`` since napari 0.9, else ``viewer.grid``)."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


class CasperWidget(RunsInBackground, QWidget):
    """Train CASPER on the open spots and impute any reference gene over the tissue."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.workflow = None
        self._cancel = threading.Event()
        self._progress_bar = None
        self._geometry = None
        self._relay = progress_relay(self._on_progress)

        self.data = DataPanel(napari_viewer)
        self.train_panel = TrainPanel()
        self.impute = ImputePanel()
        self.attention_panel = AttentionPanel()
        self.save_button = QPushButton("Save results to SpatialData")
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.runner = BackgroundRunner(self.message.setText, on_finish=self._finished)

        scrolled_body(self, [self.data, self.train_panel, self.impute, self.attention_panel, self.save_button, self.message])

        # clicked(bool) would pass checked=False into an optional first parameter: call with none
        self.train_panel.train_button.clicked.connect(lambda: self.start_training())
        self.train_panel.cancel_button.clicked.connect(lambda: self.cancel())
        self.train_panel.save_button.clicked.connect(lambda: self.save_checkpoint())
        self.train_panel.load_button.clicked.connect(lambda: self.load_checkpoint())
        self.impute.impute_button.clicked.connect(lambda: self.start_imputation())
        self.impute.compare_button.clicked.connect(lambda: self.compare_with_measured())
        self.attention_panel.show_button.clicked.connect(lambda: self.show_attention())
        self.attention_panel.dominant_button.clicked.connect(lambda: self.show_dominant_centroid())
        self.save_button.clicked.connect(lambda: self.save_results())

    # -- helpers (busy / synchronous / wait come from RunsInBackground) -------------------
    def _fail(self, err: Exception) -> None:
        self.runner.fail(err)

    def _run(self, function, on_done, *args, **kwargs) -> None:
        """Run ``function`` in a worker thread (or inline when ``synchronous``)."""
        self.runner.run(function, on_done, *args, **kwargs)

    def _finished(self) -> None:
        self.train_panel.set_running(False)
        if self._progress_bar is not None:
            self._progress_bar.close()
            self._progress_bar = None

    def _spots_layer(self):
        layer = self.data.spots_layer()
        if layer is None:
            raise CasperInputError("no spots layer: open a SpatialData object (File > Open) or a sample first.")
        return layer

    def _require_workflow(self):
        if self.workflow is None or self.workflow.imputer is None:
            raise CasperInputError("no trained model: press Train (or Load checkpoint) before imputing.")
        return self.workflow

    def build_workflow(self):
        """A fresh :class:`CasperWorkflow` from the Data panel's choices."""
        from napari_casper.casper.workflow import CasperWorkflow

        layer = self._spots_layer()
        reference = self.data.reference_anndata()
        workflow = CasperWorkflow.from_layer_metadata(
            layer.metadata[METADATA_KEY],
            reference,
            label_key=self.data.label_column(),
            leiden_resolution=self.data.resolution.value(),
            centroid_method=self.data.centroid_method(),
        )
        self._geometry = None
        return workflow

    def geometry(self):
        from napari_casper.display.value_layers import SpotGeometry

        if self._geometry is None:
            layer = self._spots_layer()
            kwargs = {"size": layer.size, "affine": layer.affine.affine_matrix, "metadata": layer.metadata}
            self._geometry = SpotGeometry.from_points_kwargs(layer.data, kwargs)
        return self._geometry

    # -- training ------------------------------------------------------------------------
    def start_training(self) -> None:
        from napari.utils import progress

        try:
            self.workflow = self.build_workflow()
        except Exception as err:  # noqa: BLE001
            self._fail(err)
            return
        config = self.train_panel.config()
        self._cancel.clear()
        self.train_panel.set_running(True)
        self.train_panel.plot.update_history([])
        self.train_panel.status.setText("training...")
        self._progress_bar = progress(total=self.train_panel.epochs.value(), desc="CASPER training")
        self._run(self.workflow.train, self._trained, progress=self._relay.event.emit, cancel=self._cancel, **config)

    def cancel(self) -> None:
        """Stop training at the next batch; the best model so far is kept."""
        self._cancel.set()
        self.train_panel.status.setText("cancelling...")

    def _on_progress(self, event: dict) -> None:
        history = self.workflow.history if self.workflow is not None else [event]
        self.train_panel.plot.update_history(history)
        parts = [f"epoch {event.get('epoch')}"]
        for key in ("train_loss", "val_loss", "val_score"):
            if event.get(key) is not None:
                parts.append(f"{key.replace('_', ' ')} {event[key]:.4f}")
        self.train_panel.status.setText(", ".join(parts))
        if self._progress_bar is not None:
            self._progress_bar.update(1)

    def _trained(self, _imputer) -> None:
        workflow = self.workflow
        self.impute.set_reference_genes(workflow.reference_genes)
        self.attention_panel.set_centroids(workflow.display_names, workflow.n_heads)
        stopped = " (cancelled: best model so far kept)" if workflow.cancelled else ""
        self.train_panel.status.setText(f"trained on {workflow.st.n_obs} spots x {workflow.st.n_vars} genes{stopped}")
        notify_info(f"CASPER trained{stopped}.")

    def save_checkpoint(self, path: str | None = None) -> None:
        try:
            workflow = self._require_workflow()
            if path is None:
                path, _ = QFileDialog.getSaveFileName(self, "Save CASPER checkpoint", "casper.pt", "Checkpoint (*.pt)")
                if not path:
                    return
            saved = workflow.save_checkpoint(path)
            notify_info(f"checkpoint saved to {saved}")
        except Exception as err:  # noqa: BLE001
            self._fail(err)

    def load_checkpoint(self, path: str | None = None) -> None:
        try:
            if path is None:
                path, _ = QFileDialog.getOpenFileName(self, "Load CASPER checkpoint", "", "Checkpoint (*.pt)")
                if not path:
                    return
            self.workflow = self.build_workflow()
            self.workflow.load_checkpoint(path)
            self._trained(self.workflow.imputer)
        except Exception as err:  # noqa: BLE001
            self.workflow = None
            self._fail(err)

    # -- imputation ----------------------------------------------------------------------
    def start_imputation(self, genes: list[str] | None = None) -> None:
        try:
            workflow = self._require_workflow()
            genes = genes if genes is not None else self.impute.genes()
            if not genes:
                raise CasperInputError("no gene chosen: type a reference gene name and press Enter.")
        except Exception as err:  # noqa: BLE001
            self._fail(err)
            return
        self._run(workflow.predict, self._show_predictions, genes)

    def _show_predictions(self, frame) -> None:
        from napari_casper.display.value_layers import gene_layer_name, value_layer

        scores = []
        for gene in frame.columns:
            layer_tuple = value_layer(self.geometry(), frame[gene].to_numpy(), gene_layer_name(gene, "casper"))
            add_or_update(self.viewer, layer_tuple)
            kwargs = layer_tuple[1]
            limits = kwargs.get("face_contrast_limits", kwargs.get("contrast_limits"))
            self.impute.show_colorbar(kwargs["name"], kwargs.get("face_colormap", kwargs.get("colormap")), limits)
            if self.workflow.measured(gene) is not None:
                scores.append(f"{gene} was measured: use Compare for a held-out score")
        self.impute.score.setText("; ".join(scores) or f"imputed {len(frame.columns)} gene(s)")

    def compare_with_measured(self, gene: str | None = None) -> None:
        """Measured, held-out prediction and difference (z-scores) of a measured gene, in a grid.

        The prediction hides the gene from the model's input (masked reconstruction), so the
        PCC shown is an honest held-out score.
        """
        from napari_casper.display.value_layers import value_layer

        try:
            workflow = self._require_workflow()
            genes = [gene] if gene else self.impute.genes()
            gene = next((g for g in genes if workflow.measured(g) is not None), None)
            if gene is None:
                raise CasperInputError("none of the chosen genes was measured: comparison needs a panel gene.")
            measured = workflow.measured(gene)
            predicted = workflow.predict_hidden(gene)
        except Exception as err:  # noqa: BLE001
            self._fail(err)
            return

        def z(v):
            return (v - v.mean()) / (v.std() or 1.0)

        geometry = self.geometry()
        layers = [
            value_layer(geometry, measured, f"measured:{gene}"),
            value_layer(geometry, predicted, f"casper held-out:{gene}"),
            value_layer(geometry, z(predicted) - z(measured), f"difference:{gene}", colormap="coolwarm"),
        ]
        for layer_tuple in layers:
            add_or_update(self.viewer, layer_tuple)
        grid_of(self.viewer).enabled = True
        r = float(np.corrcoef(measured, predicted)[0, 1]) if measured.std() and predicted.std() else 0.0
        self.impute.score.setText(f"{gene}: PCC {r:.3f} (predicted with {gene} hidden vs measured)")

    # -- attention -----------------------------------------------------------------------
    def show_attention(self, centroid: str | None = None) -> None:
        from napari_casper.display.value_layers import attention_layer_name, value_layer

        try:
            workflow = self._require_workflow()
            centroid = centroid or self.attention_panel.centroid.currentText()
            names = workflow.display_names
            if centroid not in names:
                raise CasperInputError(f"unknown centroid {centroid!r}: choose one of the list.")
            weights = workflow.display_attention(head=self.attention_panel.chosen_head())[:, names.index(centroid)]
        except Exception as err:  # noqa: BLE001
            self._fail(err)
            return
        add_or_update(self.viewer, value_layer(self.geometry(), weights, attention_layer_name(centroid), colormap="viridis"))

    def show_dominant_centroid(self) -> None:
        from napari_casper.display.value_layers import DOMINANT_NAME, categorical_layer

        try:
            workflow = self._require_workflow()
            weights = workflow.display_attention(head=self.attention_panel.chosen_head())
        except Exception as err:  # noqa: BLE001
            self._fail(err)
            return
        layer_tuple = categorical_layer(self.geometry(), np.argmax(weights, axis=1), workflow.display_names, DOMINANT_NAME)
        add_or_update(self.viewer, layer_tuple)
        self.attention_panel.show_legend(layer_tuple[1]["metadata"][METADATA_KEY]["legend"])

    # -- saving --------------------------------------------------------------------------
    def save_results(self, path: str | None = None) -> str | None:
        """Write the imputed genes + attention as a new table of the spots' SpatialData store.

        When the spots did not come from a ``.zarr`` store (an ``.h5ad``, a sample), the
        whole object is first written to a new store at ``path`` (asked for when None).
        """
        from napari_casper.io.stores import is_spatialdata_store, save_spatialdata

        try:
            workflow = self._require_workflow()
            if not workflow.predictions:
                raise CasperInputError("nothing to save yet: impute at least one gene first.")
            meta = self._spots_layer().metadata[METADATA_KEY]
            store = meta.get("path")
            if not (store and Path(store).is_dir() and is_spatialdata_store(store)):
                if path is None:
                    path, _ = QFileDialog.getSaveFileName(self, "Save as new SpatialData store", "casper.zarr", "Zarr (*.zarr)")
                    if not path:
                        return None
                store = str(save_spatialdata(meta["sdata"], path))
                meta["path"] = store
            name = workflow.save_results(store)
        except Exception as err:  # noqa: BLE001
            self._fail(err)
            return None
        self.runner.say(f"saved {len(workflow.predictions)} gene(s) and attention as table '{name}' in {store}")
        return name
