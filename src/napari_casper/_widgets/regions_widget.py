"""The Regions dock widget: annotate tissue regions, suggest tumour from biomarkers, save, compare.

Everything it computes comes from :mod:`napari_casper.regions` (Qt-free). Shapes layers are
the editable form of a :class:`~napari_casper.regions.RegionSet`: each shape's class and name
live in the layer's ``features``; colours follow the class. Saving, region statistics and
differential expression run in napari worker threads; layers are only touched on the GUI thread.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QColorDialog,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_casper.errors import CasperInputError
from napari_casper.layers import METADATA_KEY, mean_scale
from napari_casper.regions import HER2_TUMOUR_MARKERS, RegionClasses, RegionSet, parse_gene_list
from napari_casper.regions.geometry import fill_names

REGIONS_KIND = "regions"
PREVIEW_NAME = "suggested regions (preview)"
FACE_ALPHA = 0.3
SLIDER_STEPS = 1000


def notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def notify_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)


def layer_affine(layer) -> np.ndarray:
    """3x3 (y, x) affine from the layer's data coordinates to world (scale, translate, rotate, affine)."""
    origin = np.asarray(layer.data_to_world(np.zeros(layer.ndim)), dtype=float)[-2:]
    columns = []
    for axis in (layer.ndim - 2, layer.ndim - 1):
        unit = np.zeros(layer.ndim)
        unit[axis] = 1.0
        columns.append(np.asarray(layer.data_to_world(unit), dtype=float)[-2:] - origin)
    matrix = np.eye(3)
    matrix[:2, 0], matrix[:2, 1], matrix[:2, 2] = columns[0], columns[1], origin
    return matrix


def edge_width(spots_layer, affine: np.ndarray, fraction: float = 1 / 8) -> float:
    """Edge width, in the data units of a shapes layer with ``affine``, of ``fraction`` of a spot's diameter.

    Points sizes are world units (napari does not scale them, #6649); shapes edges scale with the affine.
    """
    world = max(float(np.median(np.atleast_1d(spots_layer.size))) * fraction, 1e-9)
    return world / max(mean_scale(affine), 1e-12)


def _swatch(colour: str) -> QIcon:
    pixmap = QPixmap(14, 14)
    pixmap.fill(QColor(colour))
    return QIcon(pixmap)


def _fill_table(widget: QTableWidget, frame: pd.DataFrame, max_rows: int = 200) -> None:
    frame = frame.head(max_rows)
    widget.clear()
    widget.setRowCount(len(frame))
    widget.setColumnCount(frame.shape[1])
    widget.setHorizontalHeaderLabels([str(c) for c in frame.columns])
    for r, row in enumerate(frame.itertuples(index=False)):
        for c, value in enumerate(row):
            text = f"{value:.4g}" if isinstance(value, (float, np.floating)) else str(value)
            widget.setItem(r, c, QTableWidgetItem(text))
    widget.resizeColumnsToContents()


def _make_plot():
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    canvas = FigureCanvasQTAgg(Figure(figsize=(4.2, 2.2), tight_layout=True))
    canvas.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
    canvas.setFixedHeight(220)
    return canvas


class RegionsWidget(QWidget):
    """Annotate regions (tumour, stroma, ...), suggest tumour from biomarkers, save and compare them."""

    def __init__(self, napari_viewer, *, synchronous: bool = False):
        super().__init__()
        self.viewer = napari_viewer
        self.synchronous = synchronous  # tests may run worker jobs inline
        self.worker = None
        self.classes = RegionClasses()
        self.suggestion = None
        self.statistics: pd.DataFrame | None = None
        self.differential: pd.DataFrame | None = None
        self.last_saved = None
        self._contexts: dict = {}

        self.spots_combo = QComboBox()
        self.regions_combo = QComboBox()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        body = QWidget()
        layout = QVBoxLayout(body)
        source = QFormLayout()
        source.addRow("spots", self.spots_combo)
        source.addRow("regions layer", self.regions_combo)
        layout.addLayout(source)
        for group in (self._classes_group(), self._suggest_group(), self._save_group(), self._stats_group()):
            layout.addWidget(group)
        layout.addWidget(self.message)
        layout.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setWidget(body)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll)

        self.viewer.layers.events.inserted.connect(self._refresh_layer_lists)
        self.viewer.layers.events.removed.connect(self._refresh_layer_lists)
        self._refresh_layer_lists()
        self._refresh_class_list()

    # -- building the panels ---------------------------------------------------------------
    def _classes_group(self) -> QGroupBox:
        group = QGroupBox("Region classes (legend)")
        self.class_list = QListWidget()
        self.class_list.setMinimumHeight(110)
        self.class_list.setMaximumHeight(150)
        self.class_list.currentTextChanged.connect(self._class_chosen)
        self.class_name = QLineEdit()
        self.class_name.setPlaceholderText("new class name")
        add, colour, remove = QPushButton("Add"), QPushButton("Colour..."), QPushButton("Remove")
        add.clicked.connect(lambda: self._guard(self.add_class, self.class_name.text()))
        colour.clicked.connect(self._pick_colour)
        remove.clicked.connect(lambda: self._guard(self.remove_class, self.current_class))
        self.new_layer_button = QPushButton("New regions layer")
        self.new_layer_button.clicked.connect(lambda: self._guard(self.new_regions_layer))
        self.assign_button = QPushButton("Set class of selected shapes")
        self.assign_button.clicked.connect(lambda: self._guard(self.set_class_of_selected))
        row = QHBoxLayout()
        for w in (self.class_name, add, colour, remove):
            row.addWidget(w)
        box = QVBoxLayout(group)
        box.addWidget(self.class_list)
        box.addLayout(row)
        buttons = QHBoxLayout()
        buttons.addWidget(self.new_layer_button)
        buttons.addWidget(self.assign_button)
        box.addLayout(buttons)
        return group

    def _suggest_group(self) -> QGroupBox:
        group = QGroupBox("Suggest regions from biomarkers")
        self.genes_edit = QLineEdit(", ".join(HER2_TUMOUR_MARKERS))
        self.genes_edit.setToolTip(
            "any genes: table genes (symbols or ids in var), obs columns, or spots-layer features (imputed)"
        )
        self.smoothing = QDoubleSpinBox()
        self.smoothing.setRange(0.0, 1.0)
        self.smoothing.setSingleStep(0.1)
        self.smoothing.setValue(0.5)
        self.smoothing.setToolTip("weight of the neighbours' mean score (0: each spot alone)")
        self.suggest_class = QComboBox()
        self.score_button = QPushButton("Score and outline")
        self.score_button.clicked.connect(lambda: self._guard(self.compute_suggestion))
        self.threshold_slider = QSlider(Qt.Horizontal)
        self.threshold_slider.setRange(0, SLIDER_STEPS)
        self.threshold_slider.setEnabled(False)
        self.threshold_slider.valueChanged.connect(self._slider_moved)
        self.threshold_label = QLabel("threshold: score first (Otsu by default)")
        self.otsu_button = QPushButton("Otsu")
        self.otsu_button.clicked.connect(
            lambda: self.suggestion is not None and self.set_threshold(self.suggestion.otsu)
        )
        self.accept_button = QPushButton("Add outlines as regions")
        self.accept_button.clicked.connect(lambda: self._guard(self.accept_suggestion))
        form = QFormLayout(group)
        form.addRow("genes", self.genes_edit)
        form.addRow("smoothing", self.smoothing)
        form.addRow("class", self.suggest_class)
        form.addRow(self.score_button)
        slider = QHBoxLayout()
        slider.addWidget(self.threshold_slider)
        slider.addWidget(self.otsu_button)
        form.addRow("threshold", slider)
        form.addRow(self.threshold_label)
        form.addRow(self.accept_button)
        return group

    def _save_group(self) -> QGroupBox:
        group = QGroupBox("Save / load (SpatialData)")
        self.store_edit = QLineEdit()
        self.store_edit.setPlaceholderText("store.zarr (from the spots' source)")
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("next free version: regions, regions_2, ...")
        self.overwrite_box = QCheckBox("overwrite an element of that name")
        self.save_button = QPushButton("Save regions")
        self.save_button.clicked.connect(lambda: self._guard(self.save))
        self.load_combo = QComboBox()
        refresh, self.load_button = QPushButton("Refresh"), QPushButton("Load")
        refresh.clicked.connect(lambda: self._guard(self.refresh_saved_regions))
        self.load_button.clicked.connect(lambda: self._guard(self.load, self.load_combo.currentText()))
        form = QFormLayout(group)
        form.addRow("store", self.store_edit)
        form.addRow("name", self.name_edit)
        form.addRow(self.overwrite_box)
        form.addRow(self.save_button)
        row = QHBoxLayout()
        for w in (self.load_combo, refresh, self.load_button):
            row.addWidget(w)
        form.addRow("saved", row)
        return group

    def _stats_group(self) -> QGroupBox:
        group = QGroupBox("Compare regions")
        self.stats_button = QPushButton("Statistics + assign spots")
        self.stats_button.clicked.connect(lambda: self._guard(self.compute_statistics))
        self.de_combo = QComboBox()
        self.de_button = QPushButton("Differential genes vs rest")
        self.de_button.clicked.connect(lambda: self._guard(self.start_differential, self.de_combo.currentText()))
        self.export_button = QPushButton("Export CSV...")
        self.export_button.clicked.connect(self._pick_csv)
        self.stats_table = QTableWidget()
        self.stats_table.setMinimumHeight(150)
        self.de_table = QTableWidget()
        self.de_table.setMinimumHeight(120)
        self.plot = _make_plot()
        box = QVBoxLayout(group)
        box.addWidget(self.stats_button)
        box.addWidget(self.stats_table)
        row = QHBoxLayout()
        row.addWidget(self.de_combo)
        row.addWidget(self.de_button)
        box.addLayout(row)
        box.addWidget(self.de_table)
        box.addWidget(self.plot)
        box.addWidget(self.export_button)
        return group

    # -- plumbing --------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        self.message.setText(text)
        notify_info(text)

    def _fail(self, err: Exception) -> None:
        text = str(err) if isinstance(err, CasperInputError) else f"{type(err).__name__}: {err}"
        self.message.setText(text)
        notify_error(text)

    def _guard(self, function, *args):
        """Call ``function``; a failure becomes an error notification and the widget stays usable."""
        try:
            return function(*args)
        except Exception as err:  # noqa: BLE001
            self._fail(err)
            return None

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def _run(self, function, on_done) -> None:
        """Run ``function()`` in a worker thread (inline when ``synchronous``).

        ``on_done(result)`` runs on the GUI thread; errors become notifications.
        """
        if self.busy:
            raise CasperInputError("still working on the previous step: wait for it to finish.")
        for button in (self.save_button, self.de_button, self.stats_button):
            button.setEnabled(False)
        if self.synchronous:
            try:
                result = function()
            except Exception as err:  # noqa: BLE001
                self._fail(err)
            else:
                self._guard(on_done, result)
            finally:
                self._finished()
            return
        from napari.qt.threading import create_worker

        # handlers go in at creation: an "errored" connected later would not stop superqt re-raising the error
        self.worker = create_worker(
            function,
            _start_thread=False,
            _connect={
                "returned": lambda result: self._guard(on_done, result),
                "errored": self._fail,
                "finished": self._finished,
            },
        )
        self.worker.start()

    def _finished(self) -> None:
        self.worker = None
        for button in (self.save_button, self.de_button, self.stats_button):
            button.setEnabled(True)

    def wait(self, timeout_ms: int = 120_000) -> None:
        """Block (processing Qt events) until the running worker ends."""
        from qtpy.QtCore import QCoreApplication, QElapsedTimer

        timer = QElapsedTimer()
        timer.start()
        while self.worker is not None and timer.elapsed() < timeout_ms:
            QCoreApplication.processEvents()
            threading.Event().wait(0.01)

    # -- layers ----------------------------------------------------------------------------
    def _spots_layers(self) -> list:
        return [
            layer
            for layer in self.viewer.layers
            if type(layer).__name__ == "Points" and layer.metadata.get(METADATA_KEY, {}).get("kind") == "spots"
        ]

    def _shapes_layers(self) -> list:
        return [
            layer for layer in self.viewer.layers if type(layer).__name__ == "Shapes" and layer.name != PREVIEW_NAME
        ]

    def _refresh_layer_lists(self, *_) -> None:
        for combo, layers in ((self.spots_combo, self._spots_layers()), (self.regions_combo, self._shapes_layers())):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([layer.name for layer in layers])
            if current in [layer.name for layer in layers]:
                combo.setCurrentText(current)
            combo.blockSignals(False)
        if not self.store_edit.text():
            self.store_edit.setText(self._default_store())

    def spots_layer(self):
        name = self.spots_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise CasperInputError("no spots layer: open a SpatialData store or spatial .h5ad (File > Open) first.")
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

    def _spot_features(self) -> pd.DataFrame:
        """The spots layer's numeric features (e.g. imputed genes), indexed by spot instance id."""
        from napari_casper.layers import spot_positions

        layer = self.spots_layer()
        meta = layer.metadata[METADATA_KEY]
        ids = spot_positions(meta["sdata"], meta["element"])[2]
        features = layer.features.select_dtypes("number")
        if len(features) != len(ids):
            return pd.DataFrame(index=pd.Index(ids))
        return features.set_index(pd.Index(ids))

    def _set_spot_feature(self, column: str, values) -> None:
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
        layer = self.viewer.add_shapes(
            name=name,
            ndim=2,
            affine=layer_affine(spots),
            features=pd.DataFrame({"class": pd.Series(dtype=object), "name": pd.Series(dtype=object)}),
            edge_width=edge_width(spots, layer_affine(spots)),
            text={"string": "{class}", "color": "white", "size": 10},
            metadata={
                METADATA_KEY: {
                    "kind": REGIONS_KIND,
                    "coordinate_system": spots.metadata[METADATA_KEY]["coordinate_system"],
                }
            },
        )
        self._prepare_layer(layer)
        self.regions_combo.setCurrentText(layer.name)
        return layer

    def _prepare_layer(self, layer) -> None:
        for column, default in (("class", self.current_class), ("name", ""), ("author", ""), ("timestamp", "")):
            if column not in layer.features:
                layer.features[column] = pd.Series([default] * len(layer.data), dtype=object)
        layer.feature_defaults["class"] = self.current_class
        layer.feature_defaults["name"] = ""
        if not getattr(layer, "_casper_hooked", False):
            layer.events.data.connect(lambda event, layer=layer: self._shapes_changed(layer, event))
            layer._casper_hooked = True
        self._recolour(layer)

    def _shapes_changed(self, layer, event) -> None:
        if str(getattr(event, "action", "added")).lower().endswith("added"):
            self._recolour(layer)

    def _recolour(self, layer) -> None:
        if len(layer.data) == 0:
            return
        classes = [c if isinstance(c, str) and c else "other" for c in layer.features["class"]]
        for cls in classes:
            if cls not in self.classes:
                self.classes.add(cls)
                self._refresh_class_list()
        edges = np.array([self.classes.rgba(c) for c in classes])
        faces = edges.copy()
        faces[:, 3] = FACE_ALPHA
        layer.edge_color = edges
        layer.face_color = faces
        layer.refresh_text()

    # -- classes ---------------------------------------------------------------------------
    @property
    def current_class(self) -> str:
        item = self.class_list.currentItem() if hasattr(self, "class_list") else None
        return item.text() if item is not None else self.classes.names[0]

    def _refresh_class_list(self) -> None:
        current = self.current_class
        self.class_list.blockSignals(True)
        self.class_list.clear()
        for name in self.classes.names:
            self.class_list.addItem(QListWidgetItem(_swatch(self.classes.colour(name)), name))
        names = self.classes.names
        self.class_list.setCurrentRow(names.index(current) if current in names else 0)
        self.class_list.blockSignals(False)
        chosen = self.suggest_class.currentText() or "tumour"
        self.suggest_class.clear()
        self.suggest_class.addItems(names)
        self.suggest_class.setCurrentText(chosen if chosen in names else names[0])
        for layer in self._shapes_layers():
            if layer.metadata.get(METADATA_KEY, {}).get("kind") == REGIONS_KIND:
                self._recolour(layer)
        self._class_chosen(self.current_class)

    def _class_chosen(self, name: str) -> None:
        if not name or name not in self.classes:
            return
        for layer in self._shapes_layers():
            if "class" in layer.features:
                layer.feature_defaults["class"] = name

    def select_class(self, name: str) -> None:
        self.classes.colour(name)
        self.class_list.setCurrentRow(self.classes.names.index(name))

    def add_class(self, name: str, colour=None) -> None:
        self.classes.add(name, colour)
        self._refresh_class_list()
        self.select_class(name.strip())
        self.class_name.clear()

    def remove_class(self, name: str) -> None:
        in_use = [
            layer.name
            for layer in self._shapes_layers()
            if "class" in layer.features and name in set(layer.features["class"])
        ]
        if in_use:
            raise CasperInputError(
                f"class {name!r} is used by shapes in {in_use}: give those shapes another class first."
            )
        self.classes.remove(name)
        self._refresh_class_list()

    def set_class_colour(self, name: str, colour) -> None:
        self.classes.set_colour(name, colour)
        self._refresh_class_list()

    def _pick_colour(self) -> None:
        colour = QColorDialog.getColor(QColor(self.classes.colour(self.current_class)), self, "Class colour")
        if colour.isValid():
            self._guard(self.set_class_colour, self.current_class, colour.name())

    def set_class_of_selected(self, cls: str | None = None) -> None:
        """Give the selected shapes of the regions layer class ``cls`` (default: the chosen class)."""
        cls = cls or self.current_class
        self.classes.colour(cls)
        layer = self.regions_layer()
        selected = sorted(layer.selected_data)
        if not selected:
            raise CasperInputError("no shape is selected: select shapes in the regions layer (select tool) first.")
        features = layer.features.copy()
        features.loc[features.index[selected], "class"] = cls
        layer.features = features
        self._recolour(layer)
        self._say(f"{len(selected)} shape(s) set to class {cls!r}.")

    # -- regions <-> layers ----------------------------------------------------------------
    def layer_regions(self, layer=None) -> RegionSet:
        """The shapes of ``layer`` (default: the regions layer) as a :class:`RegionSet`."""
        layer = layer or self.regions_layer()
        if len(layer.data) == 0:
            raise CasperInputError(f"layer {layer.name!r} has no shapes: draw regions (or suggest them) first.")
        features = layer.features
        column = lambda key, default: [  # noqa: E731
            str(v) if isinstance(v, str) and v else default
            for v in features.get(key, pd.Series([None] * len(layer.data)))
        ]
        classes = column("class", "other")
        names = fill_names(column("name", ""), classes)
        if names != column("name", ""):  # new shapes got names: keep them on the layer
            features = features.copy()
            features["name"] = names
            layer.features = features
        cs = layer.metadata.get(METADATA_KEY, {}).get("coordinate_system") or self.spot_context().coordinate_system
        return RegionSet(
            list(layer.data),
            list(layer.shape_type),
            classes,
            names,
            layer_affine(layer),
            cs,
            self.classes,
            column("author", ""),
            column("timestamp", ""),
        )

    def add_regions(self, regions: RegionSet, layer=None):
        """Append ``regions`` to ``layer`` (default: the regions layer, created if missing) as editable shapes."""
        layer = layer or self.regions_layer(create=True)
        target = layer_affine(layer)
        if not np.allclose(target, regions.affine):  # re-express the vertices in this layer's data coordinates
            regions = RegionSet.from_world_polygons(
                regions.world_polygons(),
                regions.classes,
                affine=target,
                coordinate_system=regions.coordinate_system,
                palette=regions.palette,
                names=regions.names,
            )
        for cls in regions.palette.names:
            if cls not in self.classes:
                self.classes.add(cls, regions.palette.colour(cls))
        self._refresh_class_list()
        start = len(layer.data)
        layer.add(regions.vertices, shape_type=regions.shape_types)
        features = layer.features.copy()
        rows = features.index[start:]
        features.loc[rows, "class"] = regions.classes
        features.loc[rows, "name"] = regions.names
        features.loc[rows, "author"] = regions.authors or [""] * len(regions)
        features.loc[rows, "timestamp"] = regions.timestamps or [""] * len(regions)
        layer.features = features
        self._recolour(layer)
        return layer

    # -- auto-suggest ----------------------------------------------------------------------
    def compute_suggestion(self, genes: list[str] | None = None):
        """Score the genes, outline at Otsu's threshold, and show a preview layer.

        The smoothed score also becomes the spots layer's feature ``"biomarker score"`` (to colour by).
        """
        from napari_casper.regions import suggest_regions

        genes = genes or parse_gene_list(self.genes_edit.text())
        ctx, extra = self.spot_context(), self._spot_features()
        self.suggestion = suggest_regions(ctx, genes, smoothing=self.smoothing.value(), extra=extra)
        self._set_spot_feature(
            "biomarker score", ctx.to_element_order(self.suggestion.smoothed, extra.index).astype(float)
        )
        self.threshold_slider.setEnabled(True)
        self.set_threshold(self.suggestion.otsu)
        return self.suggestion

    def _slider_moved(self, step: int) -> None:
        if self.suggestion is None:
            return
        lo, hi = float(self.suggestion.smoothed.min()), float(self.suggestion.smoothed.max())
        self._guard(self._outline, lo + (hi - lo) * step / SLIDER_STEPS)

    def set_threshold(self, threshold: float) -> None:
        """Move the slider to ``threshold`` (on the smoothed score) and redraw the preview."""
        lo, hi = float(self.suggestion.smoothed.min()), float(self.suggestion.smoothed.max())
        self.threshold_slider.blockSignals(True)
        self.threshold_slider.setValue(int(round((threshold - lo) / max(hi - lo, 1e-12) * SLIDER_STEPS)))
        self.threshold_slider.blockSignals(False)
        self._outline(threshold)

    def _outline(self, threshold: float) -> None:
        self.suggestion = self.suggestion.at_threshold(threshold)
        s = self.suggestion
        self.threshold_label.setText(
            f"threshold {s.threshold:.3g} (Otsu {s.otsu:.3g}): {int(s.above.sum())}/{len(s.above)} spots above, "
            f"{len(s.polygons)} outline(s)"
        )
        spots = self.spots_layer()
        affine = layer_affine(spots)
        vertices = s.to_regions(affine=affine).vertices if s.polygons else []
        colour = self.classes.rgba(self.suggest_class.currentText() or "tumour")
        if PREVIEW_NAME in self.viewer.layers:
            preview = self.viewer.layers[PREVIEW_NAME]
            preview.data = []
            if vertices:
                preview.add(vertices, shape_type="polygon", edge_color=colour, face_color=[0, 0, 0, 0])
        else:
            self.viewer.add_shapes(
                vertices,
                shape_type="polygon",
                name=PREVIEW_NAME,
                affine=affine,
                edge_color=colour,
                face_color=[0, 0, 0, 0],
                edge_width=edge_width(spots, affine, 1 / 5),
            )

    def accept_suggestion(self) -> None:
        """Add the previewed outlines to the regions layer as editable shapes of the chosen class."""
        if self.suggestion is None:
            raise CasperInputError("nothing suggested yet: press 'Score and outline' first.")
        cls = self.suggest_class.currentText() or "tumour"
        regions = self.suggestion.to_regions(cls, palette=self.classes)
        layer = self.add_regions(regions)
        if PREVIEW_NAME in self.viewer.layers:
            self.viewer.layers.remove(PREVIEW_NAME)
        self._say(
            f"added {len(regions)} {cls} region(s) from {', '.join(self.suggestion.genes)} to {layer.name!r}; "
            "edit them freely."
        )

    # -- save / load -----------------------------------------------------------------------
    def _default_store(self) -> str:
        try:
            path = self.spots_layer().metadata[METADATA_KEY].get("path")
        except CasperInputError:
            return ""
        if not path:
            return ""
        path = Path(path)
        return str(path if path.suffix == ".zarr" or path.is_dir() else path.with_suffix(".zarr"))

    def save(self, name: str | None = None, overwrite: bool | None = None) -> None:
        """Save the regions layer into the store (a new version unless a name + overwrite is given).

        When the store does not exist yet (data opened from an .h5ad) it is created from the
        open SpatialData object first.
        """
        from napari_casper.io import save_spatialdata
        from napari_casper.regions import save_regions

        regions = self.layer_regions()
        store_text = self.store_edit.text().strip() or self._default_store()
        if not store_text:
            raise CasperInputError("no store to save to: type the path of a SpatialData .zarr store.")
        store = Path(store_text)
        if not store.exists() and not (store.parent.is_dir() and os.access(store.parent, os.W_OK)):
            raise CasperInputError(
                f"cannot create the store {store}: its folder is missing or not writable (e.g. read-only data). "
                "Type a store path in a folder you can write to."
            )
        name = name if name is not None else (self.name_edit.text().strip() or None)
        overwrite = self.overwrite_box.isChecked() if overwrite is None else overwrite
        sdata = self.spots_layer().metadata[METADATA_KEY]["sdata"]
        self.message.setText(f"saving to {store} ...")

        def work():
            created = not store.exists()
            if created:
                save_spatialdata(sdata, store)
            return created, save_regions(store, regions, name, overwrite=overwrite)

        def done(result):
            created, saved = result
            self.last_saved = saved
            self._say(saved.message() + (f" (new store created from the open data)" if created else ""))
            self.refresh_saved_regions()

        self._run(work, done)

    def refresh_saved_regions(self) -> list[str]:
        from napari_casper.io import is_spatialdata_store, read_spatialdata
        from napari_casper.regions import list_region_elements

        store = Path(self.store_edit.text().strip() or self._default_store())
        names = list_region_elements(read_spatialdata(store)) if is_spatialdata_store(store) else []
        self.load_combo.clear()
        self.load_combo.addItems(names)
        return names

    def load(self, name: str):
        """Add saved regions ``name`` from the store (on disk) as an editable Shapes layer."""
        from napari_casper.regions import load_regions

        if not name:
            raise CasperInputError("choose saved regions to load (press Refresh to list the store's regions).")
        cs = self.spot_context().coordinate_system
        regions = load_regions(self.store_edit.text().strip() or self._default_store(), name, coordinate_system=cs)
        layer = self.viewer.add_shapes(
            name=name,
            ndim=2,
            affine=regions.affine,
            text={"string": "{class}", "color": "white", "size": 10},
            edge_width=edge_width(self.spots_layer(), regions.affine),
            features=pd.DataFrame({c: pd.Series(dtype=object) for c in ("class", "name", "author", "timestamp")}),
            metadata={METADATA_KEY: {"kind": REGIONS_KIND, "coordinate_system": cs, "element": name}},
        )
        self._prepare_layer(layer)
        self.regions_combo.setCurrentText(layer.name)
        self.add_regions(regions, layer)
        self._say(f"loaded {len(regions)} regions from {name!r} ({', '.join(sorted(set(regions.classes)))}).")
        return layer

    # -- statistics ------------------------------------------------------------------------
    def compute_statistics(self) -> None:
        """Per-region statistics, and each spot's region class in the table (``obs["region_class"]``).

        Computed in a worker thread (thousands of regions over 100k spots take seconds); the table,
        plot and spot colours are updated on the GUI thread when it ends (:attr:`statistics`).
        """
        from napari_casper.regions import assign_spots_to_regions, region_statistics

        ctx, regions, extra = self.spot_context(), self.layer_regions(), self._spot_features()
        genes = parse_gene_list(self.genes_edit.text())

        def work():
            return region_statistics(ctx, regions, genes, extra=extra), assign_spots_to_regions(ctx, regions)

        def done(result):
            self.statistics, labels = result
            per_spot = ctx.to_element_order(labels.astype(str), extra.index)
            self._set_spot_feature("region_class", pd.Categorical(per_spot, categories=labels.cat.categories))
            outside = np.array([0.85, 0.85, 0.85, 1.0])
            self.spots_layer().face_color = np.array(
                [self.classes.rgba(c) if c in self.classes else outside for c in per_spot]
            )
            _fill_table(self.stats_table, self.statistics)
            self.de_combo.clear()
            self.de_combo.addItems(
                [f"class: {c}" for c in dict.fromkeys(regions.classes)] + [f"region: {n}" for n in regions.names]
            )
            self._draw_plot()
            counts = labels.value_counts()
            self._say(
                "spots per class: "
                + ", ".join(f"{k} {v}" for k, v in counts.items() if v)
                + " (table obs 'region_class')."
            )

        self.message.setText("computing region statistics ...")
        self._run(work, done)

    def start_differential(self, choice: str | None = None) -> None:
        """Rank genes inside the chosen class/region vs all other spots (in a worker thread)."""
        from napari_casper.regions import differential_genes, region_mask
        from napari_casper.regions.stats import check_comparable

        choice = choice or self.de_combo.currentText()
        if not choice:
            raise CasperInputError("compute the statistics first, then choose a class or region to compare.")
        if self.de_combo.findText(choice) >= 0:
            self.de_combo.setCurrentText(choice)
        kind, _, label = choice.partition(": ")
        ctx, regions = self.spot_context(), self.layer_regions()
        inside = region_mask(ctx, regions, **({"classes": [label]} if kind == "class" else {"names": [label]}))
        check_comparable(inside)  # fail here, at once, rather than in the worker
        self.message.setText(f"ranking genes inside {label} vs the rest ...")

        def done(frame):
            self.differential = frame
            self.differential.attrs["comparison"] = choice
            _fill_table(self.de_table, frame, max_rows=50)
            self._draw_plot()
            self._say(f"differential genes for {label}: top up {', '.join(map(str, frame['gene'][:5]))}.")

        self._run(lambda: differential_genes(ctx, inside), done)

    def _draw_plot(self) -> None:
        figure = self.plot.figure
        figure.clear()
        left, right = figure.subplots(1, 2)
        if self.statistics is not None:
            classes = self.statistics[self.statistics["level"].isin(["class", "outside"])]
            colours = [self.classes.colour(c) if c in self.classes else "#cccccc" for c in classes["name"]]
            left.bar(classes["name"].astype(str), classes["n_spots"], color=colours)
            left.set_title("spots per class", fontsize=8)
            left.tick_params(labelsize=7, axis="both")
            left.tick_params(axis="x", rotation=45)
        if self.differential is not None:
            top = self.differential.head(12)[::-1]
            extra = [c for c in top.columns if c not in ("gene", "score", "log2_fold_change", "pval", "pval_adj")]
            labels = [f"{g} ({e})" for g, e in zip(top["gene"], top[extra[0]])] if extra else top["gene"].astype(str)
            right.barh(labels, top["log2_fold_change"], color="#e6194b")
            right.set_title(f"top genes ({self.differential.attrs.get('comparison', '')})", fontsize=8)
            right.set_xlabel("log2 fold change", fontsize=7)
            right.tick_params(labelsize=6)
        else:
            right.axis("off")
        self.plot.draw_idle()

    def export_csv(self, path: str | Path) -> list[Path]:
        """Write the statistics (and differential genes, if computed) as CSV files."""
        from napari_casper.regions import export_csv

        if self.statistics is None:
            raise CasperInputError("no statistics yet: press 'Statistics + assign spots' first.")
        path = Path(path)
        written = [export_csv(self.statistics, path)]
        if self.differential is not None:
            written.append(export_csv(self.differential, path.with_name(f"{path.stem}_differential_genes.csv")))
        self._say("wrote " + ", ".join(map(str, written)))
        return written

    def _pick_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export region statistics", "region_statistics.csv", "CSV (*.csv)")
        if path:
            self._guard(self.export_csv, path)


__all__ = ["RegionsWidget"]
