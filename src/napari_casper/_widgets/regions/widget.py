"""The Regions dock widget: annotate tissue regions, suggest tumour from biomarkers, save, compare.

Everything it computes comes from :mod:`napari_casper.regions` (Qt-free). Shapes layers are
the editable form of a :class:`~napari_casper.regions.RegionSet` (:mod:`.layers`).
The widget holds the spots / regions layer choice and composes its panels: opening a section,
classes (:mod:`.classes_panel`), suggestion (:mod:`.suggest_panel`), learning from a few strokes
(:mod:`.learn_panel`), save / load
(:mod:`.save_panel`) and statistics (:mod:`.stats_panel`). Saving, region
statistics and differential expression run through a :class:`BackgroundRunner`; layers are only
touched on the GUI thread.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QWidget

from napari_casper._widgets.common.background import BackgroundRunner, RunsInBackground, warm_up_in_background
from napari_casper._widgets.common.compile_ahead import compile_in_child, exercise_shapes, shapes_cache_is_warm
from napari_casper._widgets.common.layer_sync import layer_affine
from napari_casper._widgets.common.layout import scrolled_body
from napari_casper._widgets.regions.classes_panel import ClassesPanel
from napari_casper._widgets.regions.layers import (
    PREVIEW_NAMES,
    add_batch,
    append_regions,
    is_regions_layer,
    layer_to_regions,
    recolour,
    regions_layer_kwargs,
    saved_regions_note,
)
from napari_casper._widgets.regions.learn_panel import LearnPanel
from napari_casper._widgets.regions.open_panel import OpenPanel
from napari_casper._widgets.regions.save_panel import SavePanel
from napari_casper._widgets.regions.stats_panel import StatsPanel
from napari_casper._widgets.regions.suggest_panel import SuggestPanel
from napari_casper.errors import CasperInputError
from napari_casper.io.elements import METADATA_KEY
from napari_casper.regions import RegionClasses, RegionSet

if TYPE_CHECKING:
    import pandas as pd

#: the panels' controls, reachable on the widget itself (tests and docs scripts use them)
PANEL_CONTROLS = {
    "open_panel": ("open_button", "cancel_button", "progress"),
    "classes_panel": ("class_list", "class_name", "new_layer_button", "assign_button"),
    "suggest_panel": (
        "genes_edit",
        "smoothing",
        "suggest_class",
        "score_button",
        "threshold_slider",
        "threshold_label",
        "otsu_button",
        "accept_button",
    ),
    "learn_panel": ("learn_button", "follow_box", "learned_label", "accept_learned_button"),
    "save_panel": ("store_edit", "name_edit", "overwrite_box", "save_button", "load_combo", "load_button"),
    "stats_panel": (
        "precedence_combo",
        "stats_button",
        "de_combo",
        "de_button",
        "export_button",
        "stats_table",
        "de_table",
        "plot",
    ),
}


def warm_up_shapes() -> None:
    """Ready napari's shape triangulation and scanpy off the GUI thread, so that the first 'New
    regions layer' neither compiles nor loads their numba code: compiled ahead in a child process
    (~25 s on a fresh install, once; then cached on disk; scanpy's kernels too) unless the cache
    has them, then loaded here by a throwaway Shapes layer (about a second)."""
    if not shapes_cache_is_warm():  # a fresh install: compile in a child first (even niced, a child
        compile_in_child()  # beside the viewer slows its GUI thread, so only when needed)
    exercise_shapes()
    import matplotlib.backends.backend_agg  # noqa: F401 - the statistics worker draws its plot with it
    import scanpy  # noqa: F401 - scoring and differential genes import it (3-5 s)


class RegionsWidget(RunsInBackground, QWidget):
    """Annotate regions (tumour, stroma, ...), suggest tumour from biomarkers, save and compare them."""

    def __init__(self, napari_viewer, *, synchronous: bool = False):
        super().__init__()
        self.viewer = napari_viewer
        self.classes = RegionClasses()
        self._contexts: dict = {}
        self._hooked_layers: weakref.WeakSet = weakref.WeakSet()  # regions layers whose data events we follow
        self._adding = 0  # batches of shapes still to add (one per event-loop turn)
        self.spots_combo = QComboBox()
        self.spots_combo.setToolTip("the spots layer (with its table) the regions are compared with")
        self.regions_combo = QComboBox()
        self.regions_combo.setToolTip("the Shapes layer holding the regions: drawn, suggested or loaded")
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.runner = BackgroundRunner(
            self.message.setText,
            on_start=lambda: self._enable_work_buttons(False),
            on_finish=lambda: self._enable_work_buttons(True),
        )
        self.synchronous = synchronous  # tests may run worker jobs inline

        self.open_panel = OpenPanel(self)
        self.classes_panel = ClassesPanel(self)
        self.suggest_panel = SuggestPanel(self)
        self.learn_panel = LearnPanel(self)
        self.save_panel = SavePanel(self)
        self.stats_panel = StatsPanel(self)
        for panel, names in PANEL_CONTROLS.items():
            for name in names:
                setattr(self, name, getattr(getattr(self, panel), name))
        self.classes_panel.changed.connect(self.suggest_panel.set_classes)

        source = QFormLayout()
        source.addRow("spots", self.spots_combo)
        source.addRow("regions layer", self.regions_combo)
        panels = [
            self.open_panel,
            self.classes_panel,
            self.suggest_panel,
            self.learn_panel,
            self.save_panel,
            self.stats_panel,
        ]
        self.scroll = scrolled_body(self, [source, *panels, self.message])

        for combo in self.findChildren(QComboBox):  # long names must not widen the dock
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(12)
            combo.setMinimumWidth(100)
        self.viewer.layers.events.inserted.connect(self._refresh_layer_lists)
        self.viewer.layers.events.removed.connect(self._refresh_layer_lists)
        self._refresh_layer_lists()
        self.classes_panel.refresh()
        warm_up_in_background("regions", warm_up_shapes, viewer=self.viewer, after_paint_of=self)

    @property
    def busy(self) -> bool:
        """A worker runs, a section is opening, or shapes are still being added."""
        return self.runner.busy or self.open_panel.opening or self._adding > 0

    # -- background work (busy / synchronous come from RunsInBackground) -------------------
    def _guard(self, function, *args):
        """Call ``function``; a failure becomes an error notification and the widget stays usable."""
        return self.runner.guard(function, *args)

    def _enable_work_buttons(self, enabled: bool) -> None:
        waiting = {self.accept_button: self.suggestion is not None, self.accept_learned_button: self.learn_panel.learned is not None}
        for button in (self.save_button, self.de_button, self.stats_button, self.score_button, self.accept_button,
                       self.learn_button, self.accept_learned_button):  # fmt: skip
            button.setEnabled(enabled and waiting.get(button, True))

    # -- layers ----------------------------------------------------------------------------
    def _spots_layers(self) -> list:
        return [
            layer
            for layer in self.viewer.layers
            if type(layer).__name__ == "Points" and layer.metadata.get(METADATA_KEY, {}).get("kind") == "spots"
        ]

    def shapes_layers(self) -> list:
        return [
            layer for layer in self.viewer.layers if type(layer).__name__ == "Shapes" and layer.name not in PREVIEW_NAMES
        ]

    def _refresh_layer_lists(self, *_) -> None:
        for combo, layers in ((self.spots_combo, self._spots_layers()), (self.regions_combo, self.shapes_layers())):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([layer.name for layer in layers])
            if current in [layer.name for layer in layers]:
                combo.setCurrentText(current)
            combo.blockSignals(False)
        if not self.store_edit.text():
            self.store_edit.setText(self.save_panel.default_store())
        for layer in self.shapes_layers():
            if is_regions_layer(layer) and layer not in self._hooked_layers:
                self._adopt(layer)

    def _adopt(self, layer) -> None:
        """Take over a regions layer opened from a store: its saved legend joins the classes, it becomes the regions layer."""
        from napari_casper.regions import RegionClasses

        saved = RegionClasses.from_uns(layer.metadata.get(METADATA_KEY, {}).get("classes"))
        for name in saved.names if saved is not None else []:
            self.classes.add(name, saved.colour(name))
        self.prepare_layer(layer)
        self.classes_panel.refresh()
        self.regions_combo.setCurrentText(layer.name)
        if len(layer.data):
            self.message.setText(saved_regions_note(layer))

    def spots_layer(self):
        name = self.spots_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise CasperInputError("no spots layer: open a SpatialData store or spatial .h5ad with 'Open section...' first.")
        return self.viewer.layers[name]

    def regions_layer(self, create: bool = False):
        name = self.regions_combo.currentText()
        if name and name in self.viewer.layers:
            return self.viewer.layers[name]
        if create:
            return self.new_regions_layer()
        raise CasperInputError("no regions layer: press 'New regions layer' (or load saved regions) first.")

    def spot_context(self):
        """The :class:`~napari_casper.regions.SpotContext` of the chosen spots layer (cached)."""
        from napari_casper.regions import spot_context

        meta = self.spots_layer().metadata[METADATA_KEY]
        key = (id(meta["sdata"]), meta["element"], meta.get("table"), meta["coordinate_system"])
        if key not in self._contexts:
            self._contexts[key] = spot_context(
                meta["sdata"], meta["element"], meta.get("table"), meta["coordinate_system"]
            )
        return self._contexts[key]

    def spot_features(self) -> pd.DataFrame:
        """The spots layer's numeric features (e.g. imputed genes), indexed by spot instance id."""
        import pandas as pd

        from napari_casper.io.elements import spot_positions

        layer = self.spots_layer()
        meta = layer.metadata[METADATA_KEY]
        ids = spot_positions(meta["sdata"], meta["element"])[2]
        features = layer.features.select_dtypes("number")
        if len(features) != len(ids):
            return pd.DataFrame(index=pd.Index(ids))
        return features.set_index(pd.Index(ids))

    def set_spot_feature(self, column: str, values) -> None:
        """Put one column into the spots layer's features.

        Done in place: reassigning ``features`` re-derives a default for every column, ~6 s on a
        spots layer carrying 15k genes. napari colours by a feature through its default row, so
        that row gets the column too; the event tells the layer controls the columns changed.
        """
        spots = self.spots_layer()
        spots.features[column] = values
        spots.feature_defaults[column] = spots.features[column].iloc[:1].to_numpy()
        spots.events.features()

    def new_regions_layer(self, name: str = "regions"):
        """An empty Shapes layer aligned with the spots (same affine), drawing in the current class."""
        spots = self.spots_layer()
        cs = spots.metadata[METADATA_KEY]["coordinate_system"]
        layer = self.viewer.add_shapes(**regions_layer_kwargs(name, layer_affine(spots), spots, cs))
        self.prepare_layer(layer)
        self.regions_combo.setCurrentText(layer.name)
        self.message.setText(f"regions layer {layer.name!r} added: pick a class in the legend, then draw.")
        return layer

    def prepare_layer(self, layer) -> None:
        """Give a regions layer its feature columns and defaults, and recolour it when shapes are added."""
        import pandas as pd

        current = self.current_class
        for column, default in (("class", current), ("name", ""), ("author", ""), ("timestamp", ""), ("origin", "drawn")):
            if column not in layer.features:
                layer.features[column] = pd.Series([default] * len(layer.data), dtype=object)
        layer.feature_defaults["class"] = current
        layer.feature_defaults["name"] = ""
        layer.feature_defaults["origin"] = "drawn"  # what the user draws by hand
        if layer not in self._hooked_layers:
            layer.events.data.connect(lambda event, layer=layer: self._shapes_changed(layer, event))
            self._hooked_layers.add(layer)
        self.recolour(layer)

    def _shapes_changed(self, layer, event) -> None:
        if self._adding:
            return
        action = str(getattr(event, "action", "added")).lower()
        if action.endswith("added"):
            self.recolour(layer)
        if action.endswith(("added", "changed", "removed")) and layer.name == self.regions_combo.currentText():
            self.learn_panel.stroke_made()

    def recolour(self, layer) -> None:
        """Colour the shapes by class; classes met for the first time join the legend."""
        if recolour(layer, self.classes):
            self.classes_panel.refresh()

    def layer_regions(self, layer=None) -> RegionSet:
        """The shapes of ``layer`` (default: the regions layer) as a :class:`RegionSet`."""
        layer = layer or self.regions_layer()
        cs = layer.metadata.get(METADATA_KEY, {}).get("coordinate_system")
        if len(layer.data) and not cs:
            cs = self.spot_context().coordinate_system
        return layer_to_regions(layer, self.classes, cs)

    def add_regions(self, regions: RegionSet, layer=None, then=None):
        """Append ``regions`` to ``layer`` (default: the regions layer, created if missing) as editable shapes.

        Added a few shapes per event-loop turn (napari triangulates each polygon on the GUI thread);
        ``then(layer)`` is called when all are in.
        """
        layer = layer or self.regions_layer(create=True)
        for cls in regions.palette.names:
            if cls not in self.classes:
                self.classes.add(cls, regions.palette.colour(cls))
        self.classes_panel.refresh()
        batches = append_regions(layer, regions)
        self._adding += 1

        def next_batch():
            try:
                if batches:
                    add_batch(layer, *batches.pop(0))
                    self.message.setText(f"adding regions to {layer.name!r}: {len(layer.data)} shapes ...")
                    QTimer.singleShot(0, next_batch)
                    return
            except Exception as err:  # noqa: BLE001 - shown to the user, widget stays usable
                self._adding -= 1
                self.runner.fail(err)
                return
            self._adding -= 1
            self.recolour(layer)
            if then is not None:
                self.runner.guard(then, layer)

        next_batch()
        return layer

    # -- the panels' state and actions, as the widget's API --------------------------------
    @property
    def current_class(self) -> str:
        return self.classes_panel.current_class

    @property
    def suggestion(self):
        return self.suggest_panel.suggestion

    @property
    def statistics(self) -> pd.DataFrame | None:
        return self.stats_panel.statistics

    @property
    def differential(self) -> pd.DataFrame | None:
        return self.stats_panel.differential

    @property
    def last_saved(self):
        return self.save_panel.last_saved

    def select_class(self, name: str) -> None:
        self.classes_panel.select_class(name)

    def add_class(self, name: str, colour=None) -> None:
        self.classes_panel.add_class(name, colour)

    def remove_class(self, name: str) -> None:
        self.classes_panel.remove_class(name)

    def set_class_colour(self, name: str, colour) -> None:
        self.classes_panel.set_class_colour(name, colour)

    def set_class_of_selected(self, cls: str | None = None) -> None:
        self.classes_panel.set_class_of_selected(cls)

    def compute_suggestion(self, genes: list[str] | None = None) -> None:
        self.suggest_panel.compute_suggestion(genes)

    def set_threshold(self, threshold: float) -> None:
        self.suggest_panel.set_threshold(threshold)

    def accept_suggestion(self) -> None:
        self.suggest_panel.accept_suggestion()

    def save(self, name: str | None = None, overwrite: bool | None = None, path: str | Path | None = None) -> None:
        self.save_panel.save(name, overwrite, path)

    def refresh_saved_regions(self) -> None:
        self.save_panel.refresh_saved_regions()

    def load(self, name: str) -> None:
        self.save_panel.load(name)

    def compute_statistics(self) -> None:
        self.stats_panel.compute_statistics()

    def start_differential(self, choice: str | None = None) -> None:
        self.stats_panel.start_differential(choice)

    def export_csv(self, path: str | Path) -> list[Path]:
        return self.stats_panel.export_csv(path)
