"""npe2 reader: SpatialData ``.zarr`` stores and ``.h5ad`` files with spatial coordinates."""

from __future__ import annotations

from pathlib import Path

from napari_casper.io.store_kind import is_spatialdata_store


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
    """Layer-data tuples for every element of a SpatialData store or h5ad, in its default
    coordinate system. What is not shown (another coordinate system, an unsupported geometry)
    and the other coordinate systems are named in one notification.

    Called by napari's own Open in the running window (File > Open, drag and drop), the store is
    read in a worker and its layers arrive a turn at a time (napari would read it on the GUI
    thread): napari gets ``[(None,)]``, its "read, no layers" value. Anywhere else (``viewer.open``
    in a script) the layers are read and returned here.
    """
    from napari_casper._widgets.common.background_open import napari_open_viewer, open_in_background

    if isinstance(path, list):
        path = path[0]
    viewer = napari_open_viewer()
    if viewer is not None:
        open_in_background(viewer, path)
        return [(None,)]
    from napari_casper.display.layers import read_layers
    layers, note = read_layers(path)
    if note:
        from napari.utils.notifications import show_info

        show_info(note)
    return layers
