"""Per-spot uncertainty of histology predictions against the actual error, on sections never trained on.

Trains the default model on two MOB sections (MOB1, MOB2) and predicts the other two, then trains on
two of HER2 C2-C4 and predicts the third, in each of the three ways (``../shared/data``). For the 50 most expressed genes of each test
section, prints the Spearman correlation between the predicted uncertainty and the absolute error
of the prediction: pooled over every (spot, gene) pair, and the mean over genes of the correlation
within a gene; the same for the retrieved neighbours' spread alone (what the uncertainty was before it
was learned from held-out training sections), and the mean expected against the mean actual error.
The out-of-distribution score of each test section is printed too.

    nice .venv/bin/python benchmarks/bench_histology_uncertainty.py          # every case
    nice .venv/bin/python benchmarks/bench_histology_uncertainty.py HER2     # the HER2 cases only
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    from scipy.stats import spearmanr

    from napari_casper.histology.config import HistologyConfig
    from napari_casper.histology.genes import log_normalised
    from napari_casper.histology.sections import load_section
    from napari_casper.histology.train import train_histology

    cases = [
        ("MOB", [SHARED / "mob" / f"MOB{i}.h5ad" for i in (1, 2)], [SHARED / "mob" / f"MOB{i}.h5ad" for i in (3, 4)], 32),
        *[
            ("HER2", [SHARED / "her2st" / f"{n}.h5ad" for n in train], [SHARED / "her2st" / f"{test}.h5ad"], 64)
            for train, test in ((("C2", "C3"), "C4"), (("C2", "C4"), "C3"), (("C3", "C4"), "C2"))
        ],
    ]
    only = set(sys.argv[1:])  # e.g. HER2: only those cases
    cases = [c for c in cases if not only or c[0] in only]
    for name, train, test, patch in cases:
        model = train_histology([load_section(p, patch_size=patch) for p in train], HistologyConfig(threads=1))
        for path in test:
            section = load_section(path, patch_size=patch)
            raw = section.patches(model.config.scales, model.config.patch_size)  # read once, predicted twice below
            prediction = model.predict_patches(raw, section.coords)
            truth = log_normalised(section.expression, prediction.genes)
            top = np.argsort(-truth.mean(axis=0))[:50]
            error = np.abs(prediction.expression[:, top] - truth[:, top])
            error_model, model.error_model = model.error_model, None  # the neighbours' spread alone, for comparison
            spread = model.predict_patches(raw, section.coords).uncertainty[:, top]
            model.error_model = error_model
            scores = []
            for what in (prediction.uncertainty[:, top], spread):
                pooled = spearmanr(what.ravel(), error.ravel())[0]
                within = np.nanmean([spearmanr(what[:, j], error[:, j])[0] for j in range(len(top))])
                scores.append(f"pooled {pooled:.3f}, within genes {within:.3f}")
            print(
                f"{name}: trained on {', '.join(p.stem for p in train)}, tested on {path.stem} (head {prediction.head}): "
                f"Spearman(uncertainty, |error|) {scores[0]} (the retrieved neighbours' spread alone: {scores[1]}); "
                f"mean expected error {prediction.uncertainty[:, top].mean():.3f} vs mean |error| {error.mean():.3f}; "
                f"{prediction.reach.describe()}",
                flush=True,
            )


if __name__ == "__main__":
    main()
