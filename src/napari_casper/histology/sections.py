"""Training and query sections: an H&E image, spot centres, spot size and (optionally) expression.

The core is container-agnostic: a :class:`HistologySection` holds plain arrays. Helpers here
read the ``.h5ad`` + image pairs of ``../shared/data`` (``obsm["spatial"]`` = ``(x, y)``
pixels of the image named by ``uns["image"]``), decoding large JPEGs at a reduced scale when the
spots are far larger than the patches need (PIL's JPEG draft mode: 1/2, 1/4 or 1/8 size, fast);
other formats (TIFF, PNG) are read by :func:`napari_casper.io.convert.read_image_file`. Pillow
releases the GIL while it decodes (measured: a 9300 x 9900 HER2 jpg decoded in a worker thread
in 2.9 s left the GUI thread at most 0.14 s without it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from anndata import AnnData

from napari_casper.errors import CasperInputError
from napari_casper.histology.patches import check_coords
from napari_casper.io.convert import estimate_spot_diameter


@dataclass
class HistologySection:
    """One tissue section.

    Attributes
    ----------
    image
        ``(H, W, 3)`` uint8 array-like (numpy, dask or xarray); read lazily, window by window.
    coords
        ``(n_spots, 2)`` float spot centres, ``(x, y)`` pixels of ``image``.
    spot_diameter_px
        Spot diameter in pixels of ``image``.
    expression
        Spots x genes AnnData (raw counts, rows in ``coords`` order) for a training section;
        ``None`` for an H&E-only slide.
    name
        Label used in progress messages and benchmark tables.
    cache_key
        Identifies the image for the on-disk patch cache (e.g. file path + mtime); ``None``
        disables the disk cache for this section.
    """

    image: object
    coords: np.ndarray
    spot_diameter_px: float
    expression: AnnData | None = None
    name: str = "section"
    cache_key: str | None = None
    _patches: dict = field(default_factory=dict, repr=False, compare=False)
    _embeddings: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = None if self.expression is None else self.expression.n_obs
        self.coords = check_coords(self.coords, n)
        if not self.spot_diameter_px or float(self.spot_diameter_px) <= 0:
            raise CasperInputError(
                f"section {self.name}: spot_diameter_px must be positive; got {self.spot_diameter_px!r}"
            )
        self.spot_diameter_px = float(self.spot_diameter_px)

    @property
    def n_spots(self) -> int:
        return len(self.coords)

    def patches(self, scales, patch_size: int, cache_dir=None, *, cancel=None, progress=None) -> np.ndarray:
        """``(n_spots, n_scales, P, P, 3)`` uint8 patches, computed once per option set
        (``cancel`` and ``progress`` as for :func:`~napari_casper.histology.patches.extract_patches`)."""
        from napari_casper.histology.patches import extract_patches

        key = (tuple(float(s) for s in scales), int(patch_size))
        if key not in self._patches:
            self._patches[key] = extract_patches(
                self.image,
                self.coords,
                self.spot_diameter_px,
                scales=key[0],
                patch_size=key[1],
                cache_dir=cache_dir if self.cache_key else None,
                cache_key=self.cache_key,
                cancel=cancel,
                progress=progress,
            )
        return self._patches[key]

    def embeddings(self, encoder, scales, cache_dir=None, *, cancel=None, progress=None) -> np.ndarray:
        """``(n_spots, n_scales, F)`` embeddings by a pretrained ``encoder``, computed once per encoder and
        scales, and cached on disk under ``cache_dir`` when the section has a ``cache_key``
        (:func:`~napari_casper.histology.pretrained.slide_embeddings`)."""
        from napari_casper.histology.pretrained import slide_embeddings

        key = (encoder.spec.fingerprint, encoder.spec.input_size, tuple(float(s) for s in scales))
        if key not in self._embeddings:
            self._embeddings[key] = slide_embeddings(
                encoder, self.image, self.coords, self.spot_diameter_px, key[2], cache_dir=cache_dir if self.cache_key else None,
                cache_key=self.cache_key, cancel=cancel, progress=progress,
            )  # fmt: skip
        return self._embeddings[key]


def read_jpeg(path: str | Path, reduce: int = 1) -> tuple[np.ndarray, float]:
    """Decode an RGB image file at about ``1/reduce`` size (1, 2, 4 or 8; JPEGs decode fast).

    A JPEG read reduced uses PIL's draft mode (decodes 1/2, 1/4 or 1/8 of the pixels); every other
    case goes through :func:`~napari_casper.io.convert.read_image_file` (TIFF, PNG, full-size JPEG;
    an unreadable or truncated file is a :class:`CasperInputError` naming it), then is reduced.
    Returns ``(image, scale)``: ``(h, w, 3)`` uint8 and decoded pixels per file pixel.
    """
    from PIL import Image

    from napari_casper.io.convert import read_image_file

    path = Path(path)
    if reduce > 1 and path.suffix.lower() in {".jpg", ".jpeg"}:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # whole-slide H&E exceeds PIL's decompression-bomb guard
        try:
            with Image.open(path) as img:
                full_width = img.width
                img.draft("RGB", (img.width // reduce, img.height // reduce))
                rgb = img.convert("RGB")
                if rgb.width > -(-full_width // reduce):  # draft could not reduce: resize instead
                    rgb = rgb.reduce(reduce)
                return np.asarray(rgb), rgb.width / full_width
        except (OSError, ValueError) as err:
            raise CasperInputError(
                f"cannot read image {path} ({type(err).__name__}: {err}): use a jpg, png or tif file that opens in an image viewer."
            ) from err
        finally:
            Image.MAX_IMAGE_PIXELS = previous
    image = read_image_file(path)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = np.ascontiguousarray(image[:, :, :3])
    if image.dtype != np.uint8:
        raise CasperInputError(f"image {path} holds {image.dtype} pixels; an H&E image must be 8-bit RGB.")
    if reduce > 1:
        full_width = image.shape[1]
        image = np.asarray(Image.fromarray(image).reduce(reduce))
        return image, image.shape[1] / full_width
    return image, 1.0


def image_cache_key(path: str | Path, reduce: int) -> str:
    """Names an image file as it is now, decoded at ``1/reduce`` (path, modification time, size): the key of
    its patches and embeddings in the disk caches."""
    path = Path(path)
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_mtime_ns}:{stat.st_size}:{reduce}"


def choose_reduction(spot_diameter_px: float, patch_size: int) -> int:
    """Largest factor in 1, 2, 4, 8 that keeps the 1x window at least ``patch_size`` pixels."""
    factor = 1
    while factor < 8 and spot_diameter_px / (factor * 2) >= patch_size:
        factor *= 2
    return factor


def load_section(
    h5ad_path: str | Path,
    *,
    image_path: str | Path | None = None,
    spot_diameter_px: float | None = None,
    patch_size: int = 32,
    with_expression: bool = True,
) -> HistologySection:
    """Read an ``.h5ad`` with ``obsm["spatial"]`` and its H&E image into a :class:`HistologySection`.

    Parameters
    ----------
    h5ad_path
        AnnData file; ``obsm["spatial"]`` holds ``(x, y)`` pixels of the image.
    image_path
        The H&E image; default: ``uns["image"]`` resolved next to the ``.h5ad``.
    spot_diameter_px
        Spot diameter in full-resolution pixels; default: half the median nearest-neighbour
        spot distance (legacy ST and Visium both space spots at about twice their diameter).
    patch_size
        Patch side used later; large JPEGs are decoded at a reduced scale that keeps the spot
        at least this wide (coordinates and diameter are rescaled to match).
    with_expression
        Keep ``adata`` as the section's expression (``False`` for an H&E-only query).
    """
    import anndata as ad

    h5ad_path = Path(h5ad_path)
    adata = ad.read_h5ad(h5ad_path)
    if "spatial" not in adata.obsm:
        raise CasperInputError(
            f"{h5ad_path} has no obsm['spatial']; store spot centres as (x, y) image pixels there"
        )
    coords = np.asarray(adata.obsm["spatial"], dtype=np.float64)[:, :2]
    if image_path is None:
        name = adata.uns.get("image")
        if not name:
            raise CasperInputError(
                f"{h5ad_path} names no image in uns['image']; pass the H&E image path explicitly"
            )
        image_path = h5ad_path.parent / str(name)
    image_path = Path(image_path)
    if not image_path.exists():
        raise CasperInputError(f"H&E image {image_path} does not exist; pass the right image path")
    diameter = float(spot_diameter_px) if spot_diameter_px else estimate_spot_diameter(coords)
    reduce = choose_reduction(diameter, patch_size)
    image, scale = read_jpeg(image_path, reduce)
    return HistologySection(
        image=image,
        coords=coords * scale,
        spot_diameter_px=diameter * scale,
        expression=adata if with_expression else None,
        name=h5ad_path.stem,
        cache_key=image_cache_key(image_path, reduce),
    )
