"""Bad input to every command, table-driven: each case runs ``napari_casper.cli.main(argv)`` in process.

Four outcomes are checked for every case:

1. a clear error: the expected exit status (2: the command line is wrong, 1: the data cannot be
   used), one line ``napari-casper COMMAND: error: ...`` with the words that say what is wrong,
   and never the "this is a bug" fallback;
2. no traceback on stdout or stderr;
3. no silent garbage: nothing at the output path;
4. nothing lost: every input file byte-identical afterwards, and no scratch, lock or partial
   file left in the input or output folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from bad_world import build_world, junk, snapshot

from napari_casper.cli import main

W = "{w}"  # the world folder (inputs; must stay byte-identical)
O = "{o}"  # a fresh output folder per case

TRAIN = ["train", "--reference", f"{W}/ref.h5ad", "--epochs", "1", "--steps-per-epoch", "2", "--device", "cpu", "--quiet"]
IMPUTE = ["impute", "--model", f"{W}/casper.pt", "--genes", "eve,ftz", "--quiet"]
BENCH = ["benchmark", "--methods", "mean", "--folds", "2", "--genes-limit", "10"]
HTRAIN = ["histology-train", "--epochs", "1", "--predictor", "ridge", "--threads", "1", "--n-model-genes", "20"]
HPRED = ["histology-predict", "--model", f"{W}/histology.pt"]

# (id, argv, exit status, words the message must contain, the output path that must not appear)
CASES = [
    # --- train
    ("train-st-missing", [*TRAIN, "--st", f"{W}/absent.h5ad", "--out", f"{O}/m.pt"], 2, ["absent.h5ad does not exist"], "m.pt"),
    ("train-ref-missing", ["train", "--st", f"{W}/st.h5ad", "--reference", f"{W}/nope.h5ad", "--out", f"{O}/m.pt"], 2,
     ["nope.h5ad does not exist"], "m.pt"),
    ("train-st-csv", [*TRAIN, "--st", f"{W}/table.csv", "--out", f"{O}/m.pt"], 1, ["not an .h5ad", "a .csv file", "convert"], "m.pt"),
    ("train-st-csv-named-h5ad", [*TRAIN, "--st", f"{W}/csv_named.h5ad", "--out", f"{O}/m.pt"], 1, ["not an .h5ad"], "m.pt"),
    ("train-st-truncated", [*TRAIN, "--st", f"{W}/st_trunc.h5ad", "--out", f"{O}/m.pt"], 1, ["truncated", "copy or export it again"], "m.pt"),
    ("train-ref-truncated", ["train", "--st", f"{W}/st.h5ad", "--reference", f"{W}/ref_trunc.h5ad", "--out", f"{O}/m.pt"], 1,
     ["ref_trunc.h5ad is truncated"], "m.pt"),
    ("train-st-folder", [*TRAIN, "--st", f"{W}/folder.h5ad", "--out", f"{O}/m.pt"], 2, ["is a folder"], "m.pt"),
    ("train-st-is-model", [*TRAIN, "--st", f"{W}/casper.pt", "--out", f"{O}/m.pt"], 1, ["not an .h5ad"], "m.pt"),
    ("train-out-is-input", [*TRAIN, "--st", f"{W}/st.h5ad", "--out", f"{W}/st.h5ad"], 2, ["is an input file"], None),
    ("train-one-spot", [*TRAIN, "--st", f"{W}/st_one.h5ad", "--out", f"{O}/m.pt"], 1, ["only 1 spot", "at least 10"], "m.pt"),
    ("train-one-cell", ["train", "--st", f"{W}/st.h5ad", "--reference", f"{W}/ref_one.h5ad", "--out", f"{O}/m.pt"], 1,
     ["only 1 cell"], "m.pt"),
    ("train-float-label", ["train", "--reference", f"{W}/ref_labels.h5ad", "--st", f"{W}/st.h5ad", "--label-key", "area",
                           "--out", f"{O}/m.pt"], 1, ["'area' holds fractional numbers", "not cell-type labels"], "m.pt"),
    ("train-id-label", ["train", "--reference", f"{W}/ref_labels.h5ad", "--st", f"{W}/st.h5ad", "--label-key", "cell_id",
                        "--out", f"{O}/m.pt"], 1, ["per-cell id", "not cell types"], "m.pt"),
    ("train-missing-label", [*TRAIN, "--st", f"{W}/st.h5ad", "--label-key", "celltype", "--out", f"{O}/m.pt"], 1,
     ["'celltype' is not in the reference obs"], "m.pt"),
    ("train-no-shared-genes", [*TRAIN, "--st", f"{W}/st_renamed.h5ad", "--out", f"{O}/m.pt"], 1, ["no ST panel gene is in the reference"], "m.pt"),
    ("train-nan", [*TRAIN, "--st", f"{W}/st_nan.h5ad", "--out", f"{O}/m.pt"], 1, ["NaN or infinite"], "m.pt"),
    ("train-negative", [*TRAIN, "--st", f"{W}/st_negative.h5ad", "--out", f"{O}/m.pt"], 1, ["negative values"], "m.pt"),
    ("train-constant-section", [*TRAIN, "--st", f"{W}/st_zero_counts.h5ad", "--out", f"{O}/m.pt"], 1,
     ["only 0 of them vary", "ST data"], "m.pt"),
    ("train-duplicated-gene", [*TRAIN, "--st", f"{W}/st_dup.h5ad", "--out", f"{O}/m.pt"], 1, ["duplicated gene names"], "m.pt"),
    ("train-epochs-0", [*TRAIN, "--st", f"{W}/st.h5ad", "--out", f"{O}/m.pt", "--epochs", "0"], 2, ["--epochs: must be at least 1"], "m.pt"),
    ("train-epochs-negative", [*TRAIN, "--st", f"{W}/st.h5ad", "--out", f"{O}/m.pt", "--epochs", "-3"], 2, ["must be at least 1"], "m.pt"),
    # --- impute
    ("impute-model-missing", ["impute", "--model", f"{W}/absent.pt", "--st", f"{W}/st.h5ad", "--genes", "eve", "--out", f"{O}/x.h5ad"], 2,
     ["absent.pt does not exist"], "x.h5ad"),
    ("impute-model-text", ["impute", "--model", f"{W}/notes.pt", "--st", f"{W}/st.h5ad", "--genes", "eve", "--out", f"{O}/x.h5ad"], 1,
     ["not a model file written by `napari-casper train`"], "x.h5ad"),
    ("impute-model-pickle", ["impute", "--model", f"{W}/pickle.pt", "--st", f"{W}/st.h5ad", "--genes", "eve", "--out", f"{O}/x.h5ad"], 1,
     ["not a readable napari-casper checkpoint", "choose a file written by `napari-casper train`"], "x.h5ad"),
    ("impute-model-histology", ["impute", "--model", f"{W}/histology.pt", "--st", f"{W}/st.h5ad", "--genes", "eve",
                                "--out", f"{O}/x.h5ad"], 1, ["not a napari-casper CASPER checkpoint"], "x.h5ad"),
    ("impute-st-csv-h5ad-out", [*IMPUTE, "--st", f"{W}/table.csv", "--out", f"{O}/x.h5ad"], 1, ["not an .h5ad"], "x.h5ad"),
    ("impute-st-csv-zarr-out", [*IMPUTE, "--st", f"{W}/table.csv", "--out", f"{O}/x.zarr"], 1,
     ["neither an .h5ad file nor a SpatialData .zarr store"], "x.zarr"),
    ("impute-st-truncated", [*IMPUTE, "--st", f"{W}/st_trunc.h5ad", "--out", f"{O}/x.h5ad"], 1, ["truncated"], "x.h5ad"),
    ("impute-st-truncated-zarr-out", [*IMPUTE, "--st", f"{W}/st_trunc.h5ad", "--out", f"{O}/x.zarr"], 1, ["truncated"], "x.zarr"),
    ("impute-zero-spots", [*IMPUTE, "--st", f"{W}/st_empty.h5ad", "--out", f"{O}/x.h5ad"], 1, ["no spots (0 rows)"], "x.h5ad"),
    ("impute-zero-spots-zarr", [*IMPUTE, "--st", f"{W}/st_empty.h5ad", "--out", f"{O}/x.zarr"], 1, ["no spots (0 rows)"], "x.zarr"),
    ("impute-duplicated-panel-gene", [*IMPUTE, "--st", f"{W}/st_dup.h5ad", "--out", f"{O}/x.h5ad"], 1,
     ["in more than one column"], "x.h5ad"),
    ("impute-duplicated-panel-gene-zarr", [*IMPUTE, "--st", f"{W}/st_dup.h5ad", "--out", f"{O}/x.zarr"], 1,
     ["in more than one column"], "x.zarr"),
    ("impute-genes-repeated", ["impute", "--model", f"{W}/casper.pt", "--st", f"{W}/st.h5ad", "--genes", "eve,ftz,eve",
                               "--out", f"{O}/x.h5ad"], 2, ["eve more than once"], "x.h5ad"),
    ("impute-genes-empty", ["impute", "--model", f"{W}/casper.pt", "--st", f"{W}/st.h5ad", "--genes", ",", "--out", f"{O}/x.h5ad"], 2,
     ["--genes is empty"], "x.h5ad"),
    ("impute-gene-unknown", ["impute", "--model", f"{W}/casper.pt", "--st", f"{W}/st.h5ad", "--genes", "eve,NotAGene",
                             "--out", f"{O}/x.h5ad"], 1, ["not in the model's reference", "NotAGene"], "x.h5ad"),
    ("impute-out-suffix", [*IMPUTE, "--st", f"{W}/st.h5ad", "--out", f"{O}/x.csv"], 2, ["must end in .zarr"], "x.csv"),
    ("impute-out-is-st", [*IMPUTE, "--st", f"{W}/st.h5ad", "--out", f"{W}/st.h5ad"], 2, ["is an input file"], None),
    ("impute-h5ad-restart", [*IMPUTE, "--st", f"{W}/st.h5ad", "--out", f"{O}/x.h5ad", "--restart"], 2, ["need a .zarr output"], "x.h5ad"),
    ("impute-out-and-out-table", [*IMPUTE, "--st", f"{W}/st.h5ad", "--out", f"{O}/x.zarr", "--out-table", "t"], 2,
     ["either --out"], "x.zarr"),
    ("impute-no-out", [*IMPUTE, "--st", f"{W}/st.h5ad"], 2, ["--out is required"], None),
    ("impute-table-on-h5ad", [*IMPUTE, "--st", f"{W}/st.h5ad", "--table", "t", "--out", f"{O}/x.zarr"], 2, ["drop --table"], "x.zarr"),
    ("impute-other-panel", [*IMPUTE, "--st", f"{W}/st_renamed.h5ad", "--out", f"{O}/x.h5ad"], 1, ["lacks"], "x.h5ad"),
    ("impute-st-not-a-store", [*IMPUTE, "--st", f"{W}/not_a_store.zarr", "--out", f"{O}/x.zarr"], 1,
     ["neither an .h5ad file nor a SpatialData .zarr store"], "x.zarr"),
    ("impute-gene-chunk-0", [*IMPUTE, "--st", f"{W}/st.h5ad", "--out", f"{O}/x.zarr", "--gene-chunk", "0"], 2, ["must be at least 1"], "x.zarr"),
    # --- benchmark
    ("benchmark-st-truncated", [*BENCH, "--st", f"{W}/st_trunc.h5ad", "--reference", f"{W}/ref.h5ad", "--out", f"{O}/b"], 1,
     ["truncated"], "b"),
    ("benchmark-ref-csv", [*BENCH, "--st", f"{W}/st.h5ad", "--reference", f"{W}/table.csv", "--out", f"{O}/b"], 1,
     ["not an .h5ad"], "b"),
    ("benchmark-unknown-method", ["benchmark", "--methods", "magic", "--st", f"{W}/st.h5ad", "--reference", f"{W}/ref.h5ad",
                                  "--out", f"{O}/b"], 2, ["unknown imputation method 'magic'"], "b"),
    ("benchmark-method-twice", ["benchmark", "--methods", "knn,knn", "--st", f"{W}/st.h5ad", "--reference", f"{W}/ref.h5ad",
                                "--out", f"{O}/b"], 2, ["names a method twice"], "b"),
    ("benchmark-one-fold", ["benchmark", "--methods", "mean", "--folds", "1", "--st", f"{W}/st.h5ad", "--reference",
                            f"{W}/ref.h5ad", "--out", f"{O}/b"], 2, ["--folds must be at least 2"], "b"),
    ("benchmark-st-missing", [*BENCH, "--st", f"{W}/absent.h5ad", "--reference", f"{W}/ref.h5ad", "--out", f"{O}/b"], 2,
     ["does not exist"], "b"),
    # --- histology-train
    ("htrain-section-truncated", [*HTRAIN, f"{W}/MOB1_trunc.h5ad", f"{W}/MOB2.h5ad", "--out", f"{O}/h.pt"], 1,
     ["MOB1_trunc.h5ad is truncated"], "h.pt"),
    ("htrain-section-csv", [*HTRAIN, f"{W}/table.csv", f"{W}/MOB2.h5ad", "--out", f"{O}/h.pt"], 1, ["not an .h5ad"], "h.pt"),
    ("htrain-section-missing", [*HTRAIN, f"{W}/absent.h5ad", f"{W}/MOB2.h5ad", "--out", f"{O}/h.pt"], 2, ["does not exist"], "h.pt"),
    ("htrain-section-no-counts", [*HTRAIN, f"{W}/MOB1.h5ad", f"{W}/MOB1_nocounts.h5ad", "--out", f"{O}/h.pt"], 1,
     ["MOB1_nocounts has no counts"], "h.pt"),
    ("htrain-sections-other-naming", [*HTRAIN, f"{W}/MOB2.h5ad", f"{W}/MOB1_ids.h5ad", "--out", f"{O}/h.pt"], 1,
     ["section MOB1_ids", "shares 0 with MOB2", "Ensembl"], "h.pt"),
    ("htrain-no-spatial", [*HTRAIN, f"{W}/MOB1_nospatial.h5ad", f"{W}/MOB2.h5ad", "--out", f"{O}/h.pt"], 1, ["obsm['spatial']"], "h.pt"),
    ("htrain-images-count", [*HTRAIN, f"{W}/MOB1.h5ad", f"{W}/MOB2.h5ad", "--images", f"{W}/MOB1.jpg", "--out", f"{O}/h.pt"], 2,
     ["1 --images for 2 sections"], "h.pt"),
    ("htrain-out-is-section", [*HTRAIN, f"{W}/MOB1.h5ad", f"{W}/MOB2.h5ad", "--out", f"{W}/MOB2.h5ad"], 2, ["is an input file"], None),
    ("htrain-epochs-negative", [*HTRAIN, f"{W}/MOB1.h5ad", f"{W}/MOB2.h5ad", "--out", f"{O}/h.pt", "--epochs", "-3"], 2,
     ["must be at least 1"], "h.pt"),
    # --- histology-predict
    ("hpredict-model-text", ["histology-predict", "--model", f"{W}/notes.pt", "--spots", f"{W}/MOB1.h5ad", "--out", f"{O}/p.h5ad"], 1,
     ["not a model file written by `napari-casper histology-train`"], "p.h5ad"),
    ("hpredict-model-pickle", ["histology-predict", "--model", f"{W}/pickle.pt", "--spots", f"{W}/MOB1.h5ad", "--out", f"{O}/p.h5ad"], 1,
     ["not a readable napari-casper histology checkpoint", "Python objects"], "p.h5ad"),
    ("hpredict-model-casper", ["histology-predict", "--model", f"{W}/casper.pt", "--spots", f"{W}/MOB1.h5ad", "--out", f"{O}/p.h5ad"], 1,
     ["not a histology checkpoint"], "p.h5ad"),
    ("hpredict-spots-far-outside", [*HPRED, "--spots", f"{W}/MOB1_far.h5ad", "--out", f"{O}/p.h5ad"], 1,
     ["only 0% of the spots fall inside the image", "rescale them"], "p.h5ad"),
    ("hpredict-truncated-jpg", [*HPRED, "--image", f"{W}/trunc.jpg", "--spot-diameter-px", "16", "--out", f"{O}/p.h5ad"], 1,
     ["trunc.jpg is truncated"], "p.h5ad"),
    ("hpredict-text-as-jpg", [*HPRED, "--image", f"{W}/text.jpg", "--spot-diameter-px", "16", "--out", f"{O}/p.h5ad"], 1,
     ["text.jpg", "use a jpg, png or tif file"], "p.h5ad"),
    ("hpredict-out-is-spots", [*HPRED, "--spots", f"{W}/MOB1.h5ad", "--out", f"{W}/MOB1.h5ad"], 2, ["is an input file"], None),
    ("hpredict-out-is-image", [*HPRED, "--image", f"{W}/MOB1.jpg", "--spot-diameter-px", "16", "--out", f"{W}/MOB1.jpg"], 2,
     ["is an input file"], None),
    ("hpredict-out-is-model", [*HPRED, "--spots", f"{W}/MOB1.h5ad", "--out", f"{W}/histology.pt"], 2, ["is an input file"], None),
    ("hpredict-spots-csv", [*HPRED, "--spots", f"{W}/table.csv", "--image", f"{W}/MOB1.jpg", "--out", f"{O}/p.h5ad"], 1,
     ["not an .h5ad"], "p.h5ad"),
    ("hpredict-zero-spots", [*HPRED, "--spots", f"{W}/MOB1_empty.h5ad", "--image", f"{W}/MOB1.jpg", "--out", f"{O}/p.h5ad"], 1,
     ["no spots (0 rows)"], "p.h5ad"),
    ("hpredict-no-image", [*HPRED, "--spots", f"{W}/spots_noimage.h5ad", "--out", f"{O}/p.h5ad"], 2, ["give the H&E image"], "p.h5ad"),
    ("hpredict-image-missing", [*HPRED, "--image", f"{W}/absent.jpg", "--spot-diameter-px", "16", "--out", f"{O}/p.h5ad"], 2,
     ["absent.jpg does not exist"], "p.h5ad"),
    ("hpredict-negative-diameter", [*HPRED, "--image", f"{W}/MOB1.jpg", "--spot-diameter-px", "-5", "--out", f"{O}/p.h5ad"], 2,
     ["--spot-diameter-px must be a positive number"], "p.h5ad"),
    ("hpredict-no-spatial", [*HPRED, "--spots", f"{W}/MOB1_nospatial.h5ad", "--out", f"{O}/p.h5ad"], 1, ["no obsm['spatial']"], "p.h5ad"),
]


@pytest.fixture(scope="module")
def world() -> Path:
    return build_world()


def run_case(argv, world: Path, out: Path, capsys):
    argv = [a.replace(W, str(world)).replace(O, str(out)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("argv", "code", "words", "output"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error_and_loses_nothing(argv, code, words, output, world, tmp_path, capsys):
    before = snapshot(world)
    out = tmp_path / "out"
    out.mkdir()
    got, stdout, stderr = run_case(argv, world, out, capsys)
    # 1. a clear error: the status, one error line with what is wrong, not the "bug" fallback
    assert got == code, stderr
    lines = [line for line in stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, stderr
    message = " ".join(stderr.split())
    for word in words:
        assert word in message, f"{word!r} not in {stderr!r}"
    assert "this is a bug" not in message
    # 2. no traceback
    assert "Traceback" not in stdout + stderr
    # 3. no silent garbage at the output
    if output is not None:
        assert not (out / output).exists()
    # 4. nothing lost: inputs byte-identical, no scratch/lock/partial left anywhere
    assert snapshot(world) == before
    assert junk(world) == [] and junk(out) == []


def test_case_table_covers_every_command():
    commands = {c[1][0] for c in CASES}
    assert {"train", "impute", "benchmark", "histology-train", "histology-predict"} <= commands
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


def test_float32_tiff_is_read_and_predicted_on(world, tmp_path, capsys):
    """A float32 TIFF H&E (values 0..1) is correct input: predictions equal those on the same image as JPEG pixels."""
    import anndata as ad
    import numpy as np
    import tifffile
    from PIL import Image

    rgb = np.asarray(Image.open(world / "MOB1.jpg").convert("RGB"))
    tiff = tmp_path / "MOB1.tif"
    tifffile.imwrite(tiff, rgb.astype(np.float32) / 255.0)
    png = tmp_path / "MOB1.png"
    Image.fromarray(rgb).save(png)
    for image, out in ((tiff, tmp_path / "tif.h5ad"), (png, tmp_path / "png.h5ad")):
        assert main(["histology-predict", "--model", str(world / "histology.pt"), "--spots", str(world / "MOB1.h5ad"),
                     "--image", str(image), "--out", str(out)]) == 0
    from_tiff, from_png = ad.read_h5ad(tmp_path / "tif.h5ad"), ad.read_h5ad(tmp_path / "png.h5ad")
    assert from_tiff.shape == from_png.shape and from_tiff.n_obs > 200
    np.testing.assert_allclose(np.asarray(from_tiff.X), np.asarray(from_png.X), rtol=1e-5, atol=1e-5)
    assert "Traceback" not in capsys.readouterr().err


def test_existing_output_is_refused_and_kept(world, tmp_path, capsys):
    """impute onto an existing .h5ad: refused before any work, the earlier result byte-identical."""
    earlier = tmp_path / "x.h5ad"
    shutil.copyfile(world / "st.h5ad", earlier)
    before = earlier.read_bytes()
    code, _, err = run_case([*IMPUTE, "--st", f"{W}/st.h5ad", "--out", str(earlier)], world, tmp_path, capsys)
    assert code == 2 and "already exists" in err and "Traceback" not in err
    assert earlier.read_bytes() == before and junk(tmp_path) == []
