"""Bad input to the Python API and the napari reader/writer hooks, table-driven.

Each case must raise the package's own error (:class:`~napari_casper.errors.CasperInputError` or a
subclass) with words that say what is wrong, leave the inputs byte-identical and leave no scratch,
lock or partial file behind.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import numpy as np
import pytest
from bad_world import build_world, junk, snapshot

from napari_casper.errors import CasperInputError, OutputError


def _store(tmp: Path) -> Path:
    import anndata as ad

    from napari_casper.io.convert import anndata_to_spatialdata
    from napari_casper.io.store_writes import save_spatialdata

    spots = ad.read_h5ad(build_world() / "MOB1.h5ad")
    return save_spatialdata(anndata_to_spatialdata(spots, None), tmp / "mob.zarr")


def _shapes_element():
    import geopandas as gpd
    from shapely.geometry import Polygon
    from spatialdata.models import ShapesModel

    return ShapesModel.parse(gpd.GeoDataFrame(geometry=[Polygon([(0, 0), (10, 0), (10, 10)])]))


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def c_read_h5ad_truncated(w, tmp, mp):
    from napari_casper.io.stores import read_h5ad

    read_h5ad(w / "st_trunc.h5ad")


def c_read_h5ad_csv(w, tmp, mp):
    from napari_casper.io.stores import read_h5ad

    read_h5ad(w / "table.csv")


def c_read_spatialdata_plain_folder(w, tmp, mp):
    from napari_casper.io.stores import read_spatialdata

    read_spatialdata(w / "not_a_store.zarr")


def c_read_spatialdata_missing(w, tmp, mp):
    from napari_casper.io.stores import read_spatialdata

    read_spatialdata(w / "absent.zarr")


def c_read_image_truncated(w, tmp, mp):
    from napari_casper.io.convert import read_image_file

    read_image_file(w / "trunc.jpg")


def c_read_image_text(w, tmp, mp):
    from napari_casper.io.convert import read_image_file

    read_image_file(w / "text.jpg")


def c_read_image_nan_tiff(w, tmp, mp):
    import tifffile

    from napari_casper.io.convert import read_image_file

    image = np.full((8, 8, 3), np.nan, dtype=np.float32)
    tifffile.imwrite(tmp / "nan.tif", image)
    read_image_file(tmp / "nan.tif")


def c_open_spots_duplicated_gene(w, tmp, mp):
    from napari_casper.casper.batch.spot_source import open_spots

    open_spots(w / "st_dup.h5ad")


def c_impute_to_zarr_zero_spots(w, tmp, mp):
    import anndata as ad

    from napari_casper.casper.batch.impute import impute_to_zarr
    from napari_casper.casper.checkpoint import load_checkpoint

    impute_to_zarr(load_checkpoint(w / "casper.pt"), ad.read_h5ad(w / "st_empty.h5ad"), ["eve"], tmp / "x.zarr")


def c_centroids_float_label(w, tmp, mp):
    import anndata as ad

    from napari_casper.casper.centroids import compute_centroids

    ref = ad.read_h5ad(w / "ref_labels.h5ad")
    compute_centroids(ref.X, ref.var_names, obs=ref.obs, label_key="area")


def c_prepare_pair_one_spot(w, tmp, mp):
    import anndata as ad

    from napari_casper.casper.preprocess import prepare_pair

    prepare_pair(ad.read_h5ad(w / "st_one.h5ad"), ad.read_h5ad(w / "ref.h5ad"))


def c_load_predictor_pickle(w, tmp, mp):
    from napari_casper.histology.checkpoint import load_predictor

    load_predictor(w / "pickle.pt")


def c_save_spatialdata_existing(w, tmp, mp):
    import spatialdata as sd

    from napari_casper.io.store_writes import save_spatialdata

    store = _store(tmp)
    save_spatialdata(sd.SpatialData(), store)


def c_write_new_element_existing_name(w, tmp, mp):
    from napari_casper.io.store_writes import write_new_element

    store = _store(tmp)
    write_new_element(store, "spots", _shapes_element())


def c_write_new_element_disk_full(w, tmp, mp):
    import spatialdata as sd

    from napari_casper.io.store_writes import write_new_element

    store = _store(tmp)
    before = snapshot(store)
    mp.setattr(sd.SpatialData, "write", _enospc)
    try:
        write_new_element(store, "drawn", _shapes_element())
    finally:
        assert snapshot(store) == before  # the store is as it was


def c_write_h5ad_disk_full(w, tmp, mp):
    import anndata as ad

    from napari_casper.io.stores import write_h5ad_atomic

    target = tmp / "earlier.h5ad"
    shutil.copyfile(w / "st.h5ad", target)
    before = target.read_bytes()

    def half_then_full(self, path, *args, **kwargs):
        Path(path).write_bytes(b"\x89HDF\r\n\x1a\n partial")
        _enospc()

    mp.setattr(ad.AnnData, "write_h5ad", half_then_full)
    try:
        write_h5ad_atomic(ad.AnnData(np.ones((2, 2), dtype=np.float32)), target)
    finally:
        assert target.read_bytes() == before  # the earlier result is intact


def c_save_predictor_disk_full(w, tmp, mp):
    import torch

    from napari_casper.histology.checkpoint import load_predictor, save_predictor

    predictor = load_predictor(w / "histology.pt")
    mp.setattr(torch, "save", _enospc)
    save_predictor(predictor, tmp / "h.pt")


def c_reader_plain_zarr_folder(w, tmp, mp):
    from napari_casper._reader import napari_get_reader

    reader = napari_get_reader(str(w / "not_a_store.zarr"))
    assert reader is not None  # claimed, so the user gets our message
    reader(str(w / "not_a_store.zarr"))


def c_reader_truncated_h5ad(w, tmp, mp):
    from napari_casper._reader import napari_get_reader

    napari_get_reader(str(w / "st_trunc.h5ad"))(str(w / "st_trunc.h5ad"))


def c_reader_csv_named_h5ad(w, tmp, mp):
    from napari_casper._reader import napari_get_reader

    napari_get_reader(str(w / "csv_named.h5ad"))(str(w / "csv_named.h5ad"))


def c_writer_into_plain_folder(w, tmp, mp):
    from napari_casper._writer import write_layers

    folder = tmp / "plain.zarr"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    try:
        write_layers(str(folder), [([np.array([[0, 0], [0, 5], [5, 5]])], {"name": "r", "shape_type": "polygon"}, "shapes")])
    finally:
        assert (folder / "keep.txt").read_text() == "mine" and len(list(folder.iterdir())) == 1


def c_writer_empty_shapes(w, tmp, mp):
    from napari_casper._writer import write_layers

    write_layers(str(tmp / "new.zarr"), [([], {"name": "r"}, "shapes")])


def c_writer_disk_full(w, tmp, mp):
    import spatialdata as sd

    from napari_casper._writer import write_layers

    store = _store(tmp)
    before = snapshot(store)
    mp.setattr(sd.SpatialData, "write", _enospc)
    try:
        write_layers(str(store), [([np.array([[0, 0], [0, 5], [5, 5]])], {"name": "r", "shape_type": "polygon"}, "shapes")])
    finally:
        assert snapshot(store) == before


API_CASES = [
    (c_read_h5ad_truncated, CasperInputError, ["truncated"]),
    (c_read_h5ad_csv, CasperInputError, ["not an .h5ad", ".csv"]),
    (c_read_spatialdata_plain_folder, CasperInputError, ["is not a SpatialData store"]),
    (c_read_spatialdata_missing, CasperInputError, ["does not exist"]),
    (c_read_image_truncated, CasperInputError, ["is truncated"]),
    (c_read_image_text, CasperInputError, ["cannot read image", "use a jpg, png or tif"]),
    (c_read_image_nan_tiff, CasperInputError, ["NaN or infinite pixels"]),
    (c_open_spots_duplicated_gene, CasperInputError, ["in more than one column"]),
    (c_impute_to_zarr_zero_spots, CasperInputError, ["no spots (0 rows)"]),
    (c_centroids_float_label, CasperInputError, ["fractional numbers"]),
    (c_prepare_pair_one_spot, CasperInputError, ["only 1 spot"]),
    (c_load_predictor_pickle, CasperInputError, ["Python objects other than plain arrays"]),
    (c_save_spatialdata_existing, CasperInputError, ["already exists; nothing was written"]),
    (c_write_new_element_existing_name, CasperInputError, ["already has an element named 'spots'"]),
    (c_write_new_element_disk_full, OutputError, ["the disk is full", "is as it was"]),
    (c_write_h5ad_disk_full, OutputError, ["earlier.h5ad: the disk is full", "earlier file there is intact"]),
    (c_save_predictor_disk_full, OutputError, ["h.pt: the disk is full"]),
    (c_reader_plain_zarr_folder, CasperInputError, ["is not a SpatialData store"]),
    (c_reader_truncated_h5ad, CasperInputError, ["truncated"]),
    (c_reader_csv_named_h5ad, CasperInputError, ["not an .h5ad"]),
    (c_writer_into_plain_folder, CasperInputError, ["is not a SpatialData store"]),
    (c_writer_empty_shapes, CasperInputError, ["the Shapes layer is empty"]),
    (c_writer_disk_full, OutputError, ["the disk is full"]),
]


@pytest.mark.parametrize(("case", "error", "words"), API_CASES, ids=[c[0].__name__[2:] for c in API_CASES])
def test_api_bad_input_is_a_clear_error_and_loses_nothing(case, error, words, tmp_path, monkeypatch):
    world = build_world()
    before = snapshot(world)
    with pytest.raises(error) as caught:
        case(world, tmp_path, monkeypatch)
    message = str(caught.value)
    for word in words:
        assert word in message, message
    assert "weights_only" not in message and "Traceback" not in message
    assert snapshot(world) == before
    assert junk(world) == [] and junk(tmp_path) == []


def test_float32_tiff_becomes_uint8_rgb(tmp_path):
    import tifffile

    from napari_casper.io.convert import read_image_file

    rgb = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 4).astype(np.uint8)
    for scale, name in ((1 / 255, "unit.tif"), (1.0, "byte.tif")):
        tifffile.imwrite(tmp_path / name, rgb.astype(np.float32) * np.float32(scale))
        image = read_image_file(tmp_path / name)
        assert image.dtype == np.uint8 and image.shape == (4, 5, 3)
        np.testing.assert_array_equal(image, rgb)
