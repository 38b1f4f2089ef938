"""The slide-level out-of-distribution score: near 1 for held-out sections like the training ones, far above
for another tissue (napari_casper.histology.reach)."""

from __future__ import annotations

import numpy as np
import pytest
from histology_data import her2_sections, mob_sections  # noqa: F401 - fixtures

from napari_casper.histology.checkpoint import load_predictor, save_predictor
from napari_casper.histology.config import HistologyConfig
from napari_casper.histology.reach import WARN_ABOVE, TrainingReach, nearest_distance, stain_means
from napari_casper.histology.train import train_histology


def test_appearance_and_stain_are_in_units_of_the_training_sections_spread():
    rng = np.random.default_rng(0)
    centre = rng.normal(size=12)
    features = np.vstack([centre + rng.normal(size=(200, 12)) for _ in range(3)])
    sections = np.repeat([0, 1, 2], 200)
    stain = np.array([[0.50, 0.55, 0.28], [0.52, 0.54, 0.30], [0.49, 0.57, 0.27]])
    reach = TrainingReach.fit(features, sections, stain)
    like = reach.measure(centre + rng.normal(size=(300, 12)), [0.51, 0.55, 0.29])
    assert 0.8 < like.appearance < 1.25 and like.stain < 1.0 and not like.out_of_reach
    other = reach.measure(centre + 4 + rng.normal(size=(300, 12)), [0.9, 0.3, 0.6])
    assert other.appearance > 3 and other.stain > 3 and other.out_of_reach
    assert other.score == max(other.appearance, other.stain) and "WARNING" in other.describe()
    again = TrainingReach.from_payload(reach.to_payload())  # as the checkpoint stores it
    assert again.measure(centre + rng.normal(size=(50, 12)), stain[0]).score > 0
    np.testing.assert_allclose(nearest_distance(features[:5], features), 0.0)
    # stain means are the optical density of the pixels
    patches = np.full((2, 1, 4, 4, 3), 255, np.uint8)
    patches[..., 0] = 100
    np.testing.assert_allclose(stain_means(patches), [-np.log(100 / 255), 0.0, 0.0], atol=1e-9)


@pytest.fixture(scope="module")
def mob_model(mob_sections):
    return train_histology(mob_sections[:2], HistologyConfig(epochs=2, predictor="ridge", threads=1))


@pytest.fixture(scope="module")
def held_out_scores(mob_model, mob_sections):
    return [mob_model.predict(s.image, s.coords, s.spot_diameter_px).reach for s in mob_sections[2:]]


def test_held_out_mob_sections_are_within_reach(held_out_scores, mob_model, mob_sections, tmp_path):
    for reach in held_out_scores:
        assert 0.5 < reach.score < WARN_ABOVE and not reach.out_of_reach, reach.describe()
    # saved with the model: the loaded one scores the same
    path = save_predictor(mob_model, tmp_path / "mob.pt")
    section = mob_sections[3]
    again = load_predictor(path).predict(section.image, section.coords, section.spot_diameter_px).reach
    assert again.score == pytest.approx(held_out_scores[1].score, rel=1e-5)


def test_a_her2_section_is_out_of_reach_of_a_mob_model(held_out_scores, mob_model, her2_sections):
    her2 = her2_sections[0]
    reach = mob_model.predict(her2.image, her2.coords, her2.spot_diameter_px).reach
    assert reach.out_of_reach and reach.score > 2 * max(r.score for r in held_out_scores), reach.describe()
