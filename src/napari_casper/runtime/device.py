"""Torch device selection: CUDA > MPS > CPU, with an explicit override.

Mixed precision is used on CUDA only (bf16 where the GPU supports it, else fp16 with a gradient
scaler); MPS and CPU run in fp32, which keeps CPU runs bit-for-bit reproducible. Batches going
from host memory to a CUDA device are copied through pinned memory without blocking.
"""

from __future__ import annotations

import contextlib

import torch

from napari_casper.errors import CasperInputError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def select_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device to use.

    Parameters
    ----------
    device
        ``"auto"`` (or ``None``) picks CUDA, then Apple MPS, then CPU. ``"cpu"``, ``"cuda"``,
        ``"cuda:1"`` or ``"mps"`` force one; asking for an absent accelerator raises
        :class:`~napari_casper.errors.CasperInputError`.
    """
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CasperInputError(
                f"device {device!r} was requested but torch sees no CUDA GPU; "
                "use --device auto or --device cpu"
            )
        return torch.device(name)
    if name == "mps":
        if not _mps_available():
            raise CasperInputError(
                "device 'mps' was requested but Apple MPS is not available; use --device auto or cpu"
            )
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise CasperInputError(f"unknown device {device!r}; choose one of {', '.join(DEVICE_CHOICES)}")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype for ``device``: bf16/fp16 on CUDA, ``None`` (fp32) elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, enabled: bool = True):
    """Context manager running the forward pass in mixed precision on CUDA (no-op elsewhere)."""
    dtype = autocast_dtype(device) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """Loss scaler for fp16 autocast on CUDA; a pass-through (disabled) everywhere else.

    bf16 has fp32's exponent range and needs no scaling; fp16 gradients underflow without it.
    """
    active = enabled and autocast_dtype(device) == torch.float16
    return torch.amp.GradScaler("cuda", enabled=active)


def to_device(array, device: torch.device, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """A host array as a tensor on ``device``: pinned memory + non-blocking copy on CUDA."""
    tensor = torch.as_tensor(array, dtype=dtype)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def describe(device: torch.device) -> str:
    """Human-readable device name for logs and benchmark output, e.g. ``cuda (NVIDIA H100, bf16)``."""
    if device.type == "cuda":
        dtype = autocast_dtype(device)
        return f"cuda ({torch.cuda.get_device_name(device)}, mixed precision {str(dtype).replace('torch.', '')})"
    if device.type == "mps":
        return "mps (Apple GPU, fp32)"
    return f"cpu ({torch.get_num_threads()} torch threads, fp32)"


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch CPU threads (``None``: leave torch's setting), then restore.

    CASPER's training batches are small matrix products: extra threads gain little, and when the
    cores are shared with other processes OpenMP threads wait on each other (measured on 2 shared
    cores: 60 Drosophila steps take 4.7 s with 1 thread and 23.7 s with 2).
    """
    if n is None or n <= 0:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
