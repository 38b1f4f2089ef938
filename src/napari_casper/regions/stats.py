"""Compare regions: spots, area and mean expression per region and class; genes inside vs outside.

:func:`region_statistics` gives one row per region (``level="region"``: spots whose centre lies
inside that shape, overlaps counted in each), one per class (``level="class"``: spots assigned to
the class, hand-drawn shapes winning over suggested ones where they overlap unless asked otherwise, area of the union of its shapes) and one for the
spots outside every region (``level="outside"``). Areas are in squared coordinate-system units
(pixels of the full-resolution image for legacy ST and Visium data read by napari-casper).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_casper.errors import CasperInputError
from napari_casper.regions.expression import gene_values
from napari_casper.regions.geometry import RegionSet
from napari_casper.regions.spots import OUTSIDE, SpotContext, region_membership, spot_region_labels

if TYPE_CHECKING:
    import pandas as pd


def region_statistics(
    spots: SpotContext,
    regions: RegionSet,
    genes: Sequence[str] = (),
    *,
    normalize: str = "auto",
    extra: pd.DataFrame | None = None,
    precedence: str = "drawn",
) -> pd.DataFrame:
    """Table of ``level, name, class, n_spots, area, mean_<gene>...`` (see the module docstring).

    Mean expression is of log-normalised values for table genes (as :func:`gene_values` gives them);
    empty groups get NaN means. ``precedence`` decides the class of spots in overlapping regions
    (:func:`napari_casper.regions.spots.winning_region`).
    """
    import pandas as pd
    import shapely

    if len(regions) == 0:
        raise CasperInputError("there are no regions to describe: draw or load at least one region.")
    values = (
        gene_values(spots, genes, normalize=normalize, extra=extra) if genes else pd.DataFrame(index=spots.instance_ids)
    )
    inside = region_membership(spots, regions)
    labels = spot_region_labels(spots, regions, precedence=precedence)["class"].astype(str).to_numpy()
    polygons = regions.world_polygons()

    def row(level, name, cls, mask, area):
        means = {
            f"mean_{g}": float(values[g].to_numpy()[mask].mean()) if mask.any() else np.nan for g in values.columns
        }
        return {"level": level, "name": name, "class": cls, "n_spots": int(mask.sum()), "area": float(area), **means}

    rows = [
        row("region", name, cls, inside[:, j], polygons[j].area)
        for j, (name, cls) in enumerate(zip(regions.names, regions.classes))
    ]
    for cls in dict.fromkeys(regions.classes):
        union = shapely.union_all([p for p, c in zip(polygons, regions.classes) if c == cls])
        rows.append(row("class", cls, cls, labels == cls, union.area))
    rows.append(row("outside", OUTSIDE, OUTSIDE, labels == OUTSIDE, np.nan))
    return pd.DataFrame(rows)


def marker_effect_sizes(values: pd.DataFrame, inside: np.ndarray, *, logged: bool = True) -> pd.DataFrame:
    """Per column of ``values``: mean inside/outside, Cohen's d (pooled SD) and fold change.

    With ``logged`` (log1p values) the fold change is the ratio of mean ``expm1`` values
    (normalised counts), otherwise of the means themselves.
    """
    import pandas as pd

    inside = np.asarray(inside, dtype=bool)
    n_in, n_out = int(inside.sum()), int((~inside).sum())
    if n_in < 2 or n_out < 2:
        raise CasperInputError(
            f"{n_in} spots inside and {n_out} outside the region: each side needs at least 2 spots to compare."
        )
    out = []
    for gene in values.columns:
        v = values[gene].to_numpy(dtype=float)
        a, b = v[inside], v[~inside]
        pooled = np.sqrt(((n_in - 1) * a.var(ddof=1) + (n_out - 1) * b.var(ddof=1)) / (n_in + n_out - 2))
        lin_a, lin_b = (np.expm1(a), np.expm1(b)) if logged else (a, b)
        out.append(
            {
                "gene": gene,
                "mean_inside": a.mean(),
                "mean_outside": b.mean(),
                "cohens_d": (a.mean() - b.mean()) / pooled if pooled > 0 else np.nan,
                "fold_change": lin_a.mean() / lin_b.mean() if lin_b.mean() > 0 else np.inf,
            }
        )
    return pd.DataFrame(out)


def region_mask(
    spots: SpotContext, regions: RegionSet, *, names: Sequence[str] | None = None, classes: Sequence[str] | None = None
) -> np.ndarray:
    """``(n_spots,)`` bool: inside any region named in ``names`` or of a class in ``classes``."""
    pick = np.zeros(len(regions), dtype=bool)
    if names is not None:
        unknown = sorted(set(names) - set(regions.names))
        if unknown:
            raise CasperInputError(f"no region named {unknown}; the regions are {regions.names}.")
        pick |= np.isin(regions.names, list(names))
    if classes is not None:
        unknown = sorted(set(classes) - set(regions.classes))
        if unknown:
            raise CasperInputError(
                f"no region of class {unknown}; the classes drawn are {sorted(set(regions.classes))}."
            )
        pick |= np.isin(regions.classes, list(classes))
    if not pick.any():
        raise CasperInputError("choose at least one region (by name or class) to compare with the rest.")
    return region_membership(spots, regions)[:, pick].any(axis=1)


def check_comparable(inside: np.ndarray, min_spots: int = 3) -> None:
    """Raise :class:`CasperInputError` unless both sides of ``inside`` hold ``min_spots`` spots."""
    n_in, n_out = int(np.sum(inside)), int(np.size(inside) - np.sum(inside))
    if n_in == 0:
        raise CasperInputError("the region contains no spot: draw it over spots, or pick another region.")
    if n_in < min_spots or n_out < min_spots:
        raise CasperInputError(
            f"{n_in} spots inside and {n_out} outside: differential expression needs at least "
            f"{min_spots} on each side (draw a larger region, or a smaller one)."
        )


def differential_genes(
    spots: SpotContext,
    inside: np.ndarray,
    *,
    method: str = "wilcoxon",
    normalize: str = "auto",
    gene_key: str | None = "auto",
    min_spots: int = 3,
) -> pd.DataFrame:
    """Genes ranked by difference inside vs outside (scanpy ``rank_genes_groups``, reference = outside).

    Returns one row per gene, highest score (most up inside) first: ``gene``, ``score``,
    ``log2_fold_change``, ``pval``, ``pval_adj``, and the column ``var[gene_key]`` (e.g. the
    Ensembl ids stored beside var_names). ``"auto"`` picks the first text column of ``var``
    whose values are unique; None adds none.
    """
    import anndata as ad
    import pandas as pd
    import scanpy as sc

    inside = np.asarray(inside, dtype=bool)
    check_comparable(inside, min_spots)
    matrix, _ = spots.expression(normalize)
    table = spots.table
    adata = ad.AnnData(matrix, var=pd.DataFrame(index=table.var_names.astype(str)))
    adata.obs["side"] = pd.Categorical(np.where(inside, "inside", "outside"), categories=["inside", "outside"])
    adata.uns["log1p"] = {"base": None}
    sc.tl.rank_genes_groups(adata, "side", groups=["inside"], reference="outside", method=method, n_genes=adata.n_vars)
    frame = sc.get.rank_genes_groups_df(adata, group="inside").rename(
        columns={
            "names": "gene",
            "scores": "score",
            "logfoldchanges": "log2_fold_change",
            "pvals": "pval",
            "pvals_adj": "pval_adj",
        }
    )
    if gene_key == "auto":
        gene_key = next((c for c in table.var.columns if _is_identifier_column(table.var[c])), None)
    if gene_key is not None:
        if gene_key not in table.var:
            raise CasperInputError(f"var has no column {gene_key!r}; it has {list(table.var.columns)}.")
        frame.insert(1, gene_key, table.var[gene_key].astype(str).reindex(frame["gene"]).to_numpy())
    return frame.reset_index(drop=True)


def _is_identifier_column(values: pd.Series) -> bool:
    import pandas as pd

    text = values.dtype == object or isinstance(values.dtype, pd.CategoricalDtype)
    return bool(text and values.astype(str).is_unique)


def export_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` to ``path`` as CSV atomically (a partial file never replaces a good one)."""
    from napari_casper.io.outputs import atomic_path

    path = Path(path)
    if not path.parent.is_dir():
        raise CasperInputError(f"folder {path.parent} does not exist: choose an existing folder for the CSV.")
    with atomic_path(path, ".csv") as scratch:  # holds the file's lock; clears what killed exports left
        frame.to_csv(scratch, index=False)
    return path
