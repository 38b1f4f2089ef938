"""``napari-casper view``: the command a user runs instead of ``napari store.zarr`` (where napari's
built-in zarr reader takes a SpatialData store for a plain zarr array and fails)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_casper.io.store_writes import save_spatialdata

CONSOLE = str(Path(sys.executable).parent / "napari-casper")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from spatialdata.datasets import blobs
    from spatialdata.transformations import Identity, set_transformation

    sdata = blobs()
    set_transformation(sdata.labels["blobs_labels"], {"aligned": Identity()}, set_all=True)  # only in another system
    return save_spatialdata(sdata, tmp_path_factory.mktemp("view") / "blobs.zarr")


def view(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM", None)  # a real GL context: the display pytest-xvfb started
    return subprocess.run([CONSOLE, "view", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.gui
@pytest.mark.untimed
def test_view_opens_every_element_says_what_is_left_out_and_saves_a_screenshot(store, tmp_path):
    if not os.environ.get("DISPLAY"):
        pytest.skip("needs the X display pytest-xvfb starts")
    shot = tmp_path / "view.png"
    done = view(store, "--dock", "genes", "--screenshot", shot)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "not shown: blobs_labels (not in coordinate system 'global' (it is in ['aligned']))" in done.stdout
    shown = done.stdout.split("shown: ")[-1]
    for name in ("blobs_multiscale_labels", "blobs_polygons", "blobs_multipolygons", "blobs_points", "blobs_circles", "blobs_image:0"):
        assert name in shown, done.stdout
    pixels = np.asarray(Image.open(shot))[:, :, :3]
    assert pixels.shape[0] > 300 and (pixels.max(axis=2) > 60).mean() > 0.2  # a window with the data drawn in it

    aligned = view(store, "--coordinate-system", "aligned", "--screenshot", tmp_path / "aligned.png")
    assert aligned.returncode == 0, aligned.stderr[-2000:]
    assert aligned.stdout.split("shown: ")[-1].splitlines()[0] == "blobs_labels, blobs_labels (centres)"  # the cells and their centres


def test_view_refuses_a_coordinate_system_the_store_lacks(store, tmp_path):
    done = view(store, "--coordinate-system", "microns", "--screenshot", tmp_path / "x.png")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--coordinate-system 'microns' is not in blobs.zarr; it has ['aligned', 'global']" in done.stderr
    missing = view(tmp_path / "absent.zarr")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
