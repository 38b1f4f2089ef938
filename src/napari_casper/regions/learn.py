"""Label every spot from a few labelled ones (a few strokes per class), and outline the classes.

The user marks a few spots per class (or draws small regions around them); every other spot
gets the class that its expression and its surroundings suggest:

1. **features** (:func:`spot_features`, once per section): the first principal components of the
   log-normalised expression of the highly variable genes (scanpy), each averaged with the
   spot's neighbours a few times (``(1 - 0.5) * own + 0.5 * neighbours' mean``, repeated), so a
   feature describes the spot and its surroundings;
2. **classifier**: multinomial logistic regression (scikit-learn) fit on the labelled spots, giving
   every spot a probability per class;
3. **propagation over the tissue**: ``p <- (1 - a) * p0 + a * G p`` over a graph mixing the
   spatial neighbours and the nearest spots in feature space, with the labelled spots held at their
   own class (a few rounds of label spreading), so isolated disagreements are smoothed away;
4. **outlines**: each class is outlined where it is the most probable class
   (:class:`~napari_casper.regions.suggest.ScoreField`), ready to accept as editable regions.

How the settings were chosen and what they score against a pathologist's labels (5 % of the spots
labelled at random, 5 seeds) is in ``docs/regions.md`` and ``benchmarks/bench_regions_suggest.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_casper.errors import CasperInputError
from napari_casper.regions.neighbours import neighbour_graph, row_normalised, smooth_steps, spot_pitch

#: principal components of the expression used as features
N_COMPONENTS = 10
#: neighbour-averaging rounds applied to the features (weight 0.5 each)
FEATURE_SMOOTHING_STEPS = 5
#: nearest spots in feature space joined to the spatial neighbours in the propagation graph
FEATURE_NEIGHBOURS = 10
#: share of the spatial neighbours in the propagation graph (the rest: feature-space neighbours)
SPATIAL_SHARE = 0.5
#: weight of the neighbours' probabilities in each propagation round, and the number of rounds
PROPAGATION_WEIGHT = 0.8
PROPAGATION_ROUNDS = 20
#: inverse regularisation strength of the logistic regression
CLASSIFIER_C = 1.0
#: highly variable genes kept for the principal components (all genes when there are fewer)
N_TOP_GENES = 2000


def spot_features(expression, coords: np.ndarray, *, graph=None) -> np.ndarray:
    """``(n_spots, N_COMPONENTS)`` features: principal components of the highly variable genes, smoothed over neighbours.

    ``expression`` is the log-normalised ``(n_spots, n_genes)`` matrix (dense or sparse), e.g.
    :meth:`~napari_casper.regions.spots.SpotContext.expression`.
    """
    import anndata as ad
    import scanpy as sc

    n_spots, n_genes = expression.shape
    if n_spots < 3 or n_genes < 2:
        raise CasperInputError(
            f"{n_spots} spots x {n_genes} genes are too few to learn regions from: use a section with "
            "at least 3 spots and 2 measured genes."
        )
    adata = ad.AnnData(X=expression.astype(np.float32))
    keep = np.ones(n_genes, dtype=bool)
    if n_genes > N_TOP_GENES:
        sc.pp.highly_variable_genes(adata, n_top_genes=N_TOP_GENES, flavor="seurat")
        keep = adata.var["highly_variable"].to_numpy()
    data = adata.X[:, keep]
    spread = np.asarray((data.power(2) if hasattr(data, "power") else data**2).mean(axis=0)).ravel()
    if not np.any(spread > 0):
        raise CasperInputError("every gene is zero in every spot: there is no expression to learn regions from.")
    n_components = int(min(N_COMPONENTS, n_spots - 1, int(keep.sum()) - 1))
    components = sc.pp.pca(data, n_comps=max(n_components, 1), random_state=0)
    graph = neighbour_graph(coords) if graph is None else graph
    return smooth_steps(components, graph, FEATURE_SMOOTHING_STEPS)


def propagation_graph(features: np.ndarray, spatial_graph):
    """Row-normalised mix of the spatial neighbours and the :data:`FEATURE_NEIGHBOURS` nearest spots in feature space."""
    from sklearn.neighbors import kneighbors_graph

    k = int(min(FEATURE_NEIGHBOURS, len(features) - 1))
    similar = kneighbors_graph(features, k, include_self=False)
    similar = row_normalised(similar.maximum(similar.T))
    return row_normalised(SPATIAL_SHARE * spatial_graph + (1 - SPATIAL_SHARE) * similar)


@dataclass
class LearnedClasses:
    """A class for every spot, learned from the labelled ones.

    Attributes
    ----------
    classes
        The class names, in the columns' order of ``probabilities``.
    probabilities
        ``(n_spots, n_classes)`` after propagation (rows sum to 1).
    labelled
        ``(n_spots,)`` bool: the spots the user labelled (they keep their class).
    coords
        ``(n_spots, 2)`` spot centres (x, y) in ``coordinate_system``.
    """

    classes: list[str]
    probabilities: np.ndarray
    labelled: np.ndarray
    coords: np.ndarray
    coordinate_system: str = "global"

    @property
    def labels(self) -> np.ndarray:
        """``(n_spots,)`` the most probable class of each spot."""
        return np.asarray(self.classes, dtype=object)[np.argmax(self.probabilities, axis=1)]

    def probability(self, names: Sequence[str]) -> np.ndarray:
        """``(n_spots,)`` probability that a spot belongs to any of the classes ``names`` (e.g. two tumour classes)."""
        columns = [i for i, name in enumerate(self.classes) if name in set(names)]
        return self.probabilities[:, columns].sum(axis=1)

    def counts(self) -> dict[str, int]:
        labels = self.labels
        return {name: int((labels == name).sum()) for name in self.classes}

    def polygons(self, name: str, *, min_spots: float = 2.0) -> list:
        """Shapely polygons (x, y) around the spots whose most probable class is ``name``."""
        from napari_casper.regions.suggest import ScoreField

        if name not in self.classes:
            raise CasperInputError(f"class {name!r} was not learned; the classes are {self.classes}.")
        inside = (self.labels == name).astype(float)
        if not inside.any():
            return []
        pitch = spot_pitch(self.coords)
        field = ScoreField.build(self.coords, inside, pitch=pitch)
        return field.polygons(0.5, min_area=min_spots * pitch**2, hole_points=self.coords)

    def to_regions(self, *, affine=None, palette=None, classes: Sequence[str] | None = None):
        """Editable regions (:class:`~napari_casper.regions.geometry.RegionSet`, origin "suggested") of ``classes`` (all by default)."""
        from napari_casper.regions.geometry import SUGGESTED, RegionSet

        polygons, names = [], []
        for name in classes if classes is not None else self.classes:
            found = self.polygons(name)
            polygons += found
            names += [name] * len(found)
        if not polygons:
            raise CasperInputError("no class covers enough spots to outline: label more spots.")
        return RegionSet.from_world_polygons(
            polygons, names, affine=affine, coordinate_system=self.coordinate_system, palette=palette, origins=SUGGESTED
        )


def region_examples(spots, regions) -> list:
    """``(n_spots,)`` the class of the region holding each spot, None outside every region: the examples
    that regions (e.g. a few small hand-drawn ones) give :func:`learn_classes`."""
    from napari_casper.regions.spots import OUTSIDE, spot_region_labels

    return [None if label == OUTSIDE else label for label in spot_region_labels(spots, regions)["class"].astype(object)]


def learn_classes(
    features: np.ndarray,
    labels: Sequence,
    *,
    spatial_graph,
    coords: np.ndarray,
    coordinate_system: str = "global",
    graph=None,
) -> LearnedClasses:
    """Every spot's class from the few labelled ones (see the module docstring).

    Parameters
    ----------
    features
        ``(n_spots, d)`` from :func:`spot_features`.
    labels
        ``(n_spots,)`` class names; None, NaN or ``""`` for the spots not labelled.
    spatial_graph
        From :func:`neighbour_graph` (the one the features were smoothed with).
    graph
        :func:`propagation_graph` of ``features`` and ``spatial_graph``, when already built (it depends on
        neither the labels nor the classes).
    """
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    labels = pd.Series(np.asarray(labels, dtype=object))
    known = labels.notna().to_numpy() & (labels.astype(str).str.len() > 0).to_numpy()
    if len(labels) != len(features):
        raise CasperInputError(f"{len(labels)} labels for {len(features)} spots: give one label (or none) per spot.")
    classes = list(dict.fromkeys(labels[known].astype(str)))
    if len(classes) < 2:
        raise CasperInputError(
            f"{'only class ' + repr(classes[0]) + ' has' if classes else 'no class has'} examples: draw a few small regions "
            "(or mark a few spots) of at least two classes, e.g. tumour and stroma, so there is something to tell apart."
        )
    y = labels[known].astype(str).to_numpy()
    too_few = [name for name in classes if (y == name).sum() < 2]
    if too_few:
        raise CasperInputError(
            f"class(es) {too_few} have a single example spot: draw a region holding at least two spots of each class."
        )
    model = LogisticRegression(C=CLASSIFIER_C, max_iter=3000)
    model.fit(features[known], y)
    prior = model.predict_proba(features)[:, [list(model.classes_).index(c) for c in classes]]
    clamp = np.zeros_like(prior)
    clamp[np.flatnonzero(known), [classes.index(c) for c in y]] = 1.0
    graph = propagation_graph(features, spatial_graph) if graph is None else graph
    p = prior.copy()
    for _ in range(PROPAGATION_ROUNDS):
        p = (1 - PROPAGATION_WEIGHT) * prior + PROPAGATION_WEIGHT * (graph @ p)
        p[known] = clamp[known]
    p /= np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
    return LearnedClasses(classes, p, known, np.asarray(coords, dtype=float), coordinate_system)


class StrokeLearner:
    """Features of one section computed once; :meth:`learn` then takes a fraction of a second per stroke.

    >>> learner = StrokeLearner.from_spots(spot_context(sdata))   # doctest: +SKIP
    >>> learned = learner.learn(labels)                          # doctest: +SKIP
    """

    def __init__(self, expression, coords: np.ndarray, coordinate_system: str = "global"):
        self.coords = np.asarray(coords, dtype=float)
        self.coordinate_system = coordinate_system
        self.graph = neighbour_graph(self.coords)
        self.features = spot_features(expression, self.coords, graph=self.graph)
        self.propagation = propagation_graph(self.features, self.graph)  # the same for every stroke

    @classmethod
    def from_spots(cls, spots, normalize: str = "auto") -> StrokeLearner:
        """From a :class:`~napari_casper.regions.spots.SpotContext` (log-normalised as the region statistics are)."""
        matrix, _ = spots.expression(normalize)
        return cls(matrix, spots.coords, spots.coordinate_system)

    def learn(self, labels: Sequence) -> LearnedClasses:
        return learn_classes(
            self.features,
            labels,
            spatial_graph=self.graph,
            coords=self.coords,
            coordinate_system=self.coordinate_system,
            graph=self.propagation,
        )
