"""``napari-casper benchmark`` on a small real subset (mean + kNN, 2 folds, 8 genes)."""

from __future__ import annotations

import anndata as ad
import pandas as pd
import pytest
from conftest import drosophila_subset, shared_path

from napari_casper.cli import main


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory):
    """A small seqFISH / Tasic pair written as .h5ad files."""
    folder = tmp_path_factory.mktemp("pair")
    st = ad.read_h5ad(shared_path("seqfish", "seqfish_cortex.h5ad"))[::4].copy()
    ref = ad.read_h5ad(shared_path("seqfish", "tasic_scrna.h5ad"))[::4].copy()
    st.write_h5ad(folder / "st.h5ad")
    ref.write_h5ad(folder / "ref.h5ad")
    return folder / "st.h5ad", folder / "ref.h5ad"


@pytest.fixture(scope="module")
def drosophila_pair(tmp_path_factory):
    """The packaged Drosophila atlas subset + reference subset written as .h5ad files (no ../shared needed)."""
    folder = tmp_path_factory.mktemp("drosophila_pair")
    st, ref = drosophila_subset()
    st.write_h5ad(folder / "st.h5ad")
    ref.write_h5ad(folder / "ref.h5ad")
    return folder / "st.h5ad", folder / "ref.h5ad"


def test_benchmark_writes_tables_and_a_regenerating_command(small_pair, tmp_path, capsys):
    st, ref = small_pair
    out = tmp_path / "result"
    argv = [
        "benchmark", "--st", str(st), "--reference", str(ref), "--methods", "mean,knn",
        "--folds", "2", "--genes-limit", "8", "--label-key", "cell_type", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    per_gene = pd.read_csv(out / "per_gene.csv", keep_default_na=False)
    assert len(per_gene) == 16 and set(per_gene["method"]) == {"mean", "knn"}
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["method"]) == ["mean", "knn"]
    assert {"PCC_mean", "PCC_median", "SRCC_mean", "SSIM_mean", "RMSE_mean", "JS_mean", "AS"} <= set(
        summary.columns
    )
    runtimes = pd.read_csv(out / "runtimes.csv")
    assert len(runtimes) == 4 and (runtimes["seconds"] >= 0).all()
    report = (out / "summary.md").read_text()
    assert "| method | PCC mean |" in report and "| knn |" in report
    assert "`st.h5ad` (400 x 113)" in report and "`ref.h5ad` (431 x 113)" in report
    assert "seqFISH mouse visual cortex" in report  # the data set's uns['source']
    command = report.split("```")[1].strip()
    assert command.startswith("napari-casper benchmark --st ")
    assert "--methods mean,knn --folds 2 --seed 0 --label-key cell_type --genes-limit 8" in command

    # the printed command regenerates the same numbers
    rerun = tmp_path / "rerun"
    assert main(command.split()[1:-1] + [str(rerun)]) == 0
    pd.testing.assert_frame_equal(
        pd.read_csv(rerun / "per_gene.csv", keep_default_na=False), per_gene
    )
    assert "wrote" in capsys.readouterr().out


def test_bad_input_is_a_clean_error(drosophila_pair, tmp_path, capsys):
    st, ref = drosophila_pair
    base = ["benchmark", "--st", str(st), "--reference", str(ref), "--out", str(tmp_path)]
    assert main([*base, "--methods", "knn,wizard"]) == 2
    assert "unknown imputation method 'wizard'" in capsys.readouterr().err
    assert main([*base[:2], str(tmp_path / "absent.h5ad"), *base[3:], "--methods", "mean"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([*base, "--methods", "mean", "--folds", "500"]) == 1  # more folds than this data has genes: a data error
    assert "folds" in capsys.readouterr().err


def test_small_section_case_from_one_section(tmp_path, capsys):
    """--small-section: a central patch of one section from disjoint cells of the same section (packaged MOB1)."""
    from conftest import mob_path

    from napari_casper.evaluate.small_section import small_section

    source = ad.read_h5ad(mob_path("MOB1"))
    st, reference = small_section(source, n_spots=150, n_reference=200)
    assert (st.n_obs, reference.n_obs) == (150, 200) and not set(st.obs_names) & set(reference.obs_names)
    xy = source.obsm["spatial"]
    distance = ((xy - pd.DataFrame(xy).median().to_numpy()) ** 2).sum(axis=1)
    inside = pd.Series(distance, index=source.obs_names)
    assert inside[st.obs_names].max() <= inside.drop(st.obs_names).min()  # the patch: the 150 nearest the centre

    out = tmp_path / "small"
    argv = [
        "benchmark", "--st", str(mob_path("MOB1")), "--small-section", "150,200", "--methods", "ridge,mean",
        "--folds", "2", "--genes-limit", "20", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    summary = pd.read_csv(out / "summary.csv").set_index("method")
    assert summary.loc["ridge", "PCC_mean"] > 0.1 and summary.loc["mean", "PCC_mean"] == 0
    report = (out / "summary.md").read_text()
    assert "the 150 cells nearest its centre (--small-section)" in report and "200 other cells of MOB1" in report
    command = report.split("```")[1].strip()
    assert "--small-section 150,200" in command and "--reference" not in command
    rerun = tmp_path / "rerun"
    assert main(command.split()[1:-1] + [str(rerun)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(rerun / "per_gene.csv"), pd.read_csv(out / "per_gene.csv"))
    capsys.readouterr()

    base = ["benchmark", "--st", str(mob_path("MOB1")), "--methods", "mean", "--out", str(tmp_path / "x")]
    assert main([*base, "--small-section", "150,200", "--reference", str(mob_path("MOB2"))]) == 2
    assert "leave out --reference" in capsys.readouterr().err
    assert main([*base, "--small-section", "150"]) == 2
    assert "two positive counts N,M" in capsys.readouterr().err
    assert main(base) == 2
    assert "--reference is required (or --small-section N,M" in capsys.readouterr().err
