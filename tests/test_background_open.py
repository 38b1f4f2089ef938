"""What napari's own Open reads in its worker before the layers reach the GUI thread."""

from __future__ import annotations

import dask.array as da
import numpy as np

from napari_casper._widgets.common.background_open import loaded


def test_the_coarse_lazy_levels_are_computed_in_the_worker_and_the_fine_ones_stay_lazy():
    full = np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    levels = [da.from_array(full, chunks=(128, 128, 3))]
    while levels[-1].shape[0] > 64:
        levels.append(da.coarsen(np.mean, levels[-1], {0: 2, 1: 2}, trim_excess=True).astype(np.uint8))
    cap = levels[2].nbytes  # 128 x 128 x 3
    data, kwargs, kind = loaded((levels, {"multiscale": True, "rgb": True}, "image"), cap_bytes=cap)
    assert kind == "image" and kwargs == {"multiscale": True, "rgb": True}
    assert [isinstance(level, np.ndarray) for level in data] == [False, False, True, True]
    for mine, theirs in zip(data, levels, strict=True):
        np.testing.assert_array_equal(np.asarray(mine), theirs.compute())
    # one lazy image, small enough; other layers as they were
    single, _, _ = loaded((levels[1], {}, "image"), cap_bytes=cap * 4)
    assert isinstance(single, np.ndarray)
    points = (np.zeros((3, 2)), {"name": "spots"}, "points")
    assert loaded(points) is points
