"""histology-train / histology-predict / histology-benchmark through napari_casper.cli.main on real MOB data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from histology_data import mob_path

from napari_casper.cli import main
from napari_casper.histology.checkpoint import load_predictor
from napari_casper.histology.genes import log_normalised, resolve_genes


def test_train_then_predict_measured_and_virtual_spots(tmp_path, capsys):
    model = tmp_path / "mob.pt"
    args = [str(mob_path("MOB1")), str(mob_path("MOB2")), "--epochs", "1", "--inner-epochs", "1", "--threads", "1"]
    assert main(["histology-train", *args, "--out", str(model)]) == 0
    assert model.is_file()
    said = capsys.readouterr().out  # the head and the uncertainty both learned from the held-out training sections
    assert "head chosen by leave-one-section-out" in said and "uncertainty: expected absolute error" in said
    recorded = load_predictor(model).config.spot_diameter_px  # default spot size for virtual spots
    assert recorded == pytest.approx(15.9, abs=0.2)  # half the MOB spot pitch, full-resolution pixels

    measured = tmp_path / "mob3_pred.h5ad"
    assert main(["histology-predict", "--model", str(model), "--spots", str(mob_path("MOB3")), "--out", str(measured)]) == 0
    pred = ad.read_h5ad(measured)
    truth = ad.read_h5ad(mob_path("MOB3"))
    assert list(pred.obs_names) == list(truth.obs_names) and pred.n_vars == 1000
    assert (pred.obsm["spatial"] == truth.obsm["spatial"]).all()
    assert "uncertainty" in pred.layers  # the expected absolute error, in the units of the prediction
    top = np.argsort(-log_normalised(truth, list(pred.var_names)).mean(axis=0))[:50]
    error = np.abs(pred.X[:, top] - log_normalised(truth, list(pred.var_names))[:, top])
    assert 0.5 < pred.layers["uncertainty"][:, top].mean() / error.mean() < 2
    ood = pred.uns["histology_prediction"]["out_of_distribution"]  # a held-out MOB section: within reach
    assert ood["score"] == max(ood["appearance"], ood["stain"]) and not ood["out_of_reach"]
    assert "out-of-distribution score" in capsys.readouterr().out

    virtual = tmp_path / "mob3_virtual.h5ad"
    image = mob_path("MOB3").with_suffix(".jpg")
    genes = ",".join(pred.var_names[:3])
    cmd = ["histology-predict", "--model", str(model), "--image", str(image), "--spot-diameter-px", "16"]
    assert main([*cmd, "--genes", genes, "--out", str(virtual)]) == 0
    grid = ad.read_h5ad(virtual)
    assert grid.n_vars == 3 and 300 < grid.n_obs < 700  # hex grid at 2 x 16 px over the tissue
    assert "virtual spots" in capsys.readouterr().out


def test_benchmark_writes_tables_and_the_command(tmp_path):
    out = tmp_path / "bench"
    genes = tmp_path / "genes.txt"
    mob2 = ad.read_h5ad(mob_path("MOB2"))
    markers = resolve_genes(["Penk", "Nrgn"], mob2, list(mob2.var_names)).values()
    chosen = list(dict.fromkeys([*mob2.var_names[:198], *markers]))
    genes.write_text("\n".join(chosen))
    args = [
        "histology-benchmark", "--dataset-dir", str(mob_path("MOB2").parent), "--sections", "MOB2,MOB3",
        "--test-sections", "MOB3", "--genes", f"@{genes}", "--epochs", "1", "--threads", "1", "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert {"model", "baseline:ridge", "baseline:retrieval"} <= set(summary["method"])
    assert {"HEG-50", "HVG-50", "gene-gene", "Penk", "Nrgn"} <= set(summary.columns)
    per_gene = pd.read_csv(out / "per_gene.csv")
    assert per_gene["gene"].nunique() == len(chosen) == 200
    text = (out / "summary.md").read_text()
    assert "napari-casper histology-benchmark --dataset-dir" in text and "--test-sections MOB3" in text


def test_errors_are_reported_not_raised(tmp_path, capsys):
    code = main(["histology-predict", "--model", str(tmp_path / "absent.pt"), "--image", "x.jpg", "--out", str(tmp_path / "o.h5ad")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_predict_never_writes_over_an_input(tmp_path, capsys):
    import hashlib
    import shutil

    spots = tmp_path / "MOB3.h5ad"
    shutil.copyfile(mob_path("MOB3"), spots)
    before = hashlib.sha256(spots.read_bytes()).hexdigest()
    code = main(["histology-predict", "--model", str(tmp_path / "m.pt"), "--spots", str(spots), "--out", str(spots)])
    assert code == 2
    err = capsys.readouterr().err
    assert "is an input file" in err and "Traceback" not in err
    assert hashlib.sha256(spots.read_bytes()).hexdigest() == before  # the input is untouched
