"""``napari-casper impute``: impute genes with a saved CASPER model, in chunks, resumably."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_casper.cli.common import check_output, load_casper_model, positive_int, read_h5ad, split_list
from napari_casper.errors import CasperUsageError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "impute",
        help="impute genes for ST spots with a trained CASPER model (chunked, resumable, distributed)",
        description="Impute reference genes for every spot of --st. A .zarr output (or a new table inside a "
        "SpatialData --st store) is a SpatialData table whose X is chunked --spot-chunk x --gene-chunk and "
        "written block by block with bounded memory; re-running the same command after an interruption "
        "computes only the missing blocks, and on a finished output does nothing. An .h5ad output is "
        "written in one pass (not resumable). obs and obsm['spatial'] are copied from --st.",
    )
    p.add_argument("--model", required=True, type=Path, help="model file from `napari-casper train`")
    p.add_argument("--st", required=True, type=Path,
                   help="spots with the model's panel genes: an .h5ad (read backed, a chunk of rows at a time) "
                   "or a SpatialData .zarr store")
    p.add_argument("--table", help="the table of the --st store to impute from (default: its only table of "
                   "measured spots; tables written by this command are skipped)")
    genes = p.add_mutually_exclusive_group(required=True)
    genes.add_argument("--genes", help="comma-separated genes to impute, e.g. Gad1,Sst")
    genes.add_argument("--all-reference-genes", action="store_true", help="impute every reference gene")
    p.add_argument("--out", type=Path,
                   help="output .zarr (chunked, resumable) or .h5ad; required unless --st is a SpatialData store, "
                   "in which case the result becomes a new table of that store")
    p.add_argument("--out-table",
                   help="name of the new table in the --st store (default casper_imputed, then casper_imputed_2, "
                   "... when a run with other settings took the name)")
    p.add_argument("--spot-chunk", type=positive_int, default=50_000, help="spots per block/chunk (default 50000)")
    p.add_argument("--gene-chunk", type=positive_int, default=256, help="genes per block/chunk (default 256)")
    p.add_argument("--scheduler",
                   help="run the blocks on dask.distributed: a scheduler address (tcp://host:8786; workers must "
                   "see the output path) or local:N for a local cluster of N worker processes")
    p.add_argument("--threads", type=positive_int, help="local decoding threads without --scheduler (default: all CPUs)")
    p.add_argument("--restart", action="store_true",
                   help="discard an interrupted run (or replace a finished output once the new one is complete) "
                   "instead of resuming")
    p.add_argument("--quiet", action="store_true", help="no per-block progress lines")
    p.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cpu, cuda or mps")
    p.add_argument(
        "--restandardize", action="store_true",
        help="standardise the ST panel with this data's own statistics (a new section)",
    )
    p.set_defaults(func=run)


def _genes(args, model) -> list[str]:
    if args.all_reference_genes:
        return list(model.centroids.genes)
    genes = split_list(args.genes)
    if not genes:
        raise CasperUsageError("--genes is empty; give comma-separated gene names")
    repeated = sorted({g for g in genes if genes.count(g) > 1})
    if repeated:
        raise CasperUsageError(f"--genes names {', '.join(repeated)} more than once; list each gene once")
    return genes


def _print_progress(update) -> None:
    b = update.block
    print(f"block {update.done}/{update.total} (spots {b.s0}-{b.s1}, genes {b.g0}-{b.g1}): "
          f"{update.spots_per_s:,.0f} spots/s, {update.elapsed:.1f} s", flush=True)


def run(args: argparse.Namespace) -> int:
    from napari_casper.casper.batch.spot_source import open_spots

    out = args.out
    if out is not None and out.suffix.lower() not in (".zarr", ".h5ad"):
        raise CasperUsageError(f"output {out} must end in .zarr (chunked, resumable) or .h5ad")
    if out is not None and args.out_table:
        raise CasperUsageError("give either --out (a separate output) or --out-table (a new table in the --st store)")
    if out is not None:
        check_output(out, (args.st, args.model))
    if out is not None and out.suffix.lower() == ".h5ad":
        if args.scheduler or args.restart or args.table:
            raise CasperUsageError("--scheduler, --restart and --table need a .zarr output or a SpatialData --st store")
        from napari_casper.io.outputs import OutputLock

        with OutputLock(out):  # held from the start: a second run on this output stops at once
            return _run_h5ad(args)
    source = open_spots(args.st, args.table)
    try:
        if out is None and source.store is None:
            raise CasperUsageError(f"--out is required: {args.st} is not a SpatialData store to add the table to")
        model = load_casper_model(args.model, panel_genes=source.var_names)
        from napari_casper.casper.batch.impute import impute_to_zarr

        genes = _genes(args, model)
        result = impute_to_zarr(
            model, source, genes, out, store=source.store if out is None else None, table_name=args.out_table,
            spot_chunk=args.spot_chunk, gene_chunk=args.gene_chunk, scheduler=args.scheduler,
            restart=args.restart, device=args.device, restandardize=args.restandardize, threads=args.threads,
            progress=None if args.quiet else _print_progress,
        )
    finally:
        source.close()
    where = f"table {result.table!r} of {source.store}" if result.table else str(result.path)
    if result.status == "already complete":
        print(f"{where} is already complete ({result.total} blocks); nothing to do (--restart recomputes it)")
    else:
        print(f"imputed {len(genes)} genes for {source.n_obs} spots -> {where}: {result.computed} of "
              f"{result.total} blocks computed in {result.seconds:.1f} s ({result.spots_per_s:,.0f} spots/s)")
    return 0


def _trust_columns(imputer, genes, obs):
    """``var`` trust + interval_scale and ``obs`` spot_difficulty (the 90 % interval of gene g at spot s
    spans ``2 * var.interval_scale[g] * obs.spot_difficulty[s]`` standard deviations), when the model is calibrated."""
    if not imputer.calibrated:
        return obs, None, " (no trust or intervals: the model has no calibration; train it again)"
    import pandas as pd

    trust = imputer.trust(genes)
    var = pd.DataFrame({"trust": trust, "interval_scale": imputer.interval_scale(trust)}, index=pd.Index(genes))
    obs = obs.copy()
    obs["spot_difficulty"] = imputer.difficulty()
    level = round(100 * imputer.calibration.level)
    return obs, var, f"; var 'trust' (expected Pearson r), {level}% interval widths = 2 x var 'interval_scale' x obs 'spot_difficulty'"


def _run_h5ad(args: argparse.Namespace) -> int:
    from napari_casper.casper.batch.output import write_imputation
    from napari_casper.casper.batch.spot_source import check_spots
    from napari_casper.casper.imputation import CasperImputer

    if args.out.exists():  # before reading anything
        raise CasperUsageError(f"{args.out} already exists; choose another output path or delete it")
    st = read_h5ad(args.st, "spatial (--st) ")
    check_spots(st.n_obs, st.var_names, args.st)
    model = load_casper_model(args.model, panel_genes=st.var_names)
    imputer = CasperImputer(model, st, device=args.device, restandardize=args.restandardize)
    genes = _genes(args, model)
    imputer.resolve_genes(genes)
    obs, var, note = _trust_columns(imputer, genes, st.obs)
    write_imputation(imputer, genes, args.out, spot_chunk=args.spot_chunk, gene_chunk=args.gene_chunk, obs=obs,
                     obsm=dict(st.obsm.items()), var=var)
    print(f"imputed {len(genes)} genes for {imputer.n_spots} spots -> {args.out}{note}")
    return 0
