"""Saved CASPER results (predictions, dominant centroid) as value layers over their spots."""

from __future__ import annotations

import numpy as np

from napari_casper.casper.results import ATTENTION_KEY, is_results_table
from napari_casper.display.value_layers import (
    DOMINANT_NAME,
    SpotGeometry,
    categorical_layer,
    gene_layer_name,
    value_layer,
)
from napari_casper.io.elements import spot_rows, table_regions


def results_layers(sdata, coordinate_system: str, spot_layers: dict[str, tuple]) -> list[tuple]:
    """Value layers for every results table of ``sdata`` (as shown before saving).

    ``spot_layers`` maps spot element names to their Points layer-data tuples (which give
    positions, sizes and the affine).
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
        if ATTENTION_KEY in table.obsm:
            attention = np.asarray(table.obsm[ATTENTION_KEY])[order]
            names = table.uns["napari_casper"].get("centroids", [str(i) for i in range(attention.shape[1])])
            layers.append(categorical_layer(geometry, attention.argmax(axis=1), list(names), DOMINANT_NAME))
    return layers
