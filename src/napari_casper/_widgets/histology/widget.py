"""The Histology dock widget: train H&E -> expression on sections, predict on an H&E-only slide.

Everything it computes comes from :mod:`napari_casper.histology` (Qt-free). Every step that reads
files or computes (adding a section file, training, prediction, saving, checkpoints) runs in a
worker thread (:class:`BackgroundRunner`); the GUI thread only adds layers. Training and
prediction report named phases (:class:`~napari_casper.histology.fit.Phase`: "reading section 2
of 3", "features", "choosing the head: model 2 of 3, epoch 1 of 8", "final model: epoch 3 of
12", "predicting") through a Qt signal to the panel's status and to ONE napari progress bar over
the whole run; Cancel takes effect within about a second in every phase. Predicted genes are
shown as ``histology:<gene>`` layers placed with the image layer's own transform (they lie on the
H&E exactly); the uncertainty is drawn beside the slide (:mod:`.prediction_view`).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QFileDialog, QLabel, QWidget

from napari_casper._widgets.common.background import (
    BackgroundRunner,
    RunsInBackground,
    notify_info,
    progress_relay,
    warm_up_in_background,
)
from napari_casper._widgets.common.layer_sync import watch
from napari_casper._widgets.common.layout import scrolled_body
from napari_casper._widgets.histology.jobs import predict_job, train_job
from napari_casper._widgets.histology.predict_panel import PredictPanel
from napari_casper._widgets.histology.prediction_view import show_prediction
from napari_casper._widgets.histology.saving import remember_store, save_prediction
from napari_casper._widgets.histology.sections_panel import SectionsPanel, sources_in_file
from napari_casper._widgets.histology.slide import SlidePrediction, slide_of, spot_geometry
from napari_casper._widgets.histology.train_panel import HistologyTrainPanel
from napari_casper.errors import CasperInputError
from napari_casper.io.elements import METADATA_KEY


class HistologyWidget(RunsInBackground, QWidget):
    """Train on sections with H&E + counts; predict genes and uncertainty on the open slide."""

    #: emitted (GUI thread) with every :class:`~napari_casper.histology.fit.Phase` of the running step
    phase_reported = Signal(object)
    #: the status and progress bar follow the phases at most this often (seconds), and at every new unit done
    SHOW_EVERY = 0.2

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
        self._predicted_text = ""
        self.cancelled = False
        self.phases: list = []  # the Phase reports of the current (or last) run, in order
        self._cancel = threading.Event()
        self._stage_history: list[dict] = []
        self._stage = None
        self._job: str | None = None  # "training", "prediction", ... while a worker runs
        self._job_done = False
        self._shown_at, self._shown_done = 0.0, -1
        self._latest, self._updating_bar = None, False
        self.progress_bar = None
        self._bar_timer = QTimer(self)
        self._bar_timer.setInterval(int(self.SHOW_EVERY * 1000))
        self._bar_timer.timeout.connect(self._update_bar)
        self._relay = progress_relay(self._on_progress)
        watch(napari_viewer)  # colour bars and units for continuous layers; their glyphs rendered ahead

        self.sections = SectionsPanel(napari_viewer)
        self.train_panel = HistologyTrainPanel()
        self.predict_panel = PredictPanel(napari_viewer)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.runner = BackgroundRunner(self.message.setText, on_finish=self._finished)

        self.scroll = scrolled_body(self, [self.sections, self.train_panel, self.predict_panel, self.message])

        self.sections.add_h5ad.clicked.connect(lambda: self.add_section_file("h5ad"))
        self.sections.add_zarr.clicked.connect(lambda: self.add_section_file("zarr"))
        self.train_panel.train_button.clicked.connect(lambda: self.start_training())
        self.train_panel.cancel_button.clicked.connect(lambda: self.cancel())
        self.train_panel.save_button.clicked.connect(lambda: self.save_checkpoint())
        self.train_panel.load_button.clicked.connect(lambda: self.load_checkpoint())
        self.predict_panel.predict_button.clicked.connect(lambda: self.start_prediction())
        self.predict_panel.cancel_button.clicked.connect(lambda: self.cancel_prediction())
        self.predict_panel.gene.currentTextChanged.connect(lambda label: self.show_gene(label))
        self.predict_panel.show_uncertainty.toggled.connect(self._uncertainty_toggled)
        self.predict_panel.save_button.clicked.connect(lambda: self.save_predictions())
        # torch's first import holds the GIL ~1 s: now, not at the first click (after the dock's first paint)
        self._warm = warm_up_in_background("histology", _warm_up, viewer=napari_viewer, after_paint_of=self)

    @property
    def warmed_up(self) -> bool:
        """The libraries training and prediction need are imported (see :func:`~napari_casper.histology.fit.warm_up`)."""
        return self._warm.finished.is_set()

    # -- plumbing ------------------------------------------------------------------------
    def _begin(self, job: str, progress_title: str | None = None) -> None:
        """A new step: earlier messages no longer hold; a progress bar over the whole run."""
        self.message.setText("")
        self._cancel.clear()
        self._job, self._job_done = job, False
        self.phases = []
        self._shown_at, self._shown_done = 0.0, -1
        if progress_title:
            from napari.utils import progress

            self.progress_bar = progress(total=0, desc=progress_title)
            self._latest = None
            self._bar_timer.start()

    def _finished(self) -> None:
        """Worker ended (result handled, cancelled or failed): buttons back, bar closed, status true."""
        self.train_panel.set_running(False)
        self.predict_panel.set_running(False)
        self._bar_timer.stop()
        if self.progress_bar is not None:
            self.progress_bar.close()
            self.progress_bar = None
        if not self._job_done:  # the worker raised: say so where the step's status is
            failed = f"failed: {self.message.text()}"
            if self._job == "training":
                self.train_panel.status.setText(f"training {failed} ({self._model_state()})")
            elif self._job == "prediction":
                self.predict_panel.status.setText(f"prediction {failed} (the layers shown are unchanged)")
        self._job = None

    def _done(self) -> None:
        self._job_done = True

    def _model_state(self) -> str:
        if self.predictor is None:
            return "no model yet"
        return f"the model of {len(self.predictor.genes)} genes, head {self.predictor.head}, is kept"

    def _require_predictor(self):
        if self.predictor is None:
            raise CasperInputError("no trained model: press Train (or Load checkpoint...) first.")
        return self.predictor

    def _on_progress(self, item) -> None:
        """GUI thread: an epoch (loss plot) or a phase (status and the one progress bar)."""
        from napari_casper.histology.fit import EpochLog

        if isinstance(item, EpochLog):
            if item.stage != self._stage:
                self._stage, self._stage_history = item.stage, []
            self._stage_history.append({"epoch": item.epoch, "train_loss": item.loss, "val_loss": item.val_loss})
            self.train_panel.show_epoch(item, self._stage_history)
            return
        if self._job not in ("training", "prediction") or self._cancel.is_set() or self._job_done:
            return  # "cancelling..." stays until the worker has stopped; after the result, its word is the last
        self.phases.append(item)
        self.phase_reported.emit(item)
        if self._cancel.is_set() or self._job is None or self._job_done:
            return  # cancelled (or even ended) by a handler of the report
        now = time.perf_counter()
        if item.done == self._shown_done and now - self._shown_at < self.SHOW_EVERY:
            return  # spot counts arrive every few milliseconds; a status shown 5x a second is enough
        self._shown_at, self._shown_done = now, item.done
        panel = self.train_panel if self._job == "training" else self.predict_panel
        panel.show_phase(item)
        self._latest = item  # napari's bar follows on a timer: updating it runs queued events (re-entrancy)

    def _update_bar(self) -> None:
        """Timer (GUI thread): move the one progress bar to the latest phase."""
        bar, item = self.progress_bar, self._latest
        if bar is None or item is None or self._updating_bar:
            return
        self._updating_bar = True
        try:
            if bar.total != item.total:
                bar.total = item.total
            if self.progress_bar is bar and item.done > bar.n:
                bar.update(item.done - bar.n)
            if self.progress_bar is bar:
                bar.set_description(item.text)
        finally:
            self._updating_bar = False

    # -- sections ------------------------------------------------------------------------
    def add_section_file(self, kind: str = "h5ad", path: str | None = None) -> None:
        """Add the sections of a file (asked for when ``path`` is None), read in a worker."""
        if path is None:
            path = self.sections.ask_path(kind)
            if not path:
                return
        self._begin("adding")
        self.runner.run(sources_in_file, self._sections_added, str(path))

    def _sections_added(self, sources) -> None:
        self._done()
        labels = self.sections.add_sources(sources)
        self.message.setText(f"added {', '.join(labels)}")

    # -- training ------------------------------------------------------------------------
    def start_training(self) -> None:
        try:
            sources = self.sections.chosen()
            requested = self.sections.requested_genes()
            n_variable = self.sections.n_variable.value()
            config = self.train_panel.config()
            encoder = self.train_panel.encoder_source()
        except Exception as err:  # noqa: BLE001
            self.runner.fail(err)
            return
        self._begin("training", "histology training")
        self.cancelled = False
        self._stage_history, self._stage = [], None
        self.train_panel.set_running(True)
        self.train_panel.plot.update_history([])
        self.train_panel.status.setText(f"opening {len(sources)} section(s)...")
        self._training_labels = [source.label for source in sources]
        self.runner.run(self._train, self._trained, sources, requested, n_variable, config, encoder)

    def _train(self, *args):
        """Worker: sections -> genes -> model; None when cancelled."""
        return train_job(*args, emit=self._relay.event.emit, cancel=self._cancel)

    def cancel(self) -> None:
        """Stop training within about a second, in any phase (the previous model, if any, is kept)."""
        if self._job != "training":
            return
        self._cancel.set()
        self.train_panel.status.setText("cancelling...")

    def _trained(self, result) -> None:
        self._done()
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
        text = (
            f"{how}: {len(predictor.genes)} genes, head {predictor.head}"
            + (f", {predictor.encoder.spec.describe()}" if predictor.encoder is not None else "")
            + (f" (leave-one-section-out: {scores})" if scores else "")
            + (f", spot diameter {diameter:.1f} px" if diameter else "")
        )
        self.train_panel.status.setText(text)
        self.message.setText(f"histology model {how}; next: 3. Predict on a slide.")
        notify_info(f"histology model {how}.")

    def save_checkpoint(self, path: str | None = None) -> None:
        try:
            predictor = self._require_predictor()
            if path is None:
                path, _ = QFileDialog.getSaveFileName(self, "Save histology model", "histology.pt", "Checkpoint (*.pt)")
                if not path:
                    return
        except Exception as err:  # noqa: BLE001
            self.runner.fail(err)
            return
        from napari_casper.histology.checkpoint import save_predictor

        self._begin("saving")
        self.runner.run(save_predictor, self._checkpoint_saved, predictor, path)

    def _checkpoint_saved(self, path) -> None:
        self._done()
        self.checkpoint_path = str(path)
        self.runner.say(f"histology model saved to {path}")

    def load_checkpoint(self, path: str | None = None) -> None:
        from napari_casper.histology.checkpoint import load_predictor

        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load histology model", "", "Checkpoint (*.pt)")
            if not path:
                return
        encoder, _ = self.train_panel.encoder_source()  # where the model's encoder is now, if it moved
        self._begin("loading")
        self.runner.run(lambda: (load_predictor(path, encoder=encoder), str(path)), self._checkpoint_loaded)

    def _checkpoint_loaded(self, loaded) -> None:
        self._done()
        self.predictor, path = loaded
        self.checkpoint_path, self.trained_on = path, []
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
        self._begin("prediction", "histology prediction")
        self.predict_panel.set_running(True)
        self.predict_panel.status.setText("predicting...")
        meta = layer.metadata.get(METADATA_KEY, {})
        job = SlidePrediction(None, slide, 0.0, layer.name, spots, sdata=meta.get("sdata"), store=meta.get("path"))
        self.runner.run(self._predict, self._predicted, predictor, job, diameter, pitch, layout)

    def _predict(self, *args) -> SlidePrediction | None:
        """Worker: spots in image pixels (measured, or virtual over the tissue), then the prediction."""
        return predict_job(*args, emit=self._relay.event.emit, cancel=self._cancel)

    def cancel_prediction(self) -> None:
        """Stop the running prediction within about a second; the layers shown stay as they are."""
        if self._job != "prediction":
            return
        self._cancel.set()
        self.predict_panel.status.setText("cancelling...")

    def _predicted(self, job: SlidePrediction | None) -> None:
        self._done()
        if job is None:
            self.predict_panel.status.setText("prediction cancelled; the layers shown are unchanged")
            return
        if job.image_layer not in self.viewer.layers:
            self.predict_panel.status.setText("prediction not shown: its image layer was closed")
            raise CasperInputError(f"image layer {job.image_layer!r} was closed while predicting; predict again.")
        job.geometry = spot_geometry(job, self.viewer.layers[job.image_layer])
        self.result = job
        genes = job.prediction.genes
        shown = next((g for g in self.requested if g in genes), genes[0])
        where = job.source_spots or "virtual spots"
        self._predicted_text = (
            f"predicted {len(genes)} genes at {len(job.prediction.coords)} spots ({where}, diameter {job.diameter_px:.1f} px, "
            f"head {job.prediction.head})"
        )
        reach = job.prediction.reach
        if reach is not None and reach.out_of_reach:  # say it where it stays in view, and as a notification
            self._predicted_text += f". {reach.describe()}"
            self.runner.say(reach.describe())
        self.predict_panel.set_genes([self.label(g) for g in genes], self.label(shown))
        self.show_gene(self.label(shown))

    def label(self, gene: str) -> str:
        """The name a gene is shown by (the name it was asked for, else its var name)."""
        return self.labels.get(gene, gene)

    def gene_of(self, label: str) -> str:
        inverse = {v: k for k, v in self.labels.items()}
        return inverse.get(label, label)

    def show_gene(self, label: str | None = None) -> None:
        """Show ``histology:<label>`` (and its uncertainty beside the slide when ticked); other genes are hidden."""
        job = self.result
        if job is None:
            return
        label = label or self.predict_panel.gene.currentText()
        gene = self.gene_of(label)
        if gene not in job.prediction.genes:
            self.runner.fail(CasperInputError(f"{label!r} was not predicted; choose a gene of the list."))
            return
        show_prediction(self.viewer, job, gene, label, uncertainty=self.predict_panel.show_uncertainty.isChecked())
        self.predict_panel.status.setText(f"{self._predicted_text}; showing {label}: choose another gene below")
        if self.predict_panel.gene.currentText() != label:
            self.predict_panel.gene.blockSignals(True)
            self.predict_panel.gene.setCurrentText(label)
            self.predict_panel.gene.blockSignals(False)

    def _uncertainty_toggled(self, on: bool) -> None:
        self.show_gene()
        if on and self.result is not None:
            self.viewer.reset_view()  # the slide and the uncertainty beside it, both in view

    # -- saving --------------------------------------------------------------------------
    def save_predictions(self, path: str | None = None) -> None:
        """Write the predicted spots + table into the slide's SpatialData store (in a worker).

        A slide that does not come from a ``.zarr`` store (an ``.h5ad``, a plain image) is first
        written whole to a new store at ``path`` (asked for when None).
        """
        from napari_casper.io.stores import is_spatialdata_store

        try:
            job = self.result
            if job is None:
                raise CasperInputError("nothing to save yet: press Predict first.")
            store = job.store
            new_store = not (store and Path(store).is_dir() and is_spatialdata_store(store))
            if new_store and path is None:
                path, _ = QFileDialog.getSaveFileName(self, "Save as new SpatialData store", "histology.zarr", "Zarr (*.zarr)")
                if not path:
                    return
        except Exception as err:  # noqa: BLE001
            self.runner.fail(err)
            return
        self._begin("saving")
        model_info = {"checkpoint": self.checkpoint_path, "head": job.prediction.head, "training_sections": ", ".join(self.trained_on)}
        self.runner.run(save_prediction, self._saved, job, store if not new_store else None, path, dict(self.labels), model_info)

    def _saved(self, saved) -> None:
        self._done()
        job, store, new, names = saved
        if new:
            job.store = store
            remember_store(self.viewer, job, store)
        job.saved.append(names)
        n = len(job.prediction.coords)
        if names[0] == job.source_spots:  # cells drawn as labels or polygons: a table annotating them
            self.runner.say(f"saved the predictions at {n} cells of '{names[0]}' as table '{names[1]}' in {store}")
        else:
            self.runner.say(f"saved {n} spots as '{names[0]}' and their predictions as '{names[1]}' in {store}")


def _warm_up() -> None:
    """Import what training and prediction need (torch's first import holds the GIL ~1 s) and warm
    the engine up (:func:`~napari_casper.histology.fit.warm_up`); :func:`warm_up_in_background`
    then freezes the GC. The loss plot's canvas comes last: the plot is made on the GUI thread when it is
    ready, and should not compete with these imports for the GIL."""
    import napari_casper.histology.checkpoint  # noqa: F401 - imported for its side effect (loaded once)
    import napari_casper.histology.predict  # noqa: F401
    import napari_casper.histology.spatial  # noqa: F401
    import napari_casper.histology.train  # noqa: F401
    from napari_casper._widgets.common.loss_plot import import_backend
    from napari_casper.histology.fit import warm_up

    warm_up()
    import_backend()
