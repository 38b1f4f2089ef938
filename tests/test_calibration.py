"""The calibration's arithmetic: the level of trust and the conformal quantile."""

from __future__ import annotations

import numpy as np
import pytest

from napari_casper.casper.calibration import conformal_quantile, fit


def test_one_misled_validation_gene_does_not_move_every_genes_trust():
    rng = np.random.default_rng(0)
    pcc = rng.uniform(0.4, 0.9, 11)
    signs = np.repeat((pcc + 0.1)[:, None], 3, axis=1)  # every sign 0.1 above the honest r ...
    pcc[0], signs[0] = 0.15, 0.9  # ... but one gene's (the reference misleads it: r 0.15, signs high)
    truth = rng.normal(size=(200, 11))
    calibration = fit([f"g{i}" for i in range(11)], pcc, signs, truth, truth, np.ones(200))
    assert calibration.intercept == pytest.approx(-0.1)  # the median residual; the mean would be -0.168
    np.testing.assert_allclose(calibration.trust(signs[1:]), pcc[1:])


def test_conformal_quantile_is_the_finite_sample_rank():
    scores = np.arange(1, 20, dtype=float)  # n = 19: rank ceil(20 * 0.9) = 18
    assert conformal_quantile(scores, 0.9) == 18.0
