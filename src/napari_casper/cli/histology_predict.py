"""``napari-casper histology-predict``: predict spot expression from an H&E image.

Spots come from an ``.h5ad`` with ``obsm["spatial"]`` (``--spots``), or are laid on a hex grid
over the detected tissue (``--pitch-px``). Writes an ``.h5ad``: ``X`` = predicted log-normalised
expression, ``layers["uncertainty"]``, ``obsm["spatial"]`` in full-resolution image pixels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_casper.errors import CasperInputError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "histology-predict",
        help="predict expression at spots of an H&E image with a histology checkpoint",
        description="Predict spot expression from H&E with a model written by histology-train.",
    )
    parser.add_argument("--model", required=True, type=Path, help="checkpoint from histology-train")
    parser.add_argument("--image", type=Path, help="H&E image (default: uns['image'] of --spots)")
    parser.add_argument("--spots", type=Path, help=".h5ad whose obsm['spatial'] holds (x, y) image pixels")
    parser.add_argument(
        "--spot-diameter-px", type=float,
        help="spot diameter in full-resolution pixels (default with --spots: half the median spacing)",
    )  # fmt: skip
    parser.add_argument("--pitch-px", type=float, help="virtual spots: grid pitch in pixels (default 2 x diameter)")
    parser.add_argument("--layout", default="hex", choices=("hex", "square"), help="virtual-spot grid layout")
    parser.add_argument("--genes", help="genes to write: all (default), comma list, or @file")
    parser.add_argument("--head", help="override the prediction head (ridge, retrieval, ensemble, crossmodal)")
    parser.add_argument("--out", required=True, type=Path, help="output .h5ad")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from napari_casper.cli.common import read_gene_list, read_h5ad, require_file
    from napari_casper.histology.checkpoint import load_predictor
    from napari_casper.histology.sections import choose_reduction, read_jpeg
    from napari_casper.histology.tissue import detect_tissue, virtual_spots_for
    from napari_casper.io.convert import estimate_spot_diameter
    from napari_casper.io.stores import refuse_input_as_output, write_h5ad_atomic

    refuse_input_as_output(args.out, (args.spots, args.image, args.model))  # before any work
    predictor = load_predictor(args.model)
    obs_names = None
    coords = None
    image_path = args.image
    if args.spots is not None:
        spots = read_h5ad(args.spots, "spots (--spots)")
        if "spatial" not in spots.obsm:
            raise CasperInputError(f"{args.spots} has no obsm['spatial'] spot centres")
        coords = np.asarray(spots.obsm["spatial"], dtype=np.float64)[:, :2]
        obs_names = spots.obs_names
        if image_path is None and spots.uns.get("image"):
            image_path = args.spots.parent / str(spots.uns["image"])
    if image_path is None:
        raise CasperInputError("give the H&E image with --image (or --spots whose uns['image'] names it)")
    require_file(image_path, "H&E image")
    diameter = args.spot_diameter_px
    if diameter is None and coords is None:
        diameter = predictor.config.spot_diameter_px  # recorded at training time, when known
    if diameter is None:
        if coords is None:
            raise CasperInputError("virtual spots need --spot-diameter-px (the physical spot size in pixels)")
        diameter = estimate_spot_diameter(coords)
    image, scale = read_jpeg(image_path, choose_reduction(diameter, predictor.config.patch_size))
    if coords is None:
        tissue = detect_tissue(image)
        pitch = args.pitch_px * scale if args.pitch_px else None
        coords = virtual_spots_for(tissue, diameter * scale, pitch, layout=args.layout) / scale
        print(f"{len(coords)} virtual spots on a {args.layout} grid over {tissue.tissue_fraction:.0%} tissue")
    result = predictor.predict(image, coords * scale, diameter * scale, genes=read_gene_list(args.genes), head=args.head)
    result.coords = coords
    adata = result.to_anndata(obs_names)
    adata.uns["image"] = str(image_path)
    adata.uns["spot_diameter_px"] = float(diameter)
    write_h5ad_atomic(adata, args.out, inputs=(args.spots, image_path, args.model))
    print(f"wrote {args.out}: {adata.n_obs} spots x {adata.n_vars} genes (head {result.head})")
    return 0
