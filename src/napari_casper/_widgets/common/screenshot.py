"""A napari screenshot of a saved store (``napari-casper run-sample``'s last step)."""

from __future__ import annotations

from pathlib import Path


def screenshot_store(store: Path, gene: str, path: Path) -> Path:
    """Open ``store`` in napari, show the predicted ``gene`` over the image, save a screenshot."""
    import napari
    from PIL import Image

    from napari_casper.display.value_layers import gene_layer_name

    viewer = napari.Viewer(show=True)
    try:
        viewer.open(str(store), plugin="napari-casper")
        target = gene_layer_name(gene, "casper")
        for layer in viewer.layers:
            layer.visible = layer.name == target or isinstance(layer, napari.layers.Image)
        viewer.layers.selection.active = viewer.layers[target]
        _colour_scale(viewer, viewer.layers[target])
        viewer.reset_view()
        Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(path)
    finally:
        viewer.close()
    return path


def _colour_scale(viewer, layer) -> None:
    """The layer's colour bar and units on the canvas, at once (the docks add them over a few event-loop
    turns to spread the glyph rendering; a screenshot taken right away needs them now)."""
    from napari_casper._widgets.common.layer_sync import colour_bar, units_lines, write_units

    bar = colour_bar(layer)
    if bar is not None:
        bar.visible = True
    write_units(viewer, units_lines(viewer))
