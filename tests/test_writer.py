"""npe2 writer: Shapes/Points layers saved as new elements, never replacing existing ones."""

from __future__ import annotations

import numpy as np
import pytest

from napari_casper._writer import write_layers
from napari_casper.errors import CasperInputError
from napari_casper.io.samples import load_mob
from napari_casper.io.stores import read_spatialdata, save_spatialdata


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
