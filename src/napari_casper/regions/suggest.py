"""Suggest tumour regions from biomarker genes: score, smooth over neighbours, threshold, outline.

1. score: mean over the chosen genes of each gene's z-score across spots (log-normalised
   counts, or the given values for imputed/predicted genes);
2. smoothing: ``(1 - w) * own score + w * mean score of the spots within ``radius``
   (default 1.5 x the centre-to-centre pitch: the 8 grid neighbours of legacy ST, 6 of Visium);
3. threshold: Otsu's on the smoothed scores unless given;
4. outlines: each spot's smoothed score is painted over its neighbourhood (a disc of 1.5
   pitches' diameter, nearest spot wins: :class:`napari_casper.display.spot_raster.SpotRaster`), lightly
   blurred, and contoured at the threshold (``skimage.measure.find_contours``). Holes that hold
   spots are kept (napari draws them as keyhole rings, see
   :func:`napari_casper.regions.geometry.polygon_vertices_yx`); holes without spots are filled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from napari_casper.errors import CasperInputError
from napari_casper.regions.classes import RegionClasses
from napari_casper.regions.expression import gene_values
from napari_casper.regions.geometry import SUGGESTED, RegionSet
from napari_casper.regions.neighbours import neighbour_graph, smooth_steps, spot_pitch
from napari_casper.regions.spots import SpotContext

if TYPE_CHECKING:
    import pandas as pd

#: HER2+ breast cancer: ERBB2 amplicon (ERBB2, GRB7) and epithelial markers (KRT19, EPCAM)
HER2_TUMOUR_MARKERS = ("ERBB2", "GRB7", "KRT19", "EPCAM")
#: pixels per centre-to-centre pitch in the outline raster
_PIXELS_PER_PITCH = 8
_MAX_RASTER_SIDE = 2048


def biomarker_score(values: pd.DataFrame) -> np.ndarray:
    """``(n_spots,)`` mean of per-gene z-scores; genes constant across spots are left out.

    Raises :class:`CasperInputError` when every gene is constant (e.g. zero in every spot).
    """
    matrix = values.to_numpy(dtype=float)
    spread = matrix.std(axis=0)
    usable = spread > 1e-12
    if not usable.any():
        raise CasperInputError(
            f"gene(s) {list(values.columns)} have the same value in every spot (e.g. never detected): "
            "choose genes that vary across the tissue."
        )
    z = (matrix[:, usable] - matrix[:, usable].mean(axis=0)) / spread[usable]
    return z.mean(axis=1)


def smooth_over_neighbours(
    values: np.ndarray, coords: np.ndarray, *, weight: float = 0.5, radius: float | None = None
) -> np.ndarray:
    """``(1 - weight) * values + weight * (mean of values of the other spots within radius)``.

    ``radius`` (coordinate units) defaults to 1.5 x the spot pitch. Spots without neighbours keep their value.
    """
    return smooth_steps(values, neighbour_graph(coords, radius), 1, weight)


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of ``values`` (``skimage.filters.threshold_otsu``)."""
    from skimage.filters import threshold_otsu

    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.ptp(values) == 0:
        raise CasperInputError(
            "the score is the same in every spot: there is nothing to threshold (choose other genes)."
        )
    return float(threshold_otsu(values))


@dataclass
class ScoreField:
    """Per-spot values painted onto a grid, ready to be contoured at any threshold.

    ``image[r, c]`` covers (x, y) = ``origin + (c, r) * pixel_size`` (pixel centres).
    """

    image: np.ndarray
    origin: tuple[float, float]
    pixel_size: float

    @classmethod
    def build(cls, coords: np.ndarray, values: np.ndarray, *, pitch: float | None = None) -> ScoreField:
        from scipy import ndimage

        from napari_casper.display.spot_raster import SpotRaster

        pitch = spot_pitch(coords) if pitch is None else float(pitch)
        extent = float(np.ptp(coords, axis=0).max()) + 3 * pitch
        pixel = max(pitch / _PIXELS_PER_PITCH, extent / _MAX_RASTER_SIDE)
        raster = SpotRaster.build(coords, 1.5 * pitch, pixel_size=pixel)
        image = raster.render(values)
        background = float(np.min(values)) - (float(np.ptp(values)) or 1.0)
        pad = 2 + int(np.ceil(pitch / 4 / pixel))
        image = np.pad(np.nan_to_num(image, nan=background), pad, constant_values=background)
        image = ndimage.gaussian_filter(image, sigma=pitch / 8 / pixel)
        origin = (raster.origin[0] + (0.5 - pad) * pixel, raster.origin[1] + (0.5 - pad) * pixel)
        return cls(image, origin, pixel)

    def polygons(self, threshold: float, *, min_area: float = 0.0, hole_points: np.ndarray | None = None) -> list:
        """Shapely polygons (x, y) enclosing where the field is >= ``threshold``.

        Pieces smaller than ``min_area`` are dropped; holes containing none of ``hole_points``
        (e.g. spot centres) are filled, the others are kept.
        """
        import shapely
        from shapely.geometry import Polygon
        from skimage.measure import find_contours

        rings = []
        for contour in find_contours(self.image, threshold):
            xy = np.c_[
                self.origin[0] + contour[:, 1] * self.pixel_size, self.origin[1] + contour[:, 0] * self.pixel_size
            ]
            if len(xy) >= 4:
                rings.append(xy)
        if not rings:
            return []
        # contours wind one way around high islands and the other way around low ones (holes);
        # the largest ring is always an outline, which tells the direction
        signed = np.array([_signed_area(r) for r in rings])
        outline = np.sign(signed[np.argmax(np.abs(signed))])
        shells = [Polygon(r) for r, a in zip(rings, signed) if np.sign(a) == outline]
        holes = [Polygon(r) for r, a in zip(rings, signed) if np.sign(a) != outline]
        if hole_points is not None and holes:  # keep only holes that hold a spot; fill the others
            points = shapely.points(np.asarray(hole_points, dtype=float))
            hole_index, _ = shapely.STRtree(points).query(holes, predicate="contains")
            holes = [holes[i] for i in np.unique(hole_index)]
        else:
            holes = []
        interiors: list[list] = [[] for _ in shells]
        if holes:  # each hole belongs to the smallest outline around it (small ones are dropped only after this)
            hole_at, shell_at = shapely.STRtree(shells).query(
                shapely.points([h.exterior.coords[0] for h in holes]), predicate="within"
            )
            areas = np.array([shell.area for shell in shells])
            parent: dict[int, int] = {}
            for h, sh in zip(hole_at, shell_at):
                if h not in parent or areas[sh] < areas[parent[h]]:
                    parent[h] = sh
            for h, sh in parent.items():
                interiors[sh].append(holes[h].exterior)
        polygons = [shapely.make_valid(Polygon(shell.exterior, inner)) for shell, inner in zip(shells, interiors)]
        pieces = [g for p in polygons for g in getattr(p, "geoms", [p]) if g.geom_type == "Polygon"]
        return [p.simplify(self.pixel_size / 2) for p in pieces if p.area >= max(min_area, 1e-12)]


def _signed_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


@dataclass
class Suggestion:
    """A suggested region: scores per spot, the threshold, and the outlines at that threshold.

    Attributes
    ----------
    genes
        The genes scored.
    score, smoothed
        ``(n_spots,)`` raw and neighbour-smoothed biomarker score (spot order of the context).
    otsu, threshold
        Otsu's threshold of ``smoothed``, and the threshold used for ``polygons``.
    polygons
        Shapely polygons (holes kept where they hold spots), (x, y) in the spots' coordinate system.
    """

    genes: list[str]
    score: np.ndarray
    smoothed: np.ndarray
    otsu: float
    threshold: float
    polygons: list
    coordinate_system: str
    field: ScoreField
    coords: np.ndarray
    min_area: float

    @property
    def above(self) -> np.ndarray:
        """``(n_spots,)`` bool: smoothed score at or above the threshold."""
        return self.smoothed >= self.threshold

    def at_threshold(self, threshold: float) -> Suggestion:
        """The same scores outlined at another threshold (fast: the field is reused)."""
        polygons = self.field.polygons(threshold, min_area=self.min_area, hole_points=self.coords)
        return replace(self, threshold=float(threshold), polygons=polygons)

    def to_regions(
        self,
        region_class: str = "tumour",
        *,
        affine: np.ndarray | None = None,
        palette: RegionClasses | None = None,
    ) -> RegionSet:
        """Editable regions of ``region_class`` (data coordinates of a layer with ``affine``)."""
        if not self.polygons:
            raise CasperInputError(
                f"no spot reaches the threshold {self.threshold:.3g} (score range {self.smoothed.min():.3g}.."
                f"{self.smoothed.max():.3g}): lower the threshold."
            )
        return RegionSet.from_world_polygons(
            self.polygons,
            region_class,
            affine=affine,
            coordinate_system=self.coordinate_system,
            palette=palette,
            origins=SUGGESTED,
        )


def suggest_regions(
    spots: SpotContext,
    genes: Sequence[str],
    *,
    smoothing: float = 0.5,
    threshold: float | None = None,
    normalize: str = "auto",
    extra: pd.DataFrame | None = None,
    min_spots: float = 2.0,
) -> Suggestion:
    """Outline where the biomarker score of ``genes`` is high (see the module docstring).

    Parameters
    ----------
    genes
        Any genes: table genes (symbols, or ids from a ``var`` column), numeric ``obs`` columns, or
        columns of ``extra`` (imputed/predicted values, indexed by the spots' instance ids).
    smoothing
        Neighbour weight 0..1 (0: each spot's own score).
    threshold
        On the smoothed score; None uses Otsu's threshold.
    min_spots
        Outlines smaller than this many spot-pitch squares are dropped (isolated noisy spots).
    """
    values = gene_values(spots, genes, normalize=normalize, extra=extra)
    score = biomarker_score(values)
    smoothed = smooth_over_neighbours(score, spots.coords, weight=smoothing)
    otsu = otsu_threshold(smoothed)
    pitch = spot_pitch(spots.coords)
    field = ScoreField.build(spots.coords, smoothed, pitch=pitch)
    suggestion = Suggestion(
        list(values.columns),
        score,
        smoothed,
        otsu,
        otsu,
        [],
        spots.coordinate_system,
        field,
        spots.coords,
        min_spots * pitch**2,
    )
    return suggestion.at_threshold(otsu if threshold is None else threshold)
