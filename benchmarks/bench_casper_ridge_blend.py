"""Would an ensemble of CASPER with the ridge map pay? Mean held-out PCC of their blends, strict protocol.

For every fold (seed 0, the folds of ``napari-casper benchmark``) CASPER (defaults) and ridge on reference
cells (``evaluate/ridge.py``) predict the held-out genes, hidden from every spot. Each prediction is
standardised per gene over the spots, and the blend ``(1 - w) CASPER + w ridge`` is scored for w in
0, 0.1, ..., 1. The best w is chosen after seeing the held-out genes, so the best row is an upper bound
on what an ensemble could add (docs/benchmarks.md).

    nice python benchmarks/bench_casper_ridge_blend.py --data drosophila --out out/blend/drosophila
    nice python benchmarks/bench_casper_ridge_blend.py --data small --out out/blend/small

Predictions are kept under ``--out`` (one ``.npz`` per fold): a rerun scores them again without training.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_casper_ablation import load  # noqa: E402 - the same data sets


def standardised(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    std = values.std(axis=0)
    return (values - values.mean(axis=0)) / np.where(std > 0, std, 1.0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="drosophila", help="drosophila, seqfish or small")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    from napari_casper.casper.imputation import impute_with_casper
    from napari_casper.evaluate.metrics import score_genes
    from napari_casper.evaluate.protocol import hide_genes, split_genes
    from napari_casper.evaluate.ridge import impute_ridge

    st, reference, label_key = load(args.data)
    split = split_genes(st, reference, n_folds=2 if args.data == "small" else 10, seed=0)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = np.round(np.linspace(0, 1, 11), 1)
    scores = {w: [] for w in weights}
    for k, held in enumerate(split.folds):
        saved = args.out / f"fold{k}.npz"
        if not saved.exists():
            start = time.perf_counter()
            visible = hide_genes(st, held)
            options = {"label_key": label_key} if label_key else {}
            casper = impute_with_casper(visible, reference, held, seed=0, **options)
            ridge = impute_ridge(visible, reference, held)
            np.savez(saved, casper=casper, ridge=ridge, genes=np.array(held, dtype=object))
            print(f"fold {k}: {time.perf_counter() - start:.0f} s", flush=True)
        kept = np.load(saved, allow_pickle=True)
        assert list(kept["genes"]) == list(held), f"{saved} holds other genes: remove it"
        measured = st[:, held].X
        measured = measured.toarray() if hasattr(measured, "toarray") else np.asarray(measured)
        for w in weights:
            blend = (1 - w) * standardised(kept["casper"]) + w * standardised(kept["ridge"])
            scores[w].extend(score_genes(measured, blend, held)["PCC"])
    print(f"{args.data}: mean held-out PCC of (1 - w) CASPER + w ridge over {len(split.folds)} folds")
    for w in weights:
        print(f"  w = {w:.1f}: {np.nanmean(scores[w]):.4f}")


if __name__ == "__main__":
    main()
