"""The bad-input suite's world: copies of the packaged samples and the bad files made from them.

One folder per test session (``world``) holds good inputs (a Drosophila ST section and reference,
a MOB section with its H&E), two small trained models (CASPER and histology) and every kind of bad
file the cases feed the commands. Cases must leave it byte-identical (:func:`snapshot`).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
from conftest import drosophila_atlas, drosophila_reference, mob_path

#: files a killed or refused run must never leave behind (scratch, locks, partial outputs)
JUNK_MARKERS = (".casper-tmp-", ".casper-lock", ".casper-partial", ".tmp")


def snapshot(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (folders are walked)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def junk(folder: Path) -> list[str]:
    """Scratch files, lock files or partial outputs under ``folder``."""
    return [str(p) for p in folder.rglob("*") if any(m in p.name for m in JUNK_MARKERS)]


def _bad_files(w: Path) -> None:
    import anndata as ad
    import pandas as pd
    import torch

    st = ad.read_h5ad(w / "st.h5ad")
    ref = ad.read_h5ad(w / "ref.h5ad")
    mob = ad.read_h5ad(w / "MOB1.h5ad")
    (w / "table.csv").write_text("gene,a,b\neve,1,2\n")
    (w / "st_trunc.h5ad").write_bytes((w / "st.h5ad").read_bytes()[:20_000])
    (w / "ref_trunc.h5ad").write_bytes((w / "ref.h5ad").read_bytes()[:50_000])
    (w / "MOB1_trunc.h5ad").write_bytes((w / "MOB1.h5ad").read_bytes()[:30_000])
    (w / "csv_named.h5ad").write_text("spot,eve\n1,2\n")
    (w / "folder.h5ad").mkdir()
    (w / "trunc.jpg").write_bytes((w / "MOB1.jpg").read_bytes()[:30_000])
    (w / "text.jpg").write_text("not an image")
    (w / "notes.pt").write_text("not a model")
    torch.save({"format": "something", "payload": pd.Timestamp("2024-01-01")}, w / "pickle.pt")  # needs unpickling code
    st[:0].copy().write_h5ad(w / "st_empty.h5ad")
    st[:1].copy().write_h5ad(w / "st_one.h5ad")
    dup = st.copy()
    names = list(dup.var_names)
    names[1] = names[0]  # the second panel gene renamed to the first: a duplicated panel gene
    dup.var_names = names
    dup.write_h5ad(w / "st_dup.h5ad")
    renamed = st.copy()
    renamed.var_names = [f"X{g}" for g in st.var_names]
    renamed.write_h5ad(w / "st_renamed.h5ad")
    nan = st.copy()
    nan.X = np.asarray(nan.X, dtype=np.float32).copy()
    nan.X[0, 0] = np.nan
    nan.write_h5ad(w / "st_nan.h5ad")
    neg = st.copy()
    neg.X = np.asarray(neg.X, dtype=np.float32) - 5
    neg.write_h5ad(w / "st_negative.h5ad")
    flat = st.copy()
    flat.X = np.zeros(flat.shape, dtype=np.float32)
    flat.write_h5ad(w / "st_zero_counts.h5ad")
    ref[:1].copy().write_h5ad(w / "ref_one.h5ad")
    labelled = ref.copy()
    labelled.obs["area"] = np.random.default_rng(0).random(ref.n_obs)  # a float measurement, not cell types
    labelled.obs["cell_id"] = [f"c{i}" for i in range(ref.n_obs)]
    labelled.write_h5ad(w / "ref_labels.h5ad")
    far = mob.copy()
    far.obsm["spatial"] = far.obsm["spatial"] + 50_000
    far.uns["image"] = "MOB1.jpg"
    far.write_h5ad(w / "MOB1_far.h5ad")
    mob[:0].copy().write_h5ad(w / "MOB1_empty.h5ad")
    nocounts = ad.AnnData(obs=mob.obs.copy(), obsm={"spatial": mob.obsm["spatial"]}, uns={"image": "MOB1.jpg"})
    nocounts.write_h5ad(w / "MOB1_nocounts.h5ad")
    ids = mob.copy()
    ids.var_names = [f"ENSMUSG{i:011d}" for i in range(ids.n_vars)]
    ids.uns["image"] = "MOB1.jpg"
    ids.write_h5ad(w / "MOB1_ids.h5ad")
    nospatial = mob.copy()
    del nospatial.obsm["spatial"]
    nospatial.uns["image"] = "MOB1.jpg"
    nospatial.write_h5ad(w / "MOB1_nospatial.h5ad")
    noimage = mob.copy()
    noimage.uns.pop("image", None)
    noimage.write_h5ad(w / "spots_noimage.h5ad")
    (w / "not_a_store.zarr").mkdir()
    (w / "not_a_store.zarr" / "readme.txt").write_text("just a folder")


@functools.cache
def build_world() -> Path:
    """Inputs, two trained models and the bad files (see the module docstring), built once per session."""
    from napari_casper.cli import main

    w = Path(tempfile.mkdtemp(prefix="napari-casper-bad-input-"))
    atexit.register(shutil.rmtree, w, ignore_errors=True)
    st = drosophila_atlas()
    st[::4, [g for g in st.var_names if g not in ("eve", "ftz")]].copy().write_h5ad(w / "st.h5ad")
    ref = drosophila_reference()
    keep = [g for g in ref.var_names if g in set(st.var_names)] + [g for g in ref.var_names if g not in set(st.var_names)][:100]
    ref[::3, keep].copy().write_h5ad(w / "ref.h5ad")  # 433 cells: training takes seconds
    for name in ("MOB1", "MOB2"):
        for suffix in (".h5ad", ".jpg"):
            shutil.copyfile(mob_path(name).with_suffix(suffix), w / f"{name}{suffix}")
    assert main(["train", "--st", str(w / "st.h5ad"), "--reference", str(w / "ref.h5ad"), "--epochs", "1",
                 "--steps-per-epoch", "2", "--device", "cpu", "--quiet", "--out", str(w / "casper.pt")]) == 0
    assert main(["histology-train", str(w / "MOB1.h5ad"), str(w / "MOB2.h5ad"), "--epochs", "1", "--predictor", "ridge",
                 "--threads", "1", "--n-model-genes", "50", "--genes", "Penk,Nrgn", "--out", str(w / "histology.pt")]) == 0
    _bad_files(w)
    return w
