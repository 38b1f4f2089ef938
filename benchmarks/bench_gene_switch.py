"""Gene-switch latency in napari for 100k spots: raster value layer vs Points recolouring.

Run under a display (Xvfb): ``xvfb-run -a .venv/bin/python benchmarks/bench_gene_switch.py``.
Spots: the real Xenium mouse-brain cell centroids (36,602) tiled 3x side by side with a small
jitter (~110k spots); values: that many cells' real counts of 10 genes. Prints the median time
per switch (render + assign + one event-loop pass) and its ratio to the 50 ms target.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad
import numpy as np

TARGET_MS = 50.0
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def xenium_spots(copies: int):
    adata = ad.read_h5ad(SHARED / "xenium" / "xenium_mouse_brain.h5ad")
    xy = np.asarray(adata.obsm["spatial"], dtype=float)
    width = np.ptp(xy[:, 0]) * 1.05
    rng = np.random.default_rng(0)
    coords = np.concatenate([xy + [i * width, 0] + rng.normal(0, 0.5, xy.shape) for i in range(copies)])
    counts = adata.X[:, :10].toarray().astype(np.float32)
    values = np.log1p(np.concatenate([counts] * copies))
    return coords, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=3, help="tiles of the 36,602 Xenium cells")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_casper.display.value_layers import SpotGeometry, value_layer

    coords, values = xenium_spots(args.copies)
    n = len(coords)
    geometry = SpotGeometry(yx=coords[:, ::-1], size=np.full(n, 10.0), affine=np.eye(3), element="cells", coordinate_system="global")
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()

    t0 = time.perf_counter()
    pyramid = geometry.pyramid()
    raster = pyramid.base
    build_s = time.perf_counter() - t0
    data, kwargs, kind = value_layer(geometry, values[:, 0], "casper:gene0")
    image = viewer.add_image(data, **kwargs)
    app.processEvents()
    raster_ms = []
    for r in range(args.repeats):
        column = values[:, (r + 1) % values.shape[1]]
        t = time.perf_counter()
        image.data = pyramid.levels(column)
        app.processEvents()
        raster_ms.append((time.perf_counter() - t) * 1000)

    points = viewer.add_points(coords[:, ::-1], size=10.0, features={f"g{j}": values[:, j] for j in range(values.shape[1])})
    points.face_color = "g0"
    app.processEvents()
    points_ms = []
    for r in range(min(args.repeats, 5)):
        t = time.perf_counter()
        points.face_color = f"g{(r + 1) % values.shape[1]}"
        app.processEvents()
        points_ms.append((time.perf_counter() - t) * 1000)
    viewer.close()

    raster_med, points_med = float(np.median(raster_ms)), float(np.median(points_ms))
    print(f"spots: {n:,}; raster {raster.index_map.shape[1]} x {raster.index_map.shape[0]} px, built once in {build_s:.2f} s")
    print(f"raster gene switch:  median {raster_med:7.1f} ms  (target {TARGET_MS:.0f} ms, ratio {raster_med / TARGET_MS:.2f})")
    print(f"points recolour:     median {points_med:7.1f} ms  (ratio {points_med / TARGET_MS:.2f})")
    print(f"raster is {points_med / raster_med:.1f}x faster than recolouring Points")


if __name__ == "__main__":
    main()
