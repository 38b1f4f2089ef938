"""Build SpatialData objects from common inputs.

* :func:`anndata_to_spatialdata` -- an AnnData with ``obsm["spatial"]`` (plus an optional
  image) becomes spots (circles), a table annotating them and an image element.
* :func:`legacy_st_to_spatialdata` -- the legacy Spatial Transcriptomics layout (a counts
  table with ``{x}x{y}`` spot ids, a spot-detection table with pixel positions, and the H&E).
* :func:`read_image_file` -- jpg/png/tif(f) into a ``(y, x, c)`` array.

Coordinates of spots and image pixels share one coordinate system (``"global"`` unless
named otherwise) whose unit is the pixel of the full-resolution image, or microns when
there is no image and the coordinates are in microns.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from napari_casper.errors import CasperInputError

#: legacy ST spots are 100 um wide on a 200 um centre-to-centre grid; Visium 55 um on 100 um
LEGACY_ST_DIAMETER_TO_PITCH = 0.5
#: images larger than this (pixels, longest side) are stored as a multiscale pyramid
MULTISCALE_MIN_SIDE = 4096

SPOTS_REGION_KEY = "region"
SPOTS_INSTANCE_KEY = "spot_id"


def read_image_file(path: str | Path) -> np.ndarray:
    """Read an image file into a ``(y, x, c)`` array (``c`` = 3 for H&E).

    jpg/png go through Pillow (whole-slide jpgs exceed Pillow's decompression-bomb limit,
    which is lifted for files the user asked for explicitly); tif/tiff go through tifffile.
    Floating-point images (e.g. a float32 TIFF with values 0..1 or 0..255) become uint8 0..255.
    A truncated, damaged or non-image file is a :class:`CasperInputError` that says so.
    """
    path = Path(path)
    if not path.is_file():
        raise CasperInputError(f"image file {path} does not exist: check the path.")
    suffix = path.suffix.lower()
    try:
        if suffix in {".tif", ".tiff"}:
            import tifffile

            array = np.asarray(tifffile.imread(path))
        else:
            from PIL import Image

            previous = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                with Image.open(path) as img:
                    array = np.asarray(img.convert("RGB") if img.mode not in {"L", "RGB"} else img)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except CasperInputError:
        raise
    except Exception as err:  # noqa: BLE001 - any decoder failure means the same to the user
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "truncated" in text.lower():
            raise CasperInputError(f"image {path} is truncated ({text}): the file is incomplete; copy or export it again.") from err
        raise CasperInputError(
            f"cannot read image {path} ({type(err).__name__}: {text}): "
            "use a jpg, png or tif file that opens in an image viewer."
        ) from err
    if array.dtype.kind == "f":
        array = float_image_to_uint8(array, path)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise CasperInputError(
            f"image {path} has shape {array.shape}; expected (height, width) or (height, width, channels)."
        )
    return array


def float_image_to_uint8(array: np.ndarray, path) -> np.ndarray:
    """A floating-point image as uint8: values in 0..1 are scaled by 255, values up to 255 kept,
    larger ranges scaled to 0..255. NaN/inf pixels are an error (there is no colour to show)."""
    if not np.isfinite(array).all():
        raise CasperInputError(f"image {path} has NaN or infinite pixels: export it again with finite values (e.g. uint8).")
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if low < 0:
        raise CasperInputError(f"image {path} has negative pixel values (min {low:.3g}): export it as an RGB image (uint8).")
    factor = 255.0 if high <= 1.0 else (1.0 if high <= 255.0 else 255.0 / high)
    return np.clip(np.rint(array * factor), 0, 255).astype(np.uint8)


def estimate_spot_diameter(
    coords: np.ndarray, diameter_to_pitch: float = LEGACY_ST_DIAMETER_TO_PITCH, *, default: float | None = None
) -> float:
    """Spot diameter from the median nearest-neighbour distance of ``coords`` ``(n, 2)``.

    For gridded platforms the nearest-neighbour distance is the centre-to-centre pitch; the
    diameter is ``diameter_to_pitch`` times that (0.5 for legacy ST, 0.55 for Visium, about 1
    for segmented cells that touch; 1 gives the pitch itself).

    Fewer than 2 spots have no neighbour to measure: the result is then ``default`` when the
    caller gives one (e.g. a size to draw a lone point with), otherwise :class:`CasperInputError`.
    Spots that all share one position raise the same error.
    """
    from scipy.spatial import cKDTree

    coords = np.asarray(coords, dtype=float)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise CasperInputError(f"spot coordinates must be an (n_spots, 2) array of (x, y); got shape {coords.shape}.")
    if len(coords) < 2:
        if default is not None:
            return float(default)
        raise CasperInputError(
            f"cannot estimate the spot diameter from {len(coords)} spot(s): it needs at least 2. Pass the spot diameter explicitly."
        )
    if not np.isfinite(coords).all():
        raise CasperInputError("spot coordinates contain NaN or infinite values; drop those spots.")
    dist, _ = cKDTree(coords).query(coords, k=2)
    pitch = float(np.median(dist[:, 1]))
    if not np.isfinite(pitch) or pitch <= 0:
        raise CasperInputError(
            "cannot estimate the spot diameter: spots share coordinates. Pass the spot diameter explicitly."
        )
    return pitch * diameter_to_pitch


def spatial_coordinates(adata: ad.AnnData, key: str = "spatial", axes: Sequence[int] = (0, 1)) -> np.ndarray:
    """Validated ``(n_spots, 2)`` float coordinates from ``adata.obsm[key]``.

    ``axes`` picks the two columns to use (e.g. ``(0, 2)`` projects 3-D x/y/z onto x/z).
    """
    if key not in adata.obsm:
        raise CasperInputError(
            f"the table has no spatial coordinates (adata.obsm[{key!r}] is missing; obsm has "
            f"{sorted(adata.obsm.keys())}). Store the spot positions as an (n_spots, 2) array in "
            f"adata.obsm[{key!r}]."
        )
    coords = np.asarray(adata.obsm[key], dtype=float)
    if coords.ndim != 2 or coords.shape[0] != adata.n_obs or coords.shape[1] < 2:
        raise CasperInputError(
            f"adata.obsm[{key!r}] has shape {coords.shape}; expected (n_spots={adata.n_obs}, 2)."
        )
    if coords.shape[1] > 2 and tuple(axes) == (0, 1) and coords.shape[1] != 2:
        raise CasperInputError(
            f"adata.obsm[{key!r}] has {coords.shape[1]} columns (3-D coordinates); choose the two "
            "axes to project onto, e.g. axes=(0, 2)."
        )
    coords = coords[:, list(axes)]
    bad = ~np.isfinite(coords).all(axis=1)
    if bad.any():
        names = ", ".join(map(str, adata.obs_names[bad][:5]))
        raise CasperInputError(
            f"{int(bad.sum())} spots have NaN or infinite coordinates in obsm[{key!r}] (e.g. {names}): "
            "drop those spots or fix their coordinates."
        )
    return coords


def check_spots_inside_image(coords_xy: np.ndarray, shape_yx: tuple[int, int], what: str) -> None:
    """A :class:`CasperInputError` when fewer than 90 % of the ``(x, y)`` spots lie on the image."""
    height, width = shape_yx
    inside = (
        (coords_xy[:, 0] >= 0) & (coords_xy[:, 0] < width) & (coords_xy[:, 1] >= 0) & (coords_xy[:, 1] < height)
    )
    if inside.mean() < 0.9:
        lo, hi = coords_xy.min(axis=0), coords_xy.max(axis=0)
        raise CasperInputError(
            f"{what}: only {inside.mean():.0%} of the spots fall inside the image ({width} x {height} px); "
            f"spot x spans {lo[0]:.0f}..{hi[0]:.0f}, y {lo[1]:.0f}..{hi[1]:.0f}. The coordinates are "
            "probably in another resolution or coordinate system: rescale them to the image's pixels "
            "(e.g. multiply by the scale factor of that image) or choose the matching image."
        )


def image_element(image: np.ndarray, transformation=None, coordinate_system: str = "global"):
    """An Image2DModel element from a ``(y, x, c)`` array; large images become multiscale."""
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity

    data = np.moveaxis(np.asarray(image), -1, 0)  # (c, y, x)
    scale_factors = None
    longest = max(data.shape[1:])
    if longest > MULTISCALE_MIN_SIDE:
        levels = int(np.ceil(np.log2(longest / 1024)))
        scale_factors = [2] * max(levels, 1)
    c_coords = ["r", "g", "b"] if data.shape[0] == 3 else None
    return Image2DModel.parse(
        data,
        dims=("c", "y", "x"),
        c_coords=c_coords,
        scale_factors=scale_factors,
        chunks=(data.shape[0], 1024, 1024),
        transformations={coordinate_system: transformation if transformation is not None else Identity()},
    )


def spots_element(coords_xy: np.ndarray, diameter: float, transformation=None, coordinate_system: str = "global"):
    """A circles ShapesModel element (``radius`` = diameter / 2) at ``coords_xy`` ``(n, 2)``."""
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import Identity

    radius = np.full(len(coords_xy), float(diameter) / 2.0)
    return ShapesModel.parse(
        np.asarray(coords_xy, dtype=float),
        geometry=0,
        radius=radius,
        index=np.arange(len(coords_xy)),
        transformations={coordinate_system: transformation if transformation is not None else Identity()},
    )


def table_for_spots(adata: ad.AnnData, spots_name: str) -> ad.AnnData:
    """Copy of ``adata`` annotating ``spots_name`` row by row (instance ids 0..n-1)."""
    from spatialdata.models import TableModel

    table = adata.copy()
    for key in (SPOTS_REGION_KEY, SPOTS_INSTANCE_KEY):
        if key in table.obs:
            table.obs = table.obs.rename(columns={key: f"{key}_original"})
    table.obs[SPOTS_REGION_KEY] = pd.Categorical([spots_name] * table.n_obs)
    table.obs[SPOTS_INSTANCE_KEY] = np.arange(table.n_obs)
    table.uns.pop("spatialdata_attrs", None)
    return TableModel.parse(
        table, region=spots_name, region_key=SPOTS_REGION_KEY, instance_key=SPOTS_INSTANCE_KEY
    )


def anndata_to_spatialdata(
    adata: ad.AnnData,
    image: np.ndarray | str | Path | None = None,
    *,
    spot_diameter: float | None = None,
    spatial_key: str = "spatial",
    axes: Sequence[int] = (0, 1),
    coordinate_system: str = "global",
    image_name: str = "image",
    spots_name: str = "spots",
    table_name: str = "table",
):
    """SpatialData with spots, their table and (optionally) the image they were measured on.

    Parameters
    ----------
    adata
        Spots x genes; ``adata.obsm[spatial_key]`` holds the spot centres. When an image is
        given they must be ``(x, y)`` pixels of that image at full resolution.
    image
        ``(y, x, c)`` array or an image file path (jpg/png/tif), or None.
    spot_diameter
        Spot diameter in coordinate units; estimated from the spot grid when None.
    axes
        Columns of ``obsm[spatial_key]`` used as (x, y), e.g. ``(0, 2)`` for 3-D data.

    Returns
    -------
    spatialdata.SpatialData
        Elements ``image_name`` (if an image), ``spots_name`` (circles), ``table_name``.
    """
    import spatialdata as sd

    coords = spatial_coordinates(adata, spatial_key, axes)
    if adata.n_obs == 0:
        raise CasperInputError("the table has 0 spots: nothing to show or impute.")
    diameter = float(spot_diameter) if spot_diameter is not None else estimate_spot_diameter(coords)
    images = {}
    if image is not None:
        array = read_image_file(image) if isinstance(image, (str, Path)) else np.asarray(image)
        if array.ndim == 2:
            array = array[:, :, None]
        check_spots_inside_image(coords, array.shape[:2], "spots do not match the image")
        images[image_name] = image_element(array, coordinate_system=coordinate_system)
    spots = spots_element(coords, diameter, coordinate_system=coordinate_system)
    table = table_for_spots(adata, spots_name)
    return sd.SpatialData(images=images, shapes={spots_name: spots}, tables={table_name: table})


def _read_table_file(path: Path) -> pd.DataFrame:
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        return pd.read_csv(path, sep=sep, index_col=0)
    except Exception as err:  # noqa: BLE001
        raise CasperInputError(f"cannot read table {path} ({err}): expected a tab- or comma-separated file.") from err


def legacy_st_to_spatialdata(
    counts: str | Path | ad.AnnData,
    spot_positions: str | Path | pd.DataFrame,
    image: str | Path | np.ndarray | None = None,
    **kwargs,
):
    """SpatialData from the legacy Spatial Transcriptomics layout.

    Parameters
    ----------
    counts
        Spots x genes counts: an ``.h5ad`` or a tsv/csv whose index holds spot ids ``{x}x{y}``
        (array coordinates) and whose columns are genes.
    spot_positions
        The spot-detection table (tsv/csv or DataFrame) with columns ``x``, ``y`` (array
        coordinates) and ``pixel_x``, ``pixel_y`` (full-resolution image pixels); an optional
        ``selected`` column keeps only spots under tissue.
    image
        The H&E image (path or ``(y, x, c)`` array).
    kwargs
        Passed to :func:`anndata_to_spatialdata`.
    """
    if isinstance(counts, ad.AnnData):
        adata = counts.copy()
    else:
        counts = Path(counts)
        if counts.suffix == ".h5ad":
            adata = ad.read_h5ad(counts)
        else:
            frame = _read_table_file(counts)
            adata = ad.AnnData(frame.to_numpy(dtype=np.float32), obs=pd.DataFrame(index=frame.index.astype(str)),
                               var=pd.DataFrame(index=frame.columns.astype(str)))
    positions = spot_positions if isinstance(spot_positions, pd.DataFrame) else _read_table_file(Path(spot_positions)).reset_index()
    missing = {"x", "y", "pixel_x", "pixel_y"} - set(positions.columns)
    if missing:
        raise CasperInputError(
            f"the spot-position table lacks columns {sorted(missing)}; it needs x, y (array coordinates) "
            "and pixel_x, pixel_y (image pixels), as written by the ST spot detector."
        )
    if "selected" in positions:
        positions = positions[positions["selected"].astype(int) == 1]
    ids = positions["x"].round().astype(int).astype(str) + "x" + positions["y"].round().astype(int).astype(str)
    pixel = pd.DataFrame(positions[["pixel_x", "pixel_y"]].to_numpy(float), index=ids.to_numpy())
    pixel = pixel[~pixel.index.duplicated()]
    shared = adata.obs_names.intersection(pixel.index)
    if len(shared) == 0:
        raise CasperInputError(
            "no spot id of the counts table matches the spot-position table: counts must be indexed by "
            f"'{{x}}x{{y}}' array coordinates (e.g. {adata.obs_names[0]!r} vs {pixel.index[0]!r})."
        )
    adata = adata[shared].copy()
    adata.obsm["spatial"] = pixel.loc[shared].to_numpy()
    return anndata_to_spatialdata(adata, image, **kwargs)
