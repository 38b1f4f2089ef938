"""How the Histology widget shows a prediction: one gene at a time, its uncertainty beside the slide.

``histology:<gene>`` lies on the H&E (the image layer's own transform); ``histology
uncertainty:<gene>`` is drawn to the right of the slide (:func:`~.slide.beside`), so showing it
never covers the prediction. One prediction layer (and one uncertainty layer) per image layer:
choosing another gene renames the layer and swaps its values in place. A new layer costs the GUI
thread its first draw (vispy builds its shaders: measured 0.3-1 s with software OpenGL on loaded
cores), so layers are made once, not once per gene.
"""

from __future__ import annotations

from napari_casper._widgets.common.layer_sync import add_or_show
from napari_casper._widgets.histology.slide import beside
from napari_casper.io.elements import METADATA_KEY


def histology_prefixes() -> tuple[str, str]:
    from napari_casper.display.value_layers import gene_layer_name, uncertainty_layer_name

    return gene_layer_name("", "histology"), uncertainty_layer_name("", "histology")


def _show(viewer, layer_tuple: tuple):
    """:func:`~napari_casper._widgets.common.layer_sync.add_or_show`, but a Points layer whose spot count changed is resized in place first.

    ``add_or_update`` replaces such a layer, and napari runs a full ``gc.collect()`` when a layer is
    removed: measured 0.7-1.1 s on the GUI thread with torch loaded. Leaving the feature-coloured
    mode while the size changes avoids napari's IndexError on shrinking.
    """
    data, kwargs, kind = layer_tuple
    existing = viewer.layers[kwargs["name"]] if kwargs["name"] in viewer.layers else None
    if kind == "points" and type(existing).__name__ == "Points" and len(existing.data) != len(data):
        existing.face_color = "white"
        existing.data = data
        existing.size = kwargs["size"]
        existing.features = kwargs["features"]
        existing.face_colormap = kwargs["face_colormap"]
        existing.face_color = kwargs["face_color"]
    return add_or_show(viewer, layer_tuple)


def _take_over(viewer, image: str, name: str, beside_slide: bool) -> None:
    """Rename this image's prediction (or uncertainty) layer to ``name``: it will show the new gene."""
    if name in viewer.layers:
        return
    prefix = histology_prefixes()[1 if beside_slide else 0]
    for layer in viewer.layers:
        meta = layer.metadata.get(METADATA_KEY, {})
        if layer.name.startswith(prefix) and meta.get("image") == image and bool(meta.get("beside")) == beside_slide:
            layer.name = name
            return


def show_prediction(viewer, job, gene: str, label: str, *, uncertainty: bool) -> tuple:
    """Show ``gene`` of ``job`` (a :class:`~.slide.SlidePrediction`) as ``histology:<label>``, and its
    uncertainty beside the slide when ``uncertainty``; every other histology layer is hidden.

    Returns ``(prediction layer, uncertainty layer or None)``.
    """
    from napari_casper.display.value_layers import gene_layer_name, uncertainty_layer_name, value_layer

    column = job.prediction.genes.index(gene)
    extra = {"gene": gene, "image": job.image_layer}
    _take_over(viewer, job.image_layer, gene_layer_name(label, "histology"), False)
    layer = _show(
        viewer, value_layer(job.geometry, job.prediction.expression[:, column], gene_layer_name(label, "histology"), extra_metadata=extra)
    )
    spread = None
    name = uncertainty_layer_name(label, "histology")
    if uncertainty:
        _take_over(viewer, job.image_layer, name, True)
        geometry = beside(job.geometry, job.slide.shape)
        spread = _show(
            viewer, value_layer(geometry, job.prediction.uncertainty[:, column], name, colormap="viridis", extra_metadata={**extra, "beside": True})
        )
    for shown in (layer, spread):
        if shown is not None:  # a layer taken over from another gene names its new gene
            shown.metadata.setdefault(METADATA_KEY, {}).update(extra)
    for other in viewer.layers:
        if other.name.startswith(histology_prefixes()) and other not in (layer, spread):
            other.visible = False
    return layer, spread
