"""The Histology dock widget: train H&E -> expression on sections, predict on an H&E-only slide.

Everything it computes comes from :mod:`napari_casper.histology` (Qt-free). Training and
prediction run in a worker thread (:class:`BackgroundRunner`); epochs reach the GUI through a
Qt signal (live loss, napari progress bar); Cancel stops training before the next batch.
Predicted genes are shown as ``histology:<gene>`` layers (and ``histology uncertainty:<gene>``)
placed with the image layer's own transform, so they lie on the H&E exactly.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QFileDialog, QLabel, QWidget

from napari_casper._widgets.common.background import BackgroundRunner, RunsInBackground, notify_info, progress_relay
from napari_casper._widgets.common.layer_sync import add_or_update
from napari_casper._widgets.common.layout import scrolled_body
from napari_casper._widgets.histology.predict_panel import PredictPanel
from napari_casper._widgets.histology.sections_panel import SectionsPanel
from napari_casper._widgets.histology.slide import SlidePrediction, slide_of, slide_sdata, spot_geometry
from napari_casper._widgets.histology.train_panel import HistologyTrainPanel
from napari_casper.errors import CasperInputError, TrainingCancelled
from napari_casper.io.elements import METADATA_KEY


class HistologyWidget(RunsInBackground, QWidget):
    """Train on sections with H&E + counts; predict genes and uncertainty on the open slide."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.predictor = None
        self.labels: dict[str, str] = {}  # gene -> the name it was asked for by
        self.requested: list[str] = []  # genes shown first
        self.checkpoint_path: str | None = None
        self.trained_on: list[str] = []  # labels of the sections the model was trained on
        self._training_labels: list[str] = []
        self.result: SlidePrediction | None = None
        self.cancelled = False
        self._cancel = threading.Event()
        self._stage_history: list[dict] = []
        self._stage = None
        self._progress_bar = None
        self._relay = progress_relay(self._on_epoch)

        self.sections = SectionsPanel(napari_viewer)
        self.train_panel = HistologyTrainPanel()
        self.predict_panel = PredictPanel(napari_viewer)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.runner = BackgroundRunner(self.message.setText, on_finish=self._finished)

        self.scroll = scrolled_body(self, [self.sections, self.train_panel, self.predict_panel, self.message])

        self.sections.add_h5ad.clicked.connect(lambda: self.runner.guard(lambda: self.sections.add_file(kind="h5ad")))
        self.sections.add_zarr.clicked.connect(lambda: self.runner.guard(lambda: self.sections.add_file(kind="zarr")))
        self.train_panel.train_button.clicked.connect(self.start_training)
        self.train_panel.cancel_button.clicked.connect(self.cancel)
        self.train_panel.save_button.clicked.connect(lambda: self.save_checkpoint())
        self.train_panel.load_button.clicked.connect(lambda: self.load_checkpoint())
        self.predict_panel.predict_button.clicked.connect(self.start_prediction)
        self.predict_panel.cancel_button.clicked.connect(self.cancel_prediction)
        self.predict_panel.gene.currentTextChanged.connect(self.show_gene)
        self.predict_panel.show_uncertainty.toggled.connect(lambda _on: self.show_gene())
        self.predict_panel.save_button.clicked.connect(lambda: self.save_predictions())

    # -- plumbing ------------------------------------------------------------------------
    def _finished(self) -> None:
        self.train_panel.set_running(False)
        self.predict_panel.set_running(False)
        if self._progress_bar is not None:
            self._progress_bar.close()
            self._progress_bar = None

    def _require_predictor(self):
        if self.predictor is None:
            raise CasperInputError("no trained model: press Train (or Load checkpoint...) first.")
        return self.predictor

    # -- training ------------------------------------------------------------------------
    def start_training(self) -> None:
        from napari.utils import progress

        try:
            sources = self.sections.chosen()
            requested = self.sections.requested_genes()
            n_variable = self.sections.n_variable.value()
            config = self.train_panel.config()
        except Exception as err:  # noqa: BLE001
            self.runner.fail(err)
            return
        self._cancel.clear()
        self.cancelled = False
        self._stage_history, self._stage = [], None
        self.train_panel.set_running(True)
        self.train_panel.plot.update_history([])
        self.train_panel.status.setText(f"reading {len(sources)} section(s)...")
        self._progress_bar = progress(total=0, desc="histology training")
        self._training_labels = [source.label for source in sources]
        self.runner.run(self._train, self._trained, sources, requested, n_variable, config)

    def _train(self, sources, requested, n_variable, config):
        """Worker: sections -> genes -> model; None when cancelled."""
        from napari_casper.histology.genes import training_genes
        from napari_casper.histology.patches import suggest_patch_size
        from napari_casper.histology.train import train_histology

        sections = [source.section() for source in sources]
        genes, labels = training_genes(sections, n_variable, requested)
        diameter = float(np.median([s.spot_diameter_px for s in sections]))
        config.predict_genes = genes
        config.patch_size = suggest_patch_size(diameter)
        config.spot_diameter_px = diameter
        config.gene_labels = labels  # the requested genes, shown first
        try:
            predictor = train_histology(sections, config, progress=self._relay.event.emit, cancel=self._cancel)
        except TrainingCancelled:
            return None
        return predictor

    def cancel(self) -> None:
        """Stop training before its next batch (the previous model, if any, is kept)."""
        self._cancel.set()
        self.train_panel.status.setText("cancelling...")

    def _on_epoch(self, record) -> None:
        if record.stage != self._stage:
            self._stage, self._stage_history = record.stage, []
            if self._progress_bar is not None:
                self._progress_bar.set_description(f"histology training ({record.stage})")
                self._progress_bar.total = record.n_epochs
                self._progress_bar.n = 0
        self._stage_history.append({"epoch": record.epoch, "train_loss": record.loss, "val_loss": record.val_loss})
        self.train_panel.show_epoch(record, self._stage_history)
        if self._progress_bar is not None:
            self._progress_bar.update(1)

    def _trained(self, result) -> None:
        if result is None:
            self.cancelled = True
            kept = "the previous model is kept" if self.predictor is not None else "no model yet"
            self.train_panel.status.setText(f"training cancelled ({kept}).")
            notify_info(f"histology training cancelled; {kept}.")
            return
        self.predictor = result
        self.checkpoint_path, self.trained_on = None, list(self._training_labels)
        self._model_ready("trained")

    def _model_ready(self, how: str) -> None:
        predictor = self.predictor
        chosen = predictor.config.gene_labels or {}
        self.requested = [g for g in chosen if g in predictor.genes] or predictor.genes[:1]
        self.labels = {gene: name for gene, name in chosen.items() if name != gene}
        diameter = predictor.config.spot_diameter_px
        if diameter:
            self.predict_panel.diameter.setValue(float(diameter))
        scores = ", ".join(f"{k} {v:.3f}" for k, v in predictor.selection.items())
        self.train_panel.status.setText(
            f"{how}: {len(predictor.genes)} genes, head {predictor.head}"
            + (f" (leave-one-section-out: {scores})" if scores else "")
            + (f", spot diameter {diameter:.1f} px" if diameter else "")
        )
        notify_info(f"histology model {how}.")

    def save_checkpoint(self, path: str | None = None) -> None:
        try:
            predictor = self._require_predictor()
            if path is None:
                path, _ = QFileDialog.getSaveFileName(self, "Save histology model", "histology.pt", "Checkpoint (*.pt)")
                if not path:
                    return
            from napari_casper.histology.checkpoint import save_predictor

            save_predictor(predictor, path)
            self.checkpoint_path = str(path)
            self.runner.say(f"histology model saved to {path}")
        except Exception as err:  # noqa: BLE001
            self.runner.fail(err)

    def load_checkpoint(self, path: str | None = None) -> None:
        from napari_casper.histology.checkpoint import load_predictor

        try:
            if path is None:
                path, _ = QFileDialog.getOpenFileName(self, "Load histology model", "", "Checkpoint (*.pt)")
                if not path:
                    return
            self.predictor = load_predictor(path)
        except Exception as err:  # noqa: BLE001
            self.runner.fail(err)
            return
        self.checkpoint_path, self.trained_on = str(path), []
        self._model_ready(f"loaded from {Path(path).name}")

    # -- prediction ----------------------------------------------------------------------
    def start_prediction(self) -> None:
        try:
            predictor = self._require_predictor()
            layer = self.predict_panel.image_layer()
            if layer is None:
                raise CasperInputError("no H&E image layer: open the slide to predict on (an RGB image) first.")
            slide = slide_of(layer)
            spots = self.predict_panel.spots_element()
            diameter = self.predict_panel.diameter.value() or predictor.config.spot_diameter_px
            if spots is None and not diameter:
                raise CasperInputError(
                    "this model does not know its spot size: set the spot diameter (pixels of this image) first."
                )
            pitch = self.predict_panel.pitch.value() or None
            layout = self.predict_panel.layout_box.currentText()
        except Exception as err:  # noqa: BLE001
            self.runner.fail(err)
            return
        self._cancel.clear()
        self.predict_panel.set_running(True)
        self.predict_panel.status.setText("predicting...")
        meta = layer.metadata.get(METADATA_KEY, {})
        job = SlidePrediction(None, slide, 0.0, layer.name, spots, sdata=meta.get("sdata"), store=meta.get("path"))
        self.runner.run(self._predict, self._predicted, predictor, job, diameter, pitch, layout)

    def _predict(self, predictor, job: SlidePrediction, diameter, pitch, layout) -> SlidePrediction:
        """Worker: spots in image pixels (measured, or virtual over the tissue), then the prediction."""
        from napari_casper.histology.spatial import spots_in_image
        from napari_casper.histology.tissue import virtual_spots_for

        if job.source_spots is not None:
            coords, diameter, ids = spots_in_image(job.sdata, job.source_spots, job.slide)
            job.source_ids = np.asarray(ids)
        else:
            coords = virtual_spots_for(job.slide.detect_tissue(), diameter, pitch, layout=layout)
        job.diameter_px = float(diameter)
        try:
            job.prediction = predictor.predict(job.slide.data, coords, diameter, cancel=self._cancel)
        except TrainingCancelled:
            return None
        return job

    def cancel_prediction(self) -> None:
        """Stop the running prediction at its next batch; the layers shown stay as they are."""
        self._cancel.set()
        self.predict_panel.status.setText("cancelling...")

    def _predicted(self, job: SlidePrediction | None) -> None:
        if job is None:
            self.predict_panel.status.setText("prediction cancelled; the layers shown are unchanged")
            return
        if job.image_layer not in self.viewer.layers:
            raise CasperInputError(f"image layer {job.image_layer!r} was closed while predicting; predict again.")
        job.geometry = spot_geometry(job, self.viewer.layers[job.image_layer])
        self.result = job
        genes = job.prediction.genes
        shown = [g for g in self.requested if g in genes] or genes[:1]
        self.predict_panel.set_genes([self.label(g) for g in genes], self.label(shown[0]))
        for gene in reversed(shown):  # every chosen gene gets its layers; the first one stays visible
            self.show_gene(self.label(gene))
        where = job.source_spots or "virtual spots"
        self.predict_panel.status.setText(
            f"predicted {len(genes)} genes at {len(job.prediction.coords)} spots ({where}, diameter {job.diameter_px:.1f} px, "
            f"head {job.prediction.head}); showing {', '.join(self.label(g) for g in shown)}"
        )

    def label(self, gene: str) -> str:
        """The name a gene is shown by (the name it was asked for, else its var name)."""
        return self.labels.get(gene, gene)

    def gene_of(self, label: str) -> str:
        inverse = {v: k for k, v in self.labels.items()}
        return inverse.get(label, label)

    def show_gene(self, label: str | None = None, *, hide_others: bool = True) -> None:
        """Show ``histology:<label>`` (and its uncertainty when ticked); other histology genes are hidden."""
        from napari_casper.display.value_layers import gene_layer_name, uncertainty_layer_name, value_layer

        job = self.result
        if job is None:
            return
        label = label or self.predict_panel.gene.currentText()
        gene = self.gene_of(label)
        genes = job.prediction.genes
        if gene not in genes:
            self.runner.fail(CasperInputError(f"{label!r} was not predicted; choose a gene of the list."))
            return
        column = genes.index(gene)
        extra = {"gene": gene, "image": job.image_layer}
        values = job.prediction.expression[:, column]
        spread = job.prediction.uncertainty[:, column]
        layer = add_or_update(self.viewer, value_layer(job.geometry, values, gene_layer_name(label, "histology"), extra_metadata=extra))
        uncertainty = add_or_update(
            self.viewer,
            value_layer(job.geometry, spread, uncertainty_layer_name(label, "histology"), colormap="viridis", extra_metadata=extra),
        )
        if hide_others:
            prefixes = (gene_layer_name("", "histology"), uncertainty_layer_name("", "histology"))
            for other in self.viewer.layers:
                if other.name.startswith(prefixes) and other not in (layer, uncertainty):
                    other.visible = False
        layer.visible = True
        uncertainty.visible = self.predict_panel.show_uncertainty.isChecked()
        if self.predict_panel.gene.currentText() != label:
            self.predict_panel.gene.blockSignals(True)
            self.predict_panel.gene.setCurrentText(label)
            self.predict_panel.gene.blockSignals(False)

    # -- saving --------------------------------------------------------------------------
    def save_predictions(self, path: str | None = None) -> tuple[str, str] | None:
        """Write the predicted spots + table into the slide's SpatialData store.

        A slide that does not come from a ``.zarr`` store (an ``.h5ad``, a plain image) is first
        written whole to a new store at ``path`` (asked for when None).
        """
        from napari_casper.histology.store import save_histology_predictions
        from napari_casper.io.stores import is_spatialdata_store, save_spatialdata

        try:
            job = self.result
            if job is None:
                raise CasperInputError("nothing to save yet: press Predict first.")
            store = job.store
            if not (store and Path(store).is_dir() and is_spatialdata_store(store)):
                if path is None:
                    path, _ = QFileDialog.getSaveFileName(self, "Save as new SpatialData store", "histology.zarr", "Zarr (*.zarr)")
                    if not path:
                        return None
                store = str(save_spatialdata(job.sdata if job.sdata is not None else slide_sdata(job.slide), path))
                job.store = store
                self._remember_store(job, store)
            names = save_histology_predictions(
                store, job.prediction, job.slide, job.diameter_px,
                source_spots=job.source_spots, source_ids=job.source_ids, labels=self.labels,
                model_info={"checkpoint": self.checkpoint_path, "head": job.prediction.head,
                            "training_sections": ", ".join(self.trained_on)},
            )  # fmt: skip
        except Exception as err:  # noqa: BLE001
            self.runner.fail(err)
            return None
        job.saved.append(names)
        self.runner.say(f"saved {len(job.prediction.coords)} spots as '{names[0]}' and their predictions as '{names[1]}' in {store}")
        return names

    def _remember_store(self, job: SlidePrediction, store: str) -> None:
        """Layers of the slide now belong to ``store`` (the next save goes there, not to a new file)."""
        for layer in self.viewer.layers:
            meta = layer.metadata.get(METADATA_KEY, {})
            if job.sdata is not None and meta.get("sdata") is job.sdata:
                meta["path"] = store
