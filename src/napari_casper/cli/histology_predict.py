"""``napari-casper histology-predict``: predict spot expression from an H&E image.

Spots come from an ``.h5ad`` with ``obsm["spatial"]`` (``--spots``), or are laid on a hex grid
over the detected tissue (``--pitch-px``). Writes an ``.h5ad``: ``X`` = predicted log-normalised
expression, ``layers["uncertainty"]`` (the expected absolute error of each prediction), ``obsm["spatial"]`` in
full-resolution image pixels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_casper.cli.common import positive_int
from napari_casper.errors import CasperInputError, CasperUsageError


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
    parser.add_argument(
        "--encoder", type=Path,
        help="where the model's pretrained patch encoder is now, if it moved since training (its weights must be "
        "the same; default: the path recorded in --model)",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=positive_int,
        help="torch and BLAS threads (default: every core; the Histology widget uses half, to leave the viewer one)",
    )  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, help="output .h5ad")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_casper.cli.common import check_output
    from napari_casper.io.outputs import OutputLock

    check_output(args.out, (args.spots, args.image, args.model))  # before any work: never over an input
    with OutputLock(args.out):  # a second run writing the same output stops at once
        return _predict(args)


def _load_model(path: Path, encoder: Path | None = None):
    from napari_casper.cli.common import require_checkpoint, safe_checkpoint_error
    from napari_casper.histology.checkpoint import load_predictor

    require_checkpoint(path, "model (--model)", "`napari-casper histology-train`")
    try:
        return load_predictor(path, encoder=encoder)
    except CasperInputError as err:
        raise safe_checkpoint_error(err, path, "`napari-casper histology-train`") from err


def _read_image(path: Path, reduction: int):
    """The decoded image and its scale; an unreadable or truncated file is a clear error."""
    from napari_casper.histology.sections import read_jpeg

    if path.suffix.lower() in (".tif", ".tiff"):  # tifffile: float32 and multi-channel TIFFs too
        return _read_tiff(path, reduction)
    try:
        return read_jpeg(path, reduction)
    except CasperInputError:
        raise
    except Exception as err:  # noqa: BLE001 - PIL: truncated, not an image, unsupported mode
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        what = "is truncated (the file is incomplete: copy or export it again)" if "truncated" in text else (
            f"cannot be decoded ({type(err).__name__}: {text}): use a jpg, png or tif file that opens in an image viewer")
        raise CasperInputError(f"H&E image {path} {what}.") from err


def _read_tiff(path: Path, reduction: int):
    import numpy as np
    from PIL import Image

    from napari_casper.io.convert import read_image_file

    array = read_image_file(path)  # uint8 (float images scaled), (y, x, c)
    if array.dtype != np.uint8:
        raise CasperInputError(f"H&E image {path} has {array.dtype} pixels; export it as an 8-bit RGB image")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    rgb = Image.fromarray(np.ascontiguousarray(array[:, :, :3]))
    if reduction > 1:
        rgb = rgb.reduce(reduction)
    return np.asarray(rgb), rgb.width / array.shape[1]


def _predict(args: argparse.Namespace) -> int:
    import os

    import numpy as np

    from napari_casper.cli.common import read_gene_list, read_h5ad, require_file
    from napari_casper.histology.sections import choose_reduction, image_cache_key
    from napari_casper.histology.tissue import detect_tissue, virtual_spots_for
    from napari_casper.io.convert import check_spots_inside_image, estimate_spot_diameter
    from napari_casper.io.stores import write_h5ad_atomic

    predictor = _load_model(args.model, args.encoder)
    predictor.config.threads = args.threads or os.cpu_count() or 1  # a command runs alone: every core
    if args.encoder is not None and predictor.encoder is None:
        raise CasperUsageError(f"{args.model} was trained without a pretrained encoder: leave --encoder out")
    obs_names = None
    coords = None
    image_path = args.image
    if args.spots is not None:
        spots = read_h5ad(args.spots, "spots (--spots)")
        if "spatial" not in spots.obsm:
            raise CasperInputError(f"{args.spots} has no obsm['spatial'] spot centres")
        if spots.n_obs == 0:
            raise CasperInputError(f"{args.spots} has no spots (0 rows): give spots to predict at, or leave --spots out "
                                   "for virtual spots over the tissue")
        coords = np.asarray(spots.obsm["spatial"], dtype=np.float64)[:, :2]
        if not np.isfinite(coords).all():
            raise CasperInputError(f"{args.spots}: {int((~np.isfinite(coords).all(1)).sum())} spots have NaN or infinite "
                                   "coordinates in obsm['spatial']; drop them or fix their coordinates")
        obs_names = spots.obs_names
        if image_path is None and spots.uns.get("image"):
            image_path = args.spots.parent / str(spots.uns["image"])
    if image_path is None:
        raise CasperUsageError("give the H&E image with --image (or --spots whose uns['image'] names it)")
    require_file(image_path, "H&E image")
    diameter = args.spot_diameter_px
    if diameter is not None and not (np.isfinite(diameter) and diameter > 0):
        raise CasperUsageError(f"--spot-diameter-px must be a positive number of pixels (got {diameter})")
    if args.pitch_px is not None and not (np.isfinite(args.pitch_px) and args.pitch_px > 0):
        raise CasperUsageError(f"--pitch-px must be a positive number of pixels (got {args.pitch_px})")
    if diameter is None and coords is None:
        diameter = predictor.config.spot_diameter_px  # recorded at training time, when known
    if diameter is None:
        if coords is None:
            raise CasperUsageError("virtual spots need --spot-diameter-px (the physical spot size in pixels)")
        diameter = estimate_spot_diameter(coords)
    side = max(predictor.config.patch_size, predictor.encoder.spec.input_size if predictor.encoder else 0)
    reduction = choose_reduction(diameter, side)
    image, scale = _read_image(image_path, reduction)
    if coords is not None:  # spots in another resolution would give confident predictions of blank background
        full_shape = (round(image.shape[0] / scale), round(image.shape[1] / scale))
        check_spots_inside_image(coords, full_shape, f"spots of {args.spots} do not match the image {image_path}")
    else:
        tissue = detect_tissue(image)
        pitch = args.pitch_px * scale if args.pitch_px else None
        coords = virtual_spots_for(tissue, diameter * scale, pitch, layout=args.layout) / scale
        print(f"{len(coords)} virtual spots on a {args.layout} grid over {tissue.tissue_fraction:.0%} tissue")
    key = image_cache_key(image_path, reduction)  # the slide's embeddings are cached under it (pretrained encoder)
    result = predictor.predict(image, coords * scale, diameter * scale, genes=read_gene_list(args.genes), head=args.head, cache_key=key)
    result.coords = coords
    adata = result.to_anndata(obs_names)
    adata.uns["image"] = str(image_path)
    adata.uns["spot_diameter_px"] = float(diameter)
    write_h5ad_atomic(adata, args.out, inputs=(args.spots, image_path, args.model))
    print(f"wrote {args.out}: {adata.n_obs} spots x {adata.n_vars} genes (head {result.head})")
    if result.reach is not None:  # saved in uns["histology_prediction"]["out_of_distribution"]
        print(result.reach.describe())
    return 0
