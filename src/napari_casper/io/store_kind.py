"""Is this folder a SpatialData store, or this path a packaged sample's URI? Answered with nothing heavy imported.

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


#: the URI of a packaged sample (napari.yaml ``sample_data``): this prefix, its key and ``.zarr`` (the reader's
#: pattern); a URL, so napari does not look for a file of that name
SAMPLE_URI_PREFIX = "napari-casper-sample://"


def sample_uri(key: str) -> str:
    """The URI napari opens the packaged sample ``key`` by (``drosophila`` or ``mob``)."""
    return f"{SAMPLE_URI_PREFIX}{key}.zarr"


def sample_key(path) -> str | None:
    """The packaged sample's key when ``path`` is a :func:`sample_uri`, else None."""
    text = str(path)
    if text.startswith(SAMPLE_URI_PREFIX) and text.endswith(".zarr"):
        return text[len(SAMPLE_URI_PREFIX) : -len(".zarr")]
    return None


def display_name(path) -> str:
    """How a path or sample URI is named to the user: ``sample drosophila``, else the file or folder name."""
    key = sample_key(path)
    return f"sample {key}" if key is not None else Path(str(path)).name
