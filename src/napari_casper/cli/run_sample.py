"""``napari-casper run-sample``: the main job on the bundled Drosophila sample.

Writes the sample as a SpatialData store, opens it in napari with a gene colouring the cells
over the embryo, and saves a screenshot. Needs a display (the README runs it under Xvfb).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run-sample",
        help="run the main job on the bundled Drosophila sample and save a screenshot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("out/sample"), help="output folder (default: out/sample)")
    parser.add_argument("--gene", default="eve", help="gene that colours the cells (default: eve)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from napari_casper.io import save_spatialdata
    from napari_casper.sample_data import load_drosophila

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    sdata = load_drosophila()
    store = save_spatialdata(sdata, out / "drosophila.zarr", overwrite=True)
    print(f"sample written to {store}")
    shot = screenshot_store(store, args.gene, out / "screenshot.png")
    print(f"screenshot of {args.gene} over the embryo: {shot}")
    return 0


def screenshot_store(store: Path, gene: str, path: Path) -> Path:
    """Open ``store`` in a napari viewer, colour its spots by ``gene``, save a screenshot."""
    import napari
    from PIL import Image

    viewer = napari.Viewer(show=True)
    try:
        viewer.open(str(store), plugin="napari-casper")
        points = next(layer for layer in viewer.layers if isinstance(layer, napari.layers.Points))
        points.face_color = gene
        points.face_colormap = "viridis"
        viewer.reset_view()
        Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(path)
    finally:
        viewer.close()
    return path
