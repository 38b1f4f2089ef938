"""A small same-technology imputation case: a few hundred cells of one section, a reference of others.

Many real sections are small (a biopsy, one field of view) and a model with millions of
spots to learn from is not what a user has there. This case is built from a Xenium section
(cells x panel genes, raw counts): the ``n_spots`` cells nearest the section's centre, one
contiguous patch, are the spatial data; ``n_reference`` cells drawn at random from the rest of
the section are the reference. The two sets are disjoint. Scored with the strict protocol over
two folds (half the panel hidden at a time), as ``docs/benchmarks.md`` reports it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from anndata import AnnData, read_h5ad

from napari_casper.errors import CasperInputError


def small_section(
    source: str | Path | AnnData, *, n_spots: int = 300, n_reference: int = 1000, seed: int = 0
) -> tuple[AnnData, AnnData]:
    """``(spatial, reference)`` AnnData from one section: a central patch and disjoint random cells.

    Parameters
    ----------
    source
        a section (``.h5ad`` path or AnnData) with ``obsm["spatial"]``.
    n_spots, n_reference
        cells in the patch and in the reference.
    seed
        seed of the reference draw.
    """
    adata = source if isinstance(source, AnnData) else read_h5ad(source)
    if "spatial" not in adata.obsm:
        raise CasperInputError("the section has no obsm['spatial'] coordinates: the patch is chosen by position")
    if adata.n_obs < n_spots + n_reference:
        raise CasperInputError(
            f"the section has {adata.n_obs} cells; the case needs {n_spots} + {n_reference}: lower n_spots or n_reference"
        )
    xy = np.asarray(adata.obsm["spatial"], dtype=float)[:, :2]
    distance = ((xy - np.median(xy, axis=0)) ** 2).sum(axis=1)
    patch = np.sort(np.argsort(distance, kind="stable")[:n_spots])
    rest = np.setdiff1d(np.arange(adata.n_obs), patch)
    reference = np.sort(np.random.default_rng(seed).choice(rest, n_reference, replace=False))
    return adata[patch].copy(), adata[reference].copy()
