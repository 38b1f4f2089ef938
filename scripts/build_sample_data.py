"""Rebuild the packaged sample data in src/napari_casper/sample_data/ from ../shared/data.

Run from the repository root: ``.venv/bin/python scripts/build_sample_data.py``.
Only BSD/MIT sets are shipped (Drosophila BDTNP + Karaiskos: BSD-3; MOB: MIT).

* ``drosophila_atlas.h5ad``: the BDTNP atlas, X as in the source; ``obsm["spatial"]`` is a
  lateral 2-D projection, the source's 3-D positions are kept in ``obsm["spatial_3d"]``.
* ``drosophila_reference.h5ad``: the Karaiskos reference restricted to its 2000 most variable
  genes, every atlas gene, and every gene named like an atlas gene up to case (``Gk`` beside the
  atlas' ``gk``, ``H`` beside ``h``), so that case-insensitive gene matching meets the same
  ambiguities as with the full reference.
* ``MOB1..4.h5ad`` + ``MOB1..4.jpg``: the four mouse olfactory bulb sections, byte-for-byte
  copies of ``../shared/data/mob`` (gene symbols as var_names, Ensembl ids in ``var["gene_ids"]``,
  ``uns["image"]`` names the jpg beside them). Four sections make leave-one-section-out
  histology work (train on three, predict the fourth) without ``../shared``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import scanpy as sc
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "src" / "napari_casper" / "sample_data"
N_HVG = 2000
MOB_SECTIONS = ("MOB1", "MOB2", "MOB3", "MOB4")
#: names of earlier builds, removed before the new files are written
STALE = ("mob1.h5ad", "mob1.jpg")


def build_drosophila() -> None:
    atlas = ad.read_h5ad(SHARED / "drosophila" / "bdtnp_insitu.h5ad")
    xyz = np.asarray(atlas.obsm["spatial"], dtype=float)
    atlas.obsm["spatial_3d"] = xyz
    # lateral view: anterior-posterior (x) against dorsal-ventral (z); the atlas is a half embryo (y >= 0)
    atlas.obsm["spatial"] = xyz[:, [0, 2]]
    atlas.uns["coordinate_units"] = "micron"
    atlas.uns["projection"] = "obsm['spatial'] = (x, z) of obsm['spatial_3d'] (lateral view)"
    atlas.X = np.asarray(atlas.X, dtype=np.float32)
    atlas.write_h5ad(OUT / "drosophila_atlas.h5ad", compression="gzip")

    ref = ad.read_h5ad(SHARED / "drosophila" / "karaiskos_scrna.h5ad")
    hvg = sc.pp.highly_variable_genes(ref, n_top_genes=N_HVG, inplace=False, flavor="seurat")
    atlas_upper = {g.upper() for g in atlas.var_names}
    case_variants = np.array([g.upper() in atlas_upper for g in ref.var_names])
    keep = np.asarray(hvg["highly_variable"]) | ref.var_names.isin(atlas.var_names) | case_variants
    ref = ref[:, keep].copy()
    ref.X = sp.csr_matrix(ref.X, dtype=np.float32)
    ref.uns["subset"] = f"{N_HVG} most variable genes (scanpy seurat flavour) plus every atlas gene and every gene named like an atlas gene up to case"
    ref.write_h5ad(OUT / "drosophila_reference.h5ad", compression="gzip")


def build_mob() -> None:
    for name in STALE:
        (OUT / name).unlink(missing_ok=True)  # first: on a case-insensitive disk mob1.* *is* MOB1.*
    for name in MOB_SECTIONS:
        source = SHARED / "mob" / f"{name}.h5ad"
        mob = ad.read_h5ad(source)
        # the layout the loaders and the histology code expect (the files are copied unchanged)
        assert mob.uns["image"] == f"{name}.jpg" and "gene_ids" in mob.var and sp.issparse(mob.X), name
        assert "Penk" in mob.var_names, f"{name}: gene symbols expected as var_names"
        shutil.copyfile(source, OUT / f"{name}.h5ad")
        shutil.copyfile(source.with_suffix(".jpg"), OUT / f"{name}.jpg")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    build_drosophila()
    build_mob()
    for file in sorted(OUT.iterdir()):
        print(f"{file.name}: {file.stat().st_size / 1e6:.2f} MB")
    print(f"total {sum(f.stat().st_size for f in OUT.iterdir()) / 1e6:.2f} MB")
