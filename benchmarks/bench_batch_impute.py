"""Batch imputation at scale: encoder throughput, chunked zarr output, peak memory, dask workers.

    python benchmarks/bench_batch_impute.py [--cells 1000000] [--genes 1000] [--steps 100]
                                            [--threads 2] [--workdir DIR] [--skip-dask]

Run from the repository root with ``../shared/data`` beside it. With the defaults it takes about
100 s on 2 cores and needs 2 x 3.6 GB of scratch disk (deleted at the end unless ``--keep``).

Data (``../shared/data/xenium``, 36,602 cells x 248 genes, raw counts, coordinates in microns):
the cells are split in two random halves. One half is the **reference** (all 248 genes,
scRNA-like; normalised to log1p counts per 1e4 by training). The other half is the **ST** data
with every second gene hidden (124 panel genes visible). A short CASPER training (``--steps``)
gives the model.

**Output genes.** The reference has only 248 genes; to write ``--genes`` (1,000) distinct
columns honestly, the reference is augmented with *noisy copies* of its genes: copy ``k`` of
gene ``g`` is named ``g__copy{k}`` and holds ``Binomial(counts_g, p)`` with ``p`` drawn in
[0.3, 0.9] per copy (thinned counts: related but different profiles). The model then has 1,000
reference genes and a 1,000-gene output costs exactly what 1,000 real genes would.

**Scale.** The ST half (18,301 cells) is measured as is, then replicated to ``--cells`` cells
(tiles of the section side by side, coordinates jittered by N(0, 2 um); expression copied).

Measured for each size:

(a) inference throughput with cached centroid keys/values: normalisation + z-scores + encoder
    (attention and hidden state) over every cell, in cells/s; the per-gene decode of one gene and
    of all genes from the cached state (no writing);
(b) ``napari-casper impute --all-reference-genes --out X.zarr`` in a child process: wall time,
    spots/s, output size on disk vs float32 size, peak RSS (``VmHWM``) of the child and of each
    of its own child processes (dask workers and multiprocessing's resource tracker);
(c) the same with ``--scheduler local:2`` (two dask worker processes, one thread each); its
    output is compared chunk by chunk with (b) (must be identical).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

XENIUM = Path("..") / "shared" / "data" / "xenium" / "xenium_mouse_brain.h5ad"
#: the CLI in a child process, which reports its own peak RSS at exit: VmHWM of its address space
#: (ru_maxrss would also count the parent's pages it shared between fork and exec)
CLI = ("import sys; from napari_casper.cli import main; code = main(sys.argv[1:]); "
       "print('peak_kib', next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:'))); "
       "sys.exit(code)")


def make_data(n_genes: int, seed: int = 0):
    adata = ad.read_h5ad(XENIUM)
    rng = np.random.default_rng(seed)
    order = rng.permutation(adata.n_obs)
    st_cells, ref_cells = np.sort(order[: adata.n_obs // 2]), np.sort(order[adata.n_obs // 2 :])
    hidden, visible = list(adata.var_names[1::2]), list(adata.var_names[0::2])
    st = adata[st_cells, visible].copy()
    truth = adata[st_cells, hidden].copy()
    reference = adata[ref_cells].copy()
    counts = sp.csc_matrix(reference.X)
    extra, names = [], []
    for k in range(n_genes - reference.n_vars):
        g = k % reference.n_vars
        column = counts[:, g].tocoo()
        p = rng.uniform(0.3, 0.9)
        extra.append(sp.csc_matrix((rng.binomial(column.data.astype(np.int64), p).astype(np.float32),
                                    (column.row, column.col)), shape=column.shape))
        names.append(f"{reference.var_names[g]}__copy{k // reference.n_vars + 1}")
    if extra:
        X = sp.hstack([counts, *extra]).tocsr()
        reference = ad.AnnData(X, obs=reference.obs, var={"gene": [*reference.var_names, *names]})
        reference.var_names = reference.var["gene"].astype(str)
    return st, truth, reference, hidden


def replicate(st: ad.AnnData, n_cells: int, seed: int = 1) -> ad.AnnData:
    """``n_cells`` cells: tiles of ``st`` side by side, coordinates jittered, expression copied."""
    rng = np.random.default_rng(seed)
    copies = -(-n_cells // st.n_obs)
    xy = np.asarray(st.obsm["spatial"], dtype=np.float64)
    span = xy.max(0) - xy.min(0) + 50.0
    side = int(np.ceil(np.sqrt(copies)))
    tiles = [xy + span * np.array([k % side, k // side]) for k in range(copies)]
    coords = np.concatenate(tiles)[:n_cells] + rng.normal(0.0, 2.0, size=(n_cells, 2))
    X = sp.vstack([sp.csr_matrix(st.X)] * copies).tocsr()[:n_cells]
    out = ad.AnnData(X, var=st.var.copy())
    out.obs_names = [f"cell{i}" for i in range(n_cells)]
    out.obsm["spatial"] = coords
    return out


def bench_inference(model, st: ad.AnnData, threads: int) -> dict:
    """Encoder throughput with 1 and ``threads`` torch threads; decode from the cached state."""
    from napari_casper.casper.batch.store import decode_block
    from napari_casper.casper.imputation import SpotEncoder
    from napari_casper.runtime.device import torch_threads

    encoder = SpotEncoder(model, device="cpu")
    chunk, out = 65536, {}
    for n_threads in sorted({1, threads}):
        with torch_threads(n_threads):
            encoder.state(encoder.prepare(st[:2048]))  # warm-up
            t0 = time.perf_counter()
            z = np.concatenate([encoder.prepare(st[s : s + chunk]) for s in range(0, st.n_obs, chunk)])
            t1 = time.perf_counter()
            att, hid = encoder.state(z, 16384)
            t2 = time.perf_counter()
        del z
        out[n_threads] = {"prepare_s": t1 - t0, "encode_s": t2 - t1, "cells_per_s": st.n_obs / (t2 - t0),
                          "encode_cells_per_s": st.n_obs / (t2 - t1)}
    genes = encoder.genes
    profiles, weights = encoder.gene_terms(np.arange(len(genes)))
    one = []
    for g in (0, 7, 100, len(genes) - 1):
        t = time.perf_counter()
        decode_block(att, hid, profiles[:, g : g + 1].copy(), weights[:, g : g + 1].copy())
        one.append(time.perf_counter() - t)
    t = time.perf_counter()
    for s in range(0, st.n_obs, 50_000):
        decode_block(att[s : s + 50_000], hid[s : s + 50_000], profiles, weights)
    out.update(one_gene_s=float(np.median(one)), all_genes_s=time.perf_counter() - t, n_centroids=att.shape[1])
    return out


def _peak_kib(pid: int) -> int:
    """VmHWM (peak resident set) of a live process, KiB; 0 when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_child(args: list[str]) -> dict:
    """Run the CLI in a child process: wall time, its own peak RSS (VmHWM, reported by the child
    at exit) and the peak RSS of its worker processes (VmHWM, read every 0.1 s); the sum bounds
    the simultaneous total from above."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks: dict[int, int] = {}

    def sample():
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                for p in [root, *root.children(recursive=True)]:
                    peaks[p.pid] = max(peaks.get(p.pid, 0), _peak_kib(p.pid))
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"napari-casper {' '.join(args)} failed:\n{output}")
    lines = output.strip().splitlines()
    driver = int(next(line.split()[1] for line in lines if line.startswith("peak_kib")))
    workers = [v for pid, v in peaks.items() if pid != proc.pid]
    return {"wall_s": wall, "maxrss_mb": driver / 1024, "workers_mb": [w / 1024 for w in workers],
            "tree_peak_mb": (driver + sum(workers)) / 1024, "output": next(line for line in lines if line.startswith(("imputed", "table")))}


def disk_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def same_values(a: Path, b: Path) -> bool:
    import zarr

    xa, xb = zarr.open_array(str(a / "X"), mode="r"), zarr.open_array(str(b / "X"), mode="r")
    if xa.shape != xb.shape:
        return False
    step = xa.chunks[0]
    return all(np.array_equal(xa[s : s + step], xb[s : s + step]) for s in range(0, xa.shape[0], step))


def bench_size(label, model_path, model, st, workdir: Path, args) -> None:
    from napari_casper.casper.objective import pearson_per_gene

    print(f"\n== {label}: {st.n_obs:,} cells x {st.n_vars} panel genes -> {len(model.centroids.genes):,} genes ==", flush=True)
    inf = bench_inference(model, st, args.threads)
    n = st.n_obs
    for k in sorted(k for k in inf if isinstance(k, int)):
        r = inf[k]
        print(f"(a) {k} torch thread(s), {inf['n_centroids']} centroids: normalise+z-score {r['prepare_s']:.2f} s, encode "
              f"{r['encode_s']:.2f} s: {r['cells_per_s']:,.0f} cells/s (encoder alone {r['encode_cells_per_s']:,.0f} cells/s; "
              "target >= 100,000)")
    print(f"    decode one gene for all cells {inf['one_gene_s'] * 1e3:.1f} ms ({n / inf['one_gene_s']:,.0f} cells/s); "
          f"all {len(model.centroids.genes)} genes {inf['all_genes_s']:.2f} s ({n / inf['all_genes_s']:,.0f} cells/s, no writing)")
    h5ad = workdir / f"st_{n}.h5ad"
    st.write_h5ad(h5ad)
    common = ["impute", "--model", str(model_path), "--st", str(h5ad), "--all-reference-genes", "--device", "cpu", "--quiet",
              "--spot-chunk", str(args.spot_chunk), "--gene-chunk", str(args.gene_chunk)]
    float32_gb = n * len(model.centroids.genes) * 4 / 1e9
    rows = []
    runs = [("local threads", [])] + ([] if args.skip_dask else [("--scheduler local:2", ["--scheduler", "local:2"])])
    outs = []
    for name, extra in runs:
        out = workdir / f"out_{n}_{len(outs)}.zarr"
        res = run_child([*common, "--out", str(out), *extra])
        size = disk_size(out) / 1e9
        rows.append((name, res, size))
        outs.append(out)
        print(f"(b) {name}: {res['wall_s']:.1f} s wall ({n / res['wall_s']:,.0f} spots/s incl. start-up), output {size:.2f} GB "
              f"on disk ({float32_gb:.2f} GB float32), peak RSS {res['maxrss_mb']:,.0f} MB (main process)"
              + (f" + child processes {', '.join(f'{w:,.0f}' for w in res['workers_mb'])} MB = {res['tree_peak_mb']:,.0f} MB"
                 if res["workers_mb"] else "") + f"\n    {res['output']}", flush=True)
    if len(outs) == 2:
        print(f"(c) local:2 output identical to the local one: {same_values(outs[0], outs[1])}")
    if n == len(args.truth_obs):
        out = ad.experimental.read_lazy(outs[0])
        cols = [list(out.var_names).index(g) for g in args.hidden]
        pred = np.asarray(out.X[:, cols].compute())
        truth = np.log1p(args.truth_counts)
        r = pearson_per_gene(pred, truth)
        print(f"    sanity: mean PCC of the {len(cols)} hidden real genes {np.nanmean(r):.3f} (vs log1p counts)")
    print("| run | cells | genes | wall s | spots/s | peak RSS MB (main / all processes) | output GB (disk / float32) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, res, size in rows:
        print(f"| {name} | {n:,} | {len(model.centroids.genes):,} | {res['wall_s']:.1f} | {n / res['wall_s']:,.0f} | "
              f"{res['maxrss_mb']:,.0f} / {res['tree_peak_mb']:,.0f} | {size:.2f} / {float32_gb:.2f} |")
    if not args.keep:
        for out in outs:
            shutil.rmtree(out, ignore_errors=True)
        h5ad.unlink()


def main(argv: list[str] | None = None) -> int:
    from napari_casper.casper.checkpoint import save_checkpoint
    from napari_casper.casper.training import train_casper

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000, help="replicated size (0: native size only)")
    parser.add_argument("--genes", type=int, default=1000, help="output genes (reference + noisy copies)")
    parser.add_argument("--steps", type=int, default=100, help="training steps")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training and encoding")
    parser.add_argument("--spot-chunk", type=int, default=50_000)
    parser.add_argument("--gene-chunk", type=int, default=256)
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary folder)")
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the scratch outputs")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="casper-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    st, truth, reference, hidden = make_data(args.genes)
    args.hidden, args.truth_obs = hidden, truth.obs_names
    totals = np.asarray(st.X.sum(1)).ravel() + np.asarray(truth.X.sum(1)).ravel()  # all 248 genes
    args.truth_counts = truth.X.toarray() / np.maximum(totals, 1)[:, None] * 1e4
    print(f"Xenium: ST {st.n_obs:,} cells x {st.n_vars} visible genes ({len(hidden)} hidden); reference "
          f"{reference.n_obs:,} cells x {reference.n_vars:,} genes (248 measured + {reference.n_vars - 248} noisy copies)")
    t0 = time.perf_counter()
    model = train_casper(st, reference, max_steps=args.steps, steps_per_epoch=max(args.steps // 4, 1), device="cpu",
                         num_threads=args.threads, patience=10**6)
    print(f"trained {args.steps} steps in {time.perf_counter() - t0:.1f} s; centroids: {model.report['centroids']}")
    model_path = save_checkpoint(model, workdir / "model.pt")
    try:
        bench_size("native", model_path, model, st, workdir, args)
        if args.cells:
            big = replicate(st, args.cells)
            del reference
            bench_size("replicated", model_path, model, big, workdir, args)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
