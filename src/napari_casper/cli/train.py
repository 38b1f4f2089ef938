"""``napari-casper train``: train a CASPER model on an ST panel + scRNA reference, save it."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_casper.cli.common import check_output, positive_int, read_h5ad, require_file


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a CASPER imputation model and save it (.pt)",
        description="Train CASPER (masked reconstruction of the ST panel from reference centroids) "
        "and save model + config + gene lists + centroids to --out.",
    )
    p.add_argument("--st", required=True, type=Path, help="spatial data, spots x panel genes (.h5ad)")
    p.add_argument("--reference", required=True, type=Path, help="scRNA-seq reference, cells x genes (.h5ad)")
    p.add_argument("--out", required=True, type=Path, help="model file to write (.pt)")
    p.add_argument("--label-key", default=None, help="reference obs column with cell types (centroid per type)")
    p.add_argument(
        "--centroids", default="auto", choices=("auto", "label", "leiden", "cells"),
        help="centroid granularity (auto: label column if given, else every cell for references "
        "up to 5000 cells, else Leiden)",
    )
    p.add_argument("--resolution", type=float, default=1.0, help="Leiden resolution (default 1.0)")
    p.add_argument("--epochs", type=positive_int, default=None, help="maximum epochs (an epoch = --steps-per-epoch batches)")
    p.add_argument("--max-steps", type=positive_int, default=None, help="maximum optimisation steps (default 300)")
    p.add_argument("--steps-per-epoch", type=positive_int, default=None, help="batches between validations (default 25)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="spots per batch (default 512)")
    p.add_argument(
        "--ensemble", type=positive_int, default=None,
        help="networks averaged: the final refit is trained this many times from successive seeds and the model "
        "predicts their mean (default 2; 1: a single, quicker network)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--case-insensitive", action="store_true", help="match gene names ignoring case")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_casper.io.outputs import OutputLock

    require_file(args.st, "spatial (--st)", "pass an existing .h5ad file")
    require_file(args.reference, "reference (--reference)", "pass an existing .h5ad file")
    check_output(args.out, (args.st, args.reference))  # before training: a read-only folder fails now, not at the end
    with OutputLock(args.out):  # a second run writing the same model stops at once
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from napari_casper.casper.checkpoint import save_checkpoint
    from napari_casper.casper.training import CasperConfig, train_casper
    from napari_casper.io.outputs import write_error

    st = read_h5ad(args.st, "spatial (--st)")
    reference = read_h5ad(args.reference, "reference (--reference)")
    options = {
        "label_key": args.label_key,
        "centroid_method": args.centroids,
        "leiden_resolution": args.resolution,
        "device": args.device,
        "seed": args.seed,
        "case_insensitive": args.case_insensitive,
    }
    if args.steps_per_epoch is not None:
        options["steps_per_epoch"] = args.steps_per_epoch
    if args.batch_size is not None:
        options["batch_size"] = args.batch_size
    if args.ensemble is not None:
        options["ensemble"] = args.ensemble
    config = CasperConfig.from_dict(options)
    if args.max_steps is not None:
        config.max_steps = args.max_steps
    if args.epochs is not None:
        config.max_steps = args.epochs * config.steps_per_epoch

    def progress(record) -> None:
        if not args.quiet:
            print(
                f"epoch {record.epoch:3d}  step {record.step:5d}  train loss {record.train_loss:.4f}  "
                f"val loss {record.val_loss:.4f}  val PCC {record.val_score:.4f}",
                flush=True,
            )

    model = train_casper(st, reference, config, progress=progress)
    try:
        save_checkpoint(model, args.out)  # a temporary file renamed into place
    except OSError as err:
        Path(str(args.out) + ".tmp").unlink(missing_ok=True)
        raise write_error(err, args.out, kept="An earlier model there is intact." if args.out.exists() else "") from err
    h = model.history
    print(model.report["gene_match"])
    print(f"centroids: {model.report['centroids']}; ST normalisation: {model.st_normalization}")
    print(
        f"best epoch {h.best_epoch} (validation PCC {h.best_val_score:.4f} on "
        f"{len(h.validation_genes)} inner validation genes); {h.stop_reason}; {h.seconds:.1f} s"
    )
    print(f"wrote {args.out}")
    return 0
