"""Bad input through the dock widgets, as a user clicks it: a clear message, no traceback, nothing changed.

Each case clicks the real button with a file dialog answering a bad file (a CSV, a truncated .h5ad,
text or a crafted pickle as a checkpoint, the other widget's checkpoint) and checks the four outcomes
of the CLI and API cases (tests/bad_input/test_bad_input_cli.py): the message names the problem,
it carries no traceback or torch advice, the widget kept its state (no model appears, the section list
is unchanged) and stays usable, and the input file is byte-identical afterwards.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from conftest import mob_path
from gui_checks import answer_file_dialog, click
from qtpy.QtWidgets import QFileDialog

pytestmark = pytest.mark.gui


class _Code:
    """An object no checkpoint may hold (loading it would unpickle code)."""


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bad_files(tmp_path) -> dict:
    text = tmp_path / "notes.pt"
    text.write_text("not a model\n")
    table = tmp_path / "counts.h5ad"
    table.write_text("spot,Penk,Nrgn\ns1,1,2\n")
    truncated = tmp_path / "MOB1.h5ad"
    truncated.write_bytes(mob_path("MOB1").read_bytes()[:4096])
    (tmp_path / "MOB1.jpg").write_bytes(mob_path("MOB1").with_suffix(".jpg").read_bytes())
    crafted = tmp_path / "crafted.pt"
    torch.save({"format": "napari-casper", "payload": _Code()}, crafted)
    return {"text": text, "csv": table, "truncated": truncated, "crafted": crafted}


def answer(qtbot, path) -> None:
    """The next file dialog answered with ``path`` in the real dialog, as a user picks a file."""
    answer_file_dialog(qtbot, path)


def assert_clear(message: str, *words: str) -> None:
    assert all(w in message for w in words), message
    assert "Traceback" not in message and "weights_only" not in message and 'File "' not in message, message


def open_dock(make_napari_viewer, qtbot, widget_class, sample: str | None = None):
    viewer = make_napari_viewer(show=True)
    if sample:
        viewer.open_sample("napari-casper", sample)
    widget = widget_class(viewer)
    viewer.window.add_dock_widget(widget)
    qtbot.waitUntil(widget.isVisible)  # the dock is shown, as a user finds it
    return viewer, widget


def try_file(qtbot, widget, button, path, *words: str) -> None:
    """Answer the file dialog with ``path``, click ``button``: a clear message, the file untouched, the widget usable."""
    before = digest(path)
    answer(qtbot, path)
    click(qtbot, button)
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)
    assert_clear(widget.message.text(), *words)
    assert digest(path) == before
    assert button.isEnabled()


def test_casper_load_checkpoint_of_bad_files(make_napari_viewer, qtbot, monkeypatch, tmp_path):
    from napari_casper._widgets.casper.widget import CasperWidget

    _, widget = open_dock(make_napari_viewer, qtbot, CasperWidget, "drosophila")
    files = bad_files(tmp_path)
    for kind, words in (("text", ["not"]), ("crafted", ["not a readable napari-casper checkpoint"]), ("csv", ["not"])):
        widget.message.setText("")
        try_file(qtbot, widget, widget.train_panel.load_button, files[kind], *words)
        assert widget.workflow is None and widget.train_panel.train_button.isEnabled(), kind  # no model appeared


def test_histology_bad_sections_and_checkpoints(make_napari_viewer, qtbot, monkeypatch, tmp_path):
    from napari_casper._widgets.histology.widget import HistologyWidget

    viewer, widget = open_dock(make_napari_viewer, qtbot, HistologyWidget)
    files = bad_files(tmp_path)
    layers = len(viewer.layers)
    for kind, words in (("csv", ["counts.h5ad"]), ("truncated", ["MOB1.h5ad"])):
        widget.message.setText("")
        try_file(qtbot, widget, widget.sections.add_h5ad, files[kind], *words)
        assert widget.sections.labels() == [] and len(viewer.layers) == layers, kind  # nothing half-added
    for kind in ("text", "crafted"):
        widget.message.setText("")
        try_file(qtbot, widget, widget.train_panel.load_button, files[kind], "not")
        assert widget.predictor is None and widget.train_panel.train_button.isEnabled(), kind
