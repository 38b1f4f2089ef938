"""``napari-casper default-reader``: make napari open every ``.zarr`` folder and ``.h5ad`` file with napari-casper.

Several readers accept a ``.zarr`` folder (napari's own zarr reader, napari-casper,
napari-spatialdata). ``napari store.zarr`` and File > Open then ask which one to use, and napari's
"remember this choice" for a folder remembers that one folder only. This command adds the patterns
``*.zarr/`` (folders) and ``*.h5ad`` to napari's reader preferences (Preferences > Plugins >
File extension readers), so every store opens with napari-casper without a question::

    napari-casper default-reader           # napari store.zarr now opens with napari-casper
    napari-casper default-reader --undo    # back to napari asking

Nothing else in napari's settings changes; the settings file is napari's own (``NAPARI_CONFIG``
names another one).
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "default-reader",
        help="make napari open every .zarr folder and .h5ad file with napari-casper (napari's reader preferences)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--undo", action="store_true", help="remove these preferences again (napari asks which reader)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from napari_casper._widgets.common.reader_preference import PATTERNS, set_default_reader

    preferences, where = set_default_reader(undo=args.undo)
    if args.undo:
        print(f"napari asks again which reader opens {' and '.join(PATTERNS)} (settings: {where})")
    else:
        print(f"napari now opens {' and '.join(PATTERNS)} with napari-casper (settings: {where})")
    others = {k: v for k, v in preferences.items() if k not in PATTERNS}
    if others:
        print(f"other reader preferences, unchanged: {others}")
    return 0
