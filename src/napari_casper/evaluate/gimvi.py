"""gimVI (scvi-tools' ``scvi.external.GIMVI``; Lopez et al. 2019), an optional peer.

A joint variational autoencoder of the reference and the spatial data: a shared latent space,
the spatial decoder reconstructing only the panel, the sequencing decoder every gene. The
held-out genes of a spot are the sequencing decoder's values at the spot's latent code
(``get_imputed_values``). Its likelihoods are count models (``zinb`` for the reference, ``nb``
for the spots, as scvi-tools' defaults), so both sides are handed counts: counts as they are;
values on a linear scale rounded; log-normalised values (below 20) back through ``expm1``;
other values (ranks) scaled so that the data set's largest value is 1,000, then rounded. Predictions are the normalised imputed values, log1p-transformed
to the units the other methods report.

Install with ``pip install "napari-casper[peers]"`` (scvi-tools 1.4.2 installs on Python 3.11;
1.5 needs 3.12). Follows the imputation-method contract of ``docs/architecture.md``::

    impute(st, reference, target_genes, *, seed=0) -> (n_spots, len(target_genes)) array
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from anndata import AnnData

from napari_casper.casper.preprocess import dense, detect_normalization
from napari_casper.errors import CasperInputError, PeerMethodFailed
from napari_casper.evaluate.baselines import check_targets, shared_genes

#: training epochs (issue #15 measured 20-100 epochs on Drosophila alike: 0.22-0.26 PCC)
EPOCHS = 30
#: learning rate of the one retry after a training that diverged to NaN (scvi-tools' default is 1e-3)
RETRY_LR = 1e-4


def pseudo_counts(adata: AnnData) -> np.ndarray:
    """Counts for gimVI's count likelihoods (see the module docstring)."""
    values = dense(adata.X).astype(np.float64)
    kind = detect_normalization(adata.X, already_logged="log1p" in adata.uns)
    if kind in ("counts", "log1p"):  # counts, or values on a linear scale (CASPER would log1p them)
        return np.rint(np.clip(values, 0, None))
    if values.max(initial=0) < 20:  # log-normalised
        return np.rint(np.expm1(np.clip(values, 0, None)))
    return np.rint(np.clip(values, 0, None) / max(values.max(initial=0), 1e-12) * 1000)


def _trained(GIMVI, seq: AnnData, spatial: AnnData, epochs: int, seed: int):
    """gimVI trained at scvi-tools' learning rate; once more at :data:`RETRY_LR` if that diverges to NaN
    (torch then refuses the NaN parameters of a distribution); :class:`PeerMethodFailed` if that diverges too."""
    import scvi

    errors = []
    for lr in (None, RETRY_LR):
        scvi.settings.seed = seed
        model = GIMVI(seq, spatial)
        try:
            model.train(max_epochs=epochs, accelerator="cpu", enable_progress_bar=False, plan_kwargs={"lr": lr} if lr else None)
            return model
        except ValueError as err:
            if "invalid values" not in str(err):
                raise
            errors.append(f"learning rate {lr or 'default (1e-3)'}")
    raise PeerMethodFailed(f"gimVI's training diverged to NaN at {' and at '.join(errors)}")


def impute_gimvi(
    st: AnnData, reference: AnnData, target_genes: Sequence[str], *, seed: int = 0, epochs: int = EPOCHS
) -> np.ndarray:
    """Predict ``target_genes`` at the spots with gimVI trained on the shared genes."""
    try:
        from scvi.external import GIMVI
    except ImportError as err:
        raise CasperInputError('gimVI needs scvi-tools: pip install "napari-casper[peers]"') from err
    targets = check_targets(reference, target_genes)
    shared = shared_genes(st, reference)
    seq = AnnData(pseudo_counts(reference).astype(np.float32), var=reference.var[[]].copy())
    seq.obs_names = reference.obs_names.astype(str)
    spatial = AnnData(pseudo_counts(st[:, shared]).astype(np.float32))
    spatial.var_names = list(shared)
    spatial.obs_names = st.obs_names.astype(str)
    # cells or spots without a count left would break the library-size model: kept, with one count
    for data in (seq, spatial):
        empty = data.X.sum(axis=1) == 0
        data.X[empty, 0] = 1.0
    GIMVI.setup_anndata(seq)
    GIMVI.setup_anndata(spatial)
    model = _trained(GIMVI, seq, spatial, int(epochs), seed)
    _, imputed = model.get_imputed_values(normalized=True)
    columns = [list(seq.var_names).index(g) for g in targets]
    return np.log1p(np.asarray(imputed)[:, columns])
