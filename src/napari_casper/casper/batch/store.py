"""On-disk layout of a chunked, resumable imputed table (no torch: workers import only this).

An output is built in a *partial* folder beside its final place and renamed into place only
when every block is written, so a folder at the final path is always complete:

* the partial folder is a SpatialData table element (an AnnData zarr group, zarr format 3,
  with ``spatialdata_attrs`` in ``uns`` and the SpatialData table attributes on the group)
  whose ``X`` is a float32 zarr array chunked ``(spot_chunk, gene_chunk)``, unsharded, so every
  block is one chunk file and blocks can be written concurrently by threads or processes;
* ``uns["casper"]["batch"]`` holds the manifest (JSON): model fingerprint, spot and gene ids,
  chunking and options. A resumed run must match it;
* ``.casper_blocks/`` (the ledger) holds one empty file ``{i}.{j}`` per finished block, written
  only *after* that block's chunk is written. Finished blocks are never recomputed. The ledger
  is created before the partial folder appears and removed only once every block is done, so a
  partial folder without a ledger is complete and only waits to be moved into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEDGER = ".casper_blocks"
MANIFEST_FORMAT = "napari-casper/batch-imputation"
MANIFEST_VERSION = 1
#: manifest fields that must match for a run to resume (or to find the output complete)
MANIFEST_IDENTITY = ("format", "version", "model", "spots", "genes", "spot_chunk", "gene_chunk", "options")


@dataclass(frozen=True)
class Block:
    """Block ``(i, j)``: spots ``s0:s1`` x genes ``g0:g1``, exactly one chunk of ``X``."""

    i: int
    j: int
    s0: int
    s1: int
    g0: int
    g1: int

    @property
    def key(self) -> str:
        return f"{self.i}.{self.j}"

    @property
    def size(self) -> int:
        return (self.s1 - self.s0) * (self.g1 - self.g0)


def block_grid(n_spots: int, n_genes: int, spot_chunk: int, gene_chunk: int) -> list[Block]:
    """Every block of an ``n_spots x n_genes`` table, row-major (spot chunk, then gene chunk)."""
    return [
        Block(i, j, s0, min(s0 + spot_chunk, n_spots), g0, min(g0 + gene_chunk, n_genes))
        for i, s0 in enumerate(range(0, n_spots, spot_chunk))
        for j, g0 in enumerate(range(0, n_genes, gene_chunk))
    ]


def ids_digest(values) -> str:
    """sha256 of a sequence of ids (spot or gene names), order-sensitive."""
    digest = hashlib.sha256()
    for value in values:
        digest.update(str(value).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def same_run(a: dict | None, b: dict) -> bool:
    """True when manifest ``a`` describes the same computation as ``b``."""
    return a is not None and all(a.get(k) == b.get(k) for k in MANIFEST_IDENTITY)


def describe_difference(a: dict, b: dict) -> str:
    """The manifest fields that differ, for error messages."""
    return ", ".join(k for k in MANIFEST_IDENTITY if a.get(k) != b.get(k)) or "nothing"


def read_manifest(table_dir: Path) -> dict | None:
    """The batch manifest of an imputed table folder; None when it has none (not ours)."""
    import zarr

    try:
        group = zarr.open_group(str(table_dir), mode="r")
        text = group["uns"]["casper"]["batch"][()]
    except Exception:  # noqa: BLE001 - any missing piece means "not a batch imputation"
        return None
    try:
        return json.loads(str(text))
    except ValueError:
        return None


def create_partial(partial: Path, table, n_genes: int, spot_chunk: int, gene_chunk: int) -> None:
    """Write the skeleton ``table`` (a TableModel-parsed AnnData without ``X``) to ``partial``
    with an empty chunked ``X`` and an empty ledger; ``partial`` appears only when complete."""
    import spatialdata as sd
    import zarr

    scratch = partial.parent / f".{partial.name}.casper-tmp-{uuid.uuid4().hex[:8]}"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*which is not present in the SpatialData object")
            warnings.filterwarnings("ignore", message=".*autosharding")
            warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata")
            sd.SpatialData(tables={"table": table}).write(scratch)
        element = scratch / "tables" / "table"
        group = zarr.open_group(str(element), mode="r+")
        group.create_array(
            "X",
            shape=(table.n_obs, n_genes),
            chunks=(max(1, min(spot_chunk, table.n_obs)), max(1, min(gene_chunk, n_genes))),
            shards=None,
            dtype="float32",
            fill_value=np.nan,
            attributes={"encoding-type": "array", "encoding-version": "0.2.0"},
        )
        (element / LEDGER).mkdir()
        os.replace(element, partial)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def done_blocks(partial: Path) -> set[str]:
    """Keys ``"i.j"`` of the blocks already written to ``partial``."""
    ledger = partial / LEDGER
    return set(os.listdir(ledger)) if ledger.is_dir() else set()


def is_finished(partial: Path) -> bool:
    """A partial folder whose ledger was removed holds every block."""
    return partial.is_dir() and not (partial / LEDGER).exists()


_SINGLE_BLAS = False


def single_threaded_blas() -> None:
    """Pin this process's BLAS to one thread (once): every block is then computed by the same
    kernel in every process, so distributed results equal local ones bit for bit."""
    global _SINGLE_BLAS
    if not _SINGLE_BLAS:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
        _SINGLE_BLAS = True


def decode_block(att: np.ndarray, hid: np.ndarray, profiles: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Predictions ``(spots, genes)`` from the spot state and the genes' terms (float32)."""
    out = att @ profiles
    out += hid @ weights
    return out


def compute_block(block: Block, state: tuple[np.ndarray, np.ndarray], terms: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The values of ``block``: ``state`` is its spot chunk's (attention, hidden), ``terms`` its
    gene chunk's (profiles, weights)."""
    return decode_block(state[0], state[1], terms[0], terms[1])


def write_block(partial: str | Path, block: Block, values: np.ndarray) -> None:
    """Write one block's chunk, then record it in the ledger (in that order)."""
    import zarr

    partial = Path(partial)
    array = zarr.open_array(str(partial / "X"), mode="r+")
    array[block.s0 : block.s1, block.g0 : block.g1] = values
    (partial / LEDGER / block.key).touch()


def run_block(partial: str, block: Block, state, terms, pin_blas: bool = False) -> tuple[Block, float]:
    """Compute and write ``block`` (the task local threads and dask workers run)."""
    if pin_blas:
        single_threaded_blas()
    start = time.perf_counter()
    # looked up at call time so tests can count computations by patching ``compute_block``
    from napari_casper.casper.batch import store as batch_store

    write_block(partial, block, batch_store.compute_block(block, state, terms))
    return block, time.perf_counter() - start


def finish(partial: Path, target: Path, *, replace: bool = False, store: Path | None = None) -> Path:
    """Drop the ledger and move ``partial`` into place (atomically, by rename).

    Standalone (``store`` None): the table's metadata is consolidated and ``partial`` renamed to
    ``target``. In a SpatialData store, ``target`` is ``store/tables/NAME`` and the store's
    metadata is refreshed. An existing ``target`` is replaced only with ``replace`` and kept
    aside until the new folder is in place.
    """
    from napari_casper.io import store_writes as io

    shutil.rmtree(partial / LEDGER, ignore_errors=True)
    if store is not None:
        return io.install_element(store, target.parent.name, target.name, partial, overwrite=replace)
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(partial))
    return io.move_into_place(partial, target, overwrite=replace)
