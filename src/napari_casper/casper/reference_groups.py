"""Leiden clusters of the reference cells, computed in a child process that Cancel can stop.

When every reference cell is a centroid, attention to thousands of cells is shown summed over
the cells' Leiden clusters (:meth:`CasperWorkflow.display_names`). Clustering (scanpy: HVGs,
PCA, neighbours with umap's connectivities, Leiden) costs 15-30 s the first time in a process
(importing umap and compiling its numba kernels) and holds the GIL for up to half a second at a
time, which would freeze napari's event loop even from a worker thread. :class:`ClusterJob`
therefore runs it in a separate Python process (``python -m napari_casper.casper.reference_groups``):
the caller polls it, a cancel terminates it within :data:`POLL_SECONDS`, and finished results
are cached by the content of the matrix, so clustering the same reference again is free.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from napari_casper.errors import CasperInputError, TrainingCancelled
from napari_casper.runtime.control import CancelFlag, is_cancelled

#: how often a waiting caller checks its cancel flag (seconds)
POLL_SECONDS = 0.1
#: finished clusterings: content key -> cluster label per cell
_CACHE: dict[str, np.ndarray] = {}


def content_key(matrix, resolution: float, seed: int) -> str:
    """A digest of the matrix values (dense or sparse), its shape, the resolution and the seed."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((matrix.shape, float(resolution), int(seed), sp.issparse(matrix))).encode())
    if sp.issparse(matrix):
        csr = sp.csr_matrix(matrix)
        for part in (csr.data, csr.indices, csr.indptr):
            digest.update(np.ascontiguousarray(part).tobytes())
    else:
        digest.update(np.ascontiguousarray(matrix).tobytes())
    return digest.hexdigest()


class ClusterJob:
    """Leiden clusters of the raw reference ``matrix`` (cells x genes), normalised and clustered in a child process.

    Starting it returns at once; :meth:`result` waits (checking ``cancel``) and returns one
    label per cell. A finished result is cached by :func:`content_key`.
    """

    def __init__(self, matrix, *, resolution: float = 1.0, seed: int = 0):
        self.key = content_key(matrix, resolution, seed)
        self._process = None
        self._folder = None
        if self.key in _CACHE:
            return
        self._folder = tempfile.TemporaryDirectory(prefix="casper-clusters-")
        folder = Path(self._folder.name)
        if sp.issparse(matrix):
            sp.save_npz(folder / "matrix.npz", sp.csr_matrix(matrix))
        else:
            np.save(folder / "matrix.npy", np.asarray(matrix))
        command = [sys.executable, "-m", __name__, str(folder), repr(float(resolution)), str(int(seed))]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    @property
    def done(self) -> bool:
        return self.key in _CACHE or (self._process is not None and self._process.poll() is not None)

    def result(self, cancel: CancelFlag | None = None) -> np.ndarray:
        """The cluster label of each cell; :class:`TrainingCancelled` (child stopped) when ``cancel`` is set."""
        if self.key in _CACHE:
            return _CACHE[self.key]
        process = self._process
        while True:
            if is_cancelled(cancel):
                self.stop()
                raise TrainingCancelled("clustering the reference was cancelled")
            try:
                process.wait(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                continue
        labels_file = Path(self._folder.name) / "labels.npy"
        if process.returncode != 0 or not labels_file.exists():
            error = process.stderr.read().decode(errors="replace").strip().splitlines() if process.stderr else []
            self._cleanup()
            raise CasperInputError(f"clustering the reference failed: {error[-1] if error else f'exit code {process.returncode}'}")
        labels = np.load(labels_file, allow_pickle=False).astype(str)
        _CACHE[self.key] = labels
        self._cleanup()
        return labels

    def stop(self) -> None:
        """Terminate the child process (if any) and remove its files."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        if self._process is not None and self._process.stderr is not None:
            self._process.stderr.close()
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


def _main(folder: str, resolution: str, seed: str) -> None:
    from napari_casper.casper.centroids import leiden_clusters
    from napari_casper.casper.preprocess import normalize_matrix

    folder = Path(folder)
    sparse = folder / "matrix.npz"
    matrix = sp.load_npz(sparse) if sparse.exists() else np.load(folder / "matrix.npy", allow_pickle=False)
    expression, _ = normalize_matrix(matrix)
    labels = leiden_clusters(expression, resolution=float(resolution), seed=int(seed))
    np.save(folder / "labels.tmp.npy", np.asarray(labels).astype(str))
    (folder / "labels.tmp.npy").replace(folder / "labels.npy")


if __name__ == "__main__":
    _main(*sys.argv[1:4])
