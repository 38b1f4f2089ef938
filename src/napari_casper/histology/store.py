"""Histology predictions as SpatialData elements: the spots (circles) and a table annotating them.

The spots element holds the (virtual or measured) spot centres in the image's pixels and carries
the image's transformations, so it lies exactly on the H&E in every coordinate system the image
is in. The table's ``X`` is the predicted log-normalised expression (``log1p`` counts per 10,000),
``layers["uncertainty"]`` the per-spot uncertainty, ``uns["napari_casper"]`` says what it is
(``kind="histology_predictions"``) and how it was made. Saving adds both as *new* elements with
versioned names (``histology_spots`` + ``histology_predictions``, then ``_2``, ...) through
:func:`napari_casper.io.store_writes.write_new_elements` (one commit, never replaces anything).
Predictions at cells drawn as labels or polygons (a Xenium or MERSCOPE segmentation) are saved as a
table alone, annotating those cells (``region`` = the cells' element, ``spot_id`` = their ids).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from napari_casper import __version__
from napari_casper.errors import CasperInputError
from napari_casper.histology.spatial import SlideImage

RESULTS_KIND = "histology_predictions"
SPOTS_BASE = "histology_spots"
TABLE_BASE = RESULTS_KIND
REGION_KEY = "region"
INSTANCE_KEY = "spot_id"


def element_transformations(slide: SlideImage) -> dict:
    """The image's transformations, or its affine when it does not come from SpatialData."""
    from spatialdata.transformations import Affine

    if slide.transformations:
        return dict(slide.transformations)
    return {slide.coordinate_system: Affine(slide.affine, input_axes=("y", "x"), output_axes=("y", "x"))}


def prediction_elements(
    prediction,
    slide: SlideImage,
    spot_diameter_px: float,
    *,
    spots_name: str = SPOTS_BASE,
    source_spots: str | None = None,
    source_ids=None,
    labels: dict[str, str] | None = None,
    model_info: dict | None = None,
    annotates: str | None = None,
):
    """``(shapes, table)``: the predicted spots and the table annotating them; ``(None, table)``
    when ``annotates`` names the element the table annotates instead (the cells predicted at,
    ``source_ids`` their instance ids).

    Parameters
    ----------
    prediction
        :class:`~napari_casper.histology.predict.HistologyPrediction`; ``prediction.coords``
        are ``(x, y)`` pixels of ``slide``.
    slide
        The image predicted on; the spots get its transformations.
    spot_diameter_px
        Spot diameter in image pixels (the circles' radius is half of it).
    source_spots, source_ids
        The measured spot element and its instance ids when the spots are not virtual.
    labels
        Display name per gene (e.g. the symbol a gene was asked for by); stored as ``var["name"]``.
    model_info
        Provenance stored in ``uns["napari_casper"]["model"]`` (checkpoint path, head, sections).
    """
    from spatialdata.models import ShapesModel, TableModel

    coords = np.asarray(prediction.coords, dtype=float)
    n = len(coords)
    if n == 0:
        raise CasperInputError("no spots to save: predict at least one spot first.")
    if not prediction.genes:
        raise CasperInputError("no genes to save: the prediction holds no gene.")
    if not spot_diameter_px or spot_diameter_px <= 0:
        raise CasperInputError(f"the spot diameter must be a positive number of pixels; got {spot_diameter_px!r}.")
    if annotates is not None and source_ids is None:
        raise CasperInputError(f"a table annotating {annotates!r} needs the ids of its {n} cells (source_ids).")
    shapes = None
    if annotates is None:
        shapes = ShapesModel.parse(
            coords,
            geometry=0,
            radius=np.full(n, float(spot_diameter_px) / 2.0),
            index=np.arange(n),
            transformations=element_transformations(slide),
        )
    region = annotates or spots_name
    table = prediction.to_anndata([str(i) for i in range(n)])
    table.obs[REGION_KEY] = pd.Categorical([region] * n)
    table.obs[INSTANCE_KEY] = np.arange(n)
    if source_ids is not None:
        source_ids = np.asarray(source_ids)
        if len(source_ids) != n:
            raise CasperInputError(f"{len(source_ids)} source spot ids for {n} predicted spots.")
        table.obs["source_spot"] = source_ids.astype(str)
        if annotates is not None:
            table.obs[INSTANCE_KEY] = source_ids
    labels = labels or {}
    table.var["name"] = [labels.get(g, g) for g in table.var_names]
    table.uns.pop("histology_prediction", None)
    table.uns["napari_casper"] = {
        "kind": RESULTS_KIND,
        "version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "values": "log1p(counts per 10,000); layers['uncertainty']: expected absolute error (same units; the spread of "
        "the most similar training spots for a model trained on one section)",
        "head": prediction.head,
        "image": slide.name,
        "coordinate_system": slide.coordinate_system,
        "spot_diameter_px": float(spot_diameter_px),
        "spots": source_spots or "virtual",
        "genes": [str(g) for g in prediction.genes],
        "model": {str(k): v for k, v in (model_info or {}).items() if v is not None},
    }
    if prediction.reach is not None:
        table.uns["napari_casper"]["out_of_distribution"] = prediction.reach.to_dict()
    table = TableModel.parse(table, region=region, region_key=REGION_KEY, instance_key=INSTANCE_KEY)
    return shapes, table


def free_names(existing, spots_base: str = SPOTS_BASE, table_base: str = TABLE_BASE) -> tuple[str, str]:
    """The first ``(spots, table)`` name pair, one version of each (``name_versions``), that is not taken."""
    from napari_casper.io.stores import name_versions

    existing = set(existing)
    return next(pair for pair in zip(name_versions(spots_base), name_versions(table_base)) if not set(pair) & existing)


def save_histology_predictions(
    store,
    prediction,
    slide: SlideImage,
    spot_diameter_px: float,
    *,
    shapes_name: str | None = None,
    table_name: str | None = None,
    **element_options,
) -> tuple[str, str]:
    """Write the predicted spots and their table into the SpatialData store ``store`` as new elements.

    Names default to the next free versioned pair (``histology_spots`` / ``histology_predictions``,
    then ``_2`` ...); an explicit name that exists is refused, nothing is replaced.
    ``element_options`` go to :func:`prediction_elements`. Returns ``(shapes_name, table_name)``;
    predictions at cells drawn as labels or polygons (``source_spots``) are a table annotating them,
    and the first name returned is that element's.
    """
    from napari_casper.io.elements import cell_element_kind
    from napari_casper.io.store_writes import finish_interrupted_writes, write_new_elements
    from napari_casper.io.stores import element_names, read_spatialdata

    finish_interrupted_writes(store)  # a killed save's elements count when the next free name is chosen
    current = read_spatialdata(store)
    existing = element_names(current)
    source = element_options.get("source_spots")
    cells = source if source in existing and cell_element_kind(current, source) else None  # a table annotating them
    default_shapes, default_table = free_names(existing)
    shapes_name = cells or shapes_name or default_shapes
    table_name = table_name or default_table
    for name in (table_name,) if cells else (shapes_name, table_name):
        if name in existing:
            raise CasperInputError(
                f"{store} already has an element named {name!r}; nothing was written. Choose a new name, or "
                "leave the names empty to get the next free version."
            )
    shapes, table = prediction_elements(
        prediction, slide, spot_diameter_px, spots_name=shapes_name, annotates=cells, **element_options
    )
    write_new_elements(store, {table_name: table} if cells else {shapes_name: shapes, table_name: table})  # one commit
    return shapes_name, table_name
