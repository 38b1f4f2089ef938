"""Compile napari's and scanpy's numba code ahead, in a child process, into numba's on-disk cache.

On a fresh installation napari compiles its shape triangulation (numba) the first time a Shapes
layer is made, and scanpy compiles its kernels at their first call: about 25 s of work that holds
the GIL (measured on 2 cores), which lands on the GUI thread at the first 'New regions layer'.
napari-casper's polygon fill (:mod:`napari_casper.display.polygon_fill`) is compiled the same way.
Run here in a child process, that work holds no lock of the viewer's process and leaves compiled
code on disk; the viewer's process then only loads it (well under a second). Once compiled, later
runs find the cache and exit in the time of their imports.

``python -m napari_casper._widgets.common.compile_ahead`` does it once; the setup script calls it
after installing, and the docks call :func:`compile_in_child` from their background warm-up.
"""

from __future__ import annotations

import os
import subprocess
import sys

#: a child that has not finished by then is left to numba's in-process compilation (never hangs a dock)
CHILD_TIMEOUT_S = 300


def exercise_shapes() -> None:
    """Make napari compile (or load) every triangulation kernel a regions layer uses."""
    import numpy as np
    from napari.layers import Shapes

    square = np.array([[0.0, 0.0], [0.0, 4.0], [3.0, 5.0], [4.0, 0.0]])
    layer = Shapes([square], shape_type="polygon")
    layer.add_rectangles([square[[0, 2]] + 10])
    layer.add_paths([square + 20])
    layer.add_polygons([np.vstack([square, square[:1] + [2.0, 1.0]]) + 30])
    both_layouts()


def both_layouts() -> None:
    """Compile napari's public triangulation kernels for C- and Fortran-ordered float32 vertices.

    numba compiles each memory layout apart, and which layout reaches a kernel depends on how the shape
    was made (drawn with the mouse, added from arrays, read back from a store as Fortran-ordered
    shapely coordinates): each missing one cost 1-6 s on the GUI thread the first time. The kernels
    are napari's internals; any that is missing or takes other arguments is skipped (a warm-up only)."""
    import numpy as np

    try:
        from napari.layers.shapes import _accelerated_triangulate_numba as kernels
    except ImportError:
        return
    square = np.array([[0.0, 0.0], [0.0, 4.0], [3.0, 5.0], [4.0, 0.0]], dtype=np.float32)
    bent = np.vstack([square, square[:1] + [2.0, 1.0]]).astype(np.float32)
    calls = {
        "create_box_from_bounding": lambda a: (a[[0, 2]],),
        "is_convex": lambda a: (a,),
        "remove_path_duplicates": lambda a: (a, True),
        "generate_2D_edge_meshes": lambda a: (a, True),
        "normalize_vertices_and_edges": lambda a: (a, True),
    }
    for name, arguments in calls.items():
        kernel = getattr(kernels, name, None)
        for layout in (np.ascontiguousarray, np.asfortranarray):
            for vertices in (square, bent):
                args = arguments(vertices)
                try:
                    kernel(layout(args[0]), *args[1:])
                except Exception:  # noqa: BLE001 - napari changed its internals: nothing to warm
                    break


def exercise_scanpy() -> None:
    """Make scanpy compile (or load) the kernels the docks call: normalisation, per-gene means and
    variances of sparse data, and the rank test of differential genes."""
    import anndata as ad
    import numpy as np
    import scanpy as sc
    from scipy import sparse

    rng = np.random.default_rng(0)
    adata = ad.AnnData(sparse.csr_matrix(rng.poisson(2.0, (60, 30)).astype(np.float32)))
    adata.obs["group"] = np.repeat(["a", "b", "c"], 20)
    adata.obs["group"] = adata.obs["group"].astype("category")
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=10)
    sc.tl.rank_genes_groups(adata, "group", method="wilcoxon")


def shapes_cache_is_warm() -> bool:
    """Whether numba's disk cache already holds napari's triangulation kernels (then loading them
    in this process takes about a second; compiling them would take ~25 s). Reads numba's cache
    index path, which is not public API: any surprise counts as not warm."""
    try:
        from napari.layers.shapes import _accelerated_triangulate_numba as kernels

        # both memory layouts of every kernel (an older warm-up compiled one of some): is_convex holds both
        return len(kernels.is_convex._cache._cache_file._load_index()) >= 2
    except Exception:  # noqa: BLE001 - no numba, another numba version: compile in the child first
        return False


def compile_in_child(timeout_s: float = CHILD_TIMEOUT_S) -> bool:
    """Run this module in a child process at the lowest CPU priority; True when it ended well.

    Meant for a background thread: waiting on a child releases the GIL, and the child only takes
    CPU time the viewer's process leaves idle (``nice 19``), so the GUI thread runs on meanwhile."""
    lowest_priority = (lambda: os.nice(19)) if hasattr(os, "nice") else None
    try:
        done = subprocess.run(
            [sys.executable, "-m", __name__],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout_s,
            check=False,
            preexec_fn=lowest_priority,  # noqa: PLW1509 - os.nice only, no locks taken in the child
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def main() -> int:
    from napari_casper.display.polygon_fill import exercise as exercise_polygon_fill

    exercise_shapes()
    exercise_scanpy()
    exercise_polygon_fill()  # napari-casper's own: cells drawn as polygons filled with their values
    return 0


if __name__ == "__main__":
    sys.exit(main())
