"""Region classes (tumour, stroma, ...) and their colours: an ordered, user-editable list."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np

from napari_casper.errors import CasperInputError

#: the classes a new annotation starts with, in legend order, with their colours
DEFAULT_REGION_CLASSES: dict[str, str] = {
    "tumour": "#e6194b",
    "stroma": "#f58231",
    "immune": "#4363d8",
    "normal": "#3cb44b",
    "other": "#a9a9a9",
}
#: colours given to classes added without one (skipping those already in use)
_SPARE_COLOURS = ("#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#469990", "#9a6324", "#800000", "#000075", "#ffe119")


#: a colour already in the form :func:`to_hex` returns (any case)
_HEX = re.compile("#[0-9a-fA-F]{6}")


def to_hex(colour) -> str:
    """``"#rrggbb"`` for a colour name, hex string or RGB(A) tuple in 0..1."""
    if isinstance(colour, str) and _HEX.fullmatch(colour):  # the default classes: no matplotlib import (0.3 s)
        return colour.lower()
    from matplotlib.colors import to_hex as mpl_to_hex

    try:
        return mpl_to_hex(colour, keep_alpha=False)
    except (ValueError, TypeError) as err:
        raise CasperInputError(
            f"{colour!r} is not a colour: use a name like 'red' or a hex code like '#ff0000'."
        ) from err


class RegionClasses:
    """Ordered mapping of class name -> ``"#rrggbb"`` colour (the legend of an annotation).

    >>> classes = RegionClasses()
    >>> classes.names[:2]
    ['tumour', 'stroma']
    """

    def __init__(self, classes: Mapping[str, str] | Iterable[str] | None = None):
        self._colours: dict[str, str] = {}
        source = DEFAULT_REGION_CLASSES if classes is None else classes
        if isinstance(source, Mapping):
            for name, colour in source.items():
                self.add(name, colour)
        else:
            for name in source:
                self.add(name)

    @property
    def names(self) -> list[str]:
        return list(self._colours)

    def __contains__(self, name: object) -> bool:
        return name in self._colours

    def __len__(self) -> int:
        return len(self._colours)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RegionClasses) and list(self._colours.items()) == list(other._colours.items())

    def __repr__(self) -> str:
        return f"RegionClasses({self._colours!r})"

    def copy(self) -> RegionClasses:
        return RegionClasses(dict(self._colours))

    def colour(self, name: str) -> str:
        if name not in self._colours:
            raise CasperInputError(f"unknown region class {name!r}; the classes are {self.names}: add it first.")
        return self._colours[name]

    def rgba(self, name: str, alpha: float = 1.0) -> np.ndarray:
        """``(4,)`` float RGBA in 0..1."""
        from matplotlib.colors import to_rgba

        return np.asarray(to_rgba(self.colour(name), alpha), dtype=float)

    def add(self, name: str, colour=None) -> str:
        """Add class ``name`` (a spare colour if none is given); returns its colour."""
        name = str(name).strip()
        if not name:
            raise CasperInputError("a region class needs a name: type one before adding it.")
        if name in self._colours:
            if colour is not None:
                self._colours[name] = to_hex(colour)
            return self._colours[name]
        if colour is None:
            used = set(self._colours.values())
            colour = next((c for c in _SPARE_COLOURS if c not in used), _SPARE_COLOURS[len(self) % len(_SPARE_COLOURS)])
        self._colours[name] = to_hex(colour)
        return self._colours[name]

    def set_colour(self, name: str, colour) -> None:
        self.colour(name)  # raises for an unknown class
        self._colours[name] = to_hex(colour)

    def remove(self, name: str) -> None:
        self.colour(name)
        if len(self._colours) == 1:
            raise CasperInputError("cannot remove the last region class: add another one first.")
        del self._colours[name]

    def to_uns(self) -> dict:
        """What a regions table keeps in ``uns`` (lists, so the order survives zarr)."""
        return {"names": self.names, "colours": list(self._colours.values())}

    @classmethod
    def from_uns(cls, uns: Mapping | None) -> RegionClasses | None:
        if not uns or "names" not in uns:
            return None
        return cls(dict(zip(map(str, uns["names"]), map(str, uns["colours"]))))
