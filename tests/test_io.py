"""SpatialData reading and atomic, non-clobbering writes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from conftest import mob_path

from napari_casper.errors import CasperInputError
from napari_casper.io.convert import spots_element
from napari_casper.io.store_writes import save_spatialdata, write_new_element
from napari_casper.io.stores import read_any, read_h5ad_spatial, read_spatialdata


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture()
def mob_store(tmp_path):
    sdata = read_h5ad_spatial(mob_path("MOB2"))
    return save_spatialdata(sdata, tmp_path / "mob2.zarr")


def test_h5ad_reader_finds_image_next_to_file():
    sdata = read_h5ad_spatial(mob_path("MOB2"))
    assert sdata.images["image"].shape == (3, 1905, 1905)
    assert len(sdata.shapes["spots"]) == sdata.tables["table"].n_obs


def test_zarr_round_trip(mob_store):
    sdata = read_any(mob_store)
    original = read_h5ad_spatial(mob_path("MOB2"))
    np.testing.assert_array_equal(sdata.images["image"].values, original.images["image"].values)
    np.testing.assert_allclose(sdata.tables["table"].X.toarray(), original.tables["table"].X.toarray())


def test_new_element_added_without_touching_existing(mob_store):
    existing = {g: tree_digest(mob_store / g) for g in ("images", "shapes", "tables")}
    element = spots_element(np.array([[600.0, 700.0], [800.0, 900.0]]), 16.0)
    write_new_element(mob_store, "annotations", element)
    reopened = read_spatialdata(mob_store)
    assert list(reopened.shapes["annotations"].geometry.x) == [600.0, 800.0]
    assert set(reopened.shapes) == {"spots", "annotations"}
    after = {g: tree_digest(mob_store / g) for g in ("images", "shapes", "tables")}
    assert after["images"] == existing["images"] and after["tables"] == existing["tables"]
    spot_files = {k: v for k, v in after["shapes"].items() if k.startswith("spots/")}
    assert spot_files == {k: v for k, v in existing["shapes"].items() if k.startswith("spots/")}
    assert not list(mob_store.parent.glob(".*casper-tmp*"))  # no scratch left behind


def test_existing_element_is_never_clobbered_silently(mob_store):
    before = tree_digest(mob_store)
    with pytest.raises(CasperInputError, match="already has an element named 'spots'.*nothing was written"):
        write_new_element(mob_store, "spots", spots_element(np.array([[1.0, 2.0]]), 2.0))
    assert tree_digest(mob_store) == before


def test_explicit_overwrite_replaces(mob_store):
    write_new_element(mob_store, "regions", spots_element(np.array([[1.0, 2.0]]), 2.0))
    write_new_element(mob_store, "regions", spots_element(np.array([[5.0, 6.0], [7.0, 8.0]]), 2.0), overwrite=True)
    assert len(read_spatialdata(mob_store).shapes["regions"]) == 2


def test_save_refuses_existing_path(mob_store):
    with pytest.raises(CasperInputError, match="already exists; nothing was written"):
        save_spatialdata(read_spatialdata(mob_store), mob_store)


def test_folder_that_is_not_spatialdata(tmp_path):
    (tmp_path / "plain.zarr").mkdir()
    (tmp_path / "plain.zarr" / "notes.txt").write_text("hello")
    with pytest.raises(CasperInputError, match="is not a SpatialData store"):
        read_any(tmp_path / "plain.zarr")


def test_unreadable_h5ad(tmp_path):
    bad = tmp_path / "broken.h5ad"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(CasperInputError, match="is not an .h5ad .AnnData/HDF5. file"):
        read_any(bad)


def test_missing_image_named_in_uns(tmp_path):
    import anndata as ad

    adata = ad.read_h5ad(mob_path("MOB3"))
    adata.write_h5ad(tmp_path / "MOB3.h5ad")  # uns['image'] = 'MOB3.jpg', not copied
    with pytest.raises(CasperInputError, match="names image 'MOB3.jpg'.*does not exist"):
        read_any(tmp_path / "MOB3.h5ad")


def test_h5ad_writes_are_atomic_and_never_over_an_input(tmp_path, monkeypatch):
    import anndata as ad
    import numpy as np

    from napari_casper.errors import CasperInputError
    from napari_casper.io.stores import write_h5ad_atomic

    target = tmp_path / "out.h5ad"
    write_h5ad_atomic(ad.AnnData(np.ones((3, 2), dtype=np.float32)), target)
    earlier = target.read_bytes()

    def dies_half_way(self, path, *args, **kwargs):  # an interrupted write: half a file, then failure
        with open(path, "wb") as handle:
            handle.write(earlier[: len(earlier) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", dies_half_way)
    with pytest.raises(CasperInputError, match="cannot write .*out.h5ad: the disk is full .no space left on device.. The earlier file there is intact"):
        write_h5ad_atomic(ad.AnnData(np.zeros((3, 2), dtype=np.float32)), target)
    monkeypatch.undo()
    assert target.read_bytes() == earlier and ad.read_h5ad(target).X.sum() == 6  # the earlier result is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5ad"]  # no partial file left behind
    with pytest.raises(CasperInputError, match="is an input file"):
        write_h5ad_atomic(ad.AnnData(np.zeros((3, 2), dtype=np.float32)), target, inputs=[target])
