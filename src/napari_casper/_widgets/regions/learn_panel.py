"""Regions widget: learn every spot's class from a few hand-drawn strokes (preview, update per stroke, accept).

The examples are the spots inside the regions the user drew by hand (origin "drawn"): a few small
regions per class. Features are computed once per section, then each update takes a fraction of a
second (:class:`napari_casper.regions.learn.StrokeLearner`), in the widget's worker.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QCheckBox, QFormLayout, QGroupBox, QLabel, QPushButton, QWidget

from napari_casper._widgets.common.layer_sync import layer_affine
from napari_casper._widgets.regions.layers import LEARNED_PREVIEW_NAME, edge_width, keep_active
from napari_casper._widgets.regions.suggest_panel import closed_paths
from napari_casper.errors import CasperInputError

#: wait this long after the last edit of the regions before learning again
STROKE_DEBOUNCE_MS = 300


class LearnPanel(QGroupBox):
    """"Learn from drawn regions", "update after each stroke", a per-class preview, "Add learned outlines"."""

    def __init__(self, host: QWidget):
        super().__init__("Learn regions from a few strokes")
        self.host = host
        self.learned = None
        self.learned_regions = None
        self._following = False  # learned once in this section: strokes keep it up to date
        self._learners: dict = {}
        self._pending = False
        self.hint = QLabel(
            "Draw a few small regions of each class (e.g. tumour, stroma), then learn the rest. Every spot gets one "
            "of the drawn classes: draw an 'other' region for tissue that is neither."
        )
        self.hint.setWordWrap(True)
        self.learn_button = QPushButton("Learn from drawn regions")
        self.learn_button.setToolTip(
            "label every spot from the spots inside your hand-drawn regions (expression + neighbourhood), "
            "and preview each class's outline"
        )
        self.learn_button.clicked.connect(lambda: host.runner.guard(self.learn))
        self.follow_box = QCheckBox("update after each stroke")
        self.follow_box.setChecked(True)
        self.follow_box.setToolTip("once learned, learn again whenever you draw, edit, reclassify or delete a region")
        self.follow_box.toggled.connect(lambda on: on and self.stroke_made())
        self.learned_label = QLabel("nothing learned yet")
        self.learned_label.setWordWrap(True)
        self.accept_learned_button = QPushButton("Add learned outlines as regions")
        self.accept_learned_button.setToolTip(
            "add the previewed outlines to the regions layer as editable shapes of their classes "
            "(your hand-drawn regions stay and win where they overlap)"
        )
        self.accept_learned_button.setEnabled(False)
        self.accept_learned_button.clicked.connect(lambda: host.runner.guard(self.accept))
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(STROKE_DEBOUNCE_MS)
        self._debounce.timeout.connect(lambda: host.runner.guard(self._relearn))
        form = QFormLayout(self)
        form.addRow(self.hint)
        form.addRow(self.learn_button)
        form.addRow(self.follow_box)
        form.addRow(self.learned_label)
        form.addRow(self.accept_learned_button)

    def _examples(self, ctx):
        """A function giving each spot the class of the hand-drawn region holding it (None outside them)."""
        from napari_casper.regions import DRAWN
        from napari_casper.regions.learn import region_examples

        regions = self.host.layer_regions()
        drawn = regions.subset([i for i, origin in enumerate(regions.origins) if origin == DRAWN])
        if not len(drawn):
            raise CasperInputError(
                "no hand-drawn region: draw a few small regions of each class in the regions layer first "
                "(the learned and suggested ones are not used as examples)."
            )
        return lambda: region_examples(ctx, drawn)

    def learn(self) -> None:
        """Learn every spot's class from the spots in the hand-drawn regions (worker), then preview the outlines."""
        from napari_casper.regions.learn import StrokeLearner

        host = self.host
        ctx = host.spot_context()
        try:
            examples = self._examples(ctx)
        except CasperInputError as err:  # e.g. every stroke deleted
            self._forget(f"not learned: {err}")
            raise
        affine = layer_affine(host.spots_layer())
        palette = host.classes.copy()
        learners = self._learners

        def work():
            try:
                if id(ctx) not in learners:
                    learners[id(ctx)] = StrokeLearner.from_spots(ctx)
                learned = learners[id(ctx)].learn(examples())
                # world coordinates to add as regions; the spots layer's data coordinates for the preview
                return learned, learned.to_regions(palette=palette), learned.to_regions(affine=affine, palette=palette)
            except CasperInputError as err:  # e.g. a stroke deleted: the preview must not outlive its examples
                return None, err, None  # (returned, not raised: superqt raises a returned exception itself)

        def done(result):
            if result[0] is None:
                self._forget(f"not learned: {result[1]}")
                raise result[1]
            self.learned, self.learned_regions, regions = result
            self._following = True
            self.accept_learned_button.setEnabled(True)
            self._show(regions)
            counts = ", ".join(f"{name} {n}" for name, n in self.learned.counts().items())
            self.learned_label.setText(
                f"from {int(self.learned.labelled.sum())} spots in your regions: {counts} spots; {len(regions)} outline(s)"
            )
            host.runner.say(f"learned {len(self.learned.classes)} classes ({counts} spots). Draw more to refine, "
                            "or 'Add learned outlines as regions'.")  # fmt: skip
            if self._pending:
                self._pending = False
                self._debounce.start()

        host.message.setText("learning every spot's class from your regions ...")
        host.runner.run(work, done)

    def _forget(self, why: str) -> None:
        """No valid learned classes any more: remove the preview, disable Accept, say why."""
        self.learned = self.learned_regions = None
        self.accept_learned_button.setEnabled(False)
        if LEARNED_PREVIEW_NAME in self.host.viewer.layers:
            self.host.viewer.layers.remove(LEARNED_PREVIEW_NAME)
        self.learned_label.setText(why)
        self._following = True  # a stroke that fixes it learns again

    def stroke_made(self) -> None:
        """A region was drawn, edited or removed: learn again shortly (if learning is on)."""
        if (self.learned is not None or self._following) and self.follow_box.isChecked():
            self._debounce.start()

    def _relearn(self) -> None:
        if self.host.runner.working:  # learn once the running job ends
            self._pending = True
            return
        self.learn()

    def _show(self, regions) -> None:
        viewer = self.host.viewer
        spots = self.host.spots_layer()
        affine = layer_affine(spots)
        width = edge_width(spots, affine, 1 / 5)
        if LEARNED_PREVIEW_NAME not in viewer.layers:
            keep_active(viewer, lambda: viewer.add_shapes(ndim=2, name=LEARNED_PREVIEW_NAME, affine=affine, edge_width=width))
        preview = viewer.layers[LEARNED_PREVIEW_NAME]
        preview.selected_data = set()
        preview.data = []
        colours = np.array([self.host.classes.rgba(name) for name in regions.classes])
        if len(regions):
            preview.add_paths(closed_paths(regions.vertices), edge_color=colours, edge_width=width)

    def accept(self) -> None:
        """Add the learned outlines to the regions layer as editable shapes ("suggested": hand-drawn ones win)."""
        if self.learned is None:
            raise CasperInputError("nothing learned yet: draw a few regions per class and press 'Learn from drawn regions'.")
        regions = self.learned_regions
        self.learned = self.learned_regions = None  # what is accepted is no longer a preview; drawing again does not relearn it
        self._following = False
        self.accept_learned_button.setEnabled(False)

        def added(layer):
            if LEARNED_PREVIEW_NAME in self.host.viewer.layers:
                self.host.viewer.layers.remove(LEARNED_PREVIEW_NAME)
            self.learned_label.setText("accepted. To refine, draw more regions and press 'Learn from drawn regions' again.")
            self.host.runner.say(
                f"added {len(regions)} learned region(s) to {layer.name!r}; edit them freely. "
                "Where they overlap hand-drawn regions, the hand-drawn ones win (the 'overlaps' box under Compare regions)."
            )

        self.host.add_regions(regions, then=added)
