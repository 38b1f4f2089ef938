"""Where the Histology widget saves a prediction: the slide's SpatialData store (a new one when it has none)."""

from __future__ import annotations

from napari_casper._widgets.histology.slide import SlidePrediction, slide_sdata
from napari_casper.io.elements import METADATA_KEY


def save_prediction(job: SlidePrediction, store: str | None, path: str | None, labels: dict, model_info: dict):
    """Worker: a new store at ``path`` first when ``store`` is None (the slide is written whole), then
    the predicted spots + table as new elements. Returns ``(job, store, new, (spots name, table name))``."""
    from napari_casper.histology.store import save_histology_predictions
    from napari_casper.io.store_writes import save_spatialdata

    new = store is None
    if new:
        store = str(save_spatialdata(job.sdata if job.sdata is not None else slide_sdata(job.slide), path))
    names = save_histology_predictions(
        store, job.prediction, job.slide, job.diameter_px,
        source_spots=job.source_spots, source_ids=job.source_ids, labels=labels, model_info=model_info,
    )  # fmt: skip
    return job, store, new, names


def remember_store(viewer, job: SlidePrediction, store: str) -> None:
    """Layers of the slide now belong to ``store`` (the next save goes there, not to a new file)."""
    for layer in viewer.layers:
        meta = layer.metadata.get(METADATA_KEY, {})
        if job.sdata is not None and meta.get("sdata") is job.sdata:
            meta["path"] = store
