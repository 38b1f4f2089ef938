"""SIGKILL while saving several elements at once (a regions layer and its table), and while exporting
CSV: the store or file is never left broken, the earlier content is intact, and the next write
completes (or discards) what the killed one left."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from bad_world import junk, snapshot
from conftest import mob_path

from napari_casper.io.convert import anndata_to_spatialdata
from napari_casper.io.store_writes import save_spatialdata
from napari_casper.io.stores import read_spatialdata
from napari_casper.regions import RegionSet, load_regions, save_regions

#: saves two regions into the store sys.argv[1]; the process kills itself (SIGKILL) at the named moment
KILLED_SAVE = """
import os, signal, sys
import numpy as np
from napari_casper.io import store_writes
from napari_casper.regions import RegionSet, save_regions

store, moment = sys.argv[1], sys.argv[2]
def die():
    os.kill(os.getpid(), signal.SIGKILL)

if moment == "while writing":  # the elements are half written into the temporary store
    original_note = store_writes._write_note
    store_writes._write_note = lambda *a, **k: die()
else:  # "between the renames": the regions are in the store, their table not yet
    original_move = store_writes.move_into_place
    def move_then_die(*args, **kwargs):
        target = original_move(*args, **kwargs)
        die()
    store_writes.move_into_place = move_then_die
square = np.array([[100.0, 100.0], [100.0, 400.0], [400.0, 400.0], [400.0, 100.0]])
regions = RegionSet(vertices=[square, square + 500], shape_types=["polygon", "polygon"], classes=["tumour", "stroma"])
save_regions(store, regions)
"""

#: exports sys.argv[2] rows as CSV to sys.argv[1], slowed after the first block so it can be killed mid-file
SLOW_EXPORT = """
import sys, time
import numpy as np, pandas as pd
from napari_casper.regions import export_csv

original = pd.DataFrame.to_csv
def slow(self, path, **kwargs):
    with open(path, "w") as handle:
        handle.write(original(self.head(10), None, **kwargs))
        handle.flush()
        time.sleep(120)
pd.DataFrame.to_csv = slow
export_csv(pd.DataFrame({"region": np.arange(int(sys.argv[2])), "n_spots": 1}), sys.argv[1])
"""


@pytest.fixture()
def store(tmp_path) -> Path:
    path = tmp_path / "mob1.zarr"
    save_spatialdata(anndata_to_spatialdata(ad.read_h5ad(mob_path("MOB1"))), path)
    return path


def _regions() -> RegionSet:
    square = np.array([[100.0, 100.0], [100.0, 400.0], [400.0, 400.0], [400.0, 100.0]])
    return RegionSet(vertices=[square, square + 500], shape_types=["polygon", "polygon"], classes=["tumour", "stroma"])


def _run_killed(script: str, *args) -> None:
    child = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr


def test_sigkill_before_the_commit_leaves_the_store_as_it_was(store, tmp_path):
    before = snapshot(store)
    _run_killed(KILLED_SAVE, store, "while writing")
    assert snapshot(store) == before  # byte for byte: nothing of the killed save is in the store
    assert list(tmp_path.glob(".mob1.zarr.casper-tmp-*"))  # only its temporary store beside it ...
    saved = save_regions(store, _regions())  # ... which the next save removes
    assert saved.shapes_name == "regions"  # the killed save took no name
    assert junk(tmp_path) == []
    assert list(load_regions(store, "regions").classes) == ["tumour", "stroma"]


def test_sigkill_between_the_renames_is_completed_by_the_next_write(store, tmp_path):
    before = snapshot(store)
    _run_killed(KILLED_SAVE, store, "between the renames")
    assert before.items() <= snapshot(store).items()  # every file the store had is there, unchanged
    half = read_spatialdata(store)  # and the store still opens
    assert "regions_table" not in half.tables  # the table had not been moved in yet

    saved = save_regions(store, _regions())  # the next save first completes the killed one
    assert saved.shapes_name == "regions_2"
    for name in ("regions", "regions_2"):  # both pairs whole: polygons with their classes
        loaded = load_regions(store, name)
        assert list(loaded.classes) == ["tumour", "stroma"] and len(loaded) == 2
    assert junk(tmp_path) == []


def test_sigkill_while_exporting_csv_keeps_the_earlier_file(tmp_path):
    from napari_casper.regions import export_csv

    path = tmp_path / "statistics.csv"
    export_csv(pd.DataFrame({"region": ["tumour A"], "n_spots": [12]}), path)
    earlier = path.read_bytes()
    child = subprocess.Popen([sys.executable, "-c", SLOW_EXPORT, str(path), "100000"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not [p for p in tmp_path.glob(".statistics.csv.casper-tmp-*") if p.stat().st_size > 0]:
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the temporary CSV never appeared"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert path.read_bytes() == earlier  # the earlier export is whole
    export_csv(pd.DataFrame({"region": ["tumour B"], "n_spots": [3]}), path)  # the next export clears the scratch
    assert pd.read_csv(path)["region"].tolist() == ["tumour B"]
    assert junk(tmp_path) == []
