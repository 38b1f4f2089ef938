"""Batch imputation: any number of genes for any number of spots, chunked, resumable, distributed.

:func:`impute_to_zarr` writes a SpatialData table (an AnnData zarr group) whose ``X`` is a
float32 zarr array chunked ``(spot_chunk, gene_chunk)``, block by block (layout in
:mod:`napari_casper.casper.batch.store`). Memory stays bounded: the spots are read a chunk of rows at a
time, the encoder runs once per spot chunk in this process (keys/values of the centroids are
cached), and a block is two small matrix products of that chunk's state (attention
``(spots, C)`` + hidden ``(spots, D)``) with the gene chunk's terms. Blocks run on a local thread
pool or on ``dask.distributed`` workers; each worker receives a spot chunk's state once (tens of
MB, never the model or the whole dataset) and writes its chunk directly into the zarr store.

Determinism: the encoder runs on one torch thread from 64-byte aligned copies, a block's inputs do
not depend on where it runs, and the BLAS of every process that decodes is pinned to one thread,
so a distributed run writes the same float32 values as a local one, and a resumed run the same
values as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from napari_casper import __version__
from napari_casper.casper.batch import store as batch_store
from napari_casper.casper.batch.spot_source import SpotSource, open_spots, spots_from_anndata
from napari_casper.casper.batch.store import Block
from napari_casper.errors import CasperInputError
from napari_casper.io.elements import METADATA_KEY

DEFAULT_TABLE = "casper_imputed"
#: at most this many bytes of the input matrix are read at once (rows x genes x 4)
READ_BYTES = 256 * 1024**2


@dataclass
class BlockProgress:
    """Reported after every finished block."""

    done: int
    total: int
    computed: int
    elapsed: float
    spots_per_s: float
    block: Block


@dataclass
class BatchResult:
    """What :func:`impute_to_zarr` did: ``status`` is ``"written"`` or ``"already complete"``."""

    path: Path
    table: str | None
    status: str
    total: int
    computed: int
    seconds: float
    spots_per_s: float


def model_fingerprint(model) -> str:
    """sha256 of everything that determines a model's predictions (weights, centroids, genes)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.network.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    for array in (model.centroids.expression, model.st_mean, model.st_std, model.centroid_mean, model.centroid_std):
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    text = [*model.centroids.genes, "|", *model.panel_genes, "|", model.st_normalization]
    digest.update(batch_store.ids_digest(text).encode())
    return digest.hexdigest()


class _State:
    """Per-spot-chunk encoder state, from a :class:`CasperImputer` or streamed from a source."""

    def __init__(self, model_or_imputer, spots, *, device, restandardize, hide_genes, encode_batch):
        from napari_casper.casper.imputation import CasperImputer, SpotEncoder

        self.imputer = model_or_imputer if isinstance(model_or_imputer, CasperImputer) else None
        self.owned = False
        if self.imputer is not None:
            self.encoder = self.imputer.encoder
            self.restandardize = self.imputer.restandardize
            self.n_spots, self.obs_names = self.imputer.n_spots, self.imputer.obs_names
            return
        if spots is None:
            raise CasperInputError("give the spots to impute (an AnnData, an .h5ad path or a SpatialData store)")
        self.owned = not isinstance(spots, (SpotSource, AnnData))  # opened here: closed here
        self.source = spots if isinstance(spots, SpotSource) else (
            spots_from_anndata(spots) if isinstance(spots, AnnData) else open_spots(spots))
        self.encoder = SpotEncoder(model_or_imputer, device=device, hide_genes=hide_genes)
        self.restandardize = bool(restandardize)
        self.n_spots, self.obs_names = self.source.n_obs, self.source.obs_names
        self.encode_batch = int(encode_batch)
        self.read_rows = int(np.clip(READ_BYTES // (4 * max(self.source.n_vars, 1)), 1024, self.encode_batch))
        self._stats = None

    def _statistics(self):
        """Mean/std of this data's normalised panel (``restandardize``), streamed (Chan et al.)."""
        from napari_casper.casper.preprocess import prepare_st

        n, mean, m2 = 0, 0.0, 0.0
        for r0 in range(0, self.n_spots, self.read_rows):
            x, _ = prepare_st(self.source.rows(r0, min(r0 + self.read_rows, self.n_spots)),
                              self.encoder.model.panel_genes, normalize=self.encoder.model.st_normalization)
            k, mu = len(x), x.mean(0, dtype=np.float64)
            delta = mu - mean
            m2 = m2 + ((x - mu) ** 2).sum(0, dtype=np.float64) + delta**2 * n * k / (n + k)
            mean, n = mean + delta * k / (n + k), n + k
        std = np.sqrt(m2 / max(n, 1)).astype(np.float32)
        return np.asarray(mean, np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)

    def __call__(self, s0: int, s1: int) -> tuple[np.ndarray, np.ndarray]:
        if self.imputer is not None:
            return self.imputer.spot_state(s0, s1)
        if self.restandardize and self._stats is None:
            self._stats = self._statistics()
        from napari_casper.runtime.device import torch_threads

        atts, hids = [], []
        # one torch thread: no run-time choice of how to split the work, so the same spots always
        # give the same bits (and no OpenMP spinning against the decoding threads)
        with torch_threads(1):
            for r0 in range(s0, s1, self.read_rows):
                z = self.encoder.prepare(self.source.rows(r0, min(r0 + self.read_rows, s1)), *(self._stats or ()))
                att, hid = self.encoder.state(z, self.encode_batch)
                atts.append(att)
                hids.append(hid)
        return np.concatenate(atts), np.concatenate(hids)


def _skeleton(state: _State, genes: list[str], manifest: dict, obs, obsm, extra_var=None) -> AnnData:
    """The output table without ``X``: obs, var, coordinates, SpatialData annotation, manifest."""
    from spatialdata.models import TableModel

    from napari_casper.io.convert import table_for_spots

    source = getattr(state, "source", None)
    obs_df = obs.copy() if obs is not None else (source.obs.copy() if source is not None else pd.DataFrame(index=state.obs_names))
    obs_df.index = pd.Index(state.obs_names.astype(str))
    obsm = dict(obsm or {})
    if source is not None and source.spatial is not None:
        obsm.setdefault("spatial", np.asarray(source.spatial))
    var = pd.DataFrame(index=pd.Index(genes, name=None))
    if extra_var is not None:
        var = var.join(extra_var)
    attrs = source.table_attrs if source is not None else None
    if attrs:
        table = TableModel.parse(AnnData(obs=obs_df, var=var, obsm=obsm or None), region=attrs["region"],
                                 region_key=attrs["region_key"], instance_key=attrs["instance_key"])
    else:
        table = table_for_spots(AnnData(obs=obs_df, var=var, obsm=obsm or None), "spots")
    model = state.encoder.model
    table.uns[METADATA_KEY] = {"kind": "casper_imputed"}  # predictions: never read back as measurements
    table.uns["casper"] = {
        "centroids": model.centroids.method,
        "panel_genes": list(model.panel_genes),
        "units": "normalised reference expression (imputed)",
        "batch": json.dumps(manifest),
    }
    return table


def _partial_path(target: Path, store: Path | None) -> Path:
    if store is None:
        return target.parent / f".{target.name}.casper-partial"
    return store.parent / f".{store.name}.{target.name}.casper-partial"


def _store_table_name(store: Path, requested: str | None, manifest: dict) -> str:
    """``requested``, or the versioned default: the run's own table (complete or partial) when
    one matches this manifest, else the first free of ``casper_imputed``, ``casper_imputed_2``, ...
    (:func:`~napari_casper.io.stores.name_versions`)."""
    from itertools import islice

    from napari_casper.io.stores import check_element_name, element_names_on_disk, name_versions

    if requested is not None:
        return check_element_name(requested)
    names = set(element_names_on_disk(store, "tables"))
    for name in islice(name_versions(DEFAULT_TABLE), 10_000):
        partial = _partial_path(store / "tables" / name, store)
        if name in names:
            if batch_store.same_run(batch_store.read_manifest(store / "tables" / name), manifest):
                return name
        elif not partial.exists() or batch_store.same_run(batch_store.read_manifest(partial), manifest):
            return name
    raise CasperInputError(f"{store} has too many {DEFAULT_TABLE} tables: pass a name with --out-table")


def _prepare_target(target: Path, partial: Path, manifest: dict, restart: bool) -> tuple[bool, bool]:
    """Check what is on disk; returns ``(already_complete, replace_target)``."""
    if target.exists():
        existing = batch_store.read_manifest(target)
        if existing is None:
            raise CasperInputError(
                f"{target} exists and is not a napari-casper batch imputation; nothing was written. "
                "Choose a new output path or table name."
            )
        if batch_store.same_run(existing, manifest) and not restart:
            return True, False
        if not restart:
            raise CasperInputError(
                f"{target} holds an imputation with other settings ({batch_store.describe_difference(existing, manifest)} "
                "differ); choose a new output path or table name, or pass --restart to replace it once the new one is complete."
            )
    if partial.exists():
        existing = batch_store.read_manifest(partial)
        if restart:
            shutil.rmtree(partial)
        elif not batch_store.same_run(existing, manifest):
            what = batch_store.describe_difference(existing, manifest) if existing else "unreadable manifest"
            raise CasperInputError(
                f"an interrupted imputation in {partial} was started with other settings ({what}); re-run it "
                "with the same model, spots, genes and chunking to resume, or pass --restart to discard it."
            )
    return False, target.exists()


def impute_to_zarr(
    model_or_imputer,
    spots,
    genes: Sequence[str],
    out: str | Path | None = None,
    *,
    store: str | Path | None = None,
    table_name: str | None = None,
    spot_chunk: int = 50_000,
    gene_chunk: int = 256,
    scheduler=None,
    restart: bool = False,
    device: str = "cpu",
    restandardize: bool = False,
    hide_genes: Sequence[str] = (),
    threads: int | None = None,
    encode_batch: int = 16384,
    obs: pd.DataFrame | None = None,
    obsm: dict | None = None,
    var: pd.DataFrame | None = None,
    progress: Callable[[BlockProgress], None] | None = None,
) -> BatchResult:
    """Impute ``genes`` for every spot into a chunked zarr SpatialData table, resumably.

    Parameters
    ----------
    model_or_imputer
        a :class:`~napari_casper.casper.model.CasperModel` (the spots are then streamed from
        ``spots``), or a :class:`~napari_casper.casper.imputation.CasperImputer` (its cached state is used;
        ``spots`` is ignored).
    spots
        a :class:`~napari_casper.casper.batch.spot_source.SpotSource`, an AnnData, or a path (``.h5ad``, or a
        SpatialData ``.zarr`` store whose only table is read).
    out
        a standalone ``.zarr`` output; or None with ``store`` to add a table to a store.
    store, table_name
        write the result as a new table element of this SpatialData store (default name
        ``casper_imputed``, then ``casper_imputed_2``, ``_3`` ... when taken by other runs).
    spot_chunk, gene_chunk
        block (= zarr chunk) size.
    scheduler
        None (local threads), ``"local:N"`` (a LocalCluster of N worker processes), a
        ``dask.distributed`` scheduler address, or a ``distributed.Client``. Workers must see
        the output path (same machine or a shared file system).
    restart
        discard an interrupted run (or replace a finished output, once the new one is complete)
        instead of resuming.
    threads
        local decoding threads (default: the CPUs this process may use).
    progress
        called with a :class:`BlockProgress` after every finished block.
    var
        columns added to the output's genes table (indexed by gene), e.g. trust.

    Re-running the same call on an interrupted output computes only the missing blocks; on a
    finished one it does nothing (``status == "already complete"``).
    """
    if (out is None) == (store is None):
        raise CasperInputError("give either an output .zarr path or a SpatialData store to add the table to")
    if int(spot_chunk) < 1 or int(gene_chunk) < 1:
        raise CasperInputError(f"spot_chunk and gene_chunk must be positive (got {spot_chunk}, {gene_chunk})")
    spot_chunk, gene_chunk = int(spot_chunk), int(gene_chunk)
    from napari_casper.io.outputs import OutputLock, write_error

    written = Path(store) if store is not None else Path(out)
    # one writer per output (per store when adding a table): a second run stops here with a clear message
    with OutputLock(written):
        state = _State(model_or_imputer, spots, device=device, restandardize=restandardize,
                       hide_genes=hide_genes, encode_batch=encode_batch)
        try:
            return _impute(state, [str(g) for g in genes], out, store, table_name, spot_chunk, gene_chunk, scheduler,
                           restart, threads, obs, obsm, progress, var)
        except OSError as err:
            raise write_error(err, written, kept="Blocks already written are kept: run the same command again to "
                              "resume.") from err
        finally:
            if state.owned:
                state.source.close()


def _impute(state, genes, out, store, table_name, spot_chunk, gene_chunk, scheduler, restart, threads, obs, obsm,
            progress, var=None) -> BatchResult:
    if not genes:
        raise CasperInputError("no genes to impute: give at least one reference gene")
    repeated = sorted(g for g, n in Counter(genes).items() if n > 1)
    if repeated:
        raise CasperInputError(f"genes {repeated[:5]} are requested more than once; each output column needs a unique gene")
    idx = state.encoder.resolve_genes(genes)
    model = state.encoder.model
    manifest = {
        "format": batch_store.MANIFEST_FORMAT,
        "version": batch_store.MANIFEST_VERSION,
        "model": model_fingerprint(model),
        "spots": {"n": int(state.n_spots), "sha256": batch_store.ids_digest(state.obs_names)},
        "genes": {"n": len(genes), "sha256": batch_store.ids_digest(genes)},
        "spot_chunk": spot_chunk,
        "gene_chunk": gene_chunk,
        # the encoder's device is part of the run: CUDA (mixed precision) and CPU give other bits
        "options": {"restandardize": state.restandardize, "hide_genes": list(state.encoder.hide_genes),
                    "st_normalization": model.st_normalization, "device": state.encoder.device.type},
        "written_by": f"napari-casper {__version__}",
    }
    if store is not None:
        store = Path(store)
        name = _store_table_name(store, table_name, manifest)
        target = store / "tables" / name
    else:
        target, name = Path(out), None
        if target.suffix.lower() != ".zarr":
            raise CasperInputError(f"output {target} must end in .zarr (a chunked, resumable table)")
    partial = _partial_path(target, store)
    from napari_casper.io.outputs import remove_stale_scratch

    remove_stale_scratch(partial)  # the skeleton scratch of a run killed while creating it (we hold the lock)
    complete, replace = _prepare_target(target, partial, manifest, restart)
    grid = batch_store.block_grid(state.n_spots, len(genes), spot_chunk, gene_chunk)
    if complete:
        return BatchResult(target, name, "already complete", len(grid), 0, 0.0, 0.0)
    if not partial.exists():
        batch_store.create_partial(partial, _skeleton(state, genes, manifest, obs, obsm, var), len(genes), spot_chunk, gene_chunk)
    start = time.perf_counter()
    computed, elements = 0, 0
    if not batch_store.is_finished(partial):
        profiles, weights = state.encoder.gene_terms(idx)
        terms = [(np.ascontiguousarray(profiles[:, g0 : g0 + gene_chunk]), np.ascontiguousarray(weights[:, g0 : g0 + gene_chunk]))
                 for g0 in range(0, len(genes), gene_chunk)]
        computed, elements = _run_blocks(state, grid, partial, terms, scheduler, threads, progress, start)
    seconds = time.perf_counter() - start
    batch_store.finish(partial, target, replace=replace, store=store)
    rate = elements / len(genes) / seconds if seconds > 0 else 0.0
    return BatchResult(target, name, "written", len(grid), computed, seconds, rate)


def _run_blocks(state, grid, partial: Path, terms, scheduler, threads, progress, start) -> tuple[int, int]:
    """Compute every block not in the ledger; returns ``(blocks, values)`` computed."""
    from napari_casper.casper.batch.runner import make_runner

    done_keys = batch_store.done_blocks(partial)
    todo: dict[int, list[Block]] = {}
    for block in grid:
        if block.key not in done_keys:
            todo.setdefault(block.i, []).append(block)
    n_genes = grid[-1].g1
    done, computed, elements = len(grid) - sum(map(len, todo.values())), 0, 0
    with make_runner(scheduler, threads) as runner:
        terms_handles = [runner.scatter(t, broadcast=True) for t in terms]
        inflight = {}

        def drain(limit: int) -> None:
            nonlocal done, computed, elements
            while len(inflight) > limit:
                for future in runner.wait_any(list(inflight)):
                    block = inflight.pop(future)
                    future.result()
                    done, computed, elements = done + 1, computed + 1, elements + block.size
                    if progress is not None:
                        elapsed = time.perf_counter() - start
                        progress(BlockProgress(done, len(grid), computed, elapsed, elements / n_genes / max(elapsed, 1e-9), block))

        try:
            for _i, blocks in todo.items():
                state_handle = runner.scatter(state(blocks[0].s0, blocks[0].s1))
                for block in blocks:
                    drain(2 * runner.parallelism - 1)
                    future = runner.submit(batch_store.run_block, str(partial), block, state_handle, terms_handles[block.j], runner.pin_blas)
                    inflight[future] = block
                del state_handle
            drain(0)
        except BaseException:
            runner.cancel(list(inflight))
            raise
    return computed, elements

