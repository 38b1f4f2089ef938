"""Device selection, mixed precision and host->device copies (CUDA parts run only with a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_casper.errors import CasperInputError
from napari_casper.runtime.device import autocast, autocast_dtype, describe, grad_scaler, select_device, to_device

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


def test_auto_falls_back_to_cpu_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("napari_casper.runtime.device._mps_available", lambda: False)
    device = select_device("auto")
    assert device.type == "cpu"
    assert autocast_dtype(device) is None and not grad_scaler(device).is_enabled()
    assert describe(device).startswith("cpu")
    with pytest.raises(CasperInputError, match="no CUDA GPU.*--device auto or --device cpu"):
        select_device("cuda")
    with pytest.raises(CasperInputError, match="unknown device"):
        select_device("tpu")


def test_cpu_copies_and_autocast_are_plain_fp32():
    device = torch.device("cpu")
    x = to_device(np.arange(6, dtype=np.float64).reshape(2, 3), device)
    assert x.dtype == torch.float32 and x.device.type == "cpu"
    with autocast(device):
        y = x @ x.T
    assert y.dtype == torch.float32


def test_training_on_auto_device_without_gpu_matches_cpu(monkeypatch):
    """"auto" on a CPU-only machine gives exactly the CPU model (clean fallback)."""
    from napari_casper.casper.imputation import CasperImputer
    from napari_casper.casper.training import train_casper
    from napari_casper.io.samples import load_drosophila_atlas, load_drosophila_reference

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("napari_casper.runtime.device._mps_available", lambda: False)
    st, ref = load_drosophila_atlas()[:, :30].copy(), load_drosophila_reference()
    a = train_casper(st, ref, max_steps=10, steps_per_epoch=5, device="auto", seed=1, refit=False, reference_weight=0.0)
    b = train_casper(st, ref, max_steps=10, steps_per_epoch=5, device="cpu", seed=1, refit=False, reference_weight=0.0)
    pa = CasperImputer(a, st, device="auto").predict(["eve", "ftz"])
    pb = CasperImputer(b, st, device="cpu").predict(["eve", "ftz"])
    np.testing.assert_array_equal(pa, pb)


@needs_cuda
def test_cuda_mixed_precision_training_and_inference_track_cpu():
    from napari_casper.casper.imputation import CasperImputer
    from napari_casper.casper.training import train_casper
    from napari_casper.io.samples import load_drosophila_atlas, load_drosophila_reference

    device = select_device("cuda")
    assert autocast_dtype(device) in (torch.bfloat16, torch.float16)
    x = to_device(np.ones((4, 4), np.float32), device)
    assert x.is_cuda
    st, ref = load_drosophila_atlas()[:, :30].copy(), load_drosophila_reference()
    model = train_casper(st, ref, max_steps=40, steps_per_epoch=10, device="cuda", seed=1)
    gpu = CasperImputer(model, st, device="cuda").predict(["eve", "ftz"])
    cpu = CasperImputer(model, st, device="cpu").predict(["eve", "ftz"])
    for j in range(2):  # mixed precision: same prediction up to rounding
        assert np.corrcoef(gpu[:, j], cpu[:, j])[0, 1] > 0.99
