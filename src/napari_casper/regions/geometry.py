"""Annotated regions as plain data: napari-style shape vertices plus the affine to a coordinate system.

A :class:`RegionSet` holds what a napari Shapes layer holds (vertices in the layer's *data*
coordinates, ``(y, x)`` order, one shape type per shape) plus each shape's class and name, and
the 3x3 affine (``(y, x)`` order, as in :mod:`napari_casper.display.layers`) from those data coordinates
to a named coordinate system. Saving keeps that affine as the element's transformation, so the
regions reopen exactly where they were drawn; comparisons with spots happen in the shared
coordinate system (:meth:`RegionSet.world_polygons`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_casper.errors import CasperInputError
from napari_casper.regions.classes import RegionClasses

#: shape types that enclose an area (napari names); "path" is closed into a polygon, "line" is refused
AREA_SHAPE_TYPES = ("polygon", "rectangle", "ellipse", "path")
#: vertices used to draw an ellipse as a polygon (a multiple of 4, so the extreme points are exact)
ELLIPSE_VERTICES = 72


def apply_affine_xy(affine_yx: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Map ``(n, 2)`` (x, y) points through a 3x3 affine written in (y, x) order."""
    xy = np.asarray(xy, dtype=float)
    yx = xy[:, ::-1] @ affine_yx[:2, :2].T + affine_yx[:2, 2]
    return yx[:, ::-1]


def ellipse_vertices(corners_yx: np.ndarray, n: int = ELLIPSE_VERTICES) -> np.ndarray:
    """``(n, 2)`` points on the ellipse inscribed in napari's 4 bounding-box corners (any rotation)."""
    corners = np.asarray(corners_yx, dtype=float)
    centre = corners.mean(axis=0)
    half_a = (corners[0] + corners[1]) / 2 - centre
    half_b = (corners[1] + corners[2]) / 2 - centre
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return centre + np.cos(t)[:, None] * half_a + np.sin(t)[:, None] * half_b


def shape_polygon(vertices_yx: np.ndarray, shape_type: str, index: int = 0):
    """Shapely polygon, in (x, y) data coordinates, of one napari shape."""
    from shapely.geometry import Polygon

    vertices = np.asarray(vertices_yx, dtype=float)
    if vertices.ndim != 2 or vertices.shape[1] < 2:
        raise CasperInputError(f"shape {index} has vertices of shape {vertices.shape}; expected (n, 2) (y, x).")
    vertices = vertices[:, -2:]  # extra leading dims (z, t) of the viewer are dropped
    if shape_type == "ellipse":
        vertices = ellipse_vertices(vertices)
    elif shape_type not in AREA_SHAPE_TYPES:
        raise CasperInputError(
            f"shape {index} is a {shape_type!r}, which encloses no area: draw regions as polygons, rectangles, "
            "ellipses or freehand outlines (delete the line, or redraw it as a polygon)."
        )
    if len(np.unique(vertices, axis=0)) < 3:
        raise CasperInputError(f"shape {index} ({shape_type}) has fewer than 3 distinct vertices: it has no area.")
    return Polygon(vertices[:, ::-1])


def valid_polygon(polygon):
    """A valid (possibly multi-) polygon covering what ``polygon`` outlines (self-crossing freehand outlines)."""
    import shapely

    if polygon.is_valid:
        return polygon
    fixed = shapely.make_valid(polygon)
    parts = [g for g in getattr(fixed, "geoms", [fixed]) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else polygon.buffer(0)


def polygon_vertices_yx(polygon) -> np.ndarray:
    """One ring of ``(n, 2)`` (y, x) vertices for a napari shape, without the closing repeat.

    napari shapes have no holes, so each hole is joined to the outline by a zero-width slit
    between their closest vertices (a "keyhole" ring): it draws as the polygon with its hole,
    and :func:`valid_polygon` turns it back into the polygon with the hole.
    """
    from shapely.geometry.polygon import orient

    polygon = orient(polygon, 1.0)  # outline counter-clockwise, holes clockwise
    ring = np.asarray(polygon.exterior.coords)[:-1]
    for hole in polygon.interiors:
        hole_xy = np.asarray(hole.coords)[:-1]
        gaps = ((ring[:, None, :] - hole_xy[None, :, :]) ** 2).sum(axis=-1)
        i, j = np.unravel_index(gaps.argmin(), gaps.shape)
        ring = np.vstack([ring[: i + 1], np.roll(hole_xy, -j, axis=0), hole_xy[j : j + 1], ring[i:]])
    return ring[:, ::-1].copy()


def ellipse_corners_yx(polygon) -> np.ndarray:
    """napari's 4 corners (y, x) of the ellipse that :func:`ellipse_vertices` drew as ``polygon``.

    The vertices' mean is the centre and their covariance ``(a a^T + b b^T) / 2`` has the
    half-axes ``a``, ``b`` as eigenvectors, so the ellipse comes back exactly.
    """
    yx = np.asarray(polygon.exterior.coords)[:-1, ::-1]
    centre = yx.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov((yx - centre).T, bias=True))
    half_a, half_b = (eigenvectors * np.sqrt(2 * np.clip(eigenvalues, 0, None))).T
    return np.array(
        [centre + half_a - half_b, centre + half_a + half_b, centre - half_a + half_b, centre - half_a - half_b]
    )


def fill_names(names: Sequence[str | None], classes: Sequence[str]) -> list[str]:
    """``names`` with each blank one replaced by ``<class>_<k>``, the first such name not taken."""
    names = [str(n) if isinstance(n, str) else "" for n in names]
    taken = set(names)
    for i, cls in enumerate(classes[: len(names)]):
        k = 1
        while not names[i]:
            if f"{cls}_{k}" not in taken:
                names[i] = f"{cls}_{k}"
                taken.add(names[i])
            k += 1
    return names


@dataclass
class RegionSet:
    """Region shapes with classes, in napari's data coordinates, plus the affine to a coordinate system.

    Attributes
    ----------
    vertices
        One ``(n_vertices, 2)`` array per shape, ``(y, x)`` data coordinates (napari Shapes ``data``).
        Rectangles and ellipses have napari's 4 corner vertices.
    shape_types
        napari shape type per shape: ``"polygon"`` (also freehand/lasso), ``"rectangle"``,
        ``"ellipse"`` or ``"path"`` (closed into a polygon).
    classes
        Region class per shape; every class is in ``palette`` (unknown ones are added).
    names
        Name per shape (defaults to ``"<class>_<k>"``).
    affine
        3x3 affine, ``(y, x)`` order, from data coordinates to ``coordinate_system``.
    """

    vertices: list[np.ndarray]
    shape_types: list[str]
    classes: list[str]
    names: list[str] | None = None
    affine: np.ndarray = field(default_factory=lambda: np.eye(3))
    coordinate_system: str = "global"
    palette: RegionClasses = field(default_factory=RegionClasses)
    authors: list[str] | None = None
    timestamps: list[str] | None = None

    def __post_init__(self):
        self.vertices = [np.asarray(v, dtype=float)[:, -2:] for v in self.vertices]
        self.shape_types = [str(s) for s in self.shape_types]
        self.classes = [str(c) for c in self.classes]
        self.affine = np.asarray(self.affine, dtype=float)
        n = len(self.vertices)
        if len(self.shape_types) != n or len(self.classes) != n:
            raise CasperInputError(
                f"{n} shapes but {len(self.shape_types)} shape types and {len(self.classes)} classes: "
                "give one of each per shape."
            )
        if self.affine.shape != (3, 3) or abs(np.linalg.det(self.affine[:2, :2])) < 1e-12:
            raise CasperInputError(f"the regions' affine must be an invertible 3x3 matrix, got {self.affine.tolist()}.")
        self.palette = self.palette.copy()
        for cls in self.classes:
            self.palette.add(cls)
        self.names = fill_names([""] * n if self.names is None else self.names, self.classes)
        if len(self.names) != n:
            raise CasperInputError(f"{n} shapes but {len(self.names)} names: give one name per shape.")
        for what in ("authors", "timestamps"):
            values = getattr(self, what)
            if values is not None and len(values) != n:
                raise CasperInputError(f"{n} shapes but {len(values)} {what}: give one per shape, or None.")
        for i, (vertices, shape_type) in enumerate(zip(self.vertices, self.shape_types)):
            shape_polygon(vertices, shape_type, i)  # refuse lines and degenerate shapes up front

    def __len__(self) -> int:
        return len(self.vertices)

    def data_polygons(self) -> list:
        """Shapely polygons in (x, y) *data* coordinates (ellipses sampled, paths closed)."""
        return [shape_polygon(v, t, i) for i, (v, t) in enumerate(zip(self.vertices, self.shape_types))]

    def world_polygons(self) -> list:
        """Valid shapely (multi-)polygons in (x, y) of :attr:`coordinate_system`."""
        import shapely

        return [
            valid_polygon(shapely.transform(poly, lambda xy: apply_affine_xy(self.affine, xy)))
            for poly in self.data_polygons()
        ]

    def colours(self) -> list[str]:
        return [self.palette.colour(c) for c in self.classes]

    def subset(self, keep: Sequence[int]) -> RegionSet:
        keep = list(keep)
        pick = lambda seq: None if seq is None else [seq[i] for i in keep]  # noqa: E731
        return RegionSet(
            [self.vertices[i] for i in keep],
            pick(self.shape_types),
            pick(self.classes),
            pick(self.names),
            self.affine,
            self.coordinate_system,
            self.palette,
            pick(self.authors),
            pick(self.timestamps),
        )

    @classmethod
    def from_world_polygons(
        cls,
        polygons: Sequence,
        classes: Sequence[str] | str,
        *,
        affine: np.ndarray | None = None,
        coordinate_system: str = "global",
        palette: RegionClasses | None = None,
        names: Sequence[str] | None = None,
    ) -> RegionSet:
        """Regions from shapely polygons in (x, y) of ``coordinate_system``, expressed in the data
        coordinates of a layer whose affine is ``affine`` (identity: data = world)."""
        import shapely

        affine = np.eye(3) if affine is None else np.asarray(affine, dtype=float)
        inverse = np.linalg.inv(affine)
        if isinstance(classes, str):
            classes = [classes] * len(polygons)
        names = [None] * len(polygons) if names is None else list(names)
        exploded = [
            (part, cls, name)
            for poly, cls, name in zip(polygons, classes, names)
            for part in getattr(poly, "geoms", [poly])
        ]
        polygons = [p for p, _, _ in exploded]
        classes = [c for _, c, _ in exploded]
        names = [n or "" for _, _, n in exploded]
        vertices = [
            polygon_vertices_yx(shapely.transform(p, lambda xy: apply_affine_xy(inverse, xy))) for p in polygons
        ]
        return cls(
            vertices,
            ["polygon"] * len(polygons),
            classes,
            names,
            affine,
            coordinate_system,
            palette or RegionClasses(),
        )
