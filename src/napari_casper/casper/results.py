"""CASPER results as a SpatialData table: build, save (versioned, atomic) and show again.

A results table annotates the same spot element as the measured table. ``X`` holds the
predicted genes (``var_names``), ``obsm["casper_attention"]`` the spot -> centroid attention
``(n_spots, n_centroids)``, ``obs["casper_dominant_centroid"]`` the most-attended centroid of
each spot (categorical, in centroid order) with its colours in ``uns["casper_dominant_centroid_colors"]``
(scanpy's convention, so the legend shows the same colours when the store is reopened, in
napari or scanpy), ``uns["napari_casper"]`` the centroid names, checkpoint path and provenance.
Saving never replaces an earlier result: it takes the next free name (``casper_predictions``, ``casper_predictions_2``, ...).
"""

from __future__ import annotations

from datetime import UTC, datetime

import anndata as ad
import numpy as np
import pandas as pd

from napari_casper import __version__
from napari_casper.errors import CasperInputError

RESULTS_KIND = "casper_predictions"
ATTENTION_KEY = "casper_attention"
#: obs column of the dominant (most-attended) centroid of each spot
DOMINANT_KEY = "casper_dominant_centroid"


def predictions_table(
    spots_element: str,
    instance_ids: np.ndarray,
    predictions: pd.DataFrame,
    *,
    attention: np.ndarray | None = None,
    centroid_names: list[str] | None = None,
    checkpoint: str | None = None,
    centroid_colours: list[str] | None = None,
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
        Optional ``(n_spots, n_centroids)`` attention weights (rows sum to 1); with it the
        dominant centroid of each spot is written to ``obs["casper_dominant_centroid"]``.
    centroid_colours
        ``"#rrggbb"`` per centroid (the dominant-centroid legend), saved as
        ``uns["casper_dominant_centroid_colors"]``.
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
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "checkpoint": checkpoint or "",
    }
    if attention is not None:
        attention = np.asarray(attention, dtype=np.float32)
        if attention.shape[0] != n_spots:
            raise CasperInputError(f"attention has {attention.shape[0]} rows for {n_spots} spots.")
        table.obsm[ATTENTION_KEY] = attention
        names = list(map(str, centroid_names or range(attention.shape[1])))
        if len(names) != attention.shape[1]:
            raise CasperInputError(f"{len(names)} centroid names for {attention.shape[1]} attention columns.")
        info["centroids"] = names
        table.obs[DOMINANT_KEY] = pd.Categorical.from_codes(attention.argmax(axis=1), categories=names)
        if centroid_colours is not None:
            if len(centroid_colours) != len(names):
                raise CasperInputError(f"{len(centroid_colours)} colours for {len(names)} centroids.")
            table.uns[f"{DOMINANT_KEY}_colors"] = np.asarray([str(c) for c in centroid_colours], dtype=object)
    table.uns["napari_casper"] = info
    return TableModel.parse(table, region=spots_element, region_key=region_key, instance_key=instance_key)


def is_results_table(table: ad.AnnData) -> bool:
    return table.uns.get("napari_casper", {}).get("kind") == RESULTS_KIND


def save_predictions(store, table: ad.AnnData, base_name: str = RESULTS_KIND) -> str:
    """Write ``table`` into the SpatialData store under the next free name; returns that name."""
    from napari_casper.io.store_writes import finish_interrupted_writes, write_new_element
    from napari_casper.io.stores import element_names, next_free_name, read_spatialdata

    finish_interrupted_writes(store)  # a killed save's elements count when the next free name is chosen
    name = next_free_name(element_names(read_spatialdata(store)), base_name)
    write_new_element(store, name, table)
    return name


