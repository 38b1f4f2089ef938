"""Regions widget, part 1: the class legend (names and colours) and drawing in a class."""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QColorDialog,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_casper._widgets.regions.layers import is_regions_layer
from napari_casper.errors import CasperInputError


def _swatch(colour: str) -> QIcon:
    pixmap = QPixmap(14, 14)
    pixmap.fill(QColor(colour))
    return QIcon(pixmap)


class ClassesPanel(QGroupBox):
    """The legend list, add / colour / remove a class, new regions layer, set the class of shapes.

    ``changed`` carries the class names after every change of the legend.
    """

    changed = Signal(list)

    def __init__(self, host: QWidget):
        super().__init__("Region classes (legend)")
        self.host = host
        self.class_list = QListWidget()
        self.class_list.setMinimumHeight(110)
        self.class_list.setMaximumHeight(150)
        self.class_list.setToolTip("the legend: pick the class new shapes are drawn in")
        self.class_list.currentTextChanged.connect(self._class_chosen)
        self.class_name = QLineEdit()
        self.class_name.setPlaceholderText("new class name")
        self.class_name.setToolTip("name of a class to add to the legend (then press Add or Return)")
        add, colour, remove = QPushButton("Add"), QPushButton("Colour..."), QPushButton("Remove")
        self.add_button, self.colour_button, self.remove_button = add, colour, remove
        add.setToolTip("add the typed class to the legend")
        colour.setToolTip("choose the colour of the selected class")
        remove.setToolTip("remove the selected class (refused while shapes use it)")
        guard = host.runner.guard
        self.class_name.returnPressed.connect(lambda: guard(self.add_class, self.class_name.text()))
        add.clicked.connect(lambda: guard(self.add_class, self.class_name.text()))
        colour.clicked.connect(self._pick_colour)
        remove.clicked.connect(lambda: guard(self.remove_class, self.current_class))
        self.new_layer_button = QPushButton("New regions layer")
        self.new_layer_button.setToolTip("add an empty Shapes layer aligned with the spots; draw in it with napari's tools")
        self.new_layer_button.clicked.connect(lambda: guard(host.new_regions_layer))
        self.assign_button = QPushButton("Set class of selected shapes")
        self.assign_button.setToolTip("give the shapes selected in the regions layer the class chosen in the legend")
        self.assign_button.clicked.connect(lambda: guard(self.set_class_of_selected))
        row = QHBoxLayout()
        for w in (self.class_name, add, colour, remove):
            row.addWidget(w)
        box = QVBoxLayout(self)
        box.addWidget(self.class_list)
        box.addLayout(row)
        box.addWidget(self.new_layer_button)
        box.addWidget(self.assign_button)

    @property
    def classes(self):
        return self.host.classes

    @property
    def current_class(self) -> str:
        item = self.class_list.currentItem()
        return item.text() if item is not None else self.classes.names[0]

    def refresh(self) -> None:
        """Show the legend again after a change; regions layers are recoloured."""
        current = self.current_class
        names = self.classes.names
        self.class_list.blockSignals(True)
        self.class_list.clear()
        for name in names:
            self.class_list.addItem(QListWidgetItem(_swatch(self.classes.colour(name)), name))
        self.class_list.setCurrentRow(names.index(current) if current in names else 0)
        self.class_list.blockSignals(False)
        self.changed.emit(names)
        for layer in self.host.shapes_layers():
            if is_regions_layer(layer):
                self.host.recolour(layer)
        self._class_chosen(self.current_class)

    def _class_chosen(self, name: str) -> None:
        """New shapes take the chosen class (the layers' feature defaults)."""
        if not name or name not in self.classes:
            return
        for layer in self.host.shapes_layers():
            if "class" in layer.features:
                layer.feature_defaults["class"] = name

    def select_class(self, name: str) -> None:
        self.classes.colour(name)  # unknown class: a clear error
        self.class_list.setCurrentRow(self.classes.names.index(name))

    def add_class(self, name: str, colour=None) -> None:
        self.classes.add(name, colour)
        self.refresh()
        self.select_class(name.strip())
        self.class_name.clear()
        self.host.message.setText(f"class {name.strip()!r} added; new shapes are drawn in it.")

    def remove_class(self, name: str) -> None:
        in_use = [
            layer.name
            for layer in self.host.shapes_layers()
            if "class" in layer.features and name in set(layer.features["class"])
        ]
        if in_use:
            raise CasperInputError(
                f"class {name!r} is used by shapes in {in_use}: give those shapes another class first."
            )
        self.classes.remove(name)
        self.refresh()
        self.host.message.setText(f"class {name!r} removed from the legend.")

    def set_class_colour(self, name: str, colour) -> None:
        self.classes.set_colour(name, colour)
        self.refresh()
        self.host.message.setText(f"class {name!r} is now drawn in {self.classes.colour(name)}.")

    def _pick_colour(self) -> None:
        colour = QColorDialog.getColor(QColor(self.classes.colour(self.current_class)), self, "Class colour")
        if colour.isValid():
            self.host.runner.guard(self.set_class_colour, self.current_class, colour.name())

    def set_class_of_selected(self, cls: str | None = None) -> None:
        """Give the selected shapes of the regions layer class ``cls`` (default: the chosen class)."""
        cls = cls or self.current_class
        self.classes.colour(cls)
        layer = self.host.regions_layer()
        selected = sorted(layer.selected_data)
        if not selected:
            raise CasperInputError("no shape is selected: select shapes in the regions layer (select tool) first.")
        layer.features.loc[layer.features.index[selected], "class"] = cls
        self.host.recolour(layer)
        self.host.runner.say(f"{len(selected)} shape(s) set to class {cls!r}.")
        self.host.learn_panel.stroke_made()  # a stroke's class changed: learn again
