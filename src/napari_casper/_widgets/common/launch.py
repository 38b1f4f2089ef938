"""Open a SpatialData store or spatial .h5ad in a napari window (``napari-casper view``)."""

from __future__ import annotations

from pathlib import Path

#: dock names accepted by ``--dock``, as the plugin's manifest names the widgets
DOCKS = {"casper": "CASPER imputation", "genes": "Genes", "regions": "Tumour regions", "histology": "Histology"}


def open_in_napari(path: Path, coordinate_system: str | None, docks: list[str], screenshot: Path | None) -> list[str]:
    """Show every element of ``path`` in ``coordinate_system`` (default: the data's), add the ``docks``;
    save a screenshot and close when ``screenshot`` is given, else run napari until the window closes.
    Returns the layer names."""
    import napari

    from napari_casper.display.layers import read_layers

    layers, note = read_layers(path, coordinate_system)
    if note:
        print(note)
    cs = layers[0][1]["metadata"]["napari_casper"]["coordinate_system"]
    viewer = napari.Viewer(title=f"{Path(path).name} ({cs})", show=True)
    for data, kwargs, kind in layers:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    for dock in docks:
        viewer.window.add_plugin_dock_widget("napari-casper", DOCKS[dock])
    names = [layer.name for layer in viewer.layers]
    if screenshot is not None:
        from PIL import Image
        from qtpy.QtWidgets import QApplication

        viewer.reset_view()
        for _ in range(5):
            QApplication.instance().processEvents()
        Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(screenshot)
        viewer.close()
    else:
        napari.run()
    return names
