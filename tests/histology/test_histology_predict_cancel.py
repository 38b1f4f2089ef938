"""Prediction phases and Cancel latency: timed, so this module runs alone (marker ``serial``).

A small model (one training section, one epoch, ridge head) is enough: what is measured is how
fast a prediction notices Cancel in each phase, not how good it is (test_histology_predict.py).
"""

from __future__ import annotations

import pytest
from histology_data import mob_sections  # noqa: F401 - fixture

from napari_casper.histology.config import HistologyConfig
from napari_casper.histology.train import train_histology

pytestmark = pytest.mark.serial


@pytest.fixture(scope="module")
def predictor(mob_sections):
    return train_histology(mob_sections[:1], HistologyConfig(epochs=1, predictor="ridge", threads=1, seed=0))


def test_prediction_phases_and_cancel_within_a_second(predictor, mob_sections):
    import threading
    import time

    import dask.array as da

    from napari_casper.errors import TrainingCancelled

    test = mob_sections[3]
    lazy = da.from_array(test.image, chunks=(256, 256, 3))  # read in bands, not per spot
    phases = []
    predictor.predict(lazy, test.coords, test.spot_diameter_px, genes=["Penk"] if "Penk" in predictor.genes else None, phase=phases.append)
    texts = [p.text for p in phases]
    assert texts[0].startswith("reading patches: spot 0 of") and "features and embedding" in texts and texts[-1] == "predicted"
    assert [p.done for p in phases] == sorted(p.done for p in phases) and len({p.total for p in phases}) == 1
    for phase in ("reading patches: spot 32", "features and embedding", "predicting"):
        cancel = threading.Event()
        clicked = []

        def on_phase(report, phase=phase, cancel=cancel, clicked=clicked):
            if not cancel.is_set() and report.text.startswith(phase):
                clicked.append(time.perf_counter())
                cancel.set()

        with pytest.raises(TrainingCancelled):
            predictor.predict(lazy, test.coords, test.spot_diameter_px, cancel=cancel, phase=on_phase)
        latency = time.perf_counter() - clicked[0]
        print(f"prediction cancelled at {phase!r} after {latency:.3f} s")
        assert latency < 1.0
