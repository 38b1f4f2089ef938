"""Trust and intervals of CASPER, checked on genes held out of the spatial data (strict protocol).

For every fold, CASPER is trained with the fold's genes removed from the spatial data; for each
held-out gene it reports a trust (expected Pearson r) and 90 % intervals per spot, both
calibrated inside training on its validation genes only. Here they meet the measurement:

* calibration of trust: Spearman between trust and the actual Pearson r, over all held-out genes;
* coverage: the share of (spot, gene) pairs whose measured value, standardised over the spots,
  lies inside its interval (nominal 90 %), and the mean interval width (standard deviations);
* how much ranking the trust signs hold at all: each sign's Spearman with the actual r, their mean's
  before the per-training level, and a linear combination of the signs fit to the held-out genes'
  actual r, scored on the genes it was fit to (a ceiling no honest calibration reaches) and leaving
  each training's genes out of the fit in turn.

    nice python benchmarks/bench_casper_calibration.py --data drosophila --out out/calibration/drosophila

``--data``: ``drosophila``, ``seqfish`` or ``small`` (as in ``bench_casper_ablation.py``; ``small``
uses 2 folds). Extra ``--option field=value`` set CasperConfig fields.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="drosophila")
    parser.add_argument("--folds", type=int, default=None, help="default 10 (small: 2)")
    parser.add_argument("--option", action="append", default=[], help="CasperConfig field=value")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from bench_casper_ablation import load, parse_fields
    from scipy.stats import spearmanr

    from napari_casper.casper.calibration import SIGNS, pearson_columns, standardise_columns
    from napari_casper.casper.imputation import CasperImputer
    from napari_casper.casper.preprocess import prepare_st
    from napari_casper.casper.training import train_casper
    from napari_casper.evaluate.protocol import hide_genes, split_genes

    st, reference, label_key = load(args.data)
    options = parse_fields(args.option)
    if label_key:
        options.setdefault("label_key", label_key)
    folds = args.folds or (2 if args.data == "small" else 10)
    split = split_genes(st, reference, n_folds=folds, seed=0)
    rows = []
    for fold, held in enumerate(split.folds):
        visible = hide_genes(st, held)
        model = train_casper(visible, reference, seed=0, **options)
        imputer = CasperImputer(model, visible)
        prediction = imputer.predict(held)
        cal = model.calibration
        signs = imputer.trust_signs(held)  # kept for the per-gene table; trust is their calibration, as intervals() computes it
        trust, low, high = imputer.intervals(held, prediction, trust=cal.trust(signs))
        # in the units CASPER's intervals speak: normalised as it normalises its panel, standardised over the spots
        measured = standardise_columns(prepare_st(st, held, normalize=model.st_normalization)[0])
        inside = (measured >= low) & (measured <= high)
        actual = pearson_columns(prediction, measured)
        for j, gene in enumerate(held):
            rows.append(
                {"fold": fold, "gene": gene, "pcc": actual[j], "trust": trust[j], "coverage": inside[:, j].mean(),
                 "width": float((high[:, j] - low[:, j]).mean()), **dict(zip(SIGNS, signs[j]))}
            )  # fmt: skip
        print(
            f"fold {fold}: PCC {actual.mean():.3f}, trust {trust.mean():.3f} (validation genes {len(cal.genes)}, "
            f"their PCC {cal.pcc.mean():.3f}, slope {cal.slope:.3f}), coverage {inside.mean():.3f}",
            flush=True,
        )
    table = pd.DataFrame(rows)
    rho = spearmanr(table["trust"], table["pcc"])[0]
    print(
        f"{args.data}: {len(table)} held-out genes; mean PCC {table.pcc.mean():.3f}, mean trust {table.trust.mean():.3f}; "
        f"Spearman(trust, PCC) {rho:.3f}; coverage of the 90 % intervals {table.coverage.mean():.3f} "
        f"(per gene 5-95 %: {table.coverage.quantile(0.05):.3f}-{table.coverage.quantile(0.95):.3f}); "
        f"mean width {table.width.mean():.2f} SD"
    )
    print(sign_ranking(table))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "per_gene.csv", index=False)


def sign_ranking(table) -> str:
    """How well the trust signs of ``table`` (one row per held-out gene) can rank its genes' actual r."""
    import numpy as np
    from scipy.stats import spearmanr
    from sklearn.linear_model import LinearRegression

    from napari_casper.casper.calibration import SIGNS

    rho = {name: spearmanr(table[name], table["pcc"])[0] for name in SIGNS}
    mean = spearmanr(table[list(SIGNS)].mean(axis=1), table["pcc"])[0]
    x, y = table[list(SIGNS)].to_numpy(), table["pcc"].to_numpy()
    fitted = LinearRegression().fit(x, y).predict(x)
    left_out = np.zeros(len(table))
    for fold in table["fold"].unique():
        out = (table["fold"] == fold).to_numpy()
        if out.all():
            return "one training only: no left-out fit"
        left_out[out] = LinearRegression().fit(x[~out], y[~out]).predict(x[out])
    return (
        "signs: " + ", ".join(f"{n} {r:.3f}" for n, r in rho.items()) + f"; their mean, before the level, {mean:.3f}; "
        f"linear fit to these genes' actual r: {spearmanr(fitted, y)[0]:.3f} on the genes it was fit to, "
        f"{spearmanr(left_out, y)[0]:.3f} with each training's genes left out of the fit"
    )


if __name__ == "__main__":
    main()
