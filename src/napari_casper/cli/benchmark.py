"""``napari-casper benchmark``: score imputation methods with the strict K-fold-over-genes protocol.

Writes ``OUT/per_gene.csv`` (one row per method and gene), ``OUT/summary.csv`` (one row
per method), ``OUT/runtimes.csv`` (seconds per method and fold) and ``OUT/summary.md`` (a
markdown table with the data sets and the exact command that regenerates it).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from napari_casper.errors import CasperInputError

DEFAULT_METHODS = "casper,tangram,knn,mean"

#: summary columns shown in summary.md, with their headers
_TABLE_COLUMNS = {
    "method": "method",
    "PCC_mean": "PCC mean",
    "PCC_median": "PCC median",
    "SRCC_mean": "SRCC mean",
    "SSIM_mean": "SSIM mean",
    "RMSE_mean": "RMSE mean",
    "JS_mean": "JS mean",
    "AS": "AS",
    "runtime_s": "runtime (s)",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="score imputation methods by holding out panel genes (K folds)",
        description=(
            "Strict K-fold-over-genes benchmark: the shared ST/reference genes are split into "
            "folds; each fold's genes are removed from the spatial data, predicted by each "
            "method from the reference, and scored (PCC, SRCC, SSIM, RMSE, JS, accuracy score)."
        ),
    )
    parser.add_argument("--st", required=True, type=Path, help="spatial data (.h5ad, spots x genes)")
    parser.add_argument(
        "--reference", required=True, type=Path, help="scRNA-seq reference (.h5ad, cells x genes)"
    )
    parser.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help=(
            "comma-separated methods: casper, tangram, tangram_clusters, knn, mean "
            f"(default {DEFAULT_METHODS})"
        ),
    )
    parser.add_argument("--folds", type=int, default=10, help="number of gene folds (default 10)")
    parser.add_argument(
        "--label-key",
        help="reference obs column of cell labels (tangram_clusters; default: Leiden clusters)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold split and methods")
    parser.add_argument(
        "--genes-limit", type=int, help="evaluate only this many genes (seeded subset), for quick runs"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (created)")
    parser.set_defaults(func=run)


def _read(path: Path, what: str):
    import anndata

    if not path.is_file():
        raise CasperInputError(f"{what} file {path} does not exist; pass an existing .h5ad file")
    return anndata.read_h5ad(path)


def command_line(args: argparse.Namespace) -> str:
    """The ``napari-casper benchmark`` command that reproduces ``args``."""
    parts = [
        "napari-casper", "benchmark",
        "--st", str(args.st),
        "--reference", str(args.reference),
        "--methods", args.methods,
        "--folds", str(args.folds),
        "--seed", str(args.seed),
    ]  # fmt: skip
    if args.label_key is not None:
        parts += ["--label-key", args.label_key]
    if args.genes_limit is not None:
        parts += ["--genes-limit", str(args.genes_limit)]
    parts += ["--out", str(args.out)]
    return shlex.join(parts)


def _markdown_table(summary) -> str:
    table = summary[[c for c in _TABLE_COLUMNS if c in summary]].rename(columns=_TABLE_COLUMNS)
    header = "| " + " | ".join(table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    rows = []
    for record in table.itertuples(index=False):
        cells = [
            f"{v:.1f}" if col == "runtime (s)" else f"{v:.3f}" if isinstance(v, float) else str(v)
            for col, v in zip(table.columns, record)
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([header, rule, *rows])


def _source(adata, path: Path) -> str:
    source = adata.uns.get("source")
    shape = f"{adata.n_obs} x {adata.n_vars}"
    return f"`{path.name}` ({shape}){': ' + str(source) if source else ''}"


def run(args: argparse.Namespace) -> int:
    from napari_casper import __version__
    from napari_casper.evaluate.protocol import resolve_method, run_benchmark

    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not names:
        raise CasperInputError("--methods is empty: name at least one method, e.g. knn,mean")
    if len(set(names)) != len(names):
        raise CasperInputError(f"--methods names a method twice: {args.methods}")
    methods = {name: resolve_method(name) for name in names}
    st = _read(args.st, "spatial (--st)")
    reference = _read(args.reference, "reference (--reference)")

    result = run_benchmark(
        st,
        reference,
        methods,
        n_folds=args.folds,
        seed=args.seed,
        label_key=args.label_key,
        genes_limit=args.genes_limit,
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    result.per_gene.to_csv(args.out / "per_gene.csv", index=False)
    result.summary.to_csv(args.out / "summary.csv", index=False)
    result.runtimes.to_csv(args.out / "runtimes.csv", index=False)
    lines = [
        f"# Imputation benchmark: {args.st.stem} from {args.reference.stem}",
        "",
        f"- spatial data: {_source(st, args.st)}",
        f"- reference: {_source(reference, args.reference)}",
        f"- protocol: strict {args.folds}-fold over genes (held-out genes removed from the "
        f"spatial data), seed {args.seed}; {result.split.describe()}",
        *[f"- {note}" for note in result.notes[1:]],
        f"- napari-casper {__version__}; runtime is wall time of the method calls summed "
        f"over folds, on {os.cpu_count()} CPU cores",
        "",
        _markdown_table(result.summary),
        "",
        "Regenerate with:",
        "",
        "```",
        command_line(args),
        "```",
        "",
    ]
    (args.out / "summary.md").write_text("\n".join(lines))
    print(_markdown_table(result.summary))
    print(f"wrote {args.out / 'per_gene.csv'}, summary.csv, runtimes.csv and summary.md")
    return 0
