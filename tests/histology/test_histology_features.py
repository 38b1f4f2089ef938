"""Handcrafted colour / stain / texture features on real MOB patches."""

from __future__ import annotations

import numpy as np
from histology_data import mob_sections  # noqa: F401 - fixture

from napari_casper.histology.features import feature_names, handcrafted_features


def test_shapes_names_and_finite(mob_sections):
    patches = mob_sections[0].patches((1, 2, 4), 32)
    feats = handcrafted_features(patches)
    assert feats.shape == (len(patches), 42) and feats.dtype == np.float32
    assert len(feature_names(3)) == 42 and feature_names(3)[0] == "s0_R_mean"
    assert np.isfinite(feats).all()
    assert (feats.std(axis=0) > 0).all()  # every feature varies over real tissue


def test_features_measure_what_they_name():
    white = np.full((1, 1, 8, 8, 3), 255, np.uint8)
    purple = np.zeros((1, 1, 8, 8, 3), np.uint8)
    purple[..., :] = (120, 60, 160)
    stripes = np.zeros((1, 1, 8, 8, 3), np.uint8)
    stripes[:, :, :, (np.arange(8) // 2) % 2 == 1] = 255  # 2-px stripes
    names = feature_names(1)
    f_white, f_purple, f_stripes = (dict(zip(names, handcrafted_features(p)[0])) for p in (white, purple, stripes))
    assert f_white["s0_H_mean"] == 0 and f_white["s0_grad_mean"] == 0  # glass: no stain, no texture
    assert f_purple["s0_H_mean"] > 0.1 and f_purple["s0_R_std"] < 1e-5
    assert f_stripes["s0_grad_mean"] > 0.3


def test_chunking_does_not_change_values(mob_sections):
    patches = mob_sections[1].patches((1, 2, 4), 32)[:50]
    assert np.allclose(handcrafted_features(patches, chunk=7), handcrafted_features(patches))
