"""Bring your own patch encoder: TorchScript files, timm weights and model folders, the embedding cache,
and a model that refuses any encoder but its own (histology.pretrained, histology-train/-predict --encoder)."""

from __future__ import annotations

import importlib.util
import json

import anndata as ad
import numpy as np
import pytest
import torch
from histology_data import mob_path, mob_sections  # noqa: F401 - fixture

from napari_casper.cli import main
from napari_casper.errors import CasperInputError, CheckpointMismatchError
from napari_casper.evaluate.metrics import pearson
from napari_casper.histology.checkpoint import load_predictor
from napari_casper.histology.genes import log_normalised
from napari_casper.histology.pretrained import load_encoder, slide_embeddings


def _timm_ready() -> bool:
    try:
        import timm  # noqa: F401 - timm imports torchvision, which must match torch
    except ImportError:
        return False
    return True


#: timm needs a torchvision built for the installed torch; none exists for the CPU torch 2.13 of these machines
needs_timm = pytest.mark.skipif(
    not (importlib.util.find_spec("timm") and _timm_ready()),
    reason="timm (pip install 'napari-casper[encoders]') with a torchvision matching torch is not installed",
)


def test_train_predict_save_with_an_encoder_then_refuse_another(tmp_path, monkeypatch, capsys, make_torchscript_encoder):
    cache = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_CASPER_CACHE", str(cache))
    weights = make_torchscript_encoder(tmp_path / "encoder.pt", seed=0)
    model = tmp_path / "mob.pt"
    train = [str(mob_path("MOB1")), str(mob_path("MOB2")), "--epochs", "2", "--predictor", "ridge", "--threads", "1"]
    assert main(["histology-train", *train, "--encoder", str(weights), "--encoder-input-size", "32", "--out", str(model)]) == 0
    assert "patch encoder: TorchScript encoder encoder.pt" in capsys.readouterr().err
    assert len(list(cache.glob("embeddings-*.npy"))) == 2  # one per training slide

    out = tmp_path / "mob3.h5ad"
    predict = ["histology-predict", "--model", str(model), "--spots", str(mob_path("MOB3"))]
    assert main([*predict, "--out", str(out)]) == 0  # the encoder is found where training recorded it
    pred = ad.read_h5ad(out)
    truth = log_normalised(ad.read_h5ad(mob_path("MOB3")), list(pred.var_names))
    heg = np.argsort(-truth.mean(axis=0))[:50]
    heg50 = float(np.nanmean(pearson(truth, pred.X)[heg]))
    print(f"held-out MOB3 HEG-50 with a random-weight encoder: {heg50:.3f}")
    assert heg50 > 0.2  # random weights still see colour and texture
    # the slide's reach is measured in what the encoder sees, and saved with the predictions
    assert load_predictor(model).reach.appearance_of == "encoder"
    ood = pred.uns["histology_prediction"]["out_of_distribution"]
    assert ood["score"] == max(ood["appearance"], ood["stain"]) and 0 < ood["appearance"] < 2  # a held-out MOB section
    cached = sorted(cache.glob("embeddings-*.npy"))
    assert len(cached) == 3
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert main([*predict, "--out", str(tmp_path / "again.h5ad")]) == 0  # read from the cache, nothing embedded again
    assert [p.stat().st_mtime_ns for p in cached] == stamps and len(list(cache.glob("embeddings-*.npy"))) == 3
    np.testing.assert_array_equal(ad.read_h5ad(tmp_path / "again.h5ad").X, pred.X)

    moved = weights.rename(tmp_path / "moved.pt")
    with pytest.raises(CheckpointMismatchError, match="no longer at"):
        load_predictor(model)
    assert main([*predict, "--encoder", str(moved), "--out", str(tmp_path / "moved.h5ad")]) == 0
    exported_again = make_torchscript_encoder(tmp_path / "exported-again.pt", seed=0)  # the same weights, another file
    assert main([*predict, "--encoder", str(exported_again), "--out", str(tmp_path / "again2.h5ad")]) == 0

    other = make_torchscript_encoder(tmp_path / "other.pt", seed=1)  # the same network, other weights
    capsys.readouterr()
    refused = tmp_path / "refused.h5ad"
    assert main([*predict, "--encoder", str(other), "--out", str(refused)]) != 0
    err = capsys.readouterr().err
    assert "trained on the TorchScript encoder encoder.pt" in err and "different encoder" in err
    assert not refused.exists()


@needs_timm
def test_train_predict_save_with_a_timm_weights_file_then_refuse_other_weights(tmp_path, monkeypatch, capsys):
    """The timm route end to end: a resnet18 weights file and its architecture name, as a user points at UNI & co."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_CASPER_CACHE", str(cache))
    weights = _resnet18_weights(tmp_path / "r18.safetensors", 0)
    model = tmp_path / "mob.pt"
    encoder = ["--encoder", str(weights), "--encoder-arch", "resnet18", "--encoder-input-size", "32"]
    train = [str(mob_path("MOB1")), str(mob_path("MOB2")), "--epochs", "2", "--predictor", "ridge", "--threads", "1"]
    assert main(["histology-train", *train, *encoder, "--out", str(model)]) == 0
    assert "timm resnet18" in capsys.readouterr().err
    assert len(list(cache.glob("embeddings-*.npy"))) == 2

    out = tmp_path / "mob3.h5ad"
    predict = ["histology-predict", "--model", str(model), "--spots", str(mob_path("MOB3"))]
    assert main([*predict, "--out", str(out)]) == 0  # the weights and architecture recorded by training
    pred = ad.read_h5ad(out)
    truth = log_normalised(ad.read_h5ad(mob_path("MOB3")), list(pred.var_names))
    heg = np.argsort(-truth.mean(axis=0))[:50]
    heg50 = float(np.nanmean(pearson(truth, pred.X)[heg]))
    print(f"held-out MOB3 HEG-50 with a random-weight timm resnet18: {heg50:.3f}")
    assert heg50 > 0.2
    assert len(list(cache.glob("embeddings-*.npy"))) == 3

    other = _resnet18_weights(tmp_path / "r18-other.safetensors", 1)  # the same architecture, other weights
    capsys.readouterr()
    refused = tmp_path / "refused.h5ad"
    code = main([*predict, "--encoder", str(other), "--out", str(refused)])
    err = capsys.readouterr().err
    assert code != 0 and "trained on the timm resnet18 encoder r18.safetensors" in err and "different encoder" in err, err
    assert not refused.exists()


def test_encoder_options_are_checked_before_any_work(tmp_path, capsys, make_torchscript_encoder):
    weights = make_torchscript_encoder(tmp_path / "encoder.pt")
    train = ["histology-train", str(mob_path("MOB1")), "--encoder", str(weights), "--out", str(tmp_path / "m.pt")]
    with pytest.raises(SystemExit) as exit_code:
        main([*train, "--encoder-mean", "0.5,0.5"])
    assert exit_code.value.code == 2 and "--encoder-mean: expected three comma-separated numbers" in capsys.readouterr().err
    assert main([*train, "--encoder-mpp", "0.5"]) == 2
    assert "--encoder-mpp needs --spot-diameter-um" in capsys.readouterr().err
    assert main(["histology-train", str(mob_path("MOB1")), "--encoder-arch", "resnet18", "--out", str(tmp_path / "m.pt")]) == 2
    assert "give it with --encoder" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_slide_embeddings_are_cached_by_slide_encoder_and_geometry(mob_sections, tmp_path, make_torchscript_encoder):
    section = mob_sections[2]
    weights = make_torchscript_encoder(tmp_path / "encoder.pt")
    encoder = load_encoder(weights, input_size=32)
    xy = section.coords[:40]
    first = slide_embeddings(encoder, section.image, xy, section.spot_diameter_px, (1.0, 2.0), cache_dir=tmp_path, cache_key="slide")
    assert first.shape == (40, 2, 64) and np.isfinite(first).all()

    class Refuses(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("the cached embeddings should have been read")

    cached = load_encoder(weights, input_size=32)  # the same encoder, loaded again
    cached.net = Refuses()
    again = slide_embeddings(cached, section.image, xy, section.spot_diameter_px, (1.0, 2.0), cache_dir=tmp_path, cache_key="slide")
    np.testing.assert_array_equal(again, first)
    assert len(list(tmp_path.glob("embeddings-*.npy"))) == 1
    # another geometry, other spots or another slide is embedded anew
    slide_embeddings(encoder, section.image, xy, section.spot_diameter_px, (1.0,), cache_dir=tmp_path, cache_key="slide")
    slide_embeddings(encoder, section.image, xy[:30], section.spot_diameter_px, (1.0, 2.0), cache_dir=tmp_path, cache_key="slide")
    slide_embeddings(encoder, section.image, xy, section.spot_diameter_px, (1.0, 2.0), cache_dir=tmp_path, cache_key="other")
    assert len(list(tmp_path.glob("embeddings-*.npy"))) == 4


def test_torchscript_file_and_bad_sources_are_explained(tmp_path, make_torchscript_encoder):
    path = make_torchscript_encoder(tmp_path / "tiny.pt")
    encoder = load_encoder(path, input_size=48, mpp=0.5)
    assert encoder.spec.kind == "torchscript" and encoder.spec.n_features == 64 and encoder.spec.input_size == 48
    assert encoder.spec.mean == (0.485, 0.456, 0.406)  # ImageNet's unless given
    assert encoder.embed(np.zeros((3, 20, 20, 3), np.uint8)).shape == (3, 64)
    assert encoder.spec.scales((1, 2, 4), spot_diameter_um=55) == pytest.approx((48 * 0.5 / 55,))  # its own field of view
    assert encoder.spec.scales((1, 2, 4), spot_diameter_um=None) == (1.0, 2.0, 4.0)
    assert load_encoder(path, mean=(0.7, 0.5, 0.7)).spec.mean == (0.7, 0.5, 0.7)

    with pytest.raises(CasperInputError, match="nothing is downloaded"):
        load_encoder(tmp_path / "absent.pt")
    bad = tmp_path / "weights.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), bad)
    with pytest.raises(CasperInputError, match="not a TorchScript file.*--encoder-arch"):
        load_encoder(bad)
    with pytest.raises(CasperInputError, match="three numbers"):
        load_encoder(path, std=(0.2, 0.2))
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(CasperInputError, match="no config.json"):
        load_encoder(folder)


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_a_timm_architecture_without_timm_says_how_to_install_it(tmp_path):
    weights = tmp_path / "weights.pth"
    torch.save(torch.nn.Linear(2, 2).state_dict(), weights)
    with pytest.raises(CasperInputError, match=r"needs timm: pip install 'napari-casper\[encoders\]'"):
        load_encoder(weights, architecture="resnet18")


def _resnet18_weights(path, seed: int):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    save_file(timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict(), str(path))
    return path


@needs_timm
def test_timm_weights_file_and_hugging_face_cache_folder(tmp_path):
    weights = _resnet18_weights(tmp_path / "r18.safetensors", 0)
    encoder = load_encoder(weights, architecture="resnet18", input_size=32)
    assert (encoder.spec.kind, encoder.spec.n_features) == ("timm", 512)
    assert encoder.embed(np.zeros((2, 40, 40, 3), np.uint8)).shape == (2, 512)
    with pytest.raises(CasperInputError, match="do not fit timm resnet34"):
        load_encoder(weights, architecture="resnet34")
    with pytest.raises(CasperInputError, match="timm knows no architecture"):
        load_encoder(weights, architecture="no_such_net")

    hub = tmp_path / "models--lab--he-resnet"
    snapshot = hub / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text("abc123")
    _resnet18_weights(snapshot / "model.safetensors", 0)
    cfg = {"architecture": "resnet18", "pretrained_cfg": {"input_size": [3, 40, 40], "mean": [0.7, 0.5, 0.7], "std": [0.2, 0.2, 0.2]}}
    (snapshot / "config.json").write_text(json.dumps(cfg))
    spec = load_encoder(hub).spec
    assert (spec.kind, spec.architecture, spec.input_size) == ("timm", "resnet18", 40)
    assert spec.mean == (0.7, 0.5, 0.7) and spec.std == (0.2, 0.2, 0.2)
    assert spec.fingerprint == encoder.spec.fingerprint  # the same weights
    assert load_encoder(snapshot, input_size=64).spec.input_size == 64  # given values win
    (snapshot / "config.json").write_text("{}")
    with pytest.raises(CasperInputError, match="names no 'architecture'"):
        load_encoder(snapshot)
