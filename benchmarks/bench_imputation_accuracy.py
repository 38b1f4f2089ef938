"""Imputation accuracy on the two real benchmark pairs (strict 10-fold over genes).

A thin wrapper around ``napari-casper benchmark`` (see docs/benchmarks.md): runs it on
Drosophila (BDTNP atlas from Karaiskos scRNA-seq) and seqFISH cortex (from Tasic
scRNA-seq), writing ``OUT/<dataset>/{per_gene.csv,summary.csv,summary.md}``.

    python benchmarks/bench_imputation_accuracy.py [--methods knn,mean] [--out out/imputation]

Default methods: casper, tangram, tangram_clusters, knn, ridge, spage, mean.

Run it from the repository root with ``../shared/data`` beside the repository. Tangram
takes about half an hour per data set on 2 CPU cores; run it under ``nice``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_casper.cli import main as cli_main

DATA = Path("..") / "shared" / "data"
#: dataset name -> (spatial data, reference, label column or None)
DATASETS: dict[str, tuple[Path, Path, str | None]] = {
    "drosophila": (
        DATA / "drosophila" / "bdtnp_insitu.h5ad",
        DATA / "drosophila" / "karaiskos_scrna.h5ad",
        None,
    ),
    "seqfish": (
        DATA / "seqfish" / "seqfish_cortex.h5ad",
        DATA / "seqfish" / "tasic_scrna.h5ad",
        "cell_type",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="casper,tangram,tangram_clusters,knn,ridge,spage,mean")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out") / "imputation")
    args = parser.parse_args(argv)
    for name in args.datasets.split(","):
        st, reference, label_key = DATASETS[name]
        command = [
            "benchmark",
            "--st", str(st),
            "--reference", str(reference),
            "--methods", args.methods,
            "--folds", str(args.folds),
            "--seed", str(args.seed),
            "--out", str(args.out / name),
        ]  # fmt: skip
        if label_key is not None:
            command += ["--label-key", label_key]
        print(f"== {name}: napari-casper {' '.join(command)}", file=sys.stderr, flush=True)
        status = cli_main(command)
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
