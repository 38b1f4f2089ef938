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


def test_values_equal_the_textbook_definitions_on_real_patches(mob_sections):
    """The fast sums give what plain per-patch means and standard deviations give (float32 rounding only)."""
    from napari_casper.histology.patches import HED_FROM_RGB

    patches = mob_sections[2].patches((1, 2, 4), 32)[:60]
    x = patches.astype(np.float64) / 255.0
    hed = -np.log(np.clip(x, 1 / 255.0, 1.0)) @ HED_FROM_RGB.astype(np.float64)
    gy, gx = np.gradient(x.mean(axis=-1), axis=(-2, -1))
    channels = np.concatenate([x, hed, np.sqrt(gx**2 + gy**2)[..., None]], axis=-1)  # (n, s, P, P, 7)
    expected = np.stack([channels.mean(axis=(2, 3)), channels.std(axis=(2, 3))], axis=-1).reshape(len(patches), 42)
    np.testing.assert_allclose(handcrafted_features(patches), expected, rtol=1e-4, atol=1e-5)
