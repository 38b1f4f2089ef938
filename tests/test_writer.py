"""npe2 writer: Shapes/Points layers saved as new elements, never replacing existing ones."""

from __future__ import annotations

import numpy as np
import pytest

from napari_casper._writer import write_layers
from napari_casper.errors import CasperInputError
from napari_casper.io.samples import load_mob
from napari_casper.io.store_writes import save_spatialdata
from napari_casper.io.stores import read_spatialdata


@pytest.fixture()
def store(tmp_path):
    return save_spatialdata(load_mob(), tmp_path / "mob.zarr")


def test_shapes_layer_becomes_polygons_in_world_coordinates(store):
    square = np.array([[700.0, 600.0], [700.0, 900.0], [1000.0, 900.0], [1000.0, 600.0]])  # (y, x)
    affine = np.array([[2.0, 0.0, 10.0], [0.0, 2.0, 20.0], [0.0, 0.0, 1.0]])
    write_layers(str(store), [([square], {"name": "tumour", "affine": affine}, "shapes")])
    sdata = read_spatialdata(store)
    from spatialdata.transformations import get_transformation

    polygon = sdata.shapes["tumour"].geometry.iloc[0]
    assert polygon.bounds == (600.0, 700.0, 900.0, 1000.0)  # (minx, miny, maxx, maxy) in layer data units
    matrix = get_transformation(sdata.shapes["tumour"], "global").to_affine_matrix(("y", "x"), ("y", "x"))
    np.testing.assert_allclose(matrix, affine)
    assert set(sdata.shapes) == {"spots", "tumour"}


def test_points_layer_and_no_clobbering(store):
    points = np.array([[650.0, 800.0], [700.0, 820.0]])
    write_layers(str(store), [(points, {"name": "marks", "size": 16.0}, "points")])
    assert len(read_spatialdata(store).shapes["marks"]) == 2
    with pytest.raises(CasperInputError, match="already has an element named 'marks'"):
        write_layers(str(store), [(points, {"name": "marks", "size": 16.0}, "points")])


def test_new_store_is_created(tmp_path):
    square = [np.array([[0.0, 0.0], [0.0, 5.0], [5.0, 5.0]])]
    written = write_layers(str(tmp_path / "new"), [(square, {"name": "roi"}, "shapes")])
    assert written == [str(tmp_path / "new.zarr")]
    assert "roi" in read_spatialdata(tmp_path / "new.zarr").shapes


def test_empty_shapes_layer(store):
    with pytest.raises(CasperInputError, match="Shapes layer is empty"):
        write_layers(str(store), [([], {"name": "nothing"}, "shapes")])


# --- every napari shape type keeps its true geometry (same code as the Regions widget) ---

#: a 2x scale + shift from layer data to world, (y, x) order
AFFINE = np.array([[2.0, 0.0, 10.0], [0.0, 2.0, 20.0], [0.0, 0.0, 1.0]])
#: ellipse/rectangle half-axes (y, x) and rotation, in data units
A, B, THETA = 100.0, 60.0, 0.4


def _rotated_box(centre_yx) -> np.ndarray:
    """napari's 4 corners (4, 2) (y, x) of a 2A x 2B box turned by THETA about ``centre_yx``."""
    rotation = np.array([[np.cos(THETA), -np.sin(THETA)], [np.sin(THETA), np.cos(THETA)]])
    return np.array([[-A, -B], [-A, B], [A, B], [A, -B]]) @ rotation.T + np.asarray(centre_yx, float)


def known_shapes() -> tuple[list[np.ndarray], list[str]]:
    """One shape of every napari type, (y, x) data coordinates, with analytic geometry."""
    shapes = [
        _rotated_box([500.0, 300.0]),  # ellipse, area pi A B
        _rotated_box([800.0, 700.0]),  # rotated rectangle, area 4 A B
        np.array([[0.0, 0.0], [0.0, 50.0], [40.0, 70.0], [10.0, 20.0]]),  # polygon
        np.array([[0.0, 0.0], [30.0, 40.0], [0.0, 80.0], [60.0, 90.0]]),  # open path, length 50 + 50 + 60.83
        np.array([[5.0, 5.0], [35.0, 45.0]]),  # line, length 50
    ]
    return shapes, ["ellipse", "rectangle", "polygon", "path", "line"]


def polygonised_ellipse_area(n: int = 144) -> float:
    """Area of the n-gon inscribed in the A x B ellipse, vertices evenly spaced in the angle parameter."""
    return np.pi * A * B * n / (2 * np.pi) * np.sin(2 * np.pi / n)


def check_true_geometry(element, shapes, types, affine, rtol: float = 1e-12) -> None:
    """``element`` (a written shapes element) holds ``shapes`` with their true geometry.

    Vertices are compared exactly; areas and lengths with the analytic values to ``rtol``
    (napari holds vertices as float32: 1e-6).
    """
    from shapely.geometry import Polygon
    from spatialdata.transformations import get_transformation

    from napari_casper.regions.geometry import ELLIPSE_VERTICES
    from napari_casper.regions.store import element_geometries

    assert set(element.geometry.geom_type) == {"Polygon"}  # what spatialdata 0.7 holds
    assert list(element["shape_type"]) == types
    geometries = element_geometries(element)
    assert [g.geom_type for g in geometries] == ["Polygon"] * 3 + ["LineString"] * 2
    ellipse, rectangle, polygon, path, line = geometries
    shapes = [np.asarray(s, dtype=float) for s in shapes]
    assert ellipse.area == pytest.approx(polygonised_ellipse_area(ELLIPSE_VERTICES), rel=rtol)
    assert abs(ellipse.area / (np.pi * A * B) - 1) < 4e-4  # 144 vertices: 0.032 % short of pi A B
    assert rectangle.area == pytest.approx(4 * A * B, rel=rtol)
    np.testing.assert_array_equal(np.asarray(rectangle.exterior.coords)[:-1], shapes[1][:, ::-1])
    assert polygon.equals_exact(Polygon(shapes[2][:, ::-1]), 0)
    np.testing.assert_array_equal(np.asarray(path.coords), shapes[3][:, ::-1])
    np.testing.assert_array_equal(np.asarray(line.coords), shapes[4][:, ::-1])
    assert line.length == pytest.approx(50.0, rel=rtol) and path.length == pytest.approx(100 + np.hypot(60, 10), rel=rtol)
    outline = element.geometry.iloc[4]  # the line's stand-in: a thin flat-ended strip along it
    assert outline.area == pytest.approx(2e-3 * line.length**2, rel=1e-9) and outline.contains(line.centroid)
    matrix = get_transformation(element, "global").to_affine_matrix(("y", "x"), ("y", "x"))
    np.testing.assert_allclose(matrix, affine)


def test_every_shape_type_keeps_its_true_geometry(tmp_path):
    shapes, types = known_shapes()
    write_layers(str(tmp_path / "shapes.zarr"), [(shapes, {"name": "drawn", "affine": AFFINE, "shape_type": types}, "shapes")])
    element = read_spatialdata(tmp_path / "shapes.zarr").shapes["drawn"]
    check_true_geometry(element, shapes, types, AFFINE)


def test_single_shape_type_and_refusals(tmp_path):
    shapes, _ = known_shapes()
    write_layers(str(tmp_path / "s.zarr"), [(shapes[:1], {"name": "e", "shape_type": "ellipse"}, "shapes")])
    assert list(read_spatialdata(tmp_path / "s.zarr").shapes["e"]["shape_type"]) == ["ellipse"]
    with pytest.raises(CasperInputError, match="shape 0 .line. has fewer than 2 distinct vertices"):
        write_layers(str(tmp_path / "s.zarr"), [([np.zeros((2, 2))], {"name": "dot", "shape_type": ["line"]}, "shapes")])


def test_napari_save_layers_round_trips_every_shape_type(make_napari_viewer, tmp_path):
    """What a user does: draw in napari, File > Save Layers with napari-casper, load them back."""
    from napari_casper.regions import load_regions

    viewer = make_napari_viewer()
    shapes, types = known_shapes()
    layer = viewer.add_shapes(name="drawn", affine=AFFINE)
    layer.add_ellipses(np.array([[500.0, 300.0], [A, B]]))  # centre + radii: napari makes the 4 corners
    for vertices, shape_type in zip(shapes[1:], types[1:]):
        layer.add([vertices], shape_type=shape_type)
    assert list(layer.shape_type) == types
    store = tmp_path / "drawn.zarr"
    assert viewer.layers.save(str(store), plugin="napari-casper") == [str(store)]

    element = read_spatialdata(store).shapes["drawn"]
    upright = np.array([[400.0, 240.0], [400.0, 360.0], [600.0, 360.0], [600.0, 240.0]])
    np.testing.assert_allclose(np.sort(layer.data[0], axis=0), np.sort(upright, axis=0))
    check_true_geometry(element, layer.data, types, AFFINE, rtol=1e-6)  # napari holds float32 vertices
    # world coordinates: the element's transformation does what the layer's affine does on screen
    from spatialdata.transformations import get_transformation

    matrix = get_transformation(element, "global").to_affine_matrix(("y", "x"), ("y", "x"))
    for vertices in layer.data:
        on_screen = np.array([layer.data_to_world(vertex) for vertex in vertices])
        np.testing.assert_allclose(vertices @ matrix[:2, :2].T + matrix[:2, 2], on_screen, rtol=1e-6)

    # and back into napari: the same vertices, shape types and affine
    regions = load_regions(store, "drawn")
    assert regions.shape_types == types
    reopened = viewer.add_shapes(regions.vertices, shape_type=regions.shape_types, affine=regions.affine, name="reopened")
    assert list(reopened.shape_type) == types
    for before, after in zip(layer.data, reopened.data):
        np.testing.assert_allclose(after, before, atol=1e-9)
    np.testing.assert_allclose(reopened.affine.affine_matrix, layer.affine.affine_matrix)
