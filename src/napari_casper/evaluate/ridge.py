"""Ridge on reference cells: the plainest use of an scRNA-seq reference to impute spatial genes.

A linear map from the panel genes to the target genes is fit on the reference cells, which
measure both, and applied to the spots. Each panel gene is standardised within its own modality
(over the reference cells for the fit, over the spots for the prediction), so a platform's scale
or capture efficiency does not enter the map; the targets stay in reference units
(log-normalised, as every method here reports them). The ridge penalty is chosen by generalised
cross-validation on the reference cells alone (:class:`sklearn.linear_model.RidgeCV`), so nothing
about the spots' held-out genes can inform it.

Follows the imputation-method contract of ``docs/architecture.md``::

    impute(st, reference, target_genes, *, seed=0) -> (n_spots, len(target_genes)) array
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from anndata import AnnData

from napari_casper.evaluate.baselines import Preprocessing, check_targets, expression_of, varying_shared_expression

#: the penalties GCV chooses among (per unit-variance panel gene)
ALPHAS = np.logspace(-2, 5, 15)


def impute_ridge(
    st: AnnData,
    reference: AnnData,
    target_genes: Sequence[str],
    *,
    seed: int = 0,
    alphas: Sequence[float] = tuple(ALPHAS),
    preprocessing: Preprocessing = "auto",
) -> np.ndarray:
    """Ridge regression from panel genes to target genes, fit on the reference, applied to the spots.

    Genes constant in either data set (their standardised values are undefined) are left out of
    the map. Deterministic; ``seed`` is unused.

    Returns
    -------
    ``(st.n_obs, len(target_genes))`` float array, in reference units.
    """
    from sklearn.linear_model import RidgeCV

    targets = check_targets(reference, target_genes)
    spots, cells, _ = varying_shared_expression(
        st, reference, preprocessing=preprocessing, unusable="reference: no map from panel genes can be fit"
    )  # each standardised within its own modality
    y = expression_of(reference, targets, preprocessing=preprocessing, log=True)
    return RidgeCV(alphas=np.asarray(alphas, dtype=float)).fit(cells, y).predict(spots)
