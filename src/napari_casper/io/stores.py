"""Reading SpatialData, and the rules every write follows.

Reading: SpatialData ``.zarr`` stores, and ``.h5ad`` files with ``obsm["spatial"]`` (plus the
image named in ``uns["image"]`` or sitting next to the file with the same stem). Writing .h5ad
outputs atomically (never over an input) and the versioned names of new elements are here too;
writing elements into stores is :mod:`napari_casper.io.store_writes`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import anndata as ad

from napari_casper.errors import CasperInputError, CasperUsageError
from napari_casper.io.outputs import atomic_path, h5ad_size, require_free_space
from napari_casper.io.store_kind import ELEMENT_GROUPS, is_spatialdata_store  # noqa: F401 - re-exported

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def element_names_on_disk(store: str | Path, group: str = "tables") -> list[str]:
    """Names of the ``group`` elements of a store, from its folders (nothing is read)."""
    folder = Path(store) / group
    if not folder.is_dir():
        return []
    return sorted(
        p.name for p in folder.iterdir()
        if not p.name.startswith(".") and ((p / "zarr.json").is_file() or (p / ".zgroup").is_file())
    )


def read_spatialdata(path: str | Path):
    """Open a SpatialData ``.zarr`` store (lazily: images stay on disk as dask arrays)."""
    import spatialdata as sd

    path = Path(path)
    if not path.exists():
        raise CasperUsageError(f"{path} does not exist: check the path.")
    if not path.is_dir() or not is_spatialdata_store(path):
        raise CasperInputError(
            f"{path} is not a SpatialData store (no zarr root with SpatialData elements). Open a "
            "SpatialData .zarr folder, or an .h5ad with obsm['spatial'], or convert your data with "
            "napari_casper.io.convert.anndata_to_spatialdata(...).write(path)."
        )
    try:
        return sd.read_zarr(path)
    except Exception as err:  # noqa: BLE001 - any failure here means an unreadable store
        raise CasperInputError(f"cannot read SpatialData store {path} ({type(err).__name__}: {err}).") from err


def find_image_beside(path: Path, adata: ad.AnnData) -> Path | None:
    """The image for an h5ad: ``uns["image"]`` (relative to the file) or a same-stem image file."""
    named = adata.uns.get("image")
    if isinstance(named, str):
        candidate = (path.parent / named) if not Path(named).is_absolute() else Path(named)
        if not candidate.is_file():
            raise CasperInputError(
                f"{path.name} names image {named!r} in uns['image'] but {candidate} does not exist: put the "
                "image next to the .h5ad or remove uns['image']."
            )
        return candidate
    for suffix in IMAGE_SUFFIXES:
        candidate = path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def unreadable_h5ad(path: Path, err: BaseException, what: str = "") -> CasperInputError:
    """Why ``path`` could not be read as AnnData, in words: not HDF5 at all (a CSV, a zarr folder ...),
    truncated or damaged, or readable HDF5 that is not an AnnData file."""
    path = Path(path)
    label = f"{what}{path}"
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(HDF5_SIGNATURE))
    except OSError:
        head = b""
    if path.is_dir():
        return CasperInputError(f"{label} is a folder, not an .h5ad file: give the .h5ad file (a SpatialData .zarr store "
                                "is read by the commands and options that say so).")
    if head != HDF5_SIGNATURE:
        kind = f"a {path.suffix} file" if path.suffix else "a file without a suffix"
        return CasperInputError(
            f"{label} is not an .h5ad (AnnData/HDF5) file ({kind}, not HDF5 data): convert it first, e.g. "
            "anndata.read_csv(...).write_h5ad('x.h5ad') for a spots x genes CSV table."
        )
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if "truncated" in text or "eof" in text or "bad object header" in text or "Unable to synchronously open" in text:
        return CasperInputError(f"{label} is truncated or damaged ({text}): the file is incomplete; copy or export it again.")
    return CasperInputError(f"cannot read {label} as AnnData ({type(err).__name__}: {text}): write it again with anndata.")


def read_h5ad(path: Path, what: str = "") -> ad.AnnData:
    """``ad.read_h5ad`` with errors that name the file (``what`` prefixes the path)."""
    path = Path(path)
    if not path.exists():
        raise CasperUsageError(f"{what}{'file ' if what else ''}{path} does not exist: check the path.")
    try:
        return ad.read_h5ad(path)
    except Exception as err:  # noqa: BLE001 - any decoder failure means an unreadable file
        raise unreadable_h5ad(path, err, what) from err


def read_h5ad_spatial(path: str | Path, image: str | Path | None = None, **kwargs):
    """SpatialData from an ``.h5ad`` with ``obsm["spatial"]`` and its image, if any.

    ``kwargs`` go to :func:`napari_casper.io.convert.anndata_to_spatialdata` (``spot_diameter``,
    ``axes`` for 3-D coordinates, element names).
    """
    from napari_casper.io.convert import anndata_to_spatialdata

    path = Path(path)
    adata = read_h5ad(path)
    image_path = Path(image) if image is not None else find_image_beside(path, adata)
    if "spatial" in adata.obsm and adata.obsm["spatial"].shape[1] == 3 and "axes" not in kwargs:
        kwargs["axes"] = (0, 1)
        adata.obsm["spatial"] = adata.obsm["spatial"][:, :2]
    return anndata_to_spatialdata(adata, image_path, **kwargs)


def read_reference(path: str | Path) -> ad.AnnData:
    """An scRNA-seq reference (cells x genes) from an ``.h5ad`` file, with clear errors."""
    path = Path(path)
    reference = read_h5ad(path, "reference ")
    if reference.n_obs == 0 or reference.n_vars == 0:
        raise CasperInputError(f"reference {path} is empty ({reference.n_obs} cells x {reference.n_vars} genes).")
    return reference


def read_any(path: str | Path):
    """Dispatch on the path: SpatialData store or ``.h5ad``."""
    path = Path(path)
    if path.suffix == ".h5ad":
        return read_h5ad_spatial(path)
    return read_spatialdata(path)


def element_kind(sdata, name: str) -> str:
    """The group (``images``, ``shapes``, ``tables`` ...) that holds element ``name``."""
    for group in ELEMENT_GROUPS:
        if name in getattr(sdata, group):
            return group
    raise CasperInputError(f"no element named {name!r}; the object has {sorted(element_names(sdata))}.")


def element_names(sdata) -> set[str]:
    """The names of every element of ``sdata`` (images, labels, points, shapes, tables)."""
    return {name for group in ELEMENT_GROUPS for name in getattr(sdata, group)}


def refuse_input_as_output(output: str | Path, inputs, option: str = "--out") -> Path:
    """``output`` as a Path, or a :class:`CasperInputError` when it is one of the ``inputs`` files."""
    output = Path(output)
    for source in inputs:
        if source is None:
            continue
        source = Path(source)
        same = output.exists() and source.exists() and os.path.samefile(output, source)
        if same or output.resolve() == source.resolve():
            raise CasperUsageError(
                f"{option} {output} is an input file ({source}); writing there would destroy it. Choose another output path."
            )
    return output


def write_h5ad_atomic(adata: ad.AnnData, path: str | Path, *, inputs=()) -> Path:
    """Write ``adata`` to ``path`` through a temporary file in the same folder, renamed into place.

    A reader (or an interrupted run) never sees a half-written ``path``: an earlier file there
    stays intact until the new one is complete. ``inputs`` are files ``path`` must not be.
    """
    path = refuse_input_as_output(path, inputs)
    kept = "The earlier file there is intact." if path.exists() else ""
    with atomic_path(path, ".h5ad") as scratch:  # holds the output's lock; clears scratch of killed runs
        require_free_space(path, h5ad_size(adata), kept=kept)  # HDF5 may crash (SIGSEGV) on a disk that fills
        adata.write_h5ad(scratch)
    return path


def check_element_name(name: str) -> str:
    """``name`` if it is a valid element name (letters, digits, ``_``, ``-``); :class:`CasperInputError` otherwise."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise CasperInputError(f"invalid element name {name!r}: use letters, digits, '_' or '-'.")
    return name


def name_versions(base: str) -> Iterator[str]:
    """``base``, ``base_2``, ``base_3``, ...: the one rule for versioned element names."""
    yield check_element_name(base)
    version = 2
    while True:
        yield f"{base}_{version}"
        version += 1


def next_free_name(existing: list[str] | set[str], base: str) -> str:
    """The first of :func:`name_versions` of ``base`` not in ``existing`` (never an existing name)."""
    existing = set(existing)
    return next(name for name in name_versions(base) if name not in existing)
