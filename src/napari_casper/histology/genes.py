"""Which genes a histology model learns and shows: the most variable training genes, plus genes
asked for by name (resolved through ``var_names``, any text ``var`` column such as
``gene_ids``, or the known Ensembl ids of the MOB layer markers)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_casper.errors import CasperInputError


def common_genes(sections) -> list[str]:
    """Genes measured in every training section, in the first section's order."""
    from napari_casper.histology.train import _common_genes

    return _common_genes(sections)


def variable_genes(sections, n: int) -> list[str]:
    """The ``n`` genes with the highest variance of log-normalised expression over all training spots
    (genes that never vary are left out)."""
    from napari_casper.histology.train import log_normalised

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
    from napari_casper.histology.evaluate import resolve_genes

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
