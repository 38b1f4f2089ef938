"""What the Histology widget's workers run (Qt-free bodies, in a worker thread): training and prediction.

Both report :class:`~napari_casper.histology.fit.Phase` objects through ``emit`` (a Qt signal's
``emit``, queued to the GUI thread) and stop within about a second of ``cancel`` being set,
returning None. Steps that cannot be interrupted run through
:func:`~napari_casper.histology.fit.run_cancellable`.
"""

from __future__ import annotations

import numpy as np

from napari_casper.errors import TrainingCancelled


def train_job(sources, requested, n_variable, config, encoder_source=(None, None), *, emit, cancel):
    """Sections -> genes -> a trained :class:`HistologyPredictor`; None when cancelled.

    ``encoder_source``: ``(path, timm architecture)`` of a pretrained patch encoder, or ``(None, None)``."""
    from napari_casper.histology.fit import Phase, run_cancellable
    from napari_casper.histology.genes import training_genes
    from napari_casper.histology.patches import suggest_patch_size
    from napari_casper.histology.train import train_histology

    try:
        encoder = None
        if encoder_source[0]:  # a wrong encoder fails before any section is read
            from napari_casper.histology.pretrained import load_encoder

            emit(Phase(f"loading the patch encoder {encoder_source[0]}", 0, 0))
            encoder = run_cancellable(load_encoder, encoder_source[0], architecture=encoder_source[1], cancel=cancel)
        sections = []
        for i, source in enumerate(sources):
            emit(Phase(f"opening section {i + 1} of {len(sources)} ({source.label})", 0, 0))
            sections.append(run_cancellable(source.section, cancel=cancel))
        emit(Phase("choosing the genes", 0, 0))
        genes, labels = run_cancellable(training_genes, sections, n_variable, requested, cancel=cancel)
        diameter = float(np.median([s.spot_diameter_px for s in sections]))
        config.predict_genes = genes
        config.patch_size = suggest_patch_size(diameter)
        config.spot_diameter_px = diameter
        config.gene_labels = labels  # the requested genes, shown first
        return train_histology(sections, config, progress=emit, cancel=cancel, phase=emit, encoder=encoder)
    except TrainingCancelled:
        return None


def predict_job(predictor, job, diameter, pitch, layout, *, emit, cancel):
    """Spots in image pixels (the slide's own, or virtual over the detected tissue), then the
    prediction, into ``job`` (a :class:`~.slide.SlidePrediction`); None when cancelled."""
    from napari_casper.histology.fit import Phase, run_cancellable
    from napari_casper.histology.spatial import spots_in_image
    from napari_casper.histology.tissue import virtual_spots_for

    try:
        if job.source_spots is not None:
            emit(Phase(f"finding the spots of {job.source_spots} on the image", 0, 0))
            coords, diameter, ids = run_cancellable(spots_in_image, job.sdata, job.source_spots, job.slide, cancel=cancel)
            job.source_ids = np.asarray(ids)
        else:
            emit(Phase("detecting the tissue", 0, 0))
            tissue = run_cancellable(job.slide.detect_tissue, cancel=cancel, what="tissue detection")
            coords = virtual_spots_for(tissue, diameter, pitch, layout=layout)
        job.diameter_px = float(diameter)
        job.prediction = predictor.predict(job.slide.data, coords, diameter, cancel=cancel, phase=emit, cache_key=job.slide.cache_key)
    except TrainingCancelled:
        return None
    return job
