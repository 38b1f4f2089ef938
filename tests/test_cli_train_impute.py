"""``napari-casper train`` + ``napari-casper impute`` end to end on real data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from conftest import DROSOPHILA_REFERENCE, drosophila_atlas, packaged_path

from napari_casper.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    st = drosophila_atlas()
    st[:, [g for g in st.var_names if g not in ("eve", "ftz")]].copy().write_h5ad(root / "st.h5ad")
    return root, packaged_path(DROSOPHILA_REFERENCE)


def test_train_then_impute(files, capsys):
    root, reference = files
    model = root / "model.pt"
    code = main(
        ["train", "--st", str(root / "st.h5ad"), "--reference", str(reference), "--epochs", "3",
         "--steps-per-epoch", "10", "--device", "cpu", "--out", str(model)]
    )
    out = capsys.readouterr().out
    assert code == 0 and model.exists()
    assert "82 of 82 panel genes found" in out and "epoch   3" in out
    from napari_casper.casper.checkpoint import load_checkpoint

    assert load_checkpoint(model).network.size == 2  # two refits averaged, the default

    assert main(["impute", "--model", str(model), "--st", str(root / "st.h5ad"), "--genes", "eve,ftz",
                 "--out", str(root / "pred.h5ad")]) == 0
    pred = ad.read_h5ad(root / "pred.h5ad")
    assert list(pred.var_names) == ["eve", "ftz"] and pred.n_obs == 3039
    # trust per gene and each spot's 90 % interval width: 2 x var interval_scale x obs spot_difficulty
    assert "var 'trust' (expected Pearson r), 90% interval widths" in capsys.readouterr().out
    from napari_casper.casper.imputation import CasperImputer

    imputer = CasperImputer(load_checkpoint(model), ad.read_h5ad(root / "st.h5ad"))
    trust = imputer.trust(["eve", "ftz"])
    np.testing.assert_allclose(pred.var["trust"], trust, rtol=1e-6)
    widths = 2 * np.outer(pred.obs["spot_difficulty"], pred.var["interval_scale"])
    np.testing.assert_allclose(widths, imputer.interval_widths(trust), rtol=1e-5)
    assert 0.5 < pred.obs["spot_difficulty"].mean() < 1.5 and (pred.var["interval_scale"] > 0).all()
    # a gene named twice is refused (it used to write duplicated columns)
    assert main(["impute", "--model", str(model), "--st", str(root / "st.h5ad"), "--genes", "eve,ftz,eve",
                 "--out", str(root / "dup.h5ad")]) == 2
    assert "eve more than once" in capsys.readouterr().err and not (root / "dup.h5ad").exists()
    assert "spatial" in pred.obsm and np.isfinite(pred.X).all()

    assert main(["impute", "--model", str(model), "--st", str(root / "st.h5ad"),
                 "--all-reference-genes", "--gene-chunk", "2000", "--out", str(root / "all.zarr")]) == 0
    every = ad.read_zarr(root / "all.zarr")
    assert every.shape == (3039, 2006)  # every gene of the packaged reference
    np.testing.assert_allclose(np.asarray(every[:, ["eve", "ftz"]].X), pred.X, rtol=1e-5, atol=1e-5)


def test_train_with_one_network(files, capsys):
    from napari_casper.casper.checkpoint import load_checkpoint
    from napari_casper.casper.network import CentroidCrossAttention

    root, reference = files
    model = root / "single.pt"
    code = main(["train", "--st", str(root / "st.h5ad"), "--reference", str(reference), "--epochs", "2",
                 "--steps-per-epoch", "10", "--device", "cpu", "--ensemble", "1", "--quiet", "--out", str(model)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert isinstance(load_checkpoint(model).network, CentroidCrossAttention)


def test_cli_errors_are_one_line(files, capsys):
    root, reference = files
    code = main(["impute", "--model", str(root / "missing.pt"), "--st", str(root / "st.h5ad"),
                 "--genes", "eve", "--out", str(root / "x.h5ad")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code = main(["train", "--st", str(root / "nope.h5ad"), "--reference", str(reference),
                 "--out", str(root / "m.pt")])
    assert code == 2 and "nope.h5ad does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    ["train", "--st", "st.h5ad", "--reference", "ref.h5ad", "--out", "m.pt", "--epochs"],
    ["train", "--st", "st.h5ad", "--reference", "ref.h5ad", "--out", "m.pt", "--ensemble"],
    ["histology-train", "s.h5ad", "--out", "h.pt", "--epochs"],
    ["impute", "--model", "m.pt", "--st", "st.h5ad", "--genes", "eve", "--out", "x.h5ad", "--gene-chunk"],
])
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_counts_below_one_are_usage_errors(command, value, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main([*command, value])
    assert stop.value.code == 2  # argparse's usage error, before any file is read or written
    err = capsys.readouterr().err
    assert f"argument {command[-1]}: must be" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
