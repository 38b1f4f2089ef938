"""What the Histology widget predicts on: the slide behind an image layer, and where results go."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_casper.io.elements import METADATA_KEY, mean_scale


@dataclass
class SlidePrediction:
    """What one Predict produced, and where it lies."""

    prediction: object  # HistologyPrediction; .coords are (x, y) image pixels
    slide: object  # SlideImage
    diameter_px: float
    image_layer: str
    source_spots: str | None = None
    source_ids: np.ndarray | None = None
    sdata: object = None
    store: str | None = None
    geometry: object = None
    saved: list = field(default_factory=list)


def slide_of(layer):
    """The :class:`SlideImage` behind an image layer (its SpatialData element, or its pixels)."""
    from napari_casper._widgets.common.layer_sync import layer_affine
    from napari_casper.histology.spatial import SlideImage, slide_image

    meta = layer.metadata.get(METADATA_KEY, {})
    if meta.get("sdata") is not None and meta.get("kind") == "image":
        return slide_image(meta["sdata"], meta["element"], meta.get("coordinate_system"), source=meta.get("path"))
    levels = list(layer.data) if layer.multiscale else [layer.data]
    return SlideImage(layer.name, levels[0], layer_affine(layer), levels=levels)


def slide_sdata(slide):
    """A SpatialData object holding just ``slide``'s image (for an image layer not from SpatialData)."""
    import spatialdata as sd

    from napari_casper.histology.store import element_transformations
    from napari_casper.io.convert import image_element

    transform = element_transformations(slide)[slide.coordinate_system]
    element = image_element(np.asarray(slide.data), transform, slide.coordinate_system)
    return sd.SpatialData(images={"image": element})


def spot_geometry(job: SlidePrediction, image_layer):
    """Where the predicted spots are drawn: image pixels through the image layer's own transform."""
    from napari_casper._widgets.common.layer_sync import layer_affine
    from napari_casper.display.value_layers import SpotGeometry

    affine = layer_affine(image_layer)  # image pixels -> world, exactly as the H&E is drawn
    coords = job.prediction.coords
    return SpotGeometry(
        yx=coords[:, ::-1].copy(),
        size=np.full(len(coords), job.diameter_px * mean_scale(affine)),
        affine=affine,
        element=job.source_spots or "virtual spots",
        coordinate_system=job.slide.coordinate_system,
    )


#: gap between the slide and the uncertainty drawn beside it, as a fraction of the slide's width
BESIDE_GAP = 0.05


def beside(geometry, slide_shape: tuple[int, int]):
    """``geometry`` moved to the right of the slide (its width plus :data:`BESIDE_GAP`, world units):
    where the uncertainty is drawn, so it never covers the prediction on the H&E."""
    from dataclasses import replace

    height, width = slide_shape
    corners = np.array([[0, 0, 1], [0, width, 1], [height, 0, 1], [height, width, 1]], dtype=float) @ geometry.affine.T
    shift = np.eye(3)
    shift[1, 2] = (corners[:, 1].max() - corners[:, 1].min()) * (1 + BESIDE_GAP)
    return replace(geometry, affine=shift @ geometry.affine)
