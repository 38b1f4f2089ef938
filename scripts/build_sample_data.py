"""Rebuild the packaged sample data in src/napari_casper/sample_data/ from ../shared/data.

Run from the repository root: ``.venv/bin/python scripts/build_sample_data.py``.
Only BSD/MIT sets are shipped (Drosophila BDTNP + Karaiskos: BSD-3; MOB: MIT).
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
    keep = np.asarray(hvg["highly_variable"]) | ref.var_names.isin(atlas.var_names)
    ref = ref[:, keep].copy()
    ref.X = sp.csr_matrix(ref.X, dtype=np.float32)
    ref.uns["subset"] = f"{N_HVG} most variable genes (scanpy seurat flavour) plus every atlas gene"
    ref.write_h5ad(OUT / "drosophila_reference.h5ad", compression="gzip")


def build_mob() -> None:
    mob = ad.read_h5ad(SHARED / "mob" / "MOB1.h5ad")
    # gene symbols as var_names, Ensembl ids in var["gene_ids"], biotype in var["gene_type"] (categorical)
    mob.uns["image"] = "mob1.jpg"
    mob.X = sp.csr_matrix(mob.X, dtype=np.float32)
    mob.write_h5ad(OUT / "mob1.h5ad", compression="gzip")
    shutil.copyfile(SHARED / "mob" / "MOB1.jpg", OUT / "mob1.jpg")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    build_drosophila()
    build_mob()
    for file in sorted(OUT.iterdir()):
        print(f"{file.name}: {file.stat().st_size / 1e6:.2f} MB")
