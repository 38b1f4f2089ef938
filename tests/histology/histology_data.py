"""MOB / HER2+ sections for the histology tests.

The four MOB sections come from the package (copies of ``../shared/data/mob``, see
``conftest.mob_path``); the HER2+ sections only from ``../shared/data`` (tests that need them skip
when it is absent). Both fixtures load a section the first time a test indexes it, so a test that
uses one section decodes one image.

Import the fixtures into a test module with ``from histology_data import mob_sections``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from conftest import mob_path, shared_path

__all__ = ["her2_path", "her2_sections", "mob_path", "mob_sections"]


def her2_path(name: str):
    return shared_path("her2st", f"{name}.h5ad")


class LazySections(Sequence):
    """A read-only list of sections, each loaded (once) when first indexed; slices give lists."""

    def __init__(self, names: list[str], load: Callable):
        self._names = list(names)
        self._load = load
        self._loaded: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        name = self._names[index]
        if name not in self._loaded:
            self._loaded[name] = self._load(name)
        return self._loaded[name]


@pytest.fixture(scope="module")
def mob_sections():
    """MOB1..4 as HistologySection objects (full-resolution 1905 px jpgs, 32 px patches)."""
    from napari_casper.histology.sections import load_section

    return LazySections(["MOB1", "MOB2", "MOB3", "MOB4"], lambda name: load_section(mob_path(name)))


@pytest.fixture(scope="module")
def her2_sections():
    """HER2+ C2..C4, decoded at 1/2 size for 64 px patches (spots ~68 px)."""
    from napari_casper.histology.sections import load_section

    return LazySections(["C2", "C3", "C4"], lambda name: load_section(her2_path(name), patch_size=64))
