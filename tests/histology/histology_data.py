"""Real MOB / HER2+ sections for the histology tests (skipped when ../shared/data is absent).

Import the fixtures into a test module with ``from histology_data import mob_sections``.
"""

from __future__ import annotations

import pytest
from conftest import shared_path


def mob_path(name: str):
    return shared_path("mob", f"{name}.h5ad")


def her2_path(name: str):
    return shared_path("her2st", f"{name}.h5ad")


@pytest.fixture(scope="module")
def mob_sections():
    """MOB1..4 as HistologySection objects (full-resolution 1905 px jpgs, 32 px patches)."""
    from napari_casper.histology.sections import load_section

    return [load_section(mob_path(f"MOB{i}")) for i in (1, 2, 3, 4)]


@pytest.fixture(scope="module")
def her2_sections():
    """HER2+ C2..C4, decoded at 1/2 size for 64 px patches (spots ~68 px)."""
    from napari_casper.histology.sections import load_section

    return [load_section(her2_path(n), patch_size=64) for n in ("C2", "C3", "C4")]
