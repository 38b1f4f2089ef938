"""Region suggestions against a pathologist's label on every spot (../shared/data/her2st_labels).

Per section, the tumour F1 (tumour = invasive cancer + cancer in situ) of:

* ``default``: the Regions dock's one-click suggestion (HER2 markers, smoothing 0.5, Otsu), scored on
  the spots inside its outlines;
* ``ERBB2 Otsu`` and ``2-means``: the two plain baselines of :mod:`napari_casper.evaluate.regions`;
* ``strokes 5 %``: the few-strokes mode (:mod:`napari_casper.regions.learn`) with 5 % of the spots
  labelled at random with the pathologist's class (5 seeds; mean and range; every class covering
  2 % of the spots gets at least two marks), its tumour F1 (a spot is tumour when its probabilities
  of the two tumour classes add up to more than a half) and its macro F1 over the labelled classes;
* per-class F1 of marker suggestions for immune infiltrate and connective tissue, where the section has them;
* the time of one update after a stroke at 5,000 spots (the section tiled), features computed once.

    nice python benchmarks/bench_regions_suggest.py [--share 0.05] [--seeds 5] [--out out/regions]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "her2st_labels"
SECTIONS = ("A1", "D1", "E1")
#: other classes suggested from markers the same way as tumour (genes chosen from the literature, not tuned here)
CLASS_MARKERS = {
    "immune infiltrate": ("PTPRC", "CD74", "IGKC", "CD52"),
    "connective tissue": ("COL1A1", "COL3A1", "DCN", "LUM"),
}


def section_context(path: Path):
    import anndata as ad

    from napari_casper.io.convert import anndata_to_spatialdata
    from napari_casper.regions import spot_context

    adata = ad.read_h5ad(path)
    return adata, spot_context(anndata_to_spatialdata(adata))


def inside_outlines(ctx, suggestion) -> np.ndarray:
    from napari_casper.regions import region_membership

    return region_membership(ctx, suggestion.to_regions()).any(axis=1)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--share", type=float, default=0.05)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from napari_casper.evaluate.regions import (
        TUMOUR_LABELS,
        f1,
        log_normalised,
        macro_f1,
        marker_otsu,
        simulate_strokes,
        two_means,
    )
    from napari_casper.regions import HER2_TUMOUR_MARKERS, suggest_regions
    from napari_casper.regions.learn import StrokeLearner

    rows = []
    for name in SECTIONS:
        adata, ctx = section_context(DATA / f"{name}.h5ad")
        truth = adata.obs["label"].astype(str).to_numpy()[ctx.rows]
        tumour = np.isin(truth, TUMOUR_LABELS)
        expression = log_normalised(adata.X[ctx.rows])
        genes = list(adata.var_names)
        row = {"section": name, "spots": ctx.n_spots, "tumour share": tumour.mean()}
        row["default"] = f1(inside_outlines(ctx, suggest_regions(ctx, HER2_TUMOUR_MARKERS)), tumour)
        row["ERBB2 Otsu"] = f1(marker_otsu(expression, genes), tumour)
        row["2-means"] = f1(two_means(expression, genes, HER2_TUMOUR_MARKERS), tumour)
        for cls, markers in CLASS_MARKERS.items():
            present = truth == cls
            if present.sum() >= 10:
                row[f"{cls} markers"] = f1(inside_outlines(ctx, suggest_regions(ctx, markers)), present)
        learner = StrokeLearner.from_spots(ctx)
        tumour_f1, macro = [], []
        for seed in range(args.seeds):
            labels = simulate_strokes(truth, args.share, seed)
            learned = learner.learn(labels)
            predicted = learned.labels
            tumour_f1.append(f1(learned.probability(TUMOUR_LABELS) > 0.5, tumour))
            macro.append(macro_f1(predicted, truth, learned.classes))
            for cls in CLASS_MARKERS:
                if cls in learned.classes and (truth == cls).sum() >= 10:
                    row.setdefault(f"{cls} strokes", []).append(f1(predicted == cls, truth == cls))
        row["strokes tumour"] = np.mean(tumour_f1)
        row["strokes tumour range"] = f"{min(tumour_f1):.3f}-{max(tumour_f1):.3f}"
        row["strokes macro"] = np.mean(macro)
        for cls in CLASS_MARKERS:
            if isinstance(row.get(f"{cls} strokes"), list):
                row[f"{cls} strokes"] = float(np.mean(row[f"{cls} strokes"]))
        rows.append(row)
        print(pd.Series(row).to_string(), flush=True)
    table = pd.DataFrame(rows).set_index("section")
    numeric = table.select_dtypes("number")
    table.loc["mean"] = numeric.mean()
    pd.set_option("display.width", 200)
    print(table.round(3).to_string())
    best_baseline = max(table.loc["mean", "ERBB2 Otsu"], table.loc["mean", "2-means"])
    print(f"default - best baseline (mean F1): {table.loc['mean', 'default'] - best_baseline:+.3f}")
    print(f"strokes - best baseline (mean F1): {table.loc['mean', 'strokes tumour'] - best_baseline:+.3f}")

    # one update after a stroke at 5,000 spots: the A1 section tiled side by side
    adata, ctx = section_context(DATA / "A1.h5ad")
    reps = int(np.ceil(5000 / ctx.n_spots))
    span = np.ptp(ctx.coords[:, 0]) + 2 * np.median(np.diff(np.unique(ctx.coords[:, 0])))
    coords = np.vstack([ctx.coords + [k * span, 0] for k in range(reps)])[:5000]
    matrix, _ = ctx.expression()
    import scipy.sparse as sp

    expression = sp.vstack([matrix] * reps).tocsr()[:5000]
    start = time.perf_counter()
    learner = StrokeLearner(expression, coords)
    features_s = time.perf_counter() - start
    truth = np.tile(adata.obs["label"].astype(str).to_numpy()[ctx.rows], reps)[:5000]
    labels = simulate_strokes(truth, args.share, 0)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        learned = learner.learn(labels)
        learned.to_regions()
        times.append(time.perf_counter() - start)
    print(
        f"5,000 spots: features once {features_s:.2f} s; one update after a stroke (learn + outlines) "
        f"median {np.median(times):.3f} s, max {max(times):.3f} s (target 1 s)"
    )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "regions_suggest.csv")


if __name__ == "__main__":
    main()
