"""Layout shared by the dock widgets: a vertically scrolling body filling the dock."""

from __future__ import annotations

from qtpy.QtWidgets import QScrollArea, QVBoxLayout, QWidget


def scrolled_body(owner: QWidget, parts: list) -> QScrollArea:
    """Stack ``parts`` (widgets or layouts) in a scroll area that fills ``owner``; returns the area."""
    body = QWidget()
    layout = QVBoxLayout(body)
    for part in parts:
        if isinstance(part, QWidget):
            layout.addWidget(part)
        else:
            layout.addLayout(part)
    layout.addStretch(1)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setWidget(body)
    outer = QVBoxLayout(owner)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    return scroll
