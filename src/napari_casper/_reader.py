"""npe2 reader: SpatialData ``.zarr`` stores and ``.h5ad`` files with spatial coordinates."""

from __future__ import annotations

from pathlib import Path

from napari_casper.io.stores import is_spatialdata_store


def napari_get_reader(path):
    """Return :func:`read_spatial` for paths this plugin claims, else None.

    ``.zarr`` folders are claimed even when they are not SpatialData, so that the user gets
    our error naming the problem rather than a generic "no reader" message.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(path)
    if path.suffix == ".h5ad" or path.suffix == ".zarr" or (path.is_dir() and is_spatialdata_store(path)):
        return read_spatial
    return None


def read_spatial(path):
    """Layer-data tuples for every image and spot element of a SpatialData store or h5ad."""
    from napari_casper.display.layers import spatialdata_to_layers
    from napari_casper.io.stores import read_any

    if isinstance(path, list):
        path = path[0]
    sdata = read_any(path)
    return spatialdata_to_layers(sdata, source=str(path))
