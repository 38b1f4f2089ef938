"""napari's own Open (File > Open, drag and drop, Open Recent, Open Sample) of a store, .h5ad or sample, read in a worker.

napari calls every reader on the GUI thread and adds all its layers in one turn: a SpatialData store
with an image, spots and saved regions froze the viewer 0.7-1.3 s (2 cores, software OpenGL). When
napari's Qt open is what calls our reader, :func:`napari_open_viewer` names its viewer; the reader hands the
path to :func:`open_in_background` and returns napari's "read, no layers" value ``[(None,)]``. The
store is read in a worker (napari's activity dock shows "opening <name>"), and its layers are added
one per event-loop turn, each shown after its first paint (:mod:`first_paint`), as the docks add theirs.

Everywhere else (``viewer.open`` in a script or a test, ``napari store.zarr`` before the window
runs) the reader stays synchronous: a caller that gets the layers back can use them at once.
"""

from __future__ import annotations

import os
import sys

#: napari's Qt functions that open what the user chose (File > Open and Open Folder, drag and drop,
#: Open Recent; the dialog that asks which reader; File > Open Sample, whose samples are URIs our reader reads)
NAPARI_OPEN_FUNCTIONS = frozenset({"_qt_open", "handle_gui_reading", "open_with_dialog_choices", "_add_sample"})
#: how far up the call stack to look for them (napari's open path is ~10 frames deep)
STACK_DEPTH = 60
#: lazy image levels up to this size are computed in the worker (a 1600 x 1000 canvas shows one of ~4-20 MB)
SMALL_LEVEL_BYTES = 64 * 2**20
_runners: set = set()


def napari_open_viewer():
    """The viewer whose Qt open (a user's File > Open, drop or Open Recent) is calling, inside the running
    event loop (the window is up and a user waits on it); None for any other caller."""
    from qtpy.QtCore import QCoreApplication, QThread

    app = QCoreApplication.instance()
    if app is None or QThread.currentThread() is not app.thread() or QThread.currentThread().loopLevel() < 1:
        return None
    frame = sys._getframe(1)
    for _ in range(STACK_DEPTH):
        if frame is None:
            return None
        code = frame.f_code
        if code.co_name in NAPARI_OPEN_FUNCTIONS and f"napari{os.sep}_qt" in code.co_filename:
            qt_viewer = frame.f_locals.get("self") if code.co_name == "_qt_open" else frame.f_locals.get("qt_viewer")
            return getattr(qt_viewer, "viewer", None)
        frame = frame.f_back
    return None


def loaded(layer_tuple: tuple, cap_bytes: int = SMALL_LEVEL_BYTES) -> tuple:
    """``layer_tuple`` with the lazy (dask) image levels of at most ``cap_bytes`` computed here (in the worker).

    napari computes a lazy level on the GUI thread when it first draws it: the coarse levels of a
    whole-slide view (an .h5ad's H&E pyramid is built lazily from the full image: 4.3 s for HER2 C2)
    are computed here instead. Finer levels stay lazy: they are read when the user zooms in.
    """
    data, kwargs, kind = layer_tuple
    if kind != "image":
        return layer_tuple

    def small(level):
        return level.compute() if hasattr(level, "compute") and level.nbytes <= cap_bytes else level

    data = [small(level) for level in data] if kwargs.get("multiscale") else small(data)
    return data, kwargs, kind


#: modules napari imports on the GUI thread when it adds its first layers of a session (an Image layer's
#: histogram model); imported in the worker instead, they cost the GUI thread nothing
NAPARI_FIRST_LAYER_MODULES = ("napari.components.histogram",)


def warm_napari_imports() -> None:
    """Import :data:`NAPARI_FIRST_LAYER_MODULES` and build napari's unit registry here (a worker), then freeze the
    garbage collector's view of what is alive (as the docks' warm-up does): without it, the first full collections
    after reading a store scan everything napari, spatialdata and the data made so far (0.27 s seen on the GUI
    thread). Only an optimisation."""
    import contextlib
    import gc
    import importlib

    for name in NAPARI_FIRST_LAYER_MODULES:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    with contextlib.suppress(Exception):
        importlib.import_module("napari.utils._units").get_unit_registry()
    gc.freeze()  # no gc.collect() first: it would hold the GIL, and so the GUI thread, for as long


def opening() -> bool:
    """True while a store opened this way is read or its layers wait to be added and shown."""
    _runners.difference_update({runner for runner in _runners if not runner.busy})
    return bool(_runners)


def open_in_background(viewer, path) -> None:
    """Read ``path`` in a worker, then add its layers to ``viewer`` one per turn (errors as notifications)."""
    from napari.utils import progress

    from napari_casper._widgets.common.background import BackgroundRunner, notify_info
    from napari_casper.io.store_kind import display_name

    bar = progress(total=0, desc=f"opening {display_name(path)}")  # made here: a Qt object of the GUI thread
    runner = BackgroundRunner(lambda text: None, on_finish=bar.close)  # napari's notifications carry every message
    _runners.add(runner)

    def read(path):
        from napari.layers import Layer

        from napari_casper.display.layers import read_layers  # its imports (spatialdata, ...) here, off the GUI thread

        layers, note = read_layers(path)
        warm_napari_imports()
        return [Layer.create(*loaded(layer_tuple)) for layer_tuple in layers], note  # built here, as open_section does

    def done(result) -> None:
        from napari_casper._widgets.common.first_paint import append_shown_later

        layers, note = result
        runner.add_layers(lambda layer: append_shown_later(viewer, layer), layers, then=lambda _: notify_info(note) if note else None)

    runner.run(read, done, str(path))
