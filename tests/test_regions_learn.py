"""Every spot's class learned from a few labelled ones (napari_casper.regions.learn), against known truth."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_path

from napari_casper.errors import CasperInputError
from napari_casper.evaluate.regions import TUMOUR_LABELS, f1, log_normalised, marker_otsu, simulate_strokes
from napari_casper.regions import region_membership, smooth_over_neighbours
from napari_casper.regions.learn import StrokeLearner, learn_classes
from napari_casper.regions.neighbours import neighbour_graph, smooth_steps


def two_tissues(seed: int = 0, side: int = 30, n_genes: int = 60):
    """A hexagonal-ish grid; the left third and a disc on the right are "tumour" (a gene programme of
    20 genes up), the rest "stroma" (another 20 up); Poisson counts."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(side, dtype=float), np.arange(side, dtype=float))
    x = x + 0.5 * (y % 2)
    coords = np.c_[x.ravel(), y.ravel() * np.sqrt(3) / 2] * 100
    tumour = (coords[:, 0] < 1000) | (np.hypot(coords[:, 0] - 2200, coords[:, 1] - 1300) < 500)
    rate = np.full((len(coords), n_genes), 2.0)
    rate[np.ix_(tumour, np.arange(20))] *= 2.0
    rate[np.ix_(~tumour, np.arange(20, 40))] *= 2.0
    counts = rng.poisson(rate).astype(float)
    return coords, counts, np.where(tumour, "tumour", "stroma")


def test_neighbour_smoothing_is_one_graph_for_scores_and_features():
    coords, counts, _ = two_tissues()
    graph = neighbour_graph(coords)
    assert graph.shape == (len(coords), len(coords))
    np.testing.assert_allclose(np.asarray(graph.sum(axis=1)).ravel(), 1.0)  # every spot of a grid has neighbours
    assert 6 <= graph[len(coords) // 2 + 15].nnz <= 8  # an inner spot: its grid neighbours
    values = counts[:, 0]
    by_hand = 0.5 * values + 0.5 * np.array([values[graph[i].indices].mean() for i in range(len(values))])
    np.testing.assert_allclose(smooth_over_neighbours(values, coords), by_hand)
    np.testing.assert_allclose(smooth_steps(counts[:, :3], graph, 1)[:, 0], by_hand)
    lone = np.array([[0.0, 0.0], [1e6, 1e6]])
    np.testing.assert_allclose(smooth_over_neighbours(np.array([1.0, 5.0]), lone, radius=10), [1.0, 5.0])


def test_five_percent_of_the_spots_label_the_rest_of_a_synthetic_section():
    coords, counts, truth = two_tissues()
    learner = StrokeLearner(log_normalised(counts), coords)
    scores = []
    for seed in range(3):
        labels = simulate_strokes(truth, 0.05, seed)
        learned = learner.learn(labels)
        marked = labels != None  # noqa: E711 - elementwise
        assert (learned.labels[marked] == labels[marked]).all()  # the user's marks are kept
        assert learned.labelled.sum() == marked.sum()
        scores.append(f1(learned.labels == "tumour", truth == "tumour"))
        np.testing.assert_allclose(learned.probabilities.sum(axis=1), 1.0)
    assert np.mean(scores) > 0.95, scores
    regions = learned.to_regions()
    assert set(regions.classes) == {"tumour", "stroma"} and set(regions.origins) == {"suggested"}
    # the outlines hold the spots of their class: the left band and the disc are tumour
    tumour_outlines = [p for p, c in zip(regions.world_polygons(), regions.classes) if c == "tumour"]
    assert len(tumour_outlines) >= 2
    from shapely import points

    inside = np.zeros(len(coords), bool)
    for polygon in tumour_outlines:
        inside |= polygon.contains(points(coords))
    assert f1(inside, truth == "tumour") > 0.9


def test_strokes_need_two_classes_with_two_spots_each():
    coords, counts, truth = two_tissues()
    features = np.random.default_rng(0).normal(size=(len(coords), 4))
    graph = neighbour_graph(coords)
    labels = np.full(len(coords), None, dtype=object)
    labels[:5] = "tumour"
    with pytest.raises(CasperInputError, match="at least two classes"):
        learn_classes(features, labels, spatial_graph=graph, coords=coords)
    labels[10] = "stroma"
    with pytest.raises(CasperInputError, match=r"\['stroma'\] have a single example spot"):
        learn_classes(features, labels, spatial_graph=graph, coords=coords)
    with pytest.raises(CasperInputError, match="one label"):
        learn_classes(features, labels[:-1], spatial_graph=graph, coords=coords)


@pytest.mark.parametrize("section", ["A1", "D1", "E1"])
def test_few_strokes_agree_with_the_pathologist_on_her2_sections(section):
    """5 % of the spots labelled with the pathologist's class: the tumour F1 beats the ERBB2 baseline
    (the full table, 5 seeds, is benchmarks/bench_regions_suggest.py)."""
    import anndata as ad

    adata = ad.read_h5ad(shared_path("her2st_labels", f"{section}.h5ad"))
    truth = adata.obs["label"].astype(str).to_numpy()
    expression = log_normalised(adata.X)
    learner = StrokeLearner(expression, adata.obsm["spatial"])
    tumour = np.isin(truth, TUMOUR_LABELS)
    learned = learner.learn(simulate_strokes(truth, 0.05, 0))
    score = f1(learned.probability(TUMOUR_LABELS) > 0.5, tumour)
    baseline = f1(marker_otsu(expression, list(adata.var_names)), tumour)
    assert score > 0.8 and score > baseline - 0.01, (score, baseline)


def test_learned_regions_count_the_spots_of_their_class(tmp_path):
    """The outlines, as regions, hold the spots labelled with their class (spot membership by centre)."""
    import anndata as ad

    from napari_casper.io.convert import anndata_to_spatialdata
    from napari_casper.regions import spot_context

    coords, counts, truth = two_tissues(seed=1)
    adata = ad.AnnData(counts)
    adata.obsm["spatial"] = coords
    ctx = spot_context(anndata_to_spatialdata(adata))
    learned = StrokeLearner.from_spots(ctx).learn(simulate_strokes(truth, 0.05, 1))
    regions = learned.to_regions()
    inside = region_membership(ctx, regions)
    for name in ("tumour", "stroma"):
        held = inside[:, np.asarray(regions.classes) == name].any(axis=1)
        assert f1(held, learned.labels == name) > 0.95
