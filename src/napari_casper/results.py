"""CASPER results as a SpatialData table: build, save (versioned, atomic) and show again.

A results table annotates the same spot element as the measured table. ``X`` holds the
predicted genes (``var_names``), ``obsm["casper_attention"]`` the spot -> centroid attention
``(n_spots, n_centroids)``, ``uns["napari_casper"]`` the centroid names, checkpoint path and
provenance. Saving never replaces an earlier result: it takes the next free name
(``casper_predictions``, ``casper_predictions_2``, ...).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import anndata as ad
import numpy as np
import pandas as pd

from napari_casper import __version__
from napari_casper.errors import CasperInputError

RESULTS_KIND = "casper_predictions"
ATTENTION_KEY = "casper_attention"


def predictions_table(
    spots_element: str,
    instance_ids: np.ndarray,
    predictions: pd.DataFrame,
    *,
    attention: np.ndarray | None = None,
    centroid_names: list[str] | None = None,
    checkpoint: str | None = None,
    region_key: str = "region",
    instance_key: str = "spot_id",
) -> ad.AnnData:
    """Table (parsed by ``TableModel``) of predicted genes for the spots of ``spots_element``.

    Parameters
    ----------
    instance_ids
        ``(n_spots,)`` ids of the spots in the element, in the rows' order.
    predictions
        ``(n_spots, n_genes)`` predicted expression; columns are gene names.
    attention
        Optional ``(n_spots, n_centroids)`` attention weights (rows sum to 1).
    """
    from spatialdata.models import TableModel

    n_spots = len(instance_ids)
    if predictions.shape[0] != n_spots:
        raise CasperInputError(f"{predictions.shape[0]} prediction rows for {n_spots} spots.")
    if predictions.shape[1] == 0:
        raise CasperInputError("no genes to save: impute at least one gene first.")
    obs = pd.DataFrame(
        {region_key: pd.Categorical([spots_element] * n_spots), instance_key: np.asarray(instance_ids)},
        index=[str(i) for i in instance_ids],
    )
    table = ad.AnnData(
        predictions.to_numpy(dtype=np.float32), obs=obs, var=pd.DataFrame(index=[str(g) for g in predictions.columns])
    )
    info = {
        "kind": RESULTS_KIND,
        "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": checkpoint or "",
    }
    if attention is not None:
        attention = np.asarray(attention, dtype=np.float32)
        if attention.shape[0] != n_spots:
            raise CasperInputError(f"attention has {attention.shape[0]} rows for {n_spots} spots.")
        table.obsm[ATTENTION_KEY] = attention
        info["centroids"] = list(map(str, centroid_names or range(attention.shape[1])))
    table.uns["napari_casper"] = info
    return TableModel.parse(table, region=spots_element, region_key=region_key, instance_key=instance_key)


def is_results_table(table: ad.AnnData) -> bool:
    return table.uns.get("napari_casper", {}).get("kind") == RESULTS_KIND


def next_free_name(existing: list[str] | set[str], base: str) -> str:
    """``base`` if unused, else ``base_2``, ``base_3``, ... (never an existing name)."""
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", base):
        raise CasperInputError(f"invalid element name {base!r}: use letters, digits, '_' or '-'.")
    existing = set(existing)
    if base not in existing:
        return base
    version = 2
    while f"{base}_{version}" in existing:
        version += 1
    return f"{base}_{version}"


def save_predictions(store, table: ad.AnnData, base_name: str = RESULTS_KIND) -> str:
    """Write ``table`` into the SpatialData store under the next free name; returns that name."""
    from napari_casper.io import ELEMENT_GROUPS, read_spatialdata, write_new_element

    sdata = read_spatialdata(store)
    existing = [name for group in ELEMENT_GROUPS for name in getattr(sdata, group)]
    name = next_free_name(existing, base_name)
    write_new_element(store, name, table)
    return name


def results_layers(sdata, coordinate_system: str, spot_layers: dict[str, tuple]) -> list[tuple]:
    """Value layers for every results table of ``sdata`` (as shown before saving).

    ``spot_layers`` maps spot element names to their Points layer-data tuples (which give
    positions, sizes and the affine).
    """
    from napari_casper.layers import table_regions
    from napari_casper.value_layers import (
        DOMINANT_NAME,
        SpotGeometry,
        categorical_layer,
        gene_layer_name,
        value_layer,
    )

    layers = []
    for table_name, table in sdata.tables.items():
        if not is_results_table(table):
            continue
        attrs = table.uns["spatialdata_attrs"]
        element = table_regions(table)[0]
        if element not in spot_layers:
            continue
        data, kwargs, _ = spot_layers[element]
        geometry = SpotGeometry.from_points_kwargs(data, kwargs)
        ids = kwargs["metadata"]["napari_casper"].get("instance_ids")
        order = np.arange(geometry.n_spots) if ids is None else pd.Index(table.obs[attrs["instance_key"]]).get_indexer(ids)
        if (order < 0).any():
            raise CasperInputError(f"results table {table_name!r} misses some spots of {element!r}.")
        matrix = np.asarray(table.X)[order]
        for j, gene in enumerate(table.var_names):
            layers.append(value_layer(geometry, matrix[:, j], gene_layer_name(gene), extra_metadata={"table": table_name}))
        if ATTENTION_KEY in table.obsm:
            attention = np.asarray(table.obsm[ATTENTION_KEY])[order]
            names = table.uns["napari_casper"].get("centroids", [str(i) for i in range(attention.shape[1])])
            layers.append(categorical_layer(geometry, attention.argmax(axis=1), list(names), DOMINANT_NAME))
    return layers
