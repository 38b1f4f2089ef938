"""CASPER speed: training and inference throughput, cached-attention and one-gene decoding.

    python benchmarks/bench_casper_speed.py [--threads 2] [--steps 100] [--device auto]

``--device auto`` (the default) runs on whatever is present (CUDA with mixed precision > Apple
MPS > CPU) and prints which; the CPU targets below were set for 2 CPU cores.

Run from the repository root with ``../shared/data`` beside it. Three measurements:

1. **Xenium** (``../shared/data/xenium``, 36,602 cells x 248 genes, raw counts): the cells are
   split in two halves; one half is the "ST" data with half of the panel hidden (every second
   gene), the other half is the scRNA-like reference with all genes (``--copies 55`` replicates
   the ST half to ~1M cells). Reports training spots/s
   (optimisation loop only), inference spots/s (encoding every spot once), and the accuracy of
   the hidden half of the panel as a sanity check.
2. **Attention over cached keys/values** for 100,000 spots x 300 panel genes with 50 centroids
   (:class:`~napari_casper.casper.imputation.CasperImputer` construction: input checks, standardisation,
   queries, attention, hidden state). Target: < 2 s on 2 CPU cores.
3. **Decoding one gene for 1,000,000 spots** from the cached state
   (:meth:`~napari_casper.casper.imputation.CasperImputer.predict_gene`). Target: < 0.1 s.

Measurements 2 and 3 time the real code path with random (untrained) weights and random
non-negative inputs: the cost does not depend on the values.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad
import numpy as np
import torch

from napari_casper.casper.centroids import Centroids
from napari_casper.casper.imputation import CasperImputer
from napari_casper.casper.model import CasperModel
from napari_casper.casper.network import CentroidCrossAttention
from napari_casper.casper.objective import pearson_per_gene
from napari_casper.casper.training import CasperConfig, train_casper

XENIUM = Path("..") / "shared" / "data" / "xenium" / "xenium_mouse_brain.h5ad"


def _line(name: str, value: float, unit: str, target: float | None = None, lower_is_better=True):
    text = f"{name:<58s} {value:12.3f} {unit}"
    if target is not None:
        ratio = value / target
        ok = ratio <= 1 if lower_is_better else ratio >= 1
        text += f"   target {target:g} {unit}, ratio {ratio:.2f} ({'met' if ok else 'MISSED'})"
    print(text, flush=True)


def bench_xenium(steps: int, threads: int, device: str, copies: int = 1) -> None:
    adata = ad.read_h5ad(XENIUM)
    rng = np.random.default_rng(0)
    order = rng.permutation(adata.n_obs)
    st_cells, ref_cells = np.sort(order[: adata.n_obs // 2]), np.sort(order[adata.n_obs // 2 :])
    hidden = list(adata.var_names[1::2])
    visible = list(adata.var_names[0::2])
    st = adata[st_cells, visible].copy()
    reference = adata[ref_cells].copy()
    if copies > 1:  # the ST half replicated (identical cells): throughput at 1M-cell scale
        st_cells = np.tile(st_cells, copies)
        st = ad.concat([st] * copies)
        st.obs_names = [f"c{i}" for i in range(st.n_obs)]
    print(f"Xenium: ST {st.n_obs} cells x {st.n_vars} visible genes; reference {reference.n_obs} "
          f"cells x {reference.n_vars} genes; {len(hidden)} genes hidden", flush=True)
    marks: list[tuple[int, float]] = []
    config = CasperConfig(max_steps=steps, steps_per_epoch=max(steps // 4, 1), device=device,
                          num_threads=threads, patience=10**6)
    start = time.perf_counter()
    model = train_casper(st, reference, config,
                         progress=lambda r: marks.append((r.step, time.perf_counter())))
    total = time.perf_counter() - start
    loop = marks[-1][1] - marks[0][1]
    n_steps = marks[-1][0]
    print(f"  centroids: {model.report['centroids']}; ST normalisation {model.st_normalization}; "
          f"preprocessing + centroids {marks[0][1] - start:.1f} s, whole training {total:.1f} s")
    _line("training throughput (spots/s, loop incl. validation)",
          n_steps * config.batch_size / loop, "spots/s")
    with torch_threads_ctx(threads):
        t0 = time.perf_counter()
        imputer = CasperImputer(model, st, device=device)
        encode = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = imputer.predict(hidden)
        decode = time.perf_counter() - t0
    _line("inference throughput (spots/s, encode all spots)", st.n_obs / encode, "spots/s")
    _line(f"decode {len(hidden)} genes for {st.n_obs} spots", decode, "s")
    truth = adata[st_cells, hidden].X
    truth = np.log1p(np.asarray(truth.toarray(), dtype=np.float32))
    r = pearson_per_gene(pred, truth)
    print(f"  sanity: mean PCC of the {len(hidden)} hidden genes {r.mean():.3f} (median {np.median(r):.3f})")


def torch_threads_ctx(threads: int):
    from napari_casper.runtime.device import torch_threads

    return torch_threads(threads)


def _synthetic_model(n_panel: int, n_centroids: int, n_genes: int, seed: int = 0) -> CasperModel:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    genes = [f"g{i}" for i in range(n_genes)]
    config = CasperConfig().to_dict()
    network = CentroidCrossAttention(n_panel, n_centroids).eval()
    centroids = Centroids(
        labels=[f"c{i}" for i in range(n_centroids)],
        expression=rng.gamma(1.0, 1.0, size=(n_centroids, n_genes)).astype(np.float32),
        genes=genes, sizes=np.ones(n_centroids, dtype=np.int64), method="synthetic",
    )
    ones, zeros = np.ones(n_panel, np.float32), np.zeros(n_panel, np.float32)
    return CasperModel(network, config, genes[:n_panel], genes[:n_panel], centroids,
                       zeros, ones, zeros, ones, st_normalization="none")


def _spots(n_spots: int, genes: list[str], seed: int = 1) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    out = ad.AnnData(X=rng.random((n_spots, len(genes)), dtype=np.float32))
    out.var_names = genes
    return out


def bench_cached_attention(threads: int, device: str) -> None:
    model = _synthetic_model(300, 50, 1000)
    st = _spots(100_000, model.panel_genes)
    with torch_threads_ctx(threads):
        CasperImputer(model, st[:2000].copy(), device=device)  # warm-up
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            CasperImputer(model, st, device=device)
            times.append(time.perf_counter() - t0)
    _line("attention over cached K/V, 100k spots x 300 genes, 50 centroids", min(times), "s", 2.0)


def bench_one_gene(threads: int, device: str) -> None:
    model = _synthetic_model(20, 50, 1000)
    st = _spots(1_000_000, model.panel_genes)
    with torch_threads_ctx(threads):
        imputer = CasperImputer(model, st, device=device)
        imputer.predict_gene("g500")  # warm-up
        times = []
        for gene in ("g100", "g200", "g300", "g400", "g999"):
            t0 = time.perf_counter()
            imputer.predict_gene(gene)
            times.append(time.perf_counter() - t0)
    _line("decode one gene for 1M spots (median of 5)", float(np.median(times)), "s", 0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--steps", type=int, default=100, help="training steps on Xenium")
    parser.add_argument("--skip-xenium", action="store_true")
    parser.add_argument("--copies", type=int, default=1, help="replicate the Xenium ST half (55: ~1M cells)")
    parser.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cpu, cuda or mps")
    args = parser.parse_args(argv)
    from napari_casper.runtime.device import describe, select_device

    device = select_device(args.device)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}; device {describe(device)}", flush=True)
    device = str(device)
    if not args.skip_xenium:
        if XENIUM.exists():
            bench_xenium(args.steps, args.threads, device, args.copies)
        else:
            print(f"{XENIUM} is absent: skipping the Xenium throughput measurement")
    bench_cached_attention(args.threads, device)
    bench_one_gene(args.threads, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
