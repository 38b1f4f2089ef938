"""Spot neighbourhoods: the grid pitch, the neighbour graph, and averaging over neighbours.

Shared by the biomarker suggestion (:mod:`~napari_casper.regions.suggest`) and the classes
learned from a few strokes (:mod:`~napari_casper.regions.learn`).
"""

from __future__ import annotations

import numpy as np

from napari_casper.errors import CasperInputError


def spot_pitch(coords: np.ndarray) -> float:
    """Median nearest-neighbour distance of ``(n, 2)`` spot centres (the grid's centre-to-centre pitch)."""
    from napari_casper.io.convert import estimate_spot_diameter

    return estimate_spot_diameter(coords, 1.0)


def row_normalised(matrix):
    """``matrix`` with each row divided by its sum (rows summing to 0 stay 0)."""
    from scipy import sparse

    degree = np.asarray(matrix.sum(axis=1)).ravel()
    return sparse.diags(np.divide(1.0, degree, out=np.zeros_like(degree, dtype=float), where=degree > 0)) @ matrix


def neighbour_graph(coords: np.ndarray, radius: float | None = None):
    """Row-normalised ``(n, n)`` sparse matrix averaging each spot's neighbours within ``radius`` (itself excluded).

    ``radius`` defaults to 1.5 x the spot pitch (the 8 grid neighbours of legacy ST, 6 of Visium).
    Rows of spots without neighbours are zero.
    """
    from scipy import sparse
    from scipy.spatial import cKDTree

    coords = np.asarray(coords, dtype=float)
    n = len(coords)
    if n < 2:
        return sparse.csr_matrix((n, n))
    radius = 1.5 * spot_pitch(coords) if radius is None else float(radius)
    pairs = cKDTree(coords).query_pairs(radius, output_type="ndarray")
    rows = np.r_[pairs[:, 0], pairs[:, 1]]
    cols = np.r_[pairs[:, 1], pairs[:, 0]]
    return row_normalised(sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)))


def smooth_steps(values: np.ndarray, graph, steps: int = 1, weight: float = 0.5) -> np.ndarray:
    """``steps`` rounds of ``(1 - weight) * values + weight * (neighbours' mean)``; spots without neighbours keep theirs.

    ``values`` is ``(n,)`` or ``(n, d)``; ``graph`` from :func:`neighbour_graph`.
    """
    if not 0.0 <= weight <= 1.0:
        raise CasperInputError(
            f"smoothing weight {weight} is outside 0..1: 0 keeps each spot's own score, 1 uses only its neighbours."
        )
    values = np.array(values, dtype=float)
    alone = np.asarray(graph.sum(axis=1)).ravel() == 0
    for _ in range(steps):
        neighbours = graph @ values
        neighbours[alone] = values[alone]
        values = (1 - weight) * values + weight * neighbours
    return values
