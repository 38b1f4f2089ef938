"""On-canvas legends for categorical layers, as napari layer data (Qt-free, numpy only).

A categorical layer (the dominant centroid, tumour-region classes, ...) reads at a glance only
when its legend sits on the canvas beside the tissue. :func:`legend_layer` builds that legend
as a Points layer-data tuple: one coloured marker per category in a column to the right of the
tissue, its name as text beside it, and an optional title row above. It is drawn in world
coordinates, so it scales and pans with the tissue and lands in screenshots.

Colours follow scanpy's convention, so that a table written by napari-casper colours the same
way in scanpy and back in napari: the categories of ``obs[key]`` (or an explicit list) and
``uns[f"{key}_colors"]``, one ``"#rrggbb"`` string per category, in category order
(:func:`colors_key`, :func:`hex_colours`, :func:`colours_from_uns`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from napari_casper.io.elements import METADATA_KEY

#: ``metadata["napari_casper"]["kind"]`` of a legend layer (never a spots layer)
LEGEND_KIND = "legend"
#: the legend column never has fewer rows than this (a 3-category legend stays small)
MIN_ROWS = 12


def colors_key(key: str) -> str:
    """scanpy's name for the colours of ``obs[key]``: ``"<key>_colors"``."""
    return f"{key}_colors"


def hex_colours(colours) -> list[str]:
    """``(n, 3|4)`` RGB(A) floats in [0, 1] -> ``["#rrggbb", ...]`` (scanpy's ``uns`` format)."""
    rgb = np.asarray(colours, dtype=float)
    rgb = np.clip(rgb.reshape(1, -1) if rgb.ndim == 1 else rgb, 0, 1)[:, :3]
    return ["#" + "".join(f"{int(round(255 * c)):02x}" for c in row) for row in rgb]


def rgba_from_hex(colours: Sequence[str]) -> np.ndarray:
    """``["#rrggbb" | "#rrggbbaa", ...]`` -> ``(n, 4)`` RGBA floats in [0, 1]."""
    rows = []
    for text in colours:
        value = str(text).lstrip("#")
        if len(value) not in (6, 8):
            raise ValueError(f"not a #rrggbb colour: {text!r}")
        channels = [int(value[j : j + 2], 16) / 255 for j in range(0, len(value), 2)]
        rows.append(channels + [1.0] * (4 - len(channels)))
    return np.asarray(rows, dtype=float).reshape(-1, 4)


def store_colours(uns: dict, key: str, colours) -> None:
    """Write ``colours`` (RGBA rows in category order) into ``uns["<key>_colors"]`` as scanpy does."""
    uns[colors_key(key)] = np.asarray(hex_colours(colours), dtype=object)


def colours_from_uns(uns: Mapping, key: str, n_categories: int) -> np.ndarray | None:
    """``(n_categories, 4)`` RGBA from ``uns["<key>_colors"]``, or None when absent or too short."""
    stored = uns.get(colors_key(key)) if uns is not None else None
    if stored is None or len(stored) < n_categories:
        return None
    try:
        return rgba_from_hex(list(stored)[:n_categories])
    except ValueError:
        return None


def world_extent(yx: np.ndarray, affine: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(min_yx, max_yx)`` of data points ``(n, 2)`` (y, x) after the 3x3 (y, x) ``affine``."""
    yx = np.asarray(yx, dtype=float).reshape(-1, 2)
    if affine is not None:
        affine = np.asarray(affine, dtype=float)
        yx = yx @ affine[:2, :2].T + affine[:2, 2]
    if len(yx) == 0:
        return np.zeros(2), np.ones(2)
    return np.nanmin(yx, axis=0), np.nanmax(yx, axis=0)


def legend_layer(
    categories: Sequence[str],
    colours,
    extent: tuple[np.ndarray, np.ndarray],
    *,
    name: str,
    title: str | None = None,
    text_size: float = 10.0,
    extra_metadata: dict | None = None,
) -> tuple:
    """Points layer-data tuple: a legend column to the right of ``extent`` (world ``(min_yx, max_yx)``).

    One marker per category coloured ``colours[i]`` (RGBA rows or ``#rrggbb``), its name as
    text to the right of the marker; ``title`` (when given) is a text-only first row. Rows are
    spaced ``height / max(n_rows, MIN_ROWS)`` apart from the top of the tissue. A last,
    invisible point with an empty label marks where the longest name ends.
    """
    categories = [str(c) for c in categories]
    colours = np.asarray(rgba_from_hex(colours) if len(colours) and isinstance(colours[0], str) else colours, dtype=float).reshape(-1, 4)
    if len(colours) != len(categories):
        raise ValueError(f"{len(categories)} categories but {len(colours)} colours")
    low, high = (np.asarray(v, dtype=float) for v in extent)
    span = np.maximum(high - low, 1e-9)
    labels = ([title] if title else []) + categories
    row = span[0] / max(len(labels), MIN_ROWS)
    x = high[1] + 0.06 * span[1]
    yx = np.column_stack([low[0] + row * (np.arange(len(labels)) + 0.5), np.full(len(labels), x)])
    face = np.vstack([np.zeros((1, 4))] * bool(title) + [colours]) if len(labels) else np.zeros((0, 4))
    size = np.full(len(labels), 0.8 * row)
    if title:
        size[0] = 0.0
    # an invisible last point where the longest name ends, so "fit to view" keeps the names on the canvas
    width = max((len(t) for t in labels), default=0) * 0.8 * row
    yx = np.vstack([yx, [low[0] + 0.5 * row, x + 0.6 * row + width]])
    face = np.vstack([face, np.zeros((1, 4))])
    size = np.append(size, 0.0)
    meta = {"kind": LEGEND_KIND, "legend": dict(zip(categories, [tuple(c) for c in colours.tolist()]))}
    meta.update(extra_metadata or {})
    kwargs = {
        "name": name,
        "size": size,
        "face_color": face,
        "border_width": 0,
        "border_color": np.zeros((len(yx), 4)),
        "features": pd.DataFrame({"label": labels + [""]}),
        # the name starts just right of its marker (napari draws "upper_left" text above its point)
        "text": {"string": "{label}", "anchor": "upper_left", "size": text_size, "color": "white", "translation": [0.3 * row, 0.6 * row]},
        "metadata": {METADATA_KEY: meta},
    }
    return (yx, kwargs, "points")


def text_layer(yx: np.ndarray, labels: Sequence[str], *, name: str, text_size: float = 12.0, anchor: str = "center") -> tuple:
    """Points layer-data tuple of text only (invisible markers): titles placed on the canvas at world ``yx``."""
    labels = [str(t) for t in labels]
    kwargs = {
        "name": name,
        "size": np.zeros(len(labels)),
        "face_color": np.zeros((len(labels), 4)),
        "border_width": 0,
        "border_color": np.zeros((len(labels), 4)),
        "features": pd.DataFrame({"label": labels}),
        "text": {"string": "{label}", "anchor": anchor, "size": text_size, "color": "white"},
        "metadata": {METADATA_KEY: {"kind": LEGEND_KIND}},
    }
    return (np.asarray(yx, dtype=float).reshape(-1, 2), kwargs, "points")
