"""Compare with measured: measured / held-out prediction / difference of one gene, side by side, titled.

The three panels are value layers of the same spots shifted next to each other on the canvas,
along the tissue's short side (a wide tissue: one above the other; a tall one: left to right),
not napari's grid mode, which would tile every layer; each has its title above it. Everything
else is hidden while they are shown; :meth:`CompareView.restore` removes them and puts back
the layer visibility, grid mode and camera the user had.
"""

from __future__ import annotations

import numpy as np

from napari_casper._widgets.common.layer_sync import add_or_show

#: the titles layer of the comparison
TITLES_NAME = "compare titles"
#: gap between panels, as a fraction of the tissue's size
GAP = 0.12


def grid_of(viewer):
    """The viewer's grid settings (``viewer.canvas.grid`` since napari 0.9, else ``viewer.grid``)."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


def zscore(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return (values - values.mean()) / (values.std() or 1.0)


def panel_names(gene: str) -> list[str]:
    """Layer names of the three panels (each carries the gene)."""
    return [f"measured:{gene}", f"casper held-out:{gene}", f"difference:{gene}"]


class CompareView:
    """Shows one gene's comparison; remembers and restores the view it replaced."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.gene: str | None = None
        self._saved: dict | None = None

    @property
    def active(self) -> bool:
        return self._saved is not None

    @staticmethod
    def layer_tuples(geometry, gene: str, measured: np.ndarray, predicted: np.ndarray, score: float) -> list[tuple]:
        """The three panels and their titles as layer-data tuples (numpy only: build them in a worker)."""
        from napari_casper.display.legend import text_layer, world_extent
        from napari_casper.display.value_layers import value_layer

        low, high = world_extent(geometry.yx, geometry.affine)
        size = np.maximum(high - low, 1e-9)
        # along the tissue's short side, so each panel stays large (a wide embryo: one above the other)
        axis = 0 if size[1] >= size[0] else 1
        step = size[axis] * (1 + GAP + (0.15 if axis == 0 else 0.0))
        difference = zscore(predicted) - zscore(measured)
        bound = float(np.percentile(np.abs(difference), 99)) or 1.0
        titles = [f"measured {gene}", f"CASPER {gene} ({gene} hidden), PCC {score:.2f}", "difference (z-scores)"]
        tuples, title_yx = [], []
        for i, (name, vector) in enumerate(zip(panel_names(gene), [measured, predicted, difference])):
            shift = np.eye(3)
            shift[axis, 2] = i * step
            data, kwargs, kind = value_layer(geometry, vector, name, colormap="coolwarm" if i == 2 else "magma")
            kwargs["affine"] = shift @ np.asarray(kwargs["affine"], dtype=float)
            if i == 2:
                kwargs["face_contrast_limits" if kind == "points" else "contrast_limits"] = (-bound, bound)
            tuples.append((data, kwargs, kind))
            title_yx.append([low[0] + shift[0, 2] - 0.08 * size[0], low[1] + shift[1, 2] + size[1] / 2])
        tuples.append(text_layer(np.asarray(title_yx), titles, name=TITLES_NAME, text_size=12))
        return tuples

    def begin(self, gene: str) -> None:
        """Remember the view (visibility, grid, camera), then hide every layer for the comparison of ``gene``."""
        if self.active:
            self.restore()
        viewer = self.viewer
        grid = grid_of(viewer)
        self._saved = {
            "visible": {layer.name: layer.visible for layer in viewer.layers},
            "grid": bool(grid.enabled),
            "center": tuple(viewer.camera.center),
            "zoom": float(viewer.camera.zoom),
        }
        grid.enabled = False
        for layer in viewer.layers:
            layer.visible = False
        self.gene = gene

    def add(self, layer_tuple: tuple):
        """Add one panel (or the titles) and show it (a new layer in the next turn, after its first paint)."""
        return add_or_show(self.viewer, layer_tuple)  # an existing panel was hidden by begin()

    def finish(self) -> None:
        """Fit the three panels in the canvas, with a margin (the canvas's colour bars sit in a corner)."""
        self.viewer.reset_view()
        self.viewer.camera.zoom *= 0.85

    def restore(self) -> None:
        """Remove the comparison and put back the visibility, grid mode and camera from before."""
        if self._saved is None:
            return
        viewer = self.viewer
        for name in [*panel_names(self.gene or ""), TITLES_NAME]:
            if name in viewer.layers:
                viewer.layers.remove(name)
        for layer in viewer.layers:
            if layer.name in self._saved["visible"]:
                layer.visible = self._saved["visible"][layer.name]
        grid_of(viewer).enabled = self._saved["grid"]
        viewer.camera.center = self._saved["center"]
        viewer.camera.zoom = self._saved["zoom"]
        self._saved = None
        self.gene = None
