"""Ablation of CASPER's training options under the strict protocol (mean PCC over held-out genes).

Each named variant is CASPER with some :class:`~napari_casper.casper.training.CasperConfig` fields
changed; every variant sees the same folds (seed 0), so the differences are paired per gene.
Prints one line per variant (mean and median PCC, the paired difference to the first variant and
how many genes it improves) and writes ``per_gene.csv`` under ``--out``.

    nice python benchmarks/bench_casper_ablation.py --data drosophila \\
        --variant base: --variant ref1:reference_weight=1 --out out/ablation/drosophila

``--data`` is ``drosophila``, ``seqfish`` (``--label-key cell_type`` is added) or ``small`` (the
small-section case of :mod:`napari_casper.evaluate.small_section`). A variant is
``name:field=value,field=value`` (values parsed as Python literals).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, fields = text.partition(":")
    return name, parse_fields(fields.split(","))


def parse_fields(items) -> dict:
    """``field=value`` items as CasperConfig options (values parsed as Python literals, else strings)."""
    options = {}
    for item in filter(None, items):
        key, _, value = item.partition("=")
        try:
            options[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            options[key.strip()] = value.strip()
    return options


def load(data: str):
    import anndata as ad

    shared = ROOT.parent / "shared" / "data"
    if data == "drosophila":
        return ad.read_h5ad(shared / "drosophila/bdtnp_insitu.h5ad"), ad.read_h5ad(shared / "drosophila/karaiskos_scrna.h5ad"), None
    if data == "seqfish":
        return ad.read_h5ad(shared / "seqfish/seqfish_cortex.h5ad"), ad.read_h5ad(shared / "seqfish/tasic_scrna.h5ad"), "cell_type"
    if data == "small":
        from napari_casper.evaluate.small_section import small_section

        st, reference = small_section(shared / "xenium/xenium_mouse_brain.h5ad")
        return st, reference, None
    raise SystemExit(f"unknown --data {data!r}: drosophila, seqfish or small")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="drosophila")
    parser.add_argument("--variant", action="append", required=True, help="name:field=value,...")
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--only-folds", default="", help="comma-separated fold numbers to run (default all)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from napari_casper.casper.imputation import impute_with_casper
    from napari_casper.evaluate.metrics import score_genes
    from napari_casper.evaluate.protocol import hide_genes, split_genes

    st, reference, label_key = load(args.data)
    split = split_genes(st, reference, n_folds=args.folds, seed=0)
    folds = [int(f) for f in args.only_folds.split(",") if f] or list(range(len(split.folds)))
    variants = [parse_variant(v) for v in args.variant]
    rows = []
    for fold in folds:
        held = split.folds[fold]
        visible = hide_genes(st, held)
        for name, options in variants:
            if label_key:
                options = {"label_key": label_key, **options}
            pred = impute_with_casper(visible, reference, held, seed=0, **options)
            measured = st[:, held].X
            scores = score_genes(measured.toarray() if hasattr(measured, "toarray") else measured, pred, held)
            for gene, pcc in zip(held, scores["PCC"]):
                rows.append({"variant": name, "fold": fold, "gene": gene, "PCC": float(pcc)})
            done = pd.DataFrame(rows)
            print(f"fold {fold} {name}: PCC {done[(done.variant == name) & (done.fold == fold)].PCC.mean():.3f}", flush=True)
    table = pd.DataFrame(rows)
    wide = table.pivot_table(index="gene", columns="variant", values="PCC")
    first = variants[0][0]
    for name, _ in variants:
        diff = wide[name] - wide[first]
        print(
            f"{name:>12}: PCC mean {wide[name].mean():.3f} median {wide[name].median():.3f}; "
            f"vs {first} {diff.mean():+.3f} ({int((diff > 0).sum())}/{len(diff)} genes better)"
        )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "per_gene.csv", index=False)


if __name__ == "__main__":
    main()
