"""``napari-casper regions-suggest``: outline tissue regions without opening napari (the Regions dock's code).

Two ways, as in the dock:

* **from marker genes** (``--markers``, default the HER2 tumour markers): score, smooth over
  neighbours, threshold (Otsu unless ``--threshold``), outline as class ``--class``;
* **from a few labelled spots** (``--from-labels COLUMN``: an ``obs`` column with a class for some
  spots and nothing for the rest; or ``--from-regions NAME``: saved regions, e.g. a few small ones
  drawn in napari, whose spots give the examples): every spot gets a class, each class is outlined.

The outlines are saved as a new regions element with its table, and each spot's class as a table
annotating the spots (``<name>_spots``), exactly as the dock's Save does::

    napari-casper regions-suggest section.zarr                      # HER2 markers -> regions (next free name)
    napari-casper regions-suggest section.zarr --from-regions strokes --name learned
    napari-casper regions-suggest section.h5ad --from-labels marks --out section.zarr

A SpatialData store gets the new elements (existing ones are never replaced); an ``.h5ad`` is
written, with its spots, table and image, to a new store ``--out``. ``--truth COLUMN`` prints the F1
of every class against a label column (e.g. a pathologist's), over the spots that column labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_casper.errors import CasperInputError, CasperUsageError
from napari_casper.regions.suggest import HER2_TUMOUR_MARKERS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "regions-suggest",
        help="outline tissue regions from marker genes or from a few labelled spots, saved as new regions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", type=Path, help="a SpatialData .zarr store, or an .h5ad with obsm['spatial'] (then --out)")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--markers", default=None, help=f"comma-separated marker genes (default: {','.join(HER2_TUMOUR_MARKERS)})")
    how.add_argument("--from-labels", metavar="COLUMN", default=None, help="obs column labelling a few spots per class")
    how.add_argument("--from-regions", metavar="NAME", default=None, help="saved regions whose spots are the examples")
    parser.add_argument("--class", dest="region_class", default="tumour", help="class of marker outlines (default tumour)")
    parser.add_argument("--smoothing", type=float, default=0.5, help="neighbour weight 0..1 of the marker score (default 0.5)")
    parser.add_argument("--threshold", type=float, default=None, help="threshold on the smoothed score (default Otsu's)")
    parser.add_argument("--spots", default=None, help="spot element (default: the one with a table)")
    parser.add_argument("--coordinate-system", default=None, help="coordinate system (default: global, or the first)")
    parser.add_argument("--name", default=None, help="name of the new regions element (default: next free 'regions')")
    parser.add_argument("--out", type=Path, default=None, help="new SpatialData store to write (required for .h5ad input)")
    parser.add_argument("--truth", metavar="COLUMN", default=None, help="obs column to score every class against (F1 over the spots it labels)")
    parser.set_defaults(func=run)


def _spots(sdata, args):
    from napari_casper.io.elements import spot_element_names, spot_table
    from napari_casper.regions import spot_context

    name = args.spots
    if name is None:
        with_table = [n for n in spot_element_names(sdata) if spot_table(sdata, n) is not None]
        if not with_table:
            raise CasperInputError(f"{args.input} has no spot element with a table of genes: nothing to score.")
        name = with_table[0]
    return spot_context(sdata, name, coordinate_system=args.coordinate_system)


def _column(ctx, column: str, option: str):
    obs = ctx.table.obs
    if column not in obs:
        raise CasperUsageError(f"{option} {column!r} is not a column of the table's obs; it has {list(obs.columns)}.")
    values = obs[column].iloc[ctx.rows]
    return values.astype(object).where(values.notna(), None).to_numpy()


def _examples(ctx, sdata, args):
    """Per-spot class names (None where unlabelled) from --from-labels or --from-regions."""
    if args.from_labels is not None:
        return _column(ctx, args.from_labels, "--from-labels")
    from napari_casper.regions import load_regions
    from napari_casper.regions.learn import region_examples

    return region_examples(ctx, load_regions(sdata, args.from_regions, coordinate_system=ctx.coordinate_system))


def _suggest(ctx, sdata, args):
    """The regions and a one-line account of them."""
    from napari_casper.regions import HER2_TUMOUR_MARKERS, RegionClasses, parse_gene_list, suggest_regions
    from napari_casper.regions.learn import StrokeLearner

    if args.from_labels is None and args.from_regions is None:
        genes = parse_gene_list(args.markers) if args.markers else list(HER2_TUMOUR_MARKERS)
        suggestion = suggest_regions(ctx, genes, smoothing=args.smoothing, threshold=args.threshold)
        regions = suggestion.to_regions(args.region_class, palette=RegionClasses([args.region_class]))
        labels = [args.region_class if above else None for above in suggestion.above]
        return regions, labels, (
            f"{args.region_class} from {', '.join(suggestion.genes)} at threshold {suggestion.threshold:.3g} "
            f"(Otsu {suggestion.otsu:.3g}): {int(suggestion.above.sum())}/{ctx.n_spots} spots, "
            f"{len(suggestion.polygons)} outline(s)"
        )
    examples = _examples(ctx, sdata, args)
    learned = StrokeLearner.from_spots(ctx).learn(examples)
    regions = learned.to_regions(palette=RegionClasses(learned.classes))
    counts = ", ".join(f"{name} {n}" for name, n in learned.counts().items())
    return regions, list(learned.labels), (
        f"learned from {int(learned.labelled.sum())} labelled spots: {counts} (of {ctx.n_spots}); {len(regions)} outline(s)"
    )


def _print_truth(ctx, labels, column: str) -> None:
    import numpy as np

    from napari_casper.evaluate.regions import f1

    truth = np.asarray(_column(ctx, column, "--truth"), dtype=object)
    known = np.array([value is not None for value in truth])  # spots without a truth label are not scored
    truth, labels = truth[known], np.asarray(labels, dtype=object)[known]
    found = set(truth)
    for name in [n for n in dict.fromkeys(labels) if n is not None]:
        if name in found:
            print(f"F1 of {name!r} against {column}: {f1(labels == name, truth == name):.3f}")
        else:
            print(f"{name!r} is not a value of {column} ({sorted(map(str, found))[:8]}): not scored")


def run(args) -> int:
    from napari_casper.io.stores import is_spatialdata_store, read_any

    if not args.input.exists():
        raise CasperUsageError(f"{args.input} does not exist: give a SpatialData .zarr store or an .h5ad file.")
    is_store = is_spatialdata_store(args.input)
    if is_store and args.out is not None:
        raise CasperUsageError(
            "--out is for .h5ad input: the regions are added to the store itself as new elements "
            "(nothing in it is replaced); leave --out out."
        )
    if not is_store:
        if args.input.suffix != ".h5ad":
            raise CasperUsageError(f"{args.input} is neither a SpatialData store nor an .h5ad file.")
        if args.out is None:
            raise CasperUsageError("an .h5ad input needs --out NEW.zarr: the store to write the spots and regions to.")
        from napari_casper.cli.common import check_output

        check_output(args.out, [args.input])
        if args.out.exists():
            raise CasperUsageError(f"--out {args.out} already exists: choose a new path (nothing is written over it).")
    if args.from_regions is not None and not is_store:
        raise CasperUsageError("--from-regions reads saved regions from a SpatialData store; an .h5ad has none.")
    sdata = read_any(args.input)
    ctx = _spots(sdata, args)
    regions, labels, account = _suggest(ctx, sdata, args)
    print(account)
    if args.truth is not None:
        _print_truth(ctx, labels, args.truth)
    if is_store:
        from napari_casper.regions import save_regions

        saved = save_regions(args.input, regions, args.name, spots=ctx)
        print(saved.message())
        return 0
    from napari_casper.io.store_writes import save_spatialdata
    from napari_casper.regions import next_regions_name, regions_to_elements
    from napari_casper.regions.store import SPOTS_SUFFIX, TABLE_SUFFIX, spot_assignment_table

    name = args.name or next_regions_name(sdata)
    shapes, table = regions_to_elements(regions, name)
    sdata.shapes[name] = shapes
    sdata.tables[name + TABLE_SUFFIX] = table
    sdata.tables[name + SPOTS_SUFFIX] = spot_assignment_table(ctx, regions, name)
    save_spatialdata(sdata, args.out)
    print(f"wrote {args.out}: spots {ctx.element!r}, {len(regions)} region(s) in {name!r} with tables "
          f"{name + TABLE_SUFFIX!r} and {name + SPOTS_SUFFIX!r}")  # fmt: skip
    return 0
