"""Regenerate docs/images/elements_blobs.png: a store written by spatialdata itself, every element type.

``xvfb-run -a -s "-screen 0 1700x1100x24" .venv/bin/python docs/make_element_screenshots.py``

``spatialdata.datasets.blobs()`` written to zarr (images single and multiscale, labels single and
multiscale, points, circles, polygons, multipolygons, a table annotating the labels), opened with
the plugin's reader as ``File > Open`` does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _screenshots import new_viewer, shot
from spatialdata.datasets import blobs

from napari_casper.io.store_writes import save_spatialdata


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = save_spatialdata(blobs(), Path(folder) / "blobs.zarr")
        viewer = new_viewer()
        viewer.open(str(store), plugin="napari-casper")
        for layer in viewer.layers:  # one image channel under the labels, outlines and points
            layer.visible = not layer.name.startswith(("blobs_multiscale", "blobs_image:1", "blobs_image:2"))
        viewer.layers["blobs_labels"].opacity = 0.45
        viewer.layers.selection.active = viewer.layers["blobs_polygons"]
        viewer.reset_view()
        shot(viewer, "elements_blobs.png")
        viewer.close()


if __name__ == "__main__":
    main()
