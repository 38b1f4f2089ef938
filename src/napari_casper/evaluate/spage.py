"""SpaGE (Abdelaal et al. 2020) as packaged by tissue-sc, run as a peer under the strict protocol.

``tissue.main.spage_impute`` is called directly: TISSUE's top-level ``predict_gene_expression``
lowercases gene names and runs its own cross-validation, which the protocol does instead. SpaGE
aligns the two data sets with principal vectors (domain adaptation) and averages each spot's
nearest reference cells in that space. It gets the same log-normalised input as every method here
(:func:`napari_casper.evaluate.baselines.expression_of`) and ``n_pv`` principal vectors, half the
shared genes up to :data:`MAX_PV` (SpaGE requires fewer than the shared genes; the rule is fixed,
not tuned on any benchmark).

Optional: ``pip install napari-casper[peers]`` (tissue-sc).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from napari_casper.errors import CasperInputError
from napari_casper.evaluate.baselines import Preprocessing, check_targets, expression_of, shared_genes

MAX_PV = 30


def _import_spage():
    try:
        from tissue.main import spage_impute
    except ImportError as err:
        raise CasperInputError(
            "the spage method needs tissue-sc: pip install 'napari-casper[peers]' (or pip install tissue-sc)"
        ) from err
    return spage_impute


def impute_spage(
    st: AnnData,
    reference: AnnData,
    target_genes: Sequence[str],
    *,
    seed: int = 0,
    n_pv: int | None = None,
    preprocessing: Preprocessing = "auto",
) -> np.ndarray:
    """SpaGE's prediction of ``target_genes`` at the spots of ``st`` (reference units).

    Deterministic (SpaGE has no random step); ``seed`` is unused.
    """
    spage_impute = _import_spage()
    targets = check_targets(reference, target_genes)
    shared = shared_genes(st, reference)
    spots = expression_of(st, shared, preprocessing=preprocessing, log=True)
    keep = spots.std(axis=0) > 0
    shared = [g for g, kept in zip(shared, keep) if kept]
    if len(shared) < 2:
        raise CasperInputError(f"SpaGE needs at least 2 shared genes that vary over the spots; {len(shared)} do.")
    genes = list(dict.fromkeys(shared + targets))
    cells = expression_of(reference, genes, preprocessing=preprocessing, log=True)
    spatial = AnnData(spots[:, keep], var=pd.DataFrame(index=shared))
    rna = AnnData(cells, var=pd.DataFrame(index=genes))
    n_pv = n_pv or max(1, min(MAX_PV, len(shared) // 2))
    predicted = spage_impute(spatial, rna, targets, n_pv=n_pv)
    return np.asarray(predicted[targets], dtype=float)
