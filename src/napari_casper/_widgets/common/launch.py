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

    from napari_casper.display.layers import not_shown_note, spatialdata_to_layers
    from napari_casper.io.elements import default_coordinate_system
    from napari_casper.io.stores import read_any

    sdata = read_any(path)
    skipped: list[tuple[str, str]] = []
    cs = coordinate_system or default_coordinate_system(sdata)
    layers = spatialdata_to_layers(sdata, cs, source=str(path), skipped=skipped)
    note = not_shown_note(Path(path).name, cs, list(sdata.coordinate_systems), skipped)
    if note:
        print(note)
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
