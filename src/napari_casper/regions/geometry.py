"""Annotated regions as plain data: napari-style shape vertices plus the affine to a coordinate system.

A :class:`RegionSet` holds what a napari Shapes layer holds (vertices in the layer's *data*
coordinates, ``(y, x)`` order, one shape type per shape) plus each shape's class and name, and
the 3x3 affine (``(y, x)`` order, as in :mod:`napari_casper.display.layers`) from those data coordinates
to a named coordinate system. Saving keeps that affine as the element's transformation, so the
regions reopen exactly where they were drawn; comparisons with spots happen in the shared
coordinate system (:meth:`RegionSet.world_polygons`).

This module is also the one place where a napari shape (vertices + ``shape_type``) becomes a
shapely geometry and back, for the Regions widget and for ``File > Save Layers`` alike:

* :func:`shape_geometry` -- the shape's true geometry: a ``Polygon`` for polygons, rectangles
  (any rotation) and ellipses (sampled with :data:`ELLIPSE_VERTICES` vertices), a ``LineString``
  for paths and lines;
* :func:`shape_vertices` -- the reverse (ellipses and rectangles come back as napari's 4 corners).

:mod:`napari_casper.regions.store` writes these geometries into SpatialData (which holds no lines).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_casper.errors import CasperInputError
from napari_casper.regions.classes import RegionClasses

#: napari shape types that enclose an area (held as shapely ``Polygon``)
AREA_SHAPE_TYPES = ("polygon", "rectangle", "ellipse")
#: napari shape types that are open lines (held as shapely ``LineString``); a path is closed into
#: a polygon only where an area is needed (:func:`shape_polygon`), a line has none
LINE_SHAPE_TYPES = ("path", "line")
SHAPE_TYPES = AREA_SHAPE_TYPES + LINE_SHAPE_TYPES
#: vertices used to draw an ellipse as a polygon (a multiple of 4, so the extreme points are exact,
#: and of 72, the count of earlier versions); the inscribed polygon's area is
#: ``n / (2 pi) sin(2 pi / n)`` = 0.99968 of the ellipse's
ELLIPSE_VERTICES = 144
#: where a region came from: drawn by hand, or suggested from biomarkers (:mod:`napari_casper.regions.suggest`)
DRAWN, SUGGESTED = "drawn", "suggested"
ORIGINS = (DRAWN, SUGGESTED)


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


def _shape_vertices_yx(vertices_yx, index: int) -> np.ndarray:
    vertices = np.asarray(vertices_yx, dtype=float)
    if vertices.ndim != 2 or vertices.shape[1] < 2:
        raise CasperInputError(f"shape {index} has vertices of shape {vertices.shape}; expected (n, 2) (y, x).")
    return vertices[:, -2:]  # extra leading dims (z, t) of the viewer are dropped


def shape_geometry(vertices_yx: np.ndarray, shape_type: str, index: int = 0):
    """The true shapely geometry, in (x, y) data coordinates, of one napari shape.

    Parameters
    ----------
    vertices_yx
        ``(n, D)`` napari vertices; the last two columns are (y, x). Rectangles and ellipses
        have napari's 4 corners (any rotation).
    shape_type
        One of :data:`SHAPE_TYPES`.
    index
        Position of the shape in its layer, for messages.

    Returns
    -------
    shapely.Polygon or shapely.LineString
        ``Polygon`` for polygons and rectangles (the vertices as given), ellipses
        (:data:`ELLIPSE_VERTICES` points on the ellipse); ``LineString`` for paths and lines.
    """
    from shapely.geometry import LineString, Polygon

    vertices = _shape_vertices_yx(vertices_yx, index)
    if shape_type not in SHAPE_TYPES:
        raise CasperInputError(f"shape {index} has shape type {shape_type!r}; napari's are {list(SHAPE_TYPES)}.")
    if shape_type == "ellipse":
        if len(vertices) != 4:
            raise CasperInputError(f"shape {index} is an ellipse with {len(vertices)} corners; napari gives 4.")
        vertices = ellipse_vertices(vertices)
    distinct = len(np.unique(vertices, axis=0))
    if shape_type in LINE_SHAPE_TYPES:
        if distinct < 2:
            raise CasperInputError(f"shape {index} ({shape_type}) has fewer than 2 distinct vertices: it has no length.")
        return LineString(vertices[:, ::-1])
    if distinct < 3:
        raise CasperInputError(f"shape {index} ({shape_type}) has fewer than 3 distinct vertices: it has no area.")
    return Polygon(vertices[:, ::-1])


def shape_polygon(vertices_yx: np.ndarray, shape_type: str, index: int = 0):
    """The area a napari shape outlines, as a shapely polygon in (x, y) data coordinates.

    As :func:`shape_geometry`, except that a path is closed into a polygon and a line, which
    encloses no area, is refused with a message.
    """
    from shapely.geometry import Polygon

    if shape_type == "line" or (
        shape_type == "path" and len(np.unique(_shape_vertices_yx(vertices_yx, index), axis=0)) < 3
    ):
        raise CasperInputError(
            f"shape {index} is a {shape_type!r}, which encloses no area: draw regions as polygons, rectangles, "
            "ellipses or freehand outlines (delete the line, or redraw it as a polygon)."
        )
    geometry = shape_geometry(vertices_yx, shape_type, index)
    return Polygon(geometry.coords) if shape_type == "path" else geometry


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

    A polygon without holes keeps its vertices in their order. napari shapes have no holes, so
    each hole is joined to the outline by a zero-width slit between their closest vertices (a
    "keyhole" ring): it draws as the polygon with its hole, and :func:`valid_polygon` turns it
    back into the polygon with the hole.
    """
    from shapely.geometry.polygon import orient

    if not polygon.interiors:
        return np.asarray(polygon.exterior.coords)[:-1, ::-1].copy()
    polygon = orient(polygon, 1.0)  # outline counter-clockwise, holes clockwise
    ring = np.asarray(polygon.exterior.coords)[:-1]
    for hole in polygon.interiors:
        hole_xy = np.asarray(hole.coords)[:-1]
        gaps = ((ring[:, None, :] - hole_xy[None, :, :]) ** 2).sum(axis=-1)
        i, j = np.unravel_index(gaps.argmin(), gaps.shape)
        ring = np.vstack([ring[: i + 1], np.roll(hole_xy, -j, axis=0), hole_xy[j : j + 1], ring[i:]])
    return ring[:, ::-1].copy()


def _ellipse_axes(yx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre and half-axes ``a``, ``b`` (each ``(2,)``, y, x) of the ellipse sampled evenly by ``yx``.

    The vertices' mean is the centre and their covariance ``(a a^T + b b^T) / 2`` has the
    half-axes as eigenvectors, so the ellipse comes back exactly, whatever the vertex count.
    """
    centre = yx.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov((yx - centre).T, bias=True))
    half_a, half_b = (eigenvectors * np.sqrt(2 * np.clip(eigenvalues, 0, None))).T
    return centre, half_a, half_b


def _corners(centre: np.ndarray, half_a: np.ndarray, half_b: np.ndarray) -> np.ndarray:
    """napari's 4 corners ``(4, 2)`` of the box around the ellipse with these half-axes (each ``(2,)``)."""
    return np.array([centre + half_a - half_b, centre + half_a + half_b, centre - half_a + half_b, centre - half_a - half_b])


def ellipse_corners_yx(polygon) -> np.ndarray:
    """napari's 4 corners ``(4, 2)`` (y, x) of the ellipse that :func:`ellipse_vertices` drew as ``polygon``.

    A polygon as :func:`ellipse_vertices` drew it gives back the same corners in the same order
    (its vertices 0 and n/4 are the centre plus the half-axes); any other sampling of an ellipse
    gives the same ellipse from its vertices' covariance (:func:`_ellipse_axes`).
    """
    yx = np.asarray(polygon.exterior.coords)[:-1, ::-1]
    n = len(yx)
    if n % 4 == 0:
        centre = yx.mean(axis=0)
        corners = _corners(centre, yx[0] - centre, yx[n // 4] - centre)
        if np.allclose(ellipse_vertices(corners, n), yx, rtol=0, atol=1e-9 * max(np.abs(yx).max(), 1.0)):
            return corners
    return _corners(*_ellipse_axes(yx))


def _is_sampled_ellipse(polygon, rtol: float = 1e-6) -> bool:
    """Whether every vertex of ``polygon`` lies on the ellipse that :func:`ellipse_corners_yx` finds."""
    if polygon.interiors or len(polygon.exterior.coords) < 9:
        return False
    yx = np.asarray(polygon.exterior.coords)[:-1, ::-1]
    centre, half_a, half_b = _ellipse_axes(yx)
    axes = np.column_stack([half_a, half_b])
    if abs(np.linalg.det(axes)) < 1e-12 * max(np.abs(yx).max(), 1.0) ** 2:
        return False
    uv = np.linalg.solve(axes, (yx - centre).T)
    return bool(np.allclose(np.hypot(*uv), 1.0, atol=rtol))


def _is_rectangle(vertices_yx: np.ndarray, rtol: float = 1e-5) -> bool:
    """Whether ``(4, 2)`` vertices in order are a rectangle's corners (any rotation; ``rtol``: float32)."""
    if len(vertices_yx) != 4:
        return False
    v = vertices_yx
    size = max(np.ptp(v, axis=0).max(), 1e-300)
    parallelogram = np.allclose(v[0] + v[2], v[1] + v[3], atol=rtol * size)
    right_angle = abs(np.dot(v[1] - v[0], v[3] - v[0])) <= rtol * size**2
    return bool(parallelogram and right_angle)


def shape_vertices(geometry, shape_type: str = "polygon") -> list[tuple[np.ndarray, str]]:
    """napari shapes ``[(vertices (n, 2) (y, x), shape_type), ...]`` drawing a shapely ``geometry``.

    The reverse of :func:`shape_geometry`. ``shape_type`` is the type the geometry was made
    from; it is kept where the geometry still is one (4 corners for ellipses and rectangles,
    2 vertices for lines), else the geometry becomes polygons or paths. A ``MultiPolygon``
    becomes one polygon per part.
    """
    parts = list(getattr(geometry, "geoms", [geometry]))
    shapes = []
    for part in parts:
        kind = shape_type if len(parts) == 1 else "?"
        if part.geom_type == "LineString":
            vertices = np.asarray(part.coords)[:, ::-1].copy()
            if kind not in LINE_SHAPE_TYPES or (kind == "line" and len(vertices) != 2):
                kind = "path"
        elif part.geom_type == "Polygon":
            if kind == "ellipse" and _is_sampled_ellipse(part):
                vertices = ellipse_corners_yx(part)
            else:
                vertices = polygon_vertices_yx(part)
                kind = "rectangle" if kind == "rectangle" and _is_rectangle(vertices) else "polygon"
        else:
            raise CasperInputError(f"a {part.geom_type} is not a napari shape: expected polygons or lines.")
        shapes.append((vertices, kind))
    return shapes


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
        ``"ellipse"``, ``"path"`` or ``"line"``. All are saved and loaded as drawn; where an area
        is needed (spots, statistics) a path is closed into a polygon and a line is refused.
    classes
        Region class per shape; every class is in ``palette`` (unknown ones are added).
    names
        Name per shape (defaults to ``"<class>_<k>"``).
    affine
        3x3 affine, ``(y, x)`` order, from data coordinates to ``coordinate_system``.
    origins
        Per shape :data:`DRAWN` (by hand, the default) or :data:`SUGGESTED` (from biomarkers); where
        regions overlap, :func:`napari_casper.regions.spots.spot_region_labels` lets one kind win.
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
    origins: list[str] | None = None

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
        self.origins = [o if o in ORIGINS else DRAWN for o in (self.origins or [DRAWN] * n)]
        for what in ("authors", "timestamps", "origins"):
            values = getattr(self, what)
            if values is not None and len(values) != n:
                raise CasperInputError(f"{n} shapes but {len(values)} {what}: give one per shape, or None.")
        for i, (vertices, shape_type) in enumerate(zip(self.vertices, self.shape_types)):
            shape_geometry(vertices, shape_type, i)  # refuse unknown types and degenerate shapes up front

    def __len__(self) -> int:
        return len(self.vertices)

    def data_geometries(self) -> list:
        """True shapely geometries in (x, y) *data* coordinates (:func:`shape_geometry`: polygons, and
        ``LineString`` for paths and lines)."""
        return [shape_geometry(v, t, i) for i, (v, t) in enumerate(zip(self.vertices, self.shape_types))]

    def world_geometries(self) -> list:
        """:meth:`data_geometries` in (x, y) of :attr:`coordinate_system` (polygons made valid)."""
        import shapely

        moved = [shapely.transform(g, lambda xy: apply_affine_xy(self.affine, xy)) for g in self.data_geometries()]
        return [g if g.geom_type == "LineString" else valid_polygon(g) for g in moved]

    def data_polygons(self) -> list:
        """Shapely polygons in (x, y) *data* coordinates (ellipses sampled, paths closed, lines refused)."""
        return [shape_polygon(v, t, i) for i, (v, t) in enumerate(zip(self.vertices, self.shape_types))]

    def world_polygons(self) -> list:
        """Valid shapely (multi-)polygons in (x, y) of :attr:`coordinate_system` (the areas regions cover)."""
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
            pick(self.origins),
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
        origins: Sequence[str] | str = DRAWN,
    ) -> RegionSet:
        """Regions from shapely polygons in (x, y) of ``coordinate_system``, expressed in the data
        coordinates of a layer whose affine is ``affine`` (identity: data = world).

        Each part of a multi-polygon becomes its own polygon region; a ``LineString`` (as in
        :meth:`world_geometries`) becomes a path, or a line if it has 2 vertices.
        """
        import shapely

        affine = np.eye(3) if affine is None else np.asarray(affine, dtype=float)
        inverse = np.linalg.inv(affine)
        if isinstance(classes, str):
            classes = [classes] * len(polygons)
        if isinstance(origins, str):
            origins = [origins] * len(polygons)
        names = [None] * len(polygons) if names is None else list(names)
        exploded = [
            (vertices, kind, label, name or "", origin)
            for geometry, label, name, origin in zip(polygons, classes, names, origins)
            for vertices, kind in shape_vertices(
                shapely.transform(geometry, lambda xy: apply_affine_xy(inverse, xy)),
                "line" if geometry.geom_type == "LineString" and len(geometry.coords) == 2 else "polygon",
            )
        ]
        columns = list(zip(*exploded)) if exploded else [[]] * 5
        return cls(
            list(columns[0]),
            list(columns[1]),
            list(columns[2]),
            list(columns[3]),
            affine,
            coordinate_system,
            palette or RegionClasses(),
            origins=list(columns[4]),
        )
