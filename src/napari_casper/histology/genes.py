"""Which genes a histology model learns and shows: the most variable training genes, plus genes
asked for by name (resolved through ``var_names`` or any text ``var`` column such as
``gene_ids``), and their log-normalised target values."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from napari_casper.casper.preprocess import dense, normalize_matrix
from napari_casper.errors import CasperInputError


def common_genes(sections) -> list[str]:
    """Genes measured in every training section, in the first section's order."""
    for s in sections:
        if s.expression is None or s.expression.n_vars == 0:
            raise CasperInputError(
                f"training section {s.name} has no counts (no gene columns): histology training needs the measured "
                "spots x genes counts of every section; give the section's expression table"
            )
        if s.expression.n_obs == 0:
            raise CasperInputError(f"training section {s.name} has no spots (0 rows); give sections with measured spots")
        if not s.expression.var_names.is_unique:
            raise CasperInputError(
                f"section {s.name} has duplicated gene names; call adata.var_names_make_unique() first"
            )
    common = set(sections[0].expression.var_names)
    for s in sections[1:]:
        common &= set(s.expression.var_names)
    genes = [g for g in sections[0].expression.var_names if g in common]
    if len(genes) < 10:
        first = sections[0]
        pairs = [(s, len(set(first.expression.var_names) & set(s.expression.var_names))) for s in sections[1:]]
        worst, shared = min(pairs, key=lambda pair: pair[1])
        raise CasperInputError(
            f"the training sections share only {len(genes)} genes: section {worst.name} ({worst.expression.n_vars} genes, "
            f"e.g. {list(worst.expression.var_names[:2])}) shares {shared} with {first.name} ({first.expression.n_vars} genes, "
            f"e.g. {list(first.expression.var_names[:2])}); use sections measured on the same gene panel with the same "
            "gene naming (symbols vs Ensembl ids)"
        )
    return genes


def variable_genes(sections, n: int) -> list[str]:
    """The ``n`` genes with the highest variance of log-normalised expression over all training spots
    (genes that never vary are left out)."""
    if n < 1:
        raise CasperInputError(f"the number of variable genes must be at least 1; got {n}.")
    genes = common_genes(sections)
    values = np.concatenate([log_normalised(s.expression, genes) for s in sections])
    variance = values.var(axis=0)
    order = np.argsort(-variance, kind="stable")
    return [genes[i] for i in order[: min(n, int((variance > 0).sum()))]]


def parse_gene_names(text: str) -> list[str]:
    """Comma-, semicolon- or whitespace-separated names, in order, without repeats."""
    import re

    return list(dict.fromkeys(g for g in re.split(r"[,;\s]+", text or "") if g))


def resolve_gene_names(names: Sequence[str], sections) -> dict[str, str]:
    """``{name asked for: gene of the training sections}``; an unknown name is an error that says
    where names are looked up."""
    genes = common_genes(sections)
    resolved = resolve_genes(list(names), sections[0].expression, genes)
    missing = [n for n in names if n not in resolved]
    if missing:
        example = ", ".join(genes[:3])
        raise CasperInputError(
            f"gene(s) {', '.join(missing)} not found in every training section: names are matched against "
            f"var_names (e.g. {example}) and the text columns of var (e.g. gene_ids). Remove them or use "
            "names from the tables."
        )
    return resolved


def training_genes(sections, n_variable: int, requested: Sequence[str] = ()) -> tuple[list[str], dict[str, str]]:
    """Genes to train on: the requested ones first, then the ``n_variable`` most variable genes.

    Returns ``(genes, labels)`` where ``labels`` maps each requested gene, in the order asked, to
    the name it was asked for by (e.g. ``{"protein_coding-421": "Penk"}``; the first name wins).
    """
    resolved = resolve_gene_names(list(requested), sections) if requested else {}
    labels: dict[str, str] = {}
    for name, gene in resolved.items():
        labels.setdefault(gene, name)
    chosen = list(labels) + [g for g in variable_genes(sections, n_variable) if g not in labels]
    return chosen, labels


def log_normalised(adata, genes: Sequence[str]) -> np.ndarray:
    """``(n_spots, len(genes))`` float32 log-normalised expression (raw counts -> log1p per 1e4).

    The package's one normalisation (:func:`~napari_casper.casper.preprocess.normalize_matrix`).
    """
    values, _ = normalize_matrix(
        adata.X, "auto", already_logged="log1p" in adata.uns, columns=adata.var_names.get_indexer(list(genes))
    )
    return dense(values)


def resolve_genes(names: Sequence[str], adata, available: Sequence[str]) -> dict[str, str]:
    """Map marker names to entries of ``available`` (a subset of ``adata.var_names``).

    A name matches a ``var_names`` entry directly, or a value of any text ``var`` column (e.g.
    ``gene_ids``, categorical columns included). Unresolved names are left out.
    """
    available_set = set(available)
    columns = [
        adata.var[c].astype(str).to_numpy()
        for c in adata.var.columns
        if not pd.api.types.is_numeric_dtype(adata.var[c])  # categorical and object columns hold names
    ]
    out: dict[str, str] = {}
    for name in names:
        if name in available_set:
            out[name] = name
            continue
        hits = [n for col in columns for n in adata.var_names[col == name] if n in available_set]
        if hits:
            out[name] = hits[0]
    return out
