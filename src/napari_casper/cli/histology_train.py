"""``napari-casper histology-train``: train a histology-to-expression model on ST sections.

Each training section is an ``.h5ad`` (spots x genes raw counts, ``obsm["spatial"]`` = ``(x, y)``
pixels of the H&E image named by ``uns["image"]`` next to it, or given with ``--images``).
Writes one checkpoint file that ``napari-casper histology-predict`` reads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_casper.cli.common import check_output, positive_int, require_file
from napari_casper.cli.common import read_gene_list as read_genes
from napari_casper.errors import CasperInputError, CasperUsageError


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by histology-train and histology-benchmark."""
    parser.add_argument(
        "--spot-diameter-px", type=float,
        help="spot diameter in full-resolution image pixels (default: half the median spot spacing)",
    )  # fmt: skip
    parser.add_argument(
        "--patch-size", type=positive_int,
        help="patch side in pixels (default: 64 when spots are at least 64 px across, else 32)",
    )  # fmt: skip
    parser.add_argument(
        "--epochs", type=positive_int, help="training epochs (default: about 120 optimisation steps, 10 to 30 epochs)"
    )
    parser.add_argument(
        "--inner-epochs", type=positive_int,
        help="epochs of the inner leave-one-section-out models that choose the head (default: --epochs)",
    )  # fmt: skip
    parser.add_argument(
        "--predictor", default="auto",
        help="prediction head: auto (chosen by leave-one-section-out on the training sections), "
        "ridge, retrieval, ensemble or crossmodal (default auto)",
    )  # fmt: skip
    parser.add_argument("--n-model-genes", type=positive_int, default=1000, help="HVGs fed to the expression encoder")
    parser.add_argument("--top-k", type=positive_int, default=50, help="neighbours for retrieval and uncertainty")
    add_encoder_options(parser)
    parser.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cpu, cuda or mps")
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default: half the cores, at most 4)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _rgb(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers (R,G,B) such as 0.485,0.456,0.406, got {text!r}")
    return values


def add_encoder_options(parser: argparse.ArgumentParser) -> None:
    """``--encoder`` and how to read it (histology-train, histology-benchmark)."""
    group = parser.add_argument_group(
        "pretrained patch encoder (optional; nothing is downloaded)",
        "Use a local pathology foundation model (UNI, CONCH, Virchow, Phikon, your own ResNet, ...) instead of "
        "the small CNN trained from scratch: its frozen embeddings of every slide are computed once and cached "
        "($NAPARI_CASPER_CACHE, default ~/.cache/napari-casper).",
    )
    group.add_argument(
        "--encoder", type=Path,
        help="a TorchScript file, a weights file (.safetensors/.pth/.bin, with --encoder-arch), or a timm / "
        "Hugging Face model folder (config.json + weights)",
    )  # fmt: skip
    group.add_argument("--encoder-arch", help="timm architecture of a weights file, e.g. vit_large_patch16_224 or resnet50")
    group.add_argument("--encoder-input-size", type=positive_int, help="patch side the encoder takes (default: from the model, else 224)")
    group.add_argument("--encoder-mean", type=_rgb, help="R,G,B normalisation mean (default: from the model, else ImageNet's)")
    group.add_argument("--encoder-std", type=_rgb, help="R,G,B normalisation std (default: from the model, else ImageNet's)")
    group.add_argument(
        "--encoder-mpp", type=float,
        help="microns per pixel the encoder was trained at (0.5 for 20x); with --spot-diameter-um the encoder sees "
        "its own field of view, else patches of 1x/2x/4x the spot diameter",
    )  # fmt: skip
    group.add_argument("--spot-diameter-um", type=float, help="spot diameter in microns (55 Visium, 100 legacy ST)")


def encoder_from_args(args: argparse.Namespace):
    """The loaded encoder of ``--encoder`` (None without it)."""
    if args.encoder is None:
        for option in ("encoder_arch", "encoder_input_size", "encoder_mean", "encoder_std", "encoder_mpp"):
            if getattr(args, option) is not None:
                raise CasperUsageError(f"--{option.replace('_', '-')} describes a pretrained encoder: give it with --encoder")
        return None
    if args.encoder_mpp is not None and args.spot_diameter_um is None:
        raise CasperUsageError(
            "--encoder-mpp needs --spot-diameter-um (55 for Visium, 100 for legacy ST): together they give the encoder's "
            "field of view in spot diameters"
        )
    from napari_casper.histology.pretrained import load_encoder

    return load_encoder(
        args.encoder, architecture=args.encoder_arch, input_size=args.encoder_input_size, mean=args.encoder_mean,
        std=args.encoder_std, mpp=args.encoder_mpp,
    )  # fmt: skip


def config_from_args(args: argparse.Namespace, **extra):
    from napari_casper.histology.config import HistologyConfig

    return HistologyConfig(
        patch_size=args.patch_size,
        epochs=args.epochs,
        inner_epochs=args.inner_epochs,
        predictor=args.predictor,
        n_model_genes=args.n_model_genes,
        top_k=args.top_k,
        spot_diameter_um=args.spot_diameter_um,
        device=args.device,
        threads=args.threads,
        seed=args.seed,
        **extra,
    )


def print_epoch(record) -> None:
    print(
        f"[{record.stage}] epoch {record.epoch}/{record.n_epochs}: loss {record.loss:.3f} "
        f"(contrastive {record.contrastive:.3f}, reconstruction {record.reconstruction:.3f}), "
        f"validation {record.val_loss:.3f}, {record.seconds:.1f} s",
        file=sys.stderr,
        flush=True,
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "histology-train",
        help="train an H&E-to-expression model on ST sections (.h5ad + image)",
        description=(
            "Train the CMRCNet-style histology model (contrastive image-expression alignment + "
            "cross-modal masked reconstruction, multi-scale patches) on sections with measured "
            "expression, and save a checkpoint for histology-predict."
        ),
    )
    parser.add_argument("sections", nargs="+", type=Path, help="training .h5ad files (obsm['spatial'] in image pixels)")
    parser.add_argument("--images", nargs="+", type=Path, help="H&E images, one per section (default: uns['image'])")
    parser.add_argument("--genes", help="genes to predict: all (default), comma list, or @file")
    add_training_options(parser)
    parser.add_argument("--out", required=True, type=Path, help="checkpoint file to write (e.g. model.pt)")
    parser.set_defaults(func=run)


def load_sections(paths, images, spot_diameter_px, patch_size, encoder_side: int | None = None):
    """Read the sections; returns ``(sections, patch_size)`` (``None`` -> from the spot size).

    ``encoder_side``: a pretrained encoder's input size; large JPEGs are then decoded at a scale
    that keeps a spot at least that wide (or at full size)."""
    import anndata

    from napari_casper.histology.patches import suggest_patch_size
    from napari_casper.histology.sections import load_section
    from napari_casper.io.convert import estimate_spot_diameter

    if images and len(images) != len(paths):
        raise CasperUsageError(f"{len(images)} --images for {len(paths)} sections; give one image per section")
    for path in paths:
        require_file(path, "section", "pass an existing .h5ad file")
    for path in paths:  # fail on an unreadable file before decoding any image
        try:
            anndata.read_h5ad(path, backed="r").file.close()
        except Exception as err:  # noqa: BLE001 - any decoder failure means an unreadable file
            from napari_casper.io.stores import unreadable_h5ad

            raise unreadable_h5ad(path, err, "section ") from err
    if patch_size is None:
        diameter = spot_diameter_px
        if diameter is None:
            first = anndata.read_h5ad(paths[0], backed="r")
            try:
                if "spatial" not in first.obsm:
                    raise CasperInputError(f"section {paths[0]} has no obsm['spatial'] spot centres (x, y pixels of its image)")
                diameter = estimate_spot_diameter(first.obsm["spatial"][:, :2])
            finally:
                first.file.close()
        patch_size = suggest_patch_size(diameter)
    sections = [
        load_section(path, image_path=images[i] if images else None, spot_diameter_px=spot_diameter_px,
                     patch_size=max(patch_size, encoder_side or 0))  # fmt: skip
        for i, path in enumerate(paths)
    ]
    return sections, patch_size


def full_resolution_diameter(args: argparse.Namespace, sections) -> float:
    """Spot diameter in full-resolution pixels (recorded in the checkpoint): given, or estimated
    from the sections' ``obsm["spatial"]`` (full-resolution pixels even when the jpg is decoded smaller)."""
    import numpy as np

    from napari_casper.io.convert import estimate_spot_diameter

    if args.spot_diameter_px:
        return float(args.spot_diameter_px)
    return float(np.median([estimate_spot_diameter(s.expression.obsm["spatial"][:, :2]) for s in sections]))


def run(args: argparse.Namespace) -> int:
    from napari_casper.io.outputs import OutputLock

    check_output(args.out, [*args.sections, *(args.images or [])])  # before any work
    with OutputLock(args.out):
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from napari_casper.histology.checkpoint import save_predictor
    from napari_casper.histology.train import train_histology

    encoder = encoder_from_args(args)  # a wrong encoder fails before any image is decoded
    sections, args.patch_size = load_sections(args.sections, args.images, args.spot_diameter_px, args.patch_size,
                                              encoder_side=encoder.spec.input_size if encoder else None)  # fmt: skip
    config = config_from_args(args, predict_genes=read_genes(args.genes), spot_diameter_px=full_resolution_diameter(args, sections))
    if encoder is not None:
        print(f"patch encoder: {encoder.spec.describe()}, {encoder.spec.n_features} features", file=sys.stderr, flush=True)
    predictor = train_histology(sections, config, progress=print_epoch, encoder=encoder)
    save_predictor(predictor, args.out)
    if predictor.selection:
        scores = ", ".join(f"{k} {v:.3f}" for k, v in predictor.selection.items())
        print(f"head chosen by leave-one-section-out validation: {predictor.head} ({scores})")
    if predictor.error_model is not None:
        model = predictor.error_model
        print(
            f"uncertainty: {model.describe()}; Spearman with |error| on the held-out training sections "
            f"{model.fit_spearman:.3f} (the neighbours' spread alone {model.spread_spearman:.3f})"
        )
    print(f"wrote {args.out}: {len(predictor.genes)} genes, head {predictor.head}")
    return 0
