"""A really full disk (a small tmpfs filled to its last kilobytes), not a simulated error: the
commands and the store writer name the path, say the disk is full, keep the earlier result and
leave nothing half-written. Mounting needs root (CAP_SYS_ADMIN); elsewhere these tests skip and
test_faults.py's simulated ENOSPC cases still run."""

from __future__ import annotations

import errno
import os
import subprocess
import uuid
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from bad_world import build_world, junk, snapshot
from conftest import mob_path

from napari_casper.cli import main
from napari_casper.io.convert import anndata_to_spatialdata
from napari_casper.io.store_writes import save_spatialdata
from napari_casper.regions import RegionSet, save_regions

#: what the small file system leaves free once filled: less than any result below needs
LEFT_FREE = 16 * 1024


@pytest.fixture(scope="module")
def world() -> Path:
    return build_world()


@pytest.fixture()
def disk(tmp_path):
    """A 24 MB tmpfs mounted in ``tmp_path`` (unmounted afterwards); skips when mounting is not allowed."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs a small tmpfs, and mounting one needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a small tmpfs is not allowed here ({done.stderr.strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path, leave: int = LEFT_FREE) -> Path:
    """Fill ``folder``'s file system up to ``leave`` bytes free; returns the filler file."""
    filler = folder / f"filler-{uuid.uuid4().hex[:6]}"
    block = b"\0" * (256 * 1024)
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(block)
                handle.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC
    with open(filler, "r+b") as handle:  # give back a little, so writes start and fail midway
        handle.truncate(max(0, filler.stat().st_size - leave))
    return filler


def test_impute_on_a_full_disk_is_named_and_leaves_nothing(world, disk, capsys):
    out = disk / "imputed.h5ad"
    argv = ["impute", "--model", world / "casper.pt", "--st", world / "st.h5ad", "--genes", "eve,ftz,hb", "--out", out]
    filler = fill(disk)
    assert main(list(map(str, argv))) == 1
    err = capsys.readouterr().err
    assert f"cannot write {out}: the disk is full" in err and "Traceback" not in err
    assert not out.exists() and junk(disk) == []  # nothing half-written takes the space
    filler.unlink()
    assert main(list(map(str, argv))) == 0  # with room again, the same command works
    assert list(ad.read_h5ad(out).var_names) == ["eve", "ftz", "hb"]


def test_histology_predict_on_a_full_disk_keeps_the_earlier_result(world, disk, capsys):
    out = disk / "predicted.h5ad"
    argv = ["histology-predict", "--model", world / "histology.pt", "--spots", world / "MOB1.h5ad", "--out", out]
    assert main(list(map(str, argv))) == 0  # an earlier result, written while there was room
    earlier = out.read_bytes()
    filler = fill(disk)
    assert main(list(map(str, argv))) == 1  # (HDF5 used to crash the process here: SIGSEGV)
    err = capsys.readouterr().err
    assert f"cannot write {out}: the disk is full" in err and "intact" in err and "Traceback" not in err
    assert out.read_bytes() == earlier  # the earlier result is whole
    assert junk(disk) == []
    filler.unlink()
    assert main(list(map(str, argv))) == 0 and ad.read_h5ad(out).n_obs > 200


def test_a_full_disk_leaves_the_store_as_it_was(disk, capsys):
    store = disk / "mob1.zarr"
    save_spatialdata(anndata_to_spatialdata(ad.read_h5ad(mob_path("MOB1"))), store)
    before = snapshot(store)
    square = np.array([[100.0, 100.0], [100.0, 400.0], [400.0, 400.0], [400.0, 100.0]])
    many = RegionSet(vertices=[square + 3 * i for i in range(400)], shape_types=["polygon"] * 400, classes=["tumour"] * 400)
    fill(disk, leave=4 * 1024)
    with pytest.raises(Exception, match="the disk is full") as caught:
        save_regions(store, many)
    assert str(store) in str(caught.value) and "as it was" in str(caught.value)
    assert snapshot(store) == before  # byte for byte
    assert junk(disk) == []
