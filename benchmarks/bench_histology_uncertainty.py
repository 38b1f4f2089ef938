"""Per-spot uncertainty of histology predictions against the actual error, on sections never trained on.

Trains the default model on two MOB sections (MOB1, MOB2) and predicts the other two, then trains on
HER2 C2 and C3 and predicts C4 (``../shared/data``). For the 50 most expressed genes of each test
section, prints the Spearman correlation between the predicted uncertainty and the absolute error
of the prediction: pooled over every (spot, gene) pair, and the mean over genes of the correlation
within a gene. The out-of-distribution score of each test section is printed too.

    nice .venv/bin/python benchmarks/bench_histology_uncertainty.py
"""

from __future__ import annotations

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
        ("HER2", [SHARED / "her2st" / f"{n}.h5ad" for n in ("C2", "C3")], [SHARED / "her2st" / "C4.h5ad"], 64),
    ]
    for name, train, test, patch in cases:
        model = train_histology([load_section(p, patch_size=patch) for p in train], HistologyConfig(threads=1))
        for path in test:
            section = load_section(path, patch_size=patch)
            prediction = model.predict(section.image, section.coords, section.spot_diameter_px)
            truth = log_normalised(section.expression, prediction.genes)
            top = np.argsort(-truth.mean(axis=0))[:50]
            error = np.abs(prediction.expression[:, top] - truth[:, top])
            spread = prediction.uncertainty[:, top]
            pooled = spearmanr(spread.ravel(), error.ravel())[0]
            within = np.nanmean([spearmanr(spread[:, j], error[:, j])[0] for j in range(len(top))])
            print(
                f"{name}: trained on {', '.join(p.stem for p in train)}, tested on {path.stem} (head {prediction.head}): "
                f"Spearman(uncertainty, |error|) pooled {pooled:.3f}, within genes {within:.3f}; "
                f"{prediction.reach.describe()}",
                flush=True,
            )


if __name__ == "__main__":
    main()
