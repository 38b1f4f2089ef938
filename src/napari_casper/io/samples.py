"""Sample data shipped inside the package (no download, no ``../shared`` needed).

* :func:`load_drosophila` -- the BDTNP in situ atlas of the stage-6 Drosophila embryo (3039
  locations x 84 genes, microns, lateral projection) with a rendered embryo image, and the
  Karaiskos et al. 2017 scRNA-seq reference (1297 cells; the 2000 most variable genes plus all
  atlas genes and their case variants) as a second table. BSD-3 (novosparc).
* :func:`load_mob` -- a mouse olfactory bulb section (Stahl et al. 2016, legacy ST; section 1
  by default, all four are shipped): H&E, 379-438 spots, raw counts of 1000 genes (symbols as
  var_names, Ensembl ids in ``var["gene_ids"]``). MIT (STUtility). :func:`mob_files` gives the
  ``.h5ad`` + ``.jpg`` pair of a section, e.g. for ``napari-casper histology-train``.

``scripts/build_sample_data.py`` rebuilds the files from ``../shared/data``.

napari opens a sample (File > Open Sample) through the package's reader, by a URI that names it
(:func:`~napari_casper.io.store_kind.sample_uri`: ``napari-casper-sample://<key>.zarr``;
:func:`~napari_casper.io.store_kind.sample_key` recognises one); :func:`load_sample` loads it.
"""

from __future__ import annotations

from importlib.resources import files

import anndata as ad
import numpy as np

SAMPLE_DIR = files("napari_casper") / "sample_data"
#: microns per pixel of the rendered embryo image
EMBRYO_IMAGE_RESOLUTION = 2.0
#: the packaged mouse olfactory bulb sections (``<name>.h5ad`` + ``<name>.jpg``)
MOB_SECTIONS = ("MOB1", "MOB2", "MOB3", "MOB4")


def load_sample(key: str):
    """The packaged sample ``key`` as SpatialData (``drosophila``: :func:`load_drosophila`; ``mob``: :func:`load_mob`)."""
    loaders = {"drosophila": load_drosophila, "mob": load_mob}
    if key not in loaders:
        from napari_casper.errors import CasperInputError

        raise CasperInputError(f"no packaged sample named {key!r}: choose one of {', '.join(loaders)}")
    return loaders[key]()


def _path(name: str):
    return SAMPLE_DIR / name


def load_drosophila_atlas() -> ad.AnnData:
    """BDTNP atlas: 3039 locations x 84 genes; ``obsm["spatial"]`` = lateral (x, z) microns."""
    return ad.read_h5ad(_path("drosophila_atlas.h5ad"))


def load_drosophila_reference() -> ad.AnnData:
    """Karaiskos scRNA-seq reference, log-normalised: 1297 cells x (2000 HVGs + atlas genes and their case variants)."""
    return ad.read_h5ad(_path("drosophila_reference.h5ad"))


def render_embryo_image(coords: np.ndarray, resolution: float = EMBRYO_IMAGE_RESOLUTION, margin: float = 12.0):
    """Grey-scale picture of the embryo from its cell positions.

    Parameters
    ----------
    coords
        ``(n_cells, 2)`` (x, y) positions in microns.
    resolution
        Microns per pixel.

    Returns
    -------
    image : ``(height, width)`` uint8, bright tissue on a dark background
    origin : ``(x0, y0)`` micron position of pixel (0, 0)
    """
    from scipy.ndimage import gaussian_filter

    origin = coords.min(axis=0) - margin
    extent = coords.max(axis=0) + margin - origin
    width, height = np.ceil(extent / resolution).astype(int) + 1
    counts = np.zeros((height, width))
    cols = ((coords[:, 0] - origin[0]) / resolution).astype(int)
    rows = ((coords[:, 1] - origin[1]) / resolution).astype(int)
    np.add.at(counts, (rows, cols), 1.0)
    density = gaussian_filter(counts, sigma=4.0 / resolution)
    tissue = gaussian_filter((density > density.max() * 0.05).astype(float), sigma=1.5)
    image = (40 + 180 * tissue + 35 * density / density.max()).clip(0, 255).astype(np.uint8)
    return image, origin


def load_drosophila():
    """SpatialData: ``embryo`` image, ``cells`` spots, ``atlas`` table and ``reference`` table.

    The image is in its own pixels with a Scale + Translation transformation to the
    ``global`` coordinate system (microns), as a real microscope image would be.
    """
    import spatialdata as sd
    from spatialdata.models import TableModel
    from spatialdata.transformations import Scale, Sequence, Translation

    from napari_casper.io.convert import estimate_spot_diameter, image_element, spots_element, table_for_spots

    atlas = load_drosophila_atlas()
    coords = np.asarray(atlas.obsm["spatial"], dtype=float)
    picture, origin = render_embryo_image(coords)
    to_microns = Sequence(
        [
            Scale([EMBRYO_IMAGE_RESOLUTION, EMBRYO_IMAGE_RESOLUTION], axes=("x", "y")),
            Translation(list(origin), axes=("x", "y")),
        ]
    )
    reference = load_drosophila_reference()
    return sd.SpatialData(
        images={"embryo": image_element(picture[:, :, None], transformation=to_microns)},
        shapes={"cells": spots_element(coords, estimate_spot_diameter(coords, 1.0))},
        tables={"atlas": table_for_spots(atlas, "cells"), "reference": TableModel.parse(reference)},
    )


def mob_files(section: int | str = 1):
    """``(h5ad, jpg)`` resources of a packaged MOB section: ``1``..``4`` or ``"MOB1"``..``"MOB4"``.

    ``uns["image"]`` of the ``.h5ad`` names the ``.jpg`` beside it, so the ``.h5ad`` opens with its
    H&E in napari and in the histology commands (``str()`` of a resource is a file path in an
    ordinary installation).
    """
    name = section if isinstance(section, str) else f"MOB{section}"
    if name not in MOB_SECTIONS:
        from napari_casper.errors import CasperInputError

        raise CasperInputError(f"no packaged MOB section {section!r}; choose 1-4 or one of {MOB_SECTIONS}")
    return _path(f"{name}.h5ad"), _path(f"{name}.jpg")


def load_mob(section: int | str = 1):
    """SpatialData of a MOB section: ``image`` (H&E), ``spots`` (100 um circles), ``table`` (counts)."""
    from napari_casper.io.convert import anndata_to_spatialdata

    table, image = mob_files(section)
    mob = ad.read_h5ad(table)
    return anndata_to_spatialdata(mob, np.asarray(_read_jpg(image)))


def _read_jpg(resource):
    from PIL import Image

    with resource.open("rb") as handle, Image.open(handle) as img:
        return np.asarray(img.convert("RGB"))
