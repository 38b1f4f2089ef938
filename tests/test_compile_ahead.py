"""The numba warm-up: napari's triangulation kernels compiled for both memory layouts, into numba's disk cache.

A kernel missing one layout is compiled on the GUI thread the first time a shape in that layout is drawn or
read back from a store (measured: 4.4 s at a first drawn region, 5.9 s at the first reopen of saved regions).
"""

from __future__ import annotations

import os
import subprocess
import sys

KERNELS = ("create_box_from_bounding", "is_convex", "remove_path_duplicates", "generate_2D_edge_meshes", "normalize_vertices_and_edges")

CHECK = f"""
from napari_casper._widgets.common.compile_ahead import both_layouts, shapes_cache_is_warm
assert not shapes_cache_is_warm()
both_layouts()
from napari.layers.shapes import _accelerated_triangulate_numba as k
for name in {KERNELS!r}:
    print(name, sorted(str(s[0]) for s in getattr(k, name).signatures))
"""


def test_both_layouts_of_every_kernel_are_compiled_into_the_cache(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}  # an empty cache, as on a fresh installation
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.strip().splitlines())
    for name in KERNELS:
        assert "array(float32, 2d, C)" in lines[name] and "array(float32, 2d, F)" in lines[name], (name, lines[name])
    # written to disk: the next process (the viewer's) finds both layouts warm
    warm = subprocess.run(
        [sys.executable, "-c", "from napari_casper._widgets.common.compile_ahead import shapes_cache_is_warm as w; print(w())"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert warm.stdout.strip().endswith("True"), warm.stderr[-2000:]
