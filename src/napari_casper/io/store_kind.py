"""Is this folder a SpatialData store? Answered from its zarr metadata alone, with nothing heavy imported.

napari imports the npe2 reader module (and with it this) on the GUI thread at a user's first File > Open;
anndata, pandas and spatialdata would cost it ~0.75 s there.
"""

from __future__ import annotations

import json
from pathlib import Path

ELEMENT_GROUPS = ("images", "labels", "points", "shapes", "tables")


def is_spatialdata_store(path: str | Path) -> bool:
    """True when ``path`` is a directory holding a SpatialData zarr root."""
    path = Path(path)
    for meta in ("zarr.json", ".zattrs"):
        file = path / meta
        if file.is_file():
            try:
                text = json.loads(file.read_text())
            except (OSError, ValueError):
                return False
            attrs = text.get("attributes", text)
            if "spatialdata_attrs" in attrs:
                return True
            return any((path / group).is_dir() for group in ELEMENT_GROUPS)
    return False
