"""Tissue regions (tumour, stroma, ...): annotate, suggest from biomarkers, save, compare.

Qt-free core behind the Regions dock widget:

* :mod:`~napari_casper.regions.classes` -- the class legend (names and colours).
* :mod:`~napari_casper.regions.geometry` -- :class:`RegionSet`: napari-style shapes + classes + affine.
* :mod:`~napari_casper.regions.store` -- save/load as a SpatialData shapes element + table (versioned, atomic).
* :mod:`~napari_casper.regions.spots` -- :class:`SpotContext`, point-in-polygon, class per spot in ``obs``.
* :mod:`~napari_casper.regions.expression` -- per-spot values of any genes (measured, imputed, predicted).
* :mod:`~napari_casper.regions.suggest` -- biomarker score, neighbour smoothing, Otsu, contours.
* :mod:`~napari_casper.regions.stats` -- per-region statistics, effect sizes, differential genes, CSV.
"""

from napari_casper.regions.classes import DEFAULT_REGION_CLASSES, RegionClasses
from napari_casper.regions.expression import gene_values, parse_gene_list
from napari_casper.regions.geometry import DRAWN, SUGGESTED, RegionSet
from napari_casper.regions.spots import (
    OUTSIDE,
    PRECEDENCES,
    SpotContext,
    assign_spots_to_regions,
    region_membership,
    spot_context,
    spot_region_labels,
)
from napari_casper.regions.stats import (
    differential_genes,
    export_csv,
    marker_effect_sizes,
    region_mask,
    region_statistics,
)
from napari_casper.regions.store import (
    SavedRegions,
    list_region_elements,
    load_regions,
    next_regions_name,
    regions_to_elements,
    save_regions,
)
from napari_casper.regions.suggest import (
    HER2_TUMOUR_MARKERS,
    ScoreField,
    Suggestion,
    biomarker_score,
    otsu_threshold,
    smooth_over_neighbours,
    suggest_regions,
)

__all__ = [
    "DEFAULT_REGION_CLASSES",
    "DRAWN",
    "HER2_TUMOUR_MARKERS",
    "OUTSIDE",
    "PRECEDENCES",
    "RegionClasses",
    "RegionSet",
    "SUGGESTED",
    "SavedRegions",
    "ScoreField",
    "SpotContext",
    "Suggestion",
    "assign_spots_to_regions",
    "biomarker_score",
    "differential_genes",
    "export_csv",
    "gene_values",
    "list_region_elements",
    "load_regions",
    "marker_effect_sizes",
    "next_regions_name",
    "otsu_threshold",
    "parse_gene_list",
    "region_mask",
    "region_membership",
    "region_statistics",
    "regions_to_elements",
    "save_regions",
    "smooth_over_neighbours",
    "spot_context",
    "spot_region_labels",
    "suggest_regions",
]
