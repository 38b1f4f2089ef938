"""``napari-casper impute``: impute genes with a saved CASPER model, written in chunks."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_casper.errors import CasperInputError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "impute",
        help="impute genes for ST spots with a trained CASPER model",
        description="Impute reference genes for every spot of --st and write an AnnData "
        "(.h5ad or chunked .zarr) with spots x imputed genes; obs and obsm are copied from --st.",
    )
    p.add_argument("--model", required=True, type=Path, help="model file from `napari-casper train`")
    p.add_argument("--st", required=True, type=Path, help="spatial data with the model's panel genes (.h5ad)")
    genes = p.add_mutually_exclusive_group(required=True)
    genes.add_argument("--genes", help="comma-separated genes to impute, e.g. Gad1,Sst")
    genes.add_argument("--all-reference-genes", action="store_true", help="impute every reference gene")
    p.add_argument("--out", required=True, type=Path, help="output .h5ad or .zarr (must not exist)")
    p.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cpu, cuda or mps")
    p.add_argument("--gene-chunk", type=int, default=256, help="genes per written chunk (default 256)")
    p.add_argument("--spot-chunk", type=int, default=50_000, help="spots per written chunk (default 50000)")
    p.add_argument(
        "--restandardize", action="store_true",
        help="standardise the ST panel with this data's own statistics (a new section)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import anndata as ad

    from napari_casper.checkpoint import load_checkpoint
    from napari_casper.impute import CasperImputer

    if not args.st.exists():
        raise CasperInputError(f"input file {args.st} does not exist")
    st = ad.read_h5ad(args.st)
    model = load_checkpoint(args.model, panel_genes=st.var_names)
    imputer = CasperImputer(model, st, device=args.device, restandardize=args.restandardize)
    if args.all_reference_genes:
        genes = list(imputer.genes)
    else:
        genes = [g.strip() for g in args.genes.split(",") if g.strip()]
        if not genes:
            raise CasperInputError("--genes is empty; give comma-separated gene names")
        imputer.resolve_genes(genes)
    imputer.write(
        genes,
        args.out,
        spot_chunk=args.spot_chunk,
        gene_chunk=args.gene_chunk,
        obs=st.obs,
        obsm={k: v for k, v in st.obsm.items()},
    )
    print(f"imputed {len(genes)} genes for {imputer.n_spots} spots -> {args.out}")
    return 0
