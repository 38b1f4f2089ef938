"""The CASPER dock widget: data -> train -> impute -> attention -> save.

Every action that computes runs in a napari worker thread (training, loading a checkpoint,
imputing, comparing, attention, saving); the worker names its phase in the Train panel's status
("preparing genes and centroids", "epoch 3 of 12", "refit on all genes and spots: step 50 of 75",
"clustering the reference", "loading checkpoint", "encoding the spots") through a Qt signal, and
Cancel stops training or loading within a second in every phase. Layers are only added on the
GUI thread, in the workers' done handlers. Errors become messages that say what to do; the
widget stays usable. The message line always describes the latest action.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QFileDialog, QLabel, QPushButton, QWidget

from napari_casper._widgets.casper.attention_panel import AttentionPanel
from napari_casper._widgets.casper.compare import CompareView, grid_of
from napari_casper._widgets.casper.data_panel import DataPanel
from napari_casper._widgets.casper.impute_panel import ImputePanel
from napari_casper._widgets.common.background import BackgroundRunner, RunsInBackground, progress_relay, warm_up_in_background
from napari_casper._widgets.common.layer_sync import add_or_update, watch
from napari_casper._widgets.common.layout import scrolled_body
from napari_casper._widgets.common.train_panel import TrainPanel
from napari_casper.errors import CasperInputError
from napari_casper.io.elements import METADATA_KEY

__all__ = ["CasperWidget", "grid_of"]

#: the first word of every imputed-gene layer (``casper:<gene>``)
GENE_PREFIX = "casper:"


class CasperWidget(RunsInBackground, QWidget):
    """Train CASPER on the open spots and impute any reference gene over the tissue."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.workflow = None
        self._pending = None  # the workflow being trained or loaded (becomes self.workflow when done)
        self._cancel = threading.Event()
        self._progress_bar = None
        self._geometry = None
        self._epochs = 0
        self._relay = progress_relay(self._on_progress)
        self.compare_view = CompareView(napari_viewer)
        self.last_saved: tuple[str, str] | None = None  # (store, table) of the latest Save

        self.data = DataPanel(napari_viewer)
        self.train_panel = TrainPanel()
        self.impute = ImputePanel()
        self.impute.threshold_changed = self._hide_untrusted
        self.attention_panel = AttentionPanel()
        self.save_button = QPushButton("Save results to SpatialData")
        self.save_button.setToolTip("write the imputed genes, attention and dominant centroid (with its colours) as a new table of the spots' store")
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
        self.impute.compare_button.clicked.connect(lambda: self.toggle_compare())
        self.attention_panel.show_button.clicked.connect(lambda: self.show_attention())
        self.attention_panel.dominant_button.clicked.connect(lambda: self.show_dominant_centroid())
        self.save_button.clicked.connect(lambda: self.save_results())
        # torch's first import: now, not at the first click (after the dock's first paint, which it would slow)
        warm_up_in_background("casper", _import_engine, viewer=napari_viewer, after_paint_of=self)
        watch(napari_viewer)  # colour bars and units for continuous layers; their glyphs rendered ahead

    # -- helpers (busy / synchronous / wait come from RunsInBackground) -------------------
    def _fail(self, err: Exception) -> None:
        self.runner.fail(err)

    def _run(self, function, on_done, *args, **kwargs) -> None:
        """Run ``function`` in a worker thread (or inline when ``synchronous``)."""
        self.runner.run(function, on_done, *args, **kwargs)

    def _finished(self) -> None:
        self.train_panel.set_running(False)
        if self._pending is not None:  # training or loading ended without a model: the previous one stays
            what = "cancelled" if self._cancel.is_set() else "stopped by an error (see below)"
            kept = "the previous model is kept" if self.workflow is not None else "no model yet"
            self.train_panel.status.setText(f"{what}; {kept}")
            if self._cancel.is_set():
                self.message.setText(f"Cancelled; {kept}.")
        self._pending = None
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
        return CasperWorkflow.from_layer_metadata(
            layer.metadata[METADATA_KEY],
            reference,
            label_key=self.data.label_column(),
            leiden_resolution=self.data.resolution.value(),
            centroid_method=self.data.centroid_method(),
        )

    def geometry(self):
        from napari_casper.display.value_layers import SpotGeometry

        if self._geometry is None:
            layer = self._spots_layer()
            kwargs = {"size": layer.size, "affine": layer.affine.affine_matrix, "metadata": layer.metadata}
            self._geometry = SpotGeometry.from_points_kwargs(layer.data, kwargs)
        return self._geometry

    def _start_long(self, workflow, status: str, total: int | None, description: str) -> None:
        """Common start of training and loading: Cancel enabled, a phase in the status, a progress bar."""
        from napari.utils import progress

        self._pending = workflow
        self._cancel.clear()
        self.train_panel.set_running(True)
        self.train_panel.status.setText(status)
        self.message.setText(f"{description}: Cancel stops it.")
        self._progress_bar = progress(total=total, desc=description)

    # -- training ------------------------------------------------------------------------
    def start_training(self) -> None:
        try:
            workflow = self.build_workflow()
        except Exception as err:  # noqa: BLE001
            self._fail(err)
            return
        config = self.train_panel.config()
        self._epochs = self.train_panel.epochs.value()
        self.train_panel.plot.update_history([])
        self._start_long(workflow, "preparing genes and centroids", self._epochs, "training CASPER")
        self._run(workflow.train, self._trained, progress=self._relay.event.emit, status=self._relay.event.emit, cancel=self._cancel, **config)

    def cancel(self) -> None:
        """Stop training or loading within a second; a model trained so far is kept."""
        if not self.runner.working:
            return
        self._cancel.set()
        self.train_panel.status.setText("cancelling...")

    def _on_progress(self, event) -> None:
        """A phase name (str) or an epoch record (dict) from the worker, on the GUI thread."""
        if self._cancel.is_set() and self.runner.working:
            return  # "cancelling..." stays until the worker has stopped
        if isinstance(event, str):
            self.train_panel.status.setText(event)
            return
        workflow = self._pending or self.workflow
        history = workflow.history if workflow is not None else [event]
        self.train_panel.plot.update_history(history)
        epoch = event.get("epoch")
        parts = [f"epoch {epoch} of {self._epochs}" if epoch else "untrained model (epoch 0)"]
        for key, label in (("train_loss", "train loss"), ("val_loss", "validation loss"), ("val_score", "validation r")):
            value = event.get(key)
            if value is not None and np.isfinite(value):
                parts.append(f"{label} {value:.3f}")
        self.train_panel.status.setText(", ".join(parts))
        if self._progress_bar is not None and epoch:
            self._progress_bar.update(1)

    def _install(self, workflow) -> None:
        """Make ``workflow`` the widget's model: gene completion, centroid list, no stale layers state."""
        self.compare_view.restore()
        self.workflow = workflow
        self._geometry = None
        self.impute.set_reference_genes(workflow.reference_genes)
        if workflow.groups_ready:
            self.attention_panel.set_centroids(workflow.display_names, workflow.n_heads)
        else:
            self.attention_panel.set_centroids([], workflow.n_heads)

    def _trained(self, _imputer) -> None:
        workflow, self._pending = self._pending, None
        self._install(workflow)
        model = workflow.imputer.model
        spots = f"{workflow.st.n_obs} spots x {workflow.st.n_vars} genes"
        if workflow.cancelled:
            self.train_panel.status.setText(f"cancelled: the best model so far (epoch {model.history.best_epoch}) is kept; {spots}")
            text = "Training cancelled; the best model so far is kept: type a gene and press Impute."
        else:
            self.train_panel.status.setText(f"trained on {spots} ({model.history.stop_reason})")
            text = "CASPER trained: type a gene and press Impute."
        if not workflow.groups_ready:
            text += " Centroid clusters were not computed: Dominant centroid computes them."
        self.runner.say(text)

    def save_checkpoint(self, path: str | None = None) -> None:
        try:
            workflow = self._require_workflow()
            if path is None:
                path, _ = QFileDialog.getSaveFileName(self, "Save CASPER checkpoint", "casper.pt", "Checkpoint (*.pt)")
                if not path:
                    return
            saved = workflow.save_checkpoint(path)
        except Exception as err:  # noqa: BLE001
            self._fail(err)
            return
        self.runner.say(f"checkpoint saved to {saved}")

    def load_checkpoint(self, path: str | None = None) -> None:
        try:
            if path is None:
                path, _ = QFileDialog.getOpenFileName(self, "Load CASPER checkpoint", "", "Checkpoint (*.pt)")
                if not path:
                    return
            workflow = self.build_workflow()
        except Exception as err:  # noqa: BLE001
            self._fail(err)
            return
        self._start_long(workflow, "loading checkpoint", None, "loading checkpoint")
        self._run(workflow.load_checkpoint, lambda _: self._loaded(workflow, path), path, cancel=self._cancel, status=self._relay.event.emit)

    def _loaded(self, workflow, path) -> None:
        self._pending = None
        self._install(workflow)
        model = workflow.imputer.model
        self.train_panel.plot.update_history(workflow.history)
        self.train_panel.status.setText(
            f"loaded {Path(path).name}: {model.centroids.n_centroids} centroids ({model.centroids.method}), {len(model.panel_genes)} panel genes"
        )
        self.runner.say(f"Checkpoint {Path(path).name} loaded: type a gene and press Impute.")

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
        self.message.setText(f"imputing {', '.join(genes)}...")

        def work(genes):
            return workflow.predict(genes), workflow.trust(genes), workflow.interval_widths(genes)

        self._run(work, self._show_predictions, genes)

    def _show_predictions(self, result) -> None:
        """One layer per gene (updated in place when it exists) and, hidden beside it, the width of its
        90 % interval per spot; the newest gene shown, the other gene layers hidden; trust in the table."""
        from napari_casper.display.value_layers import gene_layer_name, interval_layer_name, value_layer

        frame, trust, widths = result
        self.compare_view.restore()
        geometry = self.geometry()
        tuples = [value_layer(geometry, frame[gene].to_numpy(), gene_layer_name(gene, "casper")) for gene in frame.columns]
        for layer in self.viewer.layers:  # hidden first: only the newest gene is drawn
            if layer.name.startswith(GENE_PREFIX):
                layer.visible = False
        for _, kwargs, _ in tuples[:-1]:
            kwargs["visible"] = False
        n_genes = len(tuples)
        if widths is not None:
            for gene in frame.columns:
                width = value_layer(geometry, widths[gene].to_numpy(), interval_layer_name(gene), colormap="viridis",
                                    units="SD, width of the 90% interval")  # fmt: skip
                width[1]["visible"] = False
                tuples.append(width)
        self.impute.show_trust(trust.to_dict(), {} if widths is None else widths.mean().to_dict())
        self.runner.add_layers(
            lambda item: add_or_update(self.viewer, item), tuples,
            lambda layers: self._predictions_shown(frame, tuples[:n_genes], layers[:n_genes]),
        )  # fmt: skip

    def _hide_untrusted(self, hidden: set[str]) -> None:
        """The trust threshold hides the layers of the genes below it."""
        from napari_casper.display.value_layers import gene_layer_name

        for gene in hidden:
            name = gene_layer_name(gene, "casper")
            if name in self.viewer.layers:
                self.viewer.layers[name].visible = False

    def _predictions_shown(self, frame, tuples, layers) -> None:
        newest = layers[-1]
        for layer in self.viewer.layers:
            if layer.name.startswith(GENE_PREFIX):
                layer.visible = layer is newest
        self.viewer.layers.selection.active = newest  # its controls, not the width layer added after it
        kwargs = tuples[-1][1]
        limits = kwargs.get("face_contrast_limits", kwargs.get("contrast_limits"))
        self.impute.show_colorbar(kwargs["name"], kwargs.get("face_colormap", kwargs.get("colormap")), limits)
        measured = [g for g in frame.columns if self.workflow.measured(g) is not None]
        hint = f"; {', '.join(measured)} measured: Compare with measured gives a held-out score" if measured else ""
        self.impute.score.setText(f"showing {newest.name}{hint}")
        self.message.setText(f"imputed {len(frame.columns)} gene(s); showing {frame.columns[-1]}")

    def toggle_compare(self) -> None:
        """Compare with measured, or Back to the view from before when a comparison is shown."""
        if self.compare_view.active:
            self.compare_view.restore()
            self.impute.set_comparing(False)
            self.message.setText("back to the view from before the comparison")
        else:
            self.compare_with_measured()

    def compare_with_measured(self, gene: str | None = None) -> None:
        """Measured, held-out prediction and difference (z-scores) of one measured gene, side by side.

        The prediction hides the gene from the model's input (masked reconstruction), so the
        PCC shown is an honest held-out score.
        """
        try:
            workflow = self._require_workflow()
            genes = [gene] if gene else self.impute.genes()
            gene = next((g for g in genes if workflow.measured(g) is not None), None)
            if gene is None:
                raise CasperInputError("none of the chosen genes was measured: comparison needs a panel gene.")
        except Exception as err:  # noqa: BLE001
            self._fail(err)
            return
        self.message.setText(f"predicting {gene} with {gene} hidden...")
        self._run(self._compare_job, self._show_comparison, workflow, gene, self.geometry())

    @staticmethod
    def _compare_job(workflow, gene, geometry):
        measured = workflow.measured(gene)
        predicted = workflow.predict_hidden(gene)
        r = float(np.corrcoef(measured, predicted)[0, 1]) if measured.std() and predicted.std() else 0.0
        return gene, r, CompareView.layer_tuples(geometry, gene, measured, predicted, r)

    def _show_comparison(self, result) -> None:
        gene, r, tuples = result
        self.compare_view.begin(gene)
        self.impute.set_comparing(True)
        self.impute.score.setText(f"{gene}: PCC {r:.3f} (predicted with {gene} hidden vs measured)")
        self.message.setText(f"comparing {gene}: measured, predicted with {gene} hidden, difference. Back restores the view.")
        self.runner.add_layers(self.compare_view.add, tuples, lambda _: self.compare_view.finish())

    # -- attention -----------------------------------------------------------------------
    @staticmethod
    def _attention_job(workflow, head):
        return workflow.display_names, workflow.display_attention(head=head)

    def show_attention(self, centroid: str | None = None) -> None:
        try:
            workflow = self._require_workflow()
            centroid = centroid or self.attention_panel.centroid.currentText()
            if workflow.groups_ready and centroid not in workflow.display_names:
                raise CasperInputError(f"unknown centroid {centroid!r}: choose one of the list.")
        except Exception as err:  # noqa: BLE001
            self._fail(err)
            return
        self._run(self._attention_job, lambda result: self._show_attention_layer(centroid, *result), workflow, self.attention_panel.chosen_head())

    def _show_attention_layer(self, centroid, names, weights) -> None:
        from napari_casper.display.value_layers import attention_layer_name, value_layer

        self._refresh_centroids(names)
        if centroid not in names:
            raise CasperInputError(f"choose a centroid of the list (now filled: {len(names)} centroids).")
        add_or_update(self.viewer, value_layer(self.geometry(), weights[:, names.index(centroid)], attention_layer_name(centroid), colormap="viridis"))
        self.message.setText(f"attention to {centroid} ({self.attention_panel.head.text()})")

    def _refresh_centroids(self, names) -> None:
        if self.attention_panel.centroid.count() != len(names):
            self.attention_panel.set_centroids(names, self.workflow.n_heads)

    def show_dominant_centroid(self) -> None:
        try:
            workflow = self._require_workflow()
        except Exception as err:  # noqa: BLE001
            self._fail(err)
            return
        self._run(self._dominant_job, self._show_dominant_layers, workflow, self.attention_panel.chosen_head(), self.geometry())

    @staticmethod
    def _dominant_job(workflow, head, geometry):
        from napari_casper.display.results import dominant_layers

        names, weights = workflow.display_names, workflow.display_attention(head=head)
        return names, dominant_layers(geometry, np.argmax(weights, axis=1), names)

    def _show_dominant_layers(self, result) -> None:
        names, tuples = result
        self._refresh_centroids(names)
        self.attention_panel.show_legend(tuples[0][1]["metadata"][METADATA_KEY]["legend"])
        self.message.setText(f"dominant centroid of each spot ({self.attention_panel.head.text()}); its legend is beside the tissue")
        self.runner.add_layers(lambda item: add_or_update(self.viewer, item), tuples)

    # -- saving --------------------------------------------------------------------------
    def save_results(self, path: str | None = None) -> None:
        """Write the imputed genes + attention as a new table of the spots' SpatialData store (in a worker).

        When the spots did not come from a ``.zarr`` store (an ``.h5ad``, a sample), the
        whole object is first written to a new store at ``path`` (asked for when None).
        """
        from napari_casper.io.stores import is_spatialdata_store

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
                        return
                store = None
        except Exception as err:  # noqa: BLE001
            self._fail(err)
            return
        self.message.setText("saving results...")
        self._run(self._save_job, self._saved, workflow, meta, store, path)

    @staticmethod
    def _save_job(workflow, meta, store, path):
        from napari_casper.io.store_writes import save_spatialdata

        if store is None:
            store = str(save_spatialdata(meta["sdata"], path))
        return store, workflow.save_results(store), len(workflow.predictions)

    def _saved(self, result) -> None:
        store, name, n_genes = result
        self._spots_layer().metadata[METADATA_KEY]["path"] = store
        self.last_saved = (store, name)
        self.runner.say(f"saved {n_genes} gene(s), attention and the dominant centroid as table '{name}' in {store}")


def _import_engine() -> None:
    """Import what training needs (torch, the engine) off the GUI thread while the dock opens, then the loss
    plot's canvas (last: the plot is made on the GUI thread when it is ready, and should not compete with
    these imports for the GIL)."""
    import napari_casper.casper.training  # noqa: F401 - imported for its side effect (loaded once)
    import napari_casper.casper.workflow  # noqa: F401
    from napari_casper._widgets.common.loss_plot import import_backend

    import_backend()
