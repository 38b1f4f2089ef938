"""SpatialData elements as napari layer-data tuples (pure numpy/pandas, no napari import).

Every layer carries the affine of its element's transformation to the chosen coordinate
system, so images and spots line up on screen. Spot elements (circles with ``radius``, or
points) become Points layers whose ``size`` is the spot diameter in world units (napari does
not scale point sizes by the layer affine, napari #6649). Its ``features`` are the spot id and
the obs columns of the table annotating the element (cell type, label, ...), so hovering a spot
reads a short line; genes are not features (a 15k-gene table made every hover a 160k-character,
one-second status line) but are browsed one at a time with the Genes widget, in a layer named
after the gene. Above :data:`LARGE_SPOT_SET` spots the Points layer (kept for the widgets:
positions, ids, table link) starts hidden and a raster image of the spots' total counts is shown
over the tissue instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_casper.errors import CasperInputError
from napari_casper.io.elements import (
    METADATA_KEY,
    affine_yx,
    cell_element_kind,
    default_coordinate_system,
    element_levels,
    mean_scale,
    spot_element,
    spot_element_names,
    spot_positions,
    spot_rows,
    spot_table,
)

#: above this many spots the Points layer is added hidden and a raster of the spots is shown
#: instead (software OpenGL redraws 1M points in 3-4 s per frame; the raster in ~20 ms)
LARGE_SPOT_SET = 100_000

def image_layer(sdata, name: str, coordinate_system: str) -> tuple:
    """Layer-data tuple for image element ``name`` (RGB H&E, or one layer per channel)."""
    element = sdata.images[name]
    levels = element_levels(element)
    first = levels[0]
    affine = affine_yx(element, coordinate_system)
    channels = [str(c) for c in first.coords["c"].values] if "c" in first.coords else []
    rgb = first.sizes.get("c", 1) in (3, 4) and np.issubdtype(first.dtype, np.integer)
    kwargs = {"name": name, "affine": affine, "metadata": {METADATA_KEY: {"element": name, "kind": "image"}}}
    if rgb:
        data = [level.transpose("y", "x", "c").data for level in levels]
        kwargs["rgb"] = True
    elif first.sizes.get("c", 1) == 1:
        data = [level.isel(c=0).transpose("y", "x").data for level in levels]
        kwargs["colormap"] = "gray"
    else:
        data = [level.transpose("c", "y", "x").data for level in levels]
        kwargs["channel_axis"] = 0
        kwargs["name"] = [f"{name}:{c}" for c in channels] if channels else name
        kwargs["blending"] = "additive"
    kwargs["multiscale"] = len(data) > 1
    return (data if len(data) > 1 else data[0], kwargs, "image")


def spot_features(sdata, element_name: str, instance_ids: pd.Index) -> pd.DataFrame:
    """Per-spot features in element order: ``spot`` (the instance id), then the table's obs columns.

    Spots without a table row get NaN in the obs columns. Genes are not features: hovering a
    spot lists every feature, and the Genes widget shows one gene at a time instead.
    """
    ids = np.asarray(instance_ids)
    frame = pd.DataFrame({"spot": ids})
    link = spot_table(sdata, element_name)
    if link is None:
        return frame
    table = sdata.tables[link.name]
    join = spot_rows(table, element_name, instance_ids, missing="nan", table_name=link.name)
    features = join.gather_obs(table.obs.drop(columns=[link.region_key, link.instance_key]))
    features = features.drop(columns=[c for c in features.columns if c == "spot"]).reset_index(drop=True)
    return pd.concat([frame, features], axis=1)


def spots_layer(sdata, element_name: str, coordinate_system: str, *, name: str | None = None) -> tuple:
    """Points layer-data tuple for a spot element, sized to the spot diameter, with features.

    Cells drawn as polygons or labels get a hidden layer of their centres, ``"<element> (centres)"``,
    beside the layer that draws them: the widgets work on it like on any spots."""
    element = spot_element(sdata, element_name)
    xy, diameter, ids = spot_positions(sdata, element_name)
    affine = affine_yx(element, coordinate_system)
    link = spot_table(sdata, element_name)
    cells = cell_element_kind(sdata, element_name)
    kwargs = {
        "name": name or (f"{element_name} (centres)" if cells else element_name),
        "affine": affine,
        "size": diameter * mean_scale(affine),
        "features": spot_features(sdata, element_name, ids),
        "face_color": "#ffd400",
        "border_color": "white",
        "border_width": 0.05,
        "opacity": 0.9,
        "metadata": {
            METADATA_KEY: {
                "element": element_name,
                "kind": "spots",
                "table": link.name if link else None,
                "coordinate_system": coordinate_system,
                "instance_ids": np.asarray(ids),
                "cells": cells,
                "sdata": sdata,  # cells: value layers are drawn on their labels or polygons, read from here
            }
        },
    }
    if cells:
        kwargs["visible"] = False  # the labels or polygons show the cells; the centres serve the widgets
    return (xy[:, ::-1].copy(), kwargs, "points")


def spatialdata_to_layers(
    sdata, coordinate_system: str | None = None, *, source: str | None = None, skipped: list | None = None
) -> list[tuple]:
    """Every element of ``sdata`` in ``coordinate_system`` as layer-data tuples.

    Images come first (bottom), then labels, polygons and table-less points
    (:mod:`napari_casper.display.element_layers`), spots on top. Every layer's metadata holds
    the SpatialData object (``metadata["napari_casper"]["sdata"]``) and the store path it came
    from, so widgets can reach the tables and write results back. ``skipped`` (a list) receives
    ``(element, reason)`` for each element not shown: nothing is dropped without a word.
    """
    cs = coordinate_system or default_coordinate_system(sdata)
    if cs not in sdata.coordinate_systems:
        raise CasperInputError(
            f"coordinate system {cs!r} is not in this object (it has {list(sdata.coordinate_systems)})."
        )
    from spatialdata.transformations import get_transformation

    from napari_casper.display.element_layers import element_layers
    from napari_casper.display.regions import saved_regions_layers
    from napari_casper.display.results import results_layers

    images = [image_layer(sdata, name, cs) for name, element in sdata.images.items() if cs in get_transformation(element, get_all=True)]
    spot_layers = {}
    for name in spot_element_names(sdata):
        if cs in get_transformation(spot_element(sdata, name), get_all=True):
            spot_layers[name] = spots_layer(sdata, name, cs)
    on_top = list(spot_layers.values())
    for name, (data, kwargs, _) in spot_layers.items():
        if len(data) > LARGE_SPOT_SET:
            kwargs["visible"] = False
            on_top.append(spots_overview_layer(sdata, name, data, kwargs))
    on_top.extend(results_layers(sdata, cs, spot_layers))
    on_top.extend(saved_regions_layers(sdata, cs, spot_layers))
    shown = {kwargs["metadata"][METADATA_KEY].get("element") for _, kwargs, _ in images + on_top}
    shown -= {name for name in spot_layers if cell_element_kind(sdata, name)}  # cells: drawn too, beside their centres
    others, left_out = element_layers(sdata, cs, shown)
    if skipped is not None:
        skipped.extend(left_out)
    layers = images + others + on_top
    if not layers:
        raise CasperInputError(
            f"nothing to show in coordinate system {cs!r}: no element is in it "
            f"(the object's coordinate systems: {list(sdata.coordinate_systems)})."
        )
    for _, kwargs, _ in layers:
        kwargs["metadata"][METADATA_KEY].update({"sdata": sdata, "path": source, "coordinate_system": cs})
    return layers


def spots_overview_layer(sdata, element_name: str, data: np.ndarray, kwargs: dict) -> tuple:
    """Raster image of a large spot set: log1p of each spot's total counts (1 where no table)."""
    from napari_casper.display.value_layers import SpotGeometry, value_layer

    geometry = SpotGeometry.from_points_kwargs(data, kwargs)
    values = np.ones(len(data), dtype=np.float32)
    link = spot_table(sdata, element_name)
    what = "spots"
    if link is not None:
        table = sdata.tables[link.name]
        join = spot_rows(table, element_name, kwargs["metadata"][METADATA_KEY]["instance_ids"], table_name=link.name)
        totals = join.gather(np.asarray(table.X.sum(axis=1), dtype=np.float32).ravel())
        values = np.log1p(np.clip(totals, 0, None))
        what = "total counts (log1p)"
    units = "log1p total counts per spot" if link is not None else "spot present"
    name = f"{element_name}: {what}"
    return value_layer(geometry, values, name, colormap="viridis", units=units, extra_metadata={"kind": "spots_overview"})


def not_shown_note(source: str, shown_in: str, systems: list[str], skipped: list[tuple[str, str]]) -> str:
    """One line naming the elements left out (with the reason) and the other coordinate systems."""
    parts = []
    if skipped:
        parts.append("not shown: " + "; ".join(f"{name} ({reason})" for name, reason in skipped))
    others = [s for s in systems if s != shown_in]
    if others:
        parts.append(
            f"shown in coordinate system {shown_in!r}; the data also has {others} "
            f"(napari-casper view {source} --coordinate-system <system> shows one of those)"
        )
    return f"{source}: " + ". ".join(parts) + "." if parts else ""


def read_layers(path, coordinate_system: str | None = None) -> tuple[list[tuple], str]:
    """The layer-data tuples of every element of the store or .h5ad at ``path`` (or of the packaged
    sample a :func:`~napari_casper.io.store_kind.sample_uri` names) in ``coordinate_system`` (default:
    the data's), and the :func:`not_shown_note` for them (empty when everything is shown in the only
    coordinate system)."""
    from napari_casper.io.samples import load_sample
    from napari_casper.io.store_kind import display_name, sample_key
    from napari_casper.io.stores import read_any

    key = sample_key(path)  # a packaged sample (File > Open Sample opens it by its URI)
    sdata = read_any(path) if key is None else load_sample(key)
    source = str(path) if key is None else f"sample:{key}"
    cs = coordinate_system or default_coordinate_system(sdata)
    skipped: list[tuple[str, str]] = []
    layers = spatialdata_to_layers(sdata, cs, source=source, skipped=skipped)
    return layers, not_shown_note(display_name(path), cs, list(sdata.coordinate_systems), skipped)
