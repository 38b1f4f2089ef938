"""What every training loop shares with its caller: the cancel flag and checked option names.

Both CASPER (:mod:`napari_casper.casper.training`) and the histology model
(:mod:`napari_casper.histology.train`) take ``cancel`` (a ``threading.Event`` or a callable
returning True to stop), checked before every batch, and build their config dataclass from a
dict whose keys must all be options.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import fields

from napari_casper.errors import CasperInputError

#: what a training function accepts as ``cancel``
CancelFlag = threading.Event | Callable[[], bool]


def is_cancelled(cancel: CancelFlag | None) -> bool:
    """True once the caller asked to stop (``None``: never)."""
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


def check_options(config_class, values: Mapping, what: str) -> None:
    """Raise :class:`CasperInputError` naming every key of ``values`` that is not a field of ``config_class``."""
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise CasperInputError(
            f"unknown {what} option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(known))}"
        )
