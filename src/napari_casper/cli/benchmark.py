"""``napari-casper benchmark``: score imputation methods with the strict K-fold-over-genes protocol.

Writes ``OUT/per_gene.csv`` (one row per method and gene), ``OUT/summary.csv`` (one row
per method), ``OUT/runtimes.csv`` (seconds per method and fold) and ``OUT/summary.md`` (a
markdown table with the data sets and the exact command that regenerates it).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from napari_casper.cli.common import (
    check_output,
    markdown_table,
    positive_int,
    read_h5ad,
    regenerate_section,
    reproducing_command,
    require_file,
    split_list,
    write_tables,
    write_text,
)
from napari_casper.errors import CasperInputError, CasperUsageError

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
        "--reference", type=Path, help="scRNA-seq reference (.h5ad, cells x genes; not with --small-section)"
    )
    parser.add_argument(
        "--small-section",
        metavar="N,M",
        help=(
            "build the small same-technology case from --st instead: its N cells nearest the section's centre "
            "are the spatial data, M other cells drawn at random the reference (e.g. 300,1000)"
        ),
    )
    parser.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help=(
            "comma-separated methods: casper, tangram, tangram_clusters, knn, ridge, spage (tissue-sc), "
            "gimvi (scvi-tools), mean "
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
        "--genes-limit", type=positive_int, help="evaluate only this many genes (seeded subset), for quick runs"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder (created)")
    parser.set_defaults(func=run)


def command_line(args: argparse.Namespace) -> str:
    """The ``napari-casper benchmark`` command that reproduces ``args``."""
    options = {
        "--st": args.st,
        "--reference": args.reference,
        "--small-section": args.small_section,
        "--methods": args.methods,
        "--folds": args.folds,
        "--seed": args.seed,
        "--label-key": args.label_key,
        "--genes-limit": args.genes_limit,
    }
    return reproducing_command("benchmark", options, out=args.out)


def _markdown_table(summary) -> str:
    columns = [c for c in _TABLE_COLUMNS if c in summary]
    return markdown_table(summary, columns, headers=_TABLE_COLUMNS, formats={"runtime_s": ".1f"})


def _source(adata, path: Path) -> str:
    source = adata.uns.get("source")
    shape = f"{adata.n_obs} x {adata.n_vars}"
    return f"`{path.name}` ({shape}){': ' + str(source) if source else ''}"


def run(args: argparse.Namespace) -> int:
    from napari_casper.evaluate.protocol import resolve_method

    names = split_list(args.methods)
    if not names:
        raise CasperUsageError("--methods is empty: name at least one method, e.g. knn,mean")
    if len(set(names)) != len(names):
        raise CasperUsageError(f"--methods names a method twice: {args.methods}")
    try:
        methods = {name: resolve_method(name) for name in names}
    except CasperInputError as err:  # a misspelt --methods entry: the command line is wrong
        raise CasperUsageError(str(err)) from err
    if args.folds < 2:
        raise CasperUsageError(f"--folds must be at least 2 (got {args.folds}): each fold holds out genes the others see")
    require_file(args.st, "spatial (--st)", "pass an existing .h5ad file")
    if args.small_section is not None:
        if args.reference is not None:
            raise CasperUsageError("--small-section builds the reference from --st: leave out --reference")
        args.small_sizes = _sizes(args.small_section)
    else:
        if args.reference is None:
            raise CasperUsageError("--reference is required (or --small-section N,M to build a case from --st alone)")
        require_file(args.reference, "reference (--reference)", "pass an existing .h5ad file")
    check_output(args.out, tuple(p for p in (args.st, args.reference) if p is not None))  # the folder is created only when the results are written
    from napari_casper.io.outputs import OutputLock

    with OutputLock(args.out):  # one benchmark per output folder at a time
        return _run(args, methods)


def _sizes(text: str) -> tuple[int, int]:
    parts = split_list(text)
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        sizes = ()
    if len(sizes) != 2 or min(sizes) < 1:
        raise CasperUsageError(f"--small-section takes two positive counts N,M (cells in the patch, in the reference), got {text!r}")
    return sizes


def _run(args: argparse.Namespace, methods) -> int:
    from napari_casper import __version__
    from napari_casper.evaluate.protocol import run_benchmark

    st = read_h5ad(args.st, "spatial (--st)")
    if args.small_section is not None:
        from napari_casper.evaluate.small_section import small_section

        n_spots, n_reference = args.small_sizes
        st, reference = small_section(st, n_spots=n_spots, n_reference=n_reference, seed=args.seed)
        reference_name = f"{n_reference} other cells of {args.st.stem}"
    else:
        reference = read_h5ad(args.reference, "reference (--reference)")
        reference_name = args.reference.stem

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
    tables = {"per_gene.csv": result.per_gene, "summary.csv": result.summary, "runtimes.csv": result.runtimes}
    write_tables(args.out, tables)
    lines = [
        f"# Imputation benchmark: {args.st.stem} from {reference_name}",
        "",
        f"- spatial data: {_source(st, args.st)}" + (
            f", the {st.n_obs} cells nearest its centre (--small-section)" if args.small_section else ""
        ),
        f"- reference: {_source(reference, args.reference) if args.reference else reference_name}",
        f"- protocol: strict {args.folds}-fold over genes (held-out genes removed from the "
        f"spatial data), seed {args.seed}; {result.split.describe()}",
        *[f"- {note}" for note in result.notes[1:]],
        f"- napari-casper {__version__}; runtime is wall time of the method calls summed "
        f"over folds, on {os.cpu_count()} CPU cores",
        "",
        _markdown_table(result.summary),
        "",
        *regenerate_section(command_line(args)),
    ]
    write_text(args.out / "summary.md", "\n".join(lines))
    print(_markdown_table(result.summary))
    print(f"wrote {args.out / 'per_gene.csv'}, summary.csv, runtimes.csv and summary.md")
    return 0
