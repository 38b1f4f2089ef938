"""A whole slide of virtual spots: ``histology-predict`` over HER2 C4 (``../shared/data/her2st``).

Trains (once, into ``--work``) a model on C2 and C3 for 3 epochs, then runs the command a user runs:

    napari-casper histology-predict --model c2c3.pt --image C4.jpg --pitch-px 43 --out c4_grid.h5ad

10,223 virtual spots, every gene (14,951). Prints the whole command's wall time and peak memory, the
time of each step (measured in this process with the command's own functions and threads), and, measured in
this run, the handcrafted features' speed-up over the plain per-axis definitions they replaced.

    nice .venv/bin/python benchmarks/bench_histology_whole_slide.py [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "her2st"
PITCH_PX = 43
TARGET_S = 60.0


def textbook_features(patches: np.ndarray) -> np.ndarray:
    """The features as first written: float images, per-axis means and standard deviations (the reference)."""
    from napari_casper.histology.patches import HED_FROM_RGB

    x = patches.astype(np.float32) / 255.0
    hed = -np.log(np.clip(x, 1.0 / 255.0, 1.0)) @ HED_FROM_RGB
    gy, gx = np.gradient(x.mean(axis=-1), axis=(-2, -1))
    channels = np.concatenate([x, hed, np.sqrt(gx * gx + gy * gy)[..., None]], axis=-1)
    return np.stack([channels.mean(axis=(2, 3)), channels.std(axis=(2, 3))], axis=-1).reshape(len(patches), -1)


def clock(what: str, function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    print(f"  {what}: {time.perf_counter() - start:.1f} s", flush=True)
    return result


def steps(model_path: Path) -> None:
    """The command's steps, one by one, in this process."""
    from napari_casper.histology.checkpoint import load_predictor
    from napari_casper.histology.features import handcrafted_features
    from napari_casper.histology.fit import limited_threads
    from napari_casper.histology.patches import extract_patches
    from napari_casper.histology.predict import describe_section, section_standardize
    from napari_casper.histology.sections import choose_reduction, read_jpeg
    from napari_casper.histology.tissue import detect_tissue, virtual_spots_for

    print("steps:")
    predictor = clock("model load", load_predictor, model_path)
    config = predictor.config
    config.threads = os.cpu_count() or 1  # as the command: every core
    diameter = config.spot_diameter_px
    image, scale = clock("image decode", read_jpeg, SHARED / "C4.jpg", choose_reduction(diameter, config.patch_size))
    tissue = clock("tissue", detect_tissue, image)
    coords = virtual_spots_for(tissue, diameter * scale, PITCH_PX * scale)
    with limited_threads(config):
        raw = clock(f"patches ({len(coords)} spots)", extract_patches, image, coords, diameter * scale, scales=config.scales,
                    patch_size=config.patch_size)  # fmt: skip
        features = clock("features", handcrafted_features, raw)
        query = clock("embedding", describe_section, predictor.model, raw, config, features_z=section_standardize(features))
        pred, spread = clock("heads, all genes", predictor.heads.predict, predictor.head, query)
        if predictor.error_model is not None:
            clock("expected error (uncertainty)", predictor._expected_error, predictor.head, query, pred, spread, coords)
        sample = raw[:2000]
        start = time.perf_counter()
        reference = textbook_features(sample)
        plain = time.perf_counter() - start
        start = time.perf_counter()
        fast = handcrafted_features(sample)
        print(f"features on 2,000 spots: plain definitions {plain:.1f} s, now {time.perf_counter() - start:.1f} s "
              f"({plain / (time.perf_counter() - start):.1f}x; largest difference {np.abs(reference - fast).max():.1e})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("bench_whole_slide"))
    args = parser.parse_args()
    args.work.mkdir(exist_ok=True)
    cli = [str(Path(sys.executable).parent / "napari-casper")]  # the console command a user runs
    model = args.work / "c2c3.pt"
    if not model.exists():
        train = [*cli, "histology-train", str(SHARED / "C2.h5ad"), str(SHARED / "C3.h5ad"), "--epochs", "3", "--out", str(model)]
        subprocess.run(train, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = args.work / "c4_grid.h5ad"
    out.unlink(missing_ok=True)
    command = [*cli, "histology-predict", "--model", str(model), "--image", str(SHARED / "C4.jpg"), "--pitch-px", str(PITCH_PX),
               "--out", str(out)]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
    print(f"whole command: {seconds:.1f} s (target {TARGET_S:.0f} s: {'met' if seconds < TARGET_S else 'NOT met'}), "
          f"peak memory {peak:.1f} GB")  # fmt: skip
    steps(model)


if __name__ == "__main__":
    main()
