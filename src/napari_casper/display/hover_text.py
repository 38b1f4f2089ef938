"""How a hovered spot's or cell's value reads in napari's status line."""

from __future__ import annotations

import numpy as np


def format_value(value: float) -> str:
    """A value as the status line shows it (4 significant digits; ``nan`` for a spot without one)."""
    return "nan" if not np.isfinite(value) else f"{float(value):.4g}"
