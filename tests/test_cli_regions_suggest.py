"""``napari-casper regions-suggest``, run as a user runs it, on the packaged MOB1 section."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from conftest import mob_path

from napari_casper.io.convert import anndata_to_spatialdata
from napari_casper.io.stores import read_spatialdata
from napari_casper.regions import HER2_TUMOUR_MARKERS, load_regions, spot_context, suggest_regions
from napari_casper.regions.learn import StrokeLearner

CONSOLE = str(Path(sys.executable).parent / "napari-casper")


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([CONSOLE, "regions-suggest", *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def marked(tmp_path_factory):
    """MOB1 with an obs column ``marks``: 6 spots of the granule layer (highest Penk) and 6 of the
    outer layers (lowest), the rest empty, as a user would mark a few spots per class."""
    adata = ad.read_h5ad(mob_path("MOB1"))
    penk = np.asarray(adata[:, "Penk"].X.todense()).ravel() / np.asarray(adata.X.sum(axis=1)).ravel()
    order = np.argsort(penk)
    marks = np.full(adata.n_obs, None, dtype=object)
    marks[order[-6:]] = "granule"
    marks[order[:6]] = "outer"
    adata.obs["marks"] = marks
    folder = tmp_path_factory.mktemp("regions")
    shutil.copyfile(mob_path("MOB1").with_suffix(".jpg"), folder / "MOB1.jpg")  # the image the table names
    path = folder / "mob1_marked.h5ad"
    adata.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def learned_store(marked, tmp_path_factory):
    """``regions-suggest MOB1_marked.h5ad --from-labels marks --out mob1.zarr``: the run and the store it wrote."""
    out = tmp_path_factory.mktemp("learned") / "mob1.zarr"
    return run(marked, "--from-labels", "marks", "--out", out, "--truth", "marks"), out


def test_from_labels_writes_a_new_store_with_every_spot_learned(marked, learned_store):
    done, out = learned_store
    assert done.returncode == 0, done.stderr
    assert "learned from 12 labelled spots" in done.stdout and f"wrote {out}" in done.stdout
    assert "F1 of 'granule' against marks: 1.000" in done.stdout  # the marked spots keep their class
    assert "autosharding" not in done.stderr
    sdata = read_spatialdata(out)
    assert {"spots", "regions"} <= set(sdata.shapes) and {"table", "regions_table", "regions_spots"} <= set(sdata.tables)
    # what the command saved is what the engine learns from the same marks
    ctx = spot_context(anndata_to_spatialdata(ad.read_h5ad(marked)))
    expected = StrokeLearner.from_spots(ctx).learn(ctx.table.obs["marks"].to_numpy()[ctx.rows])
    regions = load_regions(out, "regions")
    assert sorted(regions.classes) == sorted(expected.to_regions().classes)
    saved = sdata.tables["regions_spots"].obs.set_index("spot_id")["class"].astype(str)
    agree = (saved.loc[np.asarray(ctx.instance_ids)].to_numpy() == expected.labels).mean()
    assert agree > 0.95  # spot centres inside the outlines vs the learned labels (outline edges differ)


def test_markers_into_a_store_add_new_elements_and_never_replace(learned_store):
    _, out = learned_store
    done = run(out, "--markers", "Penk", "--class", "granule")
    assert done.returncode == 0, done.stderr
    assert "Saved" in done.stdout and "'regions_2'" in done.stdout
    sdata = read_spatialdata(out)
    assert {"regions", "regions_2"} <= set(sdata.shapes) and len(load_regions(out, "regions")) >= 2  # kept
    expected = suggest_regions(spot_context(sdata, "spots"), ["Penk"])
    assert len(load_regions(out, "regions_2")) == len(expected.polygons)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "needs --out"),
        (["--out", "{input}"], "input"),
    ],
)
def test_bad_command_lines_are_refused_with_the_fix(marked, tmp_path, args, message):
    args = [a.format(tmp=tmp_path, input=marked) for a in args]
    done = run(marked, *args)
    assert done.returncode in (1, 2) and message in done.stderr, done.stderr
    assert not list(tmp_path.glob("*.zarr"))


def test_help_names_the_default_markers():
    assert ",".join(HER2_TUMOUR_MARKERS) in run("--help").stdout
