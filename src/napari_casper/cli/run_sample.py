"""``napari-casper run-sample``: the main job on the bundled Drosophila sample.

1. writes the sample (embryo image, 3039 cells, 84-gene atlas, scRNA reference) as a
   SpatialData store;
2. hides the held-out genes from every cell and trains CASPER on the remaining panel;
3. imputes the held-out genes, prints their Pearson correlation with the measured values;
4. saves the predictions and attention as a new table of the store;
5. reopens the store in napari and saves a screenshot of a predicted gene over the embryo.

Step 5 needs a display (the README runs it under Xvfb); ``--no-screenshot`` skips it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_casper.cli.common import positive_int

#: gap, pair-rule and terminal genes: striped patterns a good imputation must reproduce
DEFAULT_HELD_OUT = ("eve", "ftz", "hb", "Kr", "kni", "gt", "odd", "run")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run-sample",
        help="train CASPER on the bundled Drosophila sample, impute held-out genes, save, screenshot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("out/sample"), help="output folder (default: out/sample)")
    parser.add_argument(
        "--held-out",
        default=",".join(DEFAULT_HELD_OUT),
        help=f"atlas genes hidden from every cell during training (default: {','.join(DEFAULT_HELD_OUT)})",
    )
    parser.add_argument("--max-steps", type=positive_int, default=None, help="training batches (default: the engine's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-screenshot", action="store_true", help="skip the napari screenshot (no display needed)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from napari_casper.casper.workflow import CasperWorkflow
    from napari_casper.display.layers import spots_layer
    from napari_casper.errors import CasperInputError
    from napari_casper.io.samples import load_drosophila
    from napari_casper.io.store_writes import save_spatialdata

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    sdata = load_drosophila()
    store = save_spatialdata(sdata, out / "drosophila.zarr", overwrite=True)
    print(f"sample written to {store}")

    atlas = sdata.tables["atlas"]
    held_out = [g.strip() for g in args.held_out.split(",") if g.strip()]
    missing = [g for g in held_out if g not in atlas.var_names]
    if missing:
        raise CasperInputError(f"held-out genes {missing} are not atlas genes; choose from {list(atlas.var_names)[:10]}...")
    _, kwargs, _ = spots_layer(sdata, "cells", "global")
    meta = dict(kwargs["metadata"]["napari_casper"], sdata=sdata)
    workflow = CasperWorkflow.from_layer_metadata(meta, sdata.tables["reference"])
    truth = {g: workflow.measured(g) for g in held_out}
    visible = [g for g in workflow.st.var_names if g not in held_out]
    workflow.st = workflow.st[:, visible].copy()  # hidden from every cell during training
    print(f"training CASPER on {workflow.st.n_obs} cells x {len(visible)} panel genes; held out: {', '.join(held_out)}")

    def report(event: dict) -> None:
        print(
            f"  epoch {event['epoch']:>3}  train loss {event['train_loss']:.4f}  "
            f"val loss {event['val_loss']:.4f}  val PCC {event['val_score']:.4f}"
        )

    config = {"seed": args.seed}
    if args.max_steps is not None:
        config["max_steps"] = args.max_steps
    workflow.train(progress=report, **config)
    predictions = workflow.predict(held_out)
    scores = {g: float(np.corrcoef(predictions[g], truth[g])[0, 1]) for g in held_out}
    for gene, r in scores.items():
        print(f"  held-out {gene:<6} PCC {r:.3f}")
    print(f"held-out mean PCC {np.mean(list(scores.values())):.3f} over {len(scores)} genes")

    checkpoint = workflow.save_checkpoint(out / "casper.pt")
    name = workflow.save_results(store)
    print(f"predictions and attention saved as table '{name}' in {store}; checkpoint {checkpoint}")
    if not args.no_screenshot:
        best = max(scores, key=scores.get)
        from napari_casper._widgets.common.screenshot import screenshot_store

        shot = screenshot_store(store, best, out / "screenshot.png")
        print(f"screenshot of predicted {best} over the embryo: {shot}")
    return 0
