"""Leave-one-section-out benchmark of histology-to-expression prediction.

For every section ``t``: train on the other sections, predict ``t`` from its H&E only, and
score against its measured log-normalised expression. Per-gene PCC over the test section's
spots, summarised as:

- ``all``: mean over every predicted gene (genes constant in the test section score 0);
- ``HEG-50``: the 50 genes with the highest mean expression in the test section;
- ``HVG-50``: the 50 genes with the highest variance in the test section;
- named markers (HER2+: ERBB2, GRB7, KRT19, EPCAM, CD74, MGP, COL1A1; MOB: Penk, Doc2g,
  Cdhr1, Nrgn), resolved through ``var_names`` or any ``var`` column (e.g. Ensembl ids);
- ``gene-gene``: preservation of co-expression, the Pearson correlation between the upper
  triangles of the predicted and the measured gene-gene correlation matrices over the HVG-50.

Methods, all on the same splits: the model (the head chosen by inner leave-one-section-out on
the training sections, plus every head for transparency), two handcrafted baselines (RGB +
HED + gradient statistics at 1x/2x/4x, z-scored with the training spots): ridge with alpha by
leave-one-section-out CV, and the mean of the top-50 cosine neighbours; and an ablation, the
model's ensemble head on section-standardised handcrafted features without the learned
embedding.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from napari_casper.errors import CasperInputError
from napari_casper.evaluate.metrics import pearson
from napari_casper.histology.features import handcrafted_features
from napari_casper.histology.genes import log_normalised, resolve_genes
from napari_casper.histology.predict import section_standardize
from napari_casper.histology.regressors import fit_ridge, retrieve

#: marker genes reported by name
MARKERS: dict[str, tuple[str, ...]] = {
    "her2st": ("ERBB2", "GRB7", "KRT19", "EPCAM", "CD74", "MGP", "COL1A1"),
    "mob": ("Penk", "Doc2g", "Cdhr1", "Nrgn"),
}
N_TOP = 50


def gene_gene_preservation(truth: np.ndarray, prediction: np.ndarray) -> float:
    """Pearson r between the upper triangles of measured and predicted gene-gene correlation matrices."""
    if truth.shape[1] < 3:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        ct = np.corrcoef(truth, rowvar=False)
        cp = np.corrcoef(prediction, rowvar=False)
    iu = np.triu_indices(truth.shape[1], k=1)
    a, b = ct[iu], cp[iu]
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def score_section(truth: np.ndarray, prediction: np.ndarray, genes: Sequence[str], markers: dict[str, str]):
    """Per-gene PCC table and summary metrics for one test section and one method."""
    r = pearson(truth, prediction)
    heg = np.argsort(-truth.mean(axis=0), kind="stable")[:N_TOP]
    hvg = np.argsort(-truth.var(axis=0), kind="stable")[:N_TOP]
    per_gene = pd.DataFrame({"gene": list(genes), "pcc": r})
    per_gene["heg50"] = np.isin(np.arange(len(genes)), heg)
    per_gene["hvg50"] = np.isin(np.arange(len(genes)), hvg)
    summary = {
        "all": float(r.mean()),
        "HEG-50": float(r[heg].mean()),
        "HVG-50": float(r[hvg].mean()),
        "gene-gene": gene_gene_preservation(truth[:, hvg], prediction[:, hvg]),
    }
    index = {g: i for i, g in enumerate(genes)}
    for marker, gene in markers.items():
        summary[marker] = float(r[index[gene]])
    return per_gene, summary


def baseline_predictions(train_features, train_expression, groups, test_features) -> dict[str, np.ndarray]:
    """The handcrafted baselines: ``{"ridge": ..., "retrieval": ...}`` predictions of the test spots."""
    scaler = StandardScaler().fit(train_features)
    ridge = fit_ridge(train_features, train_expression, groups=groups).predict(test_features)
    retrieval, _ = retrieve(scaler.transform(test_features), scaler.transform(train_features), train_expression, k=N_TOP)
    return {"ridge": ridge, "retrieval": retrieval}


def features_only_ensemble(train_features_z, train_expression, groups, test_features_z, config) -> np.ndarray:
    """Ablation: the model's ``ensemble`` head on section-standardised handcrafted features alone.

    Same section standardisation, ridge and weighted retrieval as the model, without the learned
    embedding: the difference to ``model:ensemble`` is what the trained encoder adds.
    """
    X = np.concatenate(train_features_z)
    ridge = fit_ridge(X, train_expression, groups=groups).predict(test_features_z)
    retrieved, _ = retrieve(test_features_z, X, train_expression, k=config.top_k, temperature=config.retrieval_temperature)
    return (ridge + retrieved) / 2


@dataclass
class BenchmarkResult:
    """Output of :func:`run_benchmark`.

    ``per_gene``: one row per (test section, method, gene); ``summary``: one row per (test
    section, method) with every metric, plus the mean over sections (``section == "mean"``);
    ``selection``: per test section, the inner-validation score of every head and the chosen
    one; ``runtimes``: seconds per (test section, method).
    """

    per_gene: pd.DataFrame
    summary: pd.DataFrame
    selection: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)


def run_benchmark(
    sections,
    config=None,
    *,
    markers: Sequence[str] = (),
    genes: Sequence[str] | None = None,
    test_sections: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
    progress=None,
    cancel=None,
    encoder=None,
) -> BenchmarkResult:
    """Leave-one-section-out benchmark: the model and the handcrafted baselines on identical splits.

    Parameters
    ----------
    sections
        :class:`~napari_casper.histology.sections.HistologySection` with expression (>= 2).
    config
        :class:`~napari_casper.histology.train.HistologyConfig` for the model.
    markers
        Marker names to report individually (see :func:`resolve_genes`).
    genes
        Restrict the predicted (and scored) genes; default every gene measured in all the
        sections that varies over the training spots of the fold.
    test_sections
        Names of the sections to hold out (default: each in turn).
    log
        Receives one line per finished fold.
    encoder
        A pretrained patch encoder for the model (see :func:`~napari_casper.histology.train.train_histology`);
        the baselines stay handcrafted.
    """
    from napari_casper.histology.config import HistologyConfig
    from napari_casper.histology.fit import limited_threads

    config = config or HistologyConfig()
    sections = list(sections)
    if len(sections) < 2:
        raise CasperInputError("the leave-one-section-out benchmark needs at least 2 sections with expression")
    names = [s.name for s in sections]
    if len(set(names)) != len(names):
        raise CasperInputError(f"section names must be unique; got {names}")
    tests = list(test_sections) if test_sections else names
    unknown = [t for t in tests if t not in names]
    if unknown:
        raise CasperInputError(f"unknown test section(s) {unknown}; sections are {names}")
    log = log or (lambda _msg: None)

    with limited_threads(config):
        rows, tables, selection, training = _run_folds(sections, names, tests, config, markers, genes, log, progress, cancel, encoder)
    summary = pd.DataFrame(rows)
    metric_cols = [c for c in summary.columns if c not in ("section", "method", "n_spots", "n_genes")]
    means = summary.groupby("method", sort=False)[metric_cols].mean().reset_index()
    means.insert(0, "section", "mean")
    summary = pd.concat([summary, means], ignore_index=True)
    return BenchmarkResult(pd.concat(tables, ignore_index=True), summary, selection, training)


def _fold_genes(sections, train_idx, genes) -> list[str]:
    """Genes scored in a fold: ``genes`` if given, else every gene measured in all sections
    (the test section included, so every prediction can be scored) that varies over the
    training spots."""

    if genes:
        return list(genes)
    common = set.intersection(*(set(s.expression.var_names) for s in sections))
    ordered = [g for g in sections[train_idx[0]].expression.var_names if g in common]
    values = np.concatenate([log_normalised(sections[i].expression, ordered) for i in train_idx])
    return [g for g, sd in zip(ordered, values.std(axis=0)) if sd > 0]


def _run_folds(sections, names, tests, config, markers, genes, log, progress, cancel, encoder):

    features = [handcrafted_features(s.patches(config.scales, config.patch_size, config.cache_dir)) for s in sections]
    rows, tables, selection, training = [], [], {}, {}
    for test_name in tests:
        t = names.index(test_name)
        test = sections[t]
        predictor, methods, seconds = _fold_predictions(sections, t, features, config, genes, progress, cancel, encoder)
        out_genes = predictor.genes
        truth = log_normalised(test.expression, out_genes)
        marker_map = resolve_genes(markers, test.expression, out_genes)
        fold = {}
        for method, prediction in methods.items():
            per_gene, summary = score_section(truth, prediction, out_genes, marker_map)
            per_gene.insert(0, "method", method)
            per_gene.insert(0, "section", test_name)
            tables.append(per_gene)
            fold[method] = {
                "section": test_name, "method": method, "n_spots": test.n_spots, "n_genes": len(out_genes),
                **summary, "seconds": seconds[method.split(":")[0]],
            }  # fmt: skip
        rows.extend(fold.values())
        selection[test_name] = {"chosen": predictor.head, **predictor.selection}
        training[test_name] = predictor.history
        log(
            f"{test_name}: "
            + "; ".join(f"{m} HEG-50 {fold[m]['HEG-50']:.3f} HVG-50 {fold[m]['HVG-50']:.3f}" for m in _LOGGED)
            + f" (model head {predictor.head}, trained in {seconds['train']:.0f} s)"
        )
    return rows, tables, selection, training


_LOGGED = ("model", "baseline:ridge", "baseline:retrieval")


def _fold_predictions(sections, t, features, config, genes, progress, cancel, encoder):
    """Train on every section but ``t`` and predict ``t`` with every method.

    Returns ``(predictor, {method: prediction}, seconds)``; ``seconds`` has the wall time of
    ``model`` (training + prediction), ``train``, ``baseline`` (both baselines) and ``ablation``.
    """
    from napari_casper.histology.predict import HEADS, describe_section
    from napari_casper.histology.train import train_histology

    test = sections[t]
    train_idx = [i for i in range(len(sections)) if i != t]
    fold_config = dataclasses.replace(config, predict_genes=_fold_genes(sections, train_idx, genes))
    clock = time.perf_counter()
    predictor = train_histology([sections[i] for i in train_idx], fold_config, progress=progress, cancel=cancel, encoder=encoder)
    seconds = {"train": time.perf_counter() - clock}
    missing = sorted(set(predictor.genes) - set(test.expression.var_names))
    if missing:
        raise CasperInputError(f"test section {test.name} lacks {len(missing)} trained genes, e.g. {missing[:5]}")
    raw = test.patches(config.scales, config.patch_size, config.cache_dir)
    clock = time.perf_counter()
    if encoder is None:
        query = describe_section(predictor.model, raw, predictor.config, cancel=cancel)
    else:
        fitted = predictor.config
        encoded = test.embeddings(encoder, fitted.input_scales(), fitted.cache_dir, cancel=cancel)
        query = describe_section(predictor.model, encoded, fitted, features_z=section_standardize(features[t]), cancel=cancel)
    methods = {f"model:{head}": predictor.heads.predict(head, query)[0] for head in HEADS}
    methods["model"] = methods[f"model:{predictor.head}"]
    seconds["model"] = seconds["train"] + time.perf_counter() - clock

    expression = np.concatenate([log_normalised(sections[i].expression, predictor.genes) for i in train_idx])
    groups = np.concatenate([np.full(sections[i].n_spots, i) for i in train_idx])
    clock = time.perf_counter()
    base = baseline_predictions(np.concatenate([features[i] for i in train_idx]), expression, groups, features[t])
    methods["baseline:ridge"], methods["baseline:retrieval"] = base["ridge"], base["retrieval"]
    seconds["baseline"] = time.perf_counter() - clock
    clock = time.perf_counter()
    methods["ablation:features-only"] = features_only_ensemble(
        [section_standardize(features[i]) for i in train_idx], expression, groups, section_standardize(features[t]), config
    )
    seconds["ablation"] = time.perf_counter() - clock
    return predictor, methods, seconds
