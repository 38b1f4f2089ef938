"""Per-spot values of named genes, from wherever they are: measured, imputed or predicted.

A name is looked up, in order, in the table's ``var_names``, in any text column of its ``var``
(e.g. Ensembl ids in ``var["gene_ids"]``), in numeric ``obs`` columns, and in the columns of an
``extra`` frame (a spots layer's features: imputed or predicted genes). Table genes are
normalised (raw counts -> ``log1p(normalize_total)``); other sources are used as given.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from napari_casper.errors import CasperInputError
from napari_casper.regions.spots import SpotContext

if TYPE_CHECKING:
    import pandas as pd


def parse_gene_list(text: str) -> list[str]:
    """``"ERBB2, GRB7 KRT19;EPCAM"`` -> ``["ERBB2", "GRB7", "KRT19", "EPCAM"]`` (order kept, duplicates dropped)."""
    parts = [p.strip() for chunk in str(text).replace(";", ",").split(",") for p in chunk.split()]
    return list(dict.fromkeys(p for p in parts if p))


def _var_lookup(var: pd.DataFrame, var_names: pd.Index) -> dict[str, int]:
    """Name -> column index, from var_names first, then every text column of var."""
    import pandas as pd

    lookup: dict[str, int] = {}
    for column in var.columns:
        values = var[column]
        if values.dtype == object or isinstance(values.dtype, pd.CategoricalDtype):
            for i, value in enumerate(values.astype(str)):
                lookup.setdefault(value, i)
    lookup.update({str(g): i for i, g in enumerate(var_names)})  # var_names win
    return lookup


def _gene_sources(spots: SpotContext, extra: pd.DataFrame | None) -> tuple[dict[str, int], set[str], set[str]]:
    """Where a gene name can be found: the table's names (:func:`_var_lookup`), its numeric obs columns, ``extra``'s columns."""
    import pandas as pd

    table = spots.table
    obs = table.obs
    numeric_obs = {c for c in obs.columns if pd.api.types.is_numeric_dtype(obs[c])}
    extra_columns = set() if extra is None else set(map(str, extra.columns))
    return _var_lookup(table.var, table.var_names), numeric_obs, extra_columns


def _split_known(genes: Sequence[str], sources) -> tuple[list[str], list[str]]:
    """``genes`` split into (found in any of ``sources``; found nowhere), in their order."""
    genes = [str(g) for g in genes]
    here = {g for g in genes if any(g in source for source in sources)}
    return [g for g in genes if g in here], [g for g in genes if g not in here]


def known_genes(spots: SpotContext, genes: Sequence[str], *, extra: pd.DataFrame | None = None) -> tuple[list[str], list[str]]:
    """``genes`` split into (found in the table, its numeric obs or ``extra``; found nowhere), in their order."""
    return _split_known(genes, _gene_sources(spots, extra))


def close_names(name: str, known: Sequence[str], n: int = 3) -> list[str]:
    """Names in ``known`` a user may have meant by ``name``: the same name in another case first (KRT19 ->
    Krt19, human vs mouse symbols), else close spellings, compared case-blind (not KRT19 -> Rps19)."""
    same = [k for k in known if k.lower() == name.lower()]
    if same:
        return same[:n]
    by_lower = {}
    for k in known:
        by_lower.setdefault(k.lower(), k)
    return [by_lower[k] for k in difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.8)]


def gene_values(
    spots: SpotContext,
    genes: Sequence[str],
    *,
    normalize: str = "auto",
    extra: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """``(n_spots, n_genes)`` values of ``genes``, one column per requested name (spot order of ``spots``).

    Parameters
    ----------
    extra
        Optional per-spot columns (e.g. a Points layer's ``features`` after
        :meth:`SpotContext.to_element_order` alignment, or any frame indexed like ``spots.instance_ids``).
        Its index must be the spots' instance ids.

    Raises
    ------
    CasperInputError
        When a gene is found nowhere (the message suggests close names) or no gene is given.
    """
    import pandas as pd

    genes = [str(g) for g in genes]
    if not genes:
        raise CasperInputError("no genes given: type one or more gene names (e.g. ERBB2, GRB7, KRT19, EPCAM).")
    table = spots.table
    lookup, numeric_obs, extra_columns = sources = _gene_sources(spots, extra)
    obs = table.obs.iloc[spots.rows]
    _, missing = _split_known(genes, sources)
    if missing:
        known = list(map(str, table.var_names)) + sorted(extra_columns)
        hints = []
        for gene in missing[:5]:
            close = close_names(gene, known)
            if close:
                hints.append(f"{gene} -> {', '.join(close)}?")
        raise CasperInputError(
            f"gene(s) {missing} are not in table {spots.table_name!r} ({table.n_vars} genes; var_names look like "
            f"{list(map(str, table.var_names[:3]))}) nor among the spots' extra features"
            + (f" ({'; '.join(hints)})" if hints else "")
            + ". Fix: check the spelling and identifier type (symbols vs Ensembl ids), or add the values "
            "(e.g. imputed genes) as columns of the spots layer."
        )
    columns = {}
    matrix = None
    for gene in genes:
        if gene in lookup:
            if matrix is None:
                matrix, _ = spots.expression(normalize)
            column = matrix[:, lookup[gene]]
            columns[gene] = np.asarray(column.toarray() if hasattr(column, "toarray") else column, dtype=float).ravel()
        elif gene in numeric_obs:
            columns[gene] = obs[gene].to_numpy(dtype=float)
        else:
            columns[gene] = extra[gene].reindex(spots.instance_ids).to_numpy(dtype=float)
    frame = pd.DataFrame(columns, index=spots.instance_ids)
    bad = frame.columns[frame.isna().any()].tolist()
    if bad:
        raise CasperInputError(f"gene(s) {bad} have missing values for some spots: fill or drop them before scoring.")
    return frame
