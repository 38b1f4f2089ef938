"""Open a section (spatial ``.h5ad`` with its H&E beside it, or a SpatialData store) in named, cancellable steps.

Runs in a worker thread: every step reports a phase ("reading table", "decoding image",
"image level 2 of 5", "preparing layers") and checks the cancel flag at least every few hundred
milliseconds, so Cancel takes effect within a second. The H&E is decoded through a file object
that checks the flag on every read (Pillow reads 64 kB at a time and releases the GIL while
decoding). The image pyramid is built here with numpy, band by band, instead of letting napari
compute the SpatialData pyramid lazily on the GUI thread (20 s for a 9274 x 9911 jpg). The layers
themselves are built here too (``Layer.create``); the GUI thread only appends them.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from napari_casper.errors import CasperInputError

#: the smallest pyramid level is at most this many pixels on its longest side
SMALLEST_LEVEL = 1024
#: rows of the finer level reduced per step (checks the cancel flag in between)
BAND_ROWS = 128


class OpenCancelled(Exception):
    """The user pressed Cancel while a section was being opened."""


class CancellableFile(io.RawIOBase):
    """A binary file whose every read first checks ``cancel`` (raises :class:`OpenCancelled`)."""

    def __init__(self, path: Path, cancel: threading.Event):
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._cancel = cancel

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def readinto(self, buffer) -> int:
        if self._cancel.is_set():
            raise OpenCancelled()
        return self._file.readinto(buffer)

    def close(self) -> None:
        self._file.close()
        super().close()


def decode_image(path: Path, cancel: threading.Event) -> np.ndarray:
    """``(y, x, c)`` uint8 array of a jpg/png, cancellable (tif goes through :func:`read_image_file`)."""
    from PIL import Image

    from napari_casper.io.convert import read_image_file

    if path.suffix.lower() in {".tif", ".tiff"}:
        return read_image_file(path)
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # whole-slide jpgs exceed the decompression-bomb limit
    try:
        with CancellableFile(path, cancel) as raw, Image.open(io.BufferedReader(raw, 1 << 16)) as img:
            array = np.asarray(img.convert("RGB") if img.mode not in {"L", "RGB"} else img)
    except OpenCancelled:
        raise
    except Exception as err:  # noqa: BLE001 - any decoder failure means the same to the user
        raise CasperInputError(f"cannot read image {path} ({type(err).__name__}: {err}): use a jpg, png or tif.") from err
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return array[:, :, None] if array.ndim == 2 else array


def halve(level: np.ndarray, cancel: threading.Event) -> np.ndarray:
    """The next pyramid level: 2 x 2 means of ``level`` ``(y, x, c)``, band by band (cancellable)."""
    h, w = level.shape[0] // 2, level.shape[1] // 2
    out = np.empty((h, w, *level.shape[2:]), dtype=level.dtype)
    for start in range(0, h, BAND_ROWS // 2):
        if cancel.is_set():
            raise OpenCancelled()
        stop = min(start + BAND_ROWS // 2, h)
        band = level[2 * start : 2 * stop, : 2 * w].astype(np.float32)
        band = band.reshape(stop - start, 2, w, 2, *level.shape[2:]).mean(axis=(1, 3))
        out[start:stop] = np.round(band).astype(level.dtype)
    return out


def interruptible(cancel: threading.Event, function: Callable, *args, poll_s: float = 0.05):
    """``function(*args)`` in a helper thread, waited for while polling ``cancel``.

    For library calls that cannot stop half-way (reading a store, building SpatialData or a
    napari layer): on Cancel the wait ends at once (:class:`OpenCancelled`) and the helper thread
    finishes in the background, its result dropped.
    """
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = function(*args)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = err

    helper = threading.Thread(target=target, daemon=True, name=f"open-section:{getattr(function, '__name__', '')}")
    helper.start()
    while helper.is_alive():
        if cancel.is_set():
            raise OpenCancelled()
        helper.join(poll_s)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def pyramid_levels(shape: tuple[int, ...]) -> int:
    """How many levels :func:`open_section` builds for an image of ``shape`` (halving down to :data:`SMALLEST_LEVEL`)."""
    h, w, n = shape[0], shape[1], 1
    while max(h, w) > SMALLEST_LEVEL:
        h, w, n = h // 2, w // 2, n + 1
    return n


def open_section(path: str | Path, cancel: threading.Event, phase: Callable[[str, float], None]) -> list:
    """napari layers (built, not added) of the section at ``path``; ``phase(text, fraction)`` reports progress.

    Raises :class:`OpenCancelled` when ``cancel`` is set.
    """
    from napari.layers import Layer

    from napari_casper.display.layers import spatialdata_to_layers
    from napari_casper.io.convert import anndata_to_spatialdata
    from napari_casper.io.stores import find_image_beside, read_h5ad, read_spatialdata

    path = Path(path)

    def step(text: str, fraction: float) -> None:
        if cancel.is_set():
            raise OpenCancelled()
        phase(text, fraction)

    pyramids = {}
    if path.suffix == ".h5ad":
        step(f"reading table {path.name}", 0.02)
        adata = interruptible(cancel, read_h5ad, path)
        image_path = find_image_beside(path, adata)
        image = None
        if image_path is not None:
            step(f"decoding image {image_path.name}", 0.05)
            image = decode_image(image_path, cancel)
            levels, n_levels = [image], pyramid_levels(image.shape)
            while len(levels) < n_levels:
                step(f"image level {len(levels) + 1} of {n_levels}", 0.4 + 0.2 * len(levels) / n_levels)
                levels.append(halve(levels[-1], cancel))
            pyramids["image"] = levels
        step("building spots and table", 0.6)
        sdata = interruptible(cancel, anndata_to_spatialdata, adata, image)
    else:
        step(f"reading store {path.name}", 0.05)
        sdata = interruptible(cancel, read_spatialdata, path)
    step("preparing layers", 0.7)
    tuples = interruptible(cancel, lambda: spatialdata_to_layers(sdata, source=str(path)))
    layers = []
    for i, (data, kwargs, kind) in enumerate(tuples):
        step(f"building layer {i + 1} of {len(tuples)}: {kwargs.get('name')}", 0.7 + 0.3 * i / len(tuples))
        name = kwargs["metadata"].get("napari_casper", {}).get("element")
        if kind == "image" and name in pyramids and kwargs.get("rgb"):
            levels = pyramids[name]
            data = levels if len(levels) > 1 else levels[0]
            kwargs = {**kwargs, "multiscale": len(levels) > 1, "contrast_limits": [0, 255]}
        layers.append(interruptible(cancel, Layer.create, data, kwargs, kind))
    return layers
