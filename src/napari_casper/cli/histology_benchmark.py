"""``napari-casper histology-benchmark``: leave-one-section-out benchmark of H&E-to-expression.

Writes ``OUT/per_gene.csv`` (PCC per test section, method and gene), ``OUT/summary.csv`` (one
row per test section and method, plus the means), ``OUT/selection.json`` (inner-validation
scores of the heads per fold, and training histories) and ``OUT/summary.md`` (tables and the
command line that regenerates them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from napari_casper.cli.common import (
    check_output,
    markdown_table,
    read_gene_list,
    regenerate_section,
    reproducing_command,
    split_list,
    write_tables,
    write_text,
)
from napari_casper.errors import CasperInputError

_METRICS = ("all", "HEG-50", "HVG-50", "gene-gene")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from napari_casper.cli.histology_train import add_training_options

    parser = subparsers.add_parser(
        "histology-benchmark",
        help="leave-one-section-out benchmark: histology model vs handcrafted ridge and retrieval",
        description=(
            "Hold out each section in turn, train on the others, predict it from H&E, and score "
            "per-gene PCC (all genes, HEG-50, HVG-50, markers, gene-gene correlation preservation) "
            "for the model and the handcrafted ridge / retrieval baselines on the same splits."
        ),
    )
    parser.add_argument("--dataset-dir", required=True, type=Path, help="folder of <section>.h5ad + image pairs")
    parser.add_argument("--sections", required=True, help="comma-separated section names, e.g. MOB1,MOB2,MOB3,MOB4")
    parser.add_argument("--test-sections", help="hold out only these (default: every section in turn)")
    parser.add_argument("--genes", help="genes to predict and score: all (default), comma list, or @file")
    parser.add_argument(
        "--markers", default="auto",
        help="marker genes reported by name: auto (by dataset folder name: mob, her2st), none, or a comma list",
    )  # fmt: skip
    add_training_options(parser)
    parser.add_argument("--out", required=True, type=Path, help="output folder (created)")
    parser.set_defaults(func=run)


def _markers(spec: str, dataset_dir: Path) -> list[str]:
    from napari_casper.histology.evaluate import MARKERS

    if spec == "none":
        return []
    if spec == "auto":
        return list(MARKERS.get(dataset_dir.resolve().name.lower(), ()))
    return split_list(spec)


def command_line(args: argparse.Namespace) -> str:
    """The ``napari-casper histology-benchmark`` command that reproduces ``args``."""
    options = {
        "--dataset-dir": args.dataset_dir,
        "--sections": args.sections,
        "--test-sections": args.test_sections,
        "--genes": args.genes,
        "--markers": args.markers if args.markers != "auto" else None,
        "--spot-diameter-px": args.spot_diameter_px,
        "--patch-size": args.patch_size,
        "--epochs": args.epochs,
        "--inner-epochs": args.inner_epochs,
        "--predictor": args.predictor,
        "--n-model-genes": args.n_model_genes,
        "--top-k": args.top_k,
        "--encoder": args.encoder,
        "--encoder-arch": args.encoder_arch,
        "--encoder-input-size": args.encoder_input_size,
        "--encoder-mean": ",".join(map(str, args.encoder_mean)) if args.encoder_mean else None,
        "--encoder-std": ",".join(map(str, args.encoder_std)) if args.encoder_std else None,
        "--encoder-mpp": args.encoder_mpp,
        "--spot-diameter-um": args.spot_diameter_um,
        "--device": args.device if args.device != "auto" else None,
        "--threads": args.threads,
        "--seed": args.seed,
    }
    return reproducing_command("histology-benchmark", options, out=args.out)


def run(args: argparse.Namespace) -> int:
    from napari_casper import __version__
    from napari_casper.cli.histology_train import config_from_args, encoder_from_args, load_sections, print_epoch
    from napari_casper.histology.evaluate import run_benchmark

    names = split_list(args.sections)
    if len(names) < 2:
        raise CasperInputError("--sections needs at least two section names")
    paths = [args.dataset_dir / f"{n}.h5ad" for n in names]
    check_output(args.out, paths)
    start = time.perf_counter()
    encoder = encoder_from_args(args)
    sections, args.patch_size = load_sections(paths, None, args.spot_diameter_px, args.patch_size,
                                              encoder_side=encoder.spec.input_size if encoder else None)  # fmt: skip
    config = config_from_args(args)
    markers = _markers(args.markers, args.dataset_dir)
    tests = split_list(args.test_sections) or None
    result = run_benchmark(
        sections,
        config,
        markers=markers,
        genes=read_gene_list(args.genes),
        test_sections=tests,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        progress=print_epoch if os.environ.get("NAPARI_CASPER_VERBOSE") else None,
        encoder=encoder,
    )
    seconds = time.perf_counter() - start
    write_tables(args.out, {"per_gene.csv": result.per_gene, "summary.csv": result.summary})
    write_text(args.out / "selection.json",
               json.dumps({"selection": result.selection, "training": result.training}, indent=1, default=float))
    summary = result.summary
    means = summary[summary.section == "mean"]
    marker_cols = [m for m in markers if m in summary.columns]
    lines = [
        f"# Histology-to-expression benchmark: {args.dataset_dir.name} ({', '.join(names)})",
        "",
        "- leave-one-section-out; targets log1p(counts per 1e4); per-gene PCC over the test section's spots",
        f"- {int(summary['n_genes'].iloc[0])} genes predicted; HEG-50 / HVG-50: top 50 genes by mean / variance in the test section",
        "- `model` = the head chosen by inner leave-one-section-out validation on the training sections "
        "(`model:<head>` rows show every head, for transparency; they were not chosen on the test section)",
        "- baselines: handcrafted RGB + HED + gradient statistics at 1x/2x/4x spot diameter, ridge (alpha by CV) "
        "and top-50 cosine retrieval; `ablation:features-only` = the model's ensemble head on section-standardised "
        "handcrafted features without the learned embedding",
        f"- napari-casper {__version__}; {os.cpu_count()} CPU cores; total wall time {seconds / 60:.1f} min",
        "",
        "## Mean over test sections",
        "",
        markdown_table(means, ["method", *_METRICS, *marker_cols, "seconds"]),
        "",
        "## Per test section",
        "",
        markdown_table(
            summary[summary.section != "mean"], ["section", "method", *_METRICS, *marker_cols, "seconds"]
        ),
        "",
        "## Head chosen per fold (inner validation score: mean of HEG-50 and HVG-50 PCC)",
        "",
        *[
            f"- {fold}: **{sel['chosen']}** ("
            + ", ".join(f"{k} {v:.3f}" for k, v in sel.items() if k != "chosen")
            + ")"
            for fold, sel in result.selection.items()
        ],
        "",
        *regenerate_section(command_line(args)),
    ]
    write_text(args.out / "summary.md", "\n".join(lines))
    print(markdown_table(means, ["method", *_METRICS, *marker_cols, "seconds"]))
    print(f"wrote {args.out / 'summary.md'}, summary.csv, per_gene.csv, selection.json")
    return 0
