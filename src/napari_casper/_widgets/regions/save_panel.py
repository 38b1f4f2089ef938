"""Regions widget, part 3: save regions into a SpatialData store (versioned) and load them back."""

from __future__ import annotations

import os
from pathlib import Path

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QWidget,
)

from napari_casper._widgets.common.first_paint import reveal_later
from napari_casper._widgets.regions.layers import spot_diameter
from napari_casper.errors import CasperInputError
from napari_casper.io.elements import METADATA_KEY


def saved_region_names(store: Path) -> list[str]:
    """Names of the polygon elements (regions) in the store at ``store`` ([] when there is no store yet)."""
    from napari_casper.io.stores import is_spatialdata_store, read_spatialdata
    from napari_casper.regions import list_region_elements

    return list_region_elements(read_spatialdata(store)) if is_spatialdata_store(store) else []


def folder_writable(folder: Path) -> bool:
    """True when a new store can be created in ``folder``."""
    return folder.is_dir() and os.access(folder, os.W_OK)


class SavePanel(QGroupBox):
    """Store path, element name, overwrite; Save; the store's saved regions, Refresh and Load."""

    def __init__(self, host: QWidget):
        super().__init__("Save / load (SpatialData)")
        self.host = host
        self.last_saved = None
        self.store_edit = QLineEdit()
        self.store_edit.setPlaceholderText("store.zarr (from the spots' source)")
        self.store_edit.setToolTip("the SpatialData store the regions are saved into (created from the open data if missing)")
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("next free: regions, regions_2, ...")
        self.name_edit.setToolTip("element name; empty takes the next free version (regions, regions_2, ...)")
        self.overwrite_box = QCheckBox("overwrite that name")
        self.overwrite_box.setToolTip("replace an existing element of that name (otherwise it is refused)")
        self.save_button = QPushButton("Save regions")
        self.save_button.setToolTip("write the regions layer into the store (shapes + a table of classes, names, authors)")
        self.save_button.clicked.connect(lambda: host.runner.guard(self.save))
        self.load_combo = QComboBox()
        self.load_combo.setToolTip("regions (polygon elements) saved in the store")
        refresh, self.load_button = QPushButton("Refresh"), QPushButton("Load")
        self.refresh_button = refresh
        refresh.setToolTip("list the regions saved in the store")
        self.load_button.setToolTip("add the chosen saved regions as an editable Shapes layer")
        refresh.clicked.connect(lambda: host.runner.guard(self.refresh_saved_regions))
        self.load_button.clicked.connect(lambda: host.runner.guard(self.load, self.load_combo.currentText()))
        form = QFormLayout(self)
        form.addRow("store", self.store_edit)
        form.addRow("name", self.name_edit)
        form.addRow(self.overwrite_box)
        form.addRow(self.save_button)
        row = QHBoxLayout()
        row.addWidget(self.load_combo, 1)
        for w in (refresh, self.load_button):
            row.addWidget(w)
        form.addRow("saved", row)

    def default_store(self) -> str:
        """The spots' store, or ``<name>.zarr`` beside the file they came from (an .h5ad); else "" (a packaged
        sample, whose source names no file: Save regions asks where to create the store)."""
        try:
            path = self.host.spots_layer().metadata[METADATA_KEY].get("path")
        except CasperInputError:
            return ""
        if not path or not Path(path).exists():
            return ""
        path = Path(path)
        return str(path if path.suffix == ".zarr" or path.is_dir() else path.with_suffix(".zarr"))

    def store(self) -> Path:
        return Path(self.store_edit.text().strip() or self.default_store())

    def store_for_saving(self, path: str | Path | None = None) -> Path | None:
        """The store to save into: the *store* box (proposed: beside the spots' source file).

        A store that does not exist yet is created, which needs a writable folder. When there is
        no store or its folder is missing or not writable (read-only data), a file dialog asks
        where to create it; ``path`` answers that dialog (tests, scripts). None: cancelled.
        """
        text = self.store_edit.text().strip() or self.default_store()
        if text and (Path(text).exists() or folder_writable(Path(text).parent)):
            return Path(text)
        if path is None:
            suggested = Path(text).name if text else "regions.zarr"
            path, _ = QFileDialog.getSaveFileName(
                self, "Save regions into a new SpatialData store", suggested, "Zarr (*.zarr)"
            )
            if not path:
                return None
        store = Path(path)
        if not (store.exists() or folder_writable(store.parent)):
            raise CasperInputError(
                f"cannot create the store {store}: its folder is missing or not writable. "
                "Choose a store path in a folder you can write to."
            )
        self.store_edit.setText(str(store))
        return store

    def save(self, name: str | None = None, overwrite: bool | None = None, path: str | Path | None = None) -> None:
        """Save the regions layer into the store (a new version unless a name + overwrite is given).

        When the store does not exist yet (data opened from an .h5ad) it is created from the
        open SpatialData object first; see :meth:`store_for_saving` for ``path``.
        """
        from napari_casper.io.store_writes import save_spatialdata
        from napari_casper.regions import save_regions

        regions = self.host.layer_regions()
        store = self.store_for_saving(path)
        if store is None:
            self.host.message.setText("not saved: no store chosen.")
            return
        name = name if name is not None else (self.name_edit.text().strip() or None)
        overwrite = self.overwrite_box.isChecked() if overwrite is None else overwrite
        sdata = self.host.spots_layer().metadata[METADATA_KEY]["sdata"]
        precedence = self.host.stats_panel.precedence_combo.currentData()
        self.host.message.setText(f"saving to {store} ...")

        def work():
            created = not store.exists()
            if created:
                save_spatialdata(sdata, store)
            try:
                spots = self.host.spot_context()  # each spot's region is saved beside the regions
                saved = save_regions(store, regions, name, overwrite=overwrite, spots=spots, precedence=precedence)
            except BaseException:
                if created:  # a store made for this save and left unusable is not left behind
                    import shutil

                    shutil.rmtree(store, ignore_errors=True)
                raise
            return created, saved, saved_region_names(store)

        def done(result):
            created, saved, names = result
            self.last_saved = saved
            self._show_saved(names, chosen=saved.shapes_name)  # the newest version, ready to load
            self.host.runner.say(saved.message() + (" (new store created from the open data)" if created else ""))

        self.host.runner.run(work, done)

    def refresh_saved_regions(self) -> None:
        """List the store's saved regions (read in the worker) in the *saved* box."""
        store = self.store()
        self.host.message.setText(f"listing the regions saved in {store} ...")

        def done(names):
            self._show_saved(names)
            self.host.message.setText(f"{len(names)} saved region set(s) in {store.name}: {', '.join(names) or 'none'}.")

        self.host.runner.run(saved_region_names, done, store)

    def _show_saved(self, names: list[str], chosen: str | None = None) -> None:
        current = chosen or self.load_combo.currentText()
        self.load_combo.clear()
        self.load_combo.addItems(names)
        if current in names:
            self.load_combo.setCurrentText(current)

    def load(self, name: str):
        """Add saved regions ``name`` from the store (on disk) as an editable Shapes layer."""
        from napari_casper.regions import load_regions

        if not name:
            raise CasperInputError("choose saved regions to load (press Refresh to list the store's regions).")
        host = self.host
        cs, store, diameter = host.spot_context().coordinate_system, self.store(), spot_diameter(host.spots_layer())
        host.message.setText(f"reading regions {name!r} from {store.name} ...")
        host.runner.run(lambda: load_regions(store, name, coordinate_system=cs), lambda regions: self._add_loaded(regions, name, diameter))

    def _add_loaded(self, regions, name: str, diameter: float):
        from napari_casper.display.regions import regions_layer_kwargs

        host, cs = self.host, regions.coordinate_system
        kwargs = regions_layer_kwargs(
            name, regions.affine, diameter, cs, classes=regions.palette.to_uns(), element=name
        )
        layer = host.viewer.add_shapes(**kwargs)  # the widget adopts it (legend, colours), then the shapes come in batches
        reveal_later(host.viewer, layer)  # its first paint in a turn of its own
        classes = ", ".join(sorted(set(regions.classes)))
        host.add_regions(
            regions, layer, then=lambda layer: host.runner.say(f"loaded {len(regions)} regions from {name!r} ({classes}).")
        )
        return layer
