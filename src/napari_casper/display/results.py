"""Saved CASPER results (predictions, dominant centroid and its legend) as layers over their spots."""

from __future__ import annotations

import numpy as np

from napari_casper.casper.results import ATTENTION_KEY, DOMINANT_KEY, is_results_table
from napari_casper.display.legend import colours_from_uns, legend_layer, world_extent
from napari_casper.display.value_layers import (
    DOMINANT_NAME,
    SpotGeometry,
    categorical_layer,
    gene_layer_name,
    value_layer,
)
from napari_casper.io.elements import METADATA_KEY, spot_rows, table_regions

#: the on-canvas legend of the dominant-centroid layer
DOMINANT_LEGEND_NAME = f"{DOMINANT_NAME} legend"


def dominant_layers(geometry: SpotGeometry, codes: np.ndarray, categories: list[str], colours: np.ndarray | None = None) -> list[tuple]:
    """The dominant-centroid layer (one colour per category) and its on-canvas legend beside the spots.

    ``colours`` ``(n_categories, 4)`` RGBA (e.g. from ``uns["casper_dominant_centroid_colors"]``)
    replace the default palette when given.
    """
    layer = categorical_layer(geometry, codes, categories, DOMINANT_NAME)
    kwargs = layer[1]
    if colours is not None:
        kwargs["face_color"] = np.asarray(colours, dtype=float)[np.asarray(codes)]
        kwargs["metadata"][METADATA_KEY]["legend"] = dict(zip(categories, [tuple(c) for c in np.asarray(colours).tolist()]))
    legend = kwargs["metadata"][METADATA_KEY]["legend"]
    extent = world_extent(geometry.yx, geometry.affine)
    return [layer, legend_layer(list(legend), np.asarray(list(legend.values())), extent, name=DOMINANT_LEGEND_NAME, title="dominant centroid")]


def results_layers(sdata, coordinate_system: str, spot_layers: dict[str, tuple]) -> list[tuple]:
    """Value layers for every results table of ``sdata`` (as shown before saving).

    ``spot_layers`` maps spot element names to their Points layer-data tuples (which give
    positions, sizes and the affine). The dominant centroid comes back with its saved colours
    and its on-canvas legend.
    """
    layers = []
    for table_name, table in sdata.tables.items():
        if not is_results_table(table):
            continue
        element = table_regions(table)[0]
        if element not in spot_layers:
            continue
        data, kwargs, _ = spot_layers[element]
        geometry = SpotGeometry.from_points_kwargs(data, kwargs)
        ids = kwargs["metadata"]["napari_casper"]["instance_ids"]
        order = spot_rows(table, element, ids, missing="error", table_name=table_name).rows
        matrix = np.asarray(table.X)[order]
        for j, gene in enumerate(table.var_names):
            layers.append(value_layer(geometry, matrix[:, j], gene_layer_name(gene, "casper"), extra_metadata={"table": table_name}))
        if DOMINANT_KEY in table.obs:
            dominant = table.obs[DOMINANT_KEY].iloc[order]
            categories = [str(c) for c in dominant.cat.categories]
            colours = colours_from_uns(table.uns, DOMINANT_KEY, len(categories))
            layers.extend(dominant_layers(geometry, dominant.cat.codes.to_numpy(), categories, colours))
        elif ATTENTION_KEY in table.obsm:  # saved before the dominant centroid had its own column
            attention = np.asarray(table.obsm[ATTENTION_KEY])[order]
            names = table.uns["napari_casper"].get("centroids", [str(i) for i in range(attention.shape[1])])
            layers.extend(dominant_layers(geometry, attention.argmax(axis=1), list(names)))
    return layers
