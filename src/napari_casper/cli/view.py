"""``napari-casper view``: open a SpatialData store (or a spatial .h5ad) in napari with this plugin.

``napari store.zarr`` lets napari choose among its readers; its built-in zarr reader takes a
SpatialData store for a plain zarr array and fails ("No arrays found in zarr group"). This
command always reads with napari-casper, in the coordinate system you name (the data's default
otherwise: ``global`` when present), and can open the docks at once::

    napari-casper view out/sample/drosophila.zarr --dock casper genes
    napari-casper view store.zarr --coordinate-system aligned --screenshot view.png

Elements that are not shown, and why, and the other coordinate systems are printed first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_casper.errors import CasperUsageError

DOCK_CHOICES = ("casper", "genes", "regions", "histology")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "view",
        help="open a SpatialData store or spatial .h5ad in napari with this plugin (a coordinate system, docks)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", type=Path, help="a SpatialData .zarr store or an .h5ad with obsm['spatial']")
    parser.add_argument("--coordinate-system", default=None, help="the coordinate system to show (default: global, or the first)")
    parser.add_argument("--dock", nargs="+", choices=DOCK_CHOICES, default=[], help="docks to open beside the data")
    parser.add_argument("--screenshot", type=Path, default=None, help="save a screenshot of the window to this PNG and exit")
    parser.set_defaults(func=run)


def run(args) -> int:
    from napari_casper._widgets.common.launch import open_in_napari
    from napari_casper.io.stores import read_any

    if not args.path.exists():
        raise CasperUsageError(f"{args.path} does not exist: give a SpatialData .zarr folder or an .h5ad file.")
    if args.coordinate_system is not None:
        systems = list(read_any(args.path).coordinate_systems)
        if args.coordinate_system not in systems:
            raise CasperUsageError(f"--coordinate-system {args.coordinate_system!r} is not in {args.path.name}; it has {sorted(systems)}.")
    if args.screenshot is not None and not args.screenshot.parent.is_dir():
        raise CasperUsageError(f"--screenshot {args.screenshot}: the folder {args.screenshot.parent} does not exist.")
    names = open_in_napari(args.path, args.coordinate_system, list(args.dock), args.screenshot)
    print(f"shown: {', '.join(names)}")
    if args.screenshot is not None:
        print(f"screenshot: {args.screenshot}")
    return 0
