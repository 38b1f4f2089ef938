"""Open every napari-casper dock from the Plugins menu of a fresh viewer, as a user does (run as a script).

Run by ``test_dock_opening.py`` in a fresh interpreter: in the test process the modules are imported
already, so nothing a first opening costs would show. For each dock, in the order of ``DOCKS``, one
JSON line:

* ``heavy_imports``: the heavy modules the GUI thread imported while the dock was built, added and first
  painted (counted by the interpreter's ``import`` audit event, in the thread that imports);
* ``stall``: the longest time the event loop could not run from the menu click until the dock's
  background warm-up (imports, compilation) has started, which it does after the dock's first paint;
* ``warm_up_stall``: the same from then until the warm-up has finished (the next dock waits for it).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gui_checks import Heartbeat, menu_action  # noqa: E402

#: the docks as the Plugins menu names them
DOCKS = ("CASPER imputation", "Tumour regions", "Histology", "Genes")
#: modules a dock must leave to its warm-up thread or to the user's first action
HEAVY = ("pandas", "anndata", "spatialdata", "torch", "sklearn", "scanpy", "matplotlib", "dask", "xarray", "zarr")
#: the longest a dock may take to be built, added and first painted (seconds)
OPENING_LIMIT_S = 30
#: the longest a dock's warm-up may take (seconds)
WARM_UP_LIMIT_S = 120

_gui_thread = threading.get_ident()
_imported: list[str] = []
_recording = threading.Event()


def _on_audit(event: str, args) -> None:
    if event == "import" and _recording.is_set() and threading.get_ident() == _gui_thread:
        _imported.append(str(args[0]))


def _run_events(app, seconds: float, until=lambda: False) -> None:
    """Run the event loop for ``seconds``, or until ``until()`` holds."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end and not until():
        app.processEvents()
        time.sleep(0.005)


def main() -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_casper._widgets.common.activity import WARMING

    sys.addaudithook(_on_audit)
    viewer = napari.Viewer()
    app = QApplication.instance()
    _run_events(app, 3.0)  # the viewer's own first paints
    for title in DOCKS:
        action = menu_action(viewer, "Plugins", "napari-casper", title)
        _imported.clear()
        with Heartbeat() as opening:
            _recording.set()
            action.trigger()
            _run_events(app, OPENING_LIMIT_S, until=lambda: all(thread.ident is not None for thread in WARMING.values()))
            _recording.clear()
        with Heartbeat() as warming:
            _run_events(app, WARM_UP_LIMIT_S, until=lambda: all(thread.finished.is_set() for thread in WARMING.values()))
        heavy = sorted({name for name in _imported if name.split(".")[0] in HEAVY})
        print(json.dumps({"dock": title, "heavy_imports": heavy, "stall": round(opening.longest, 3),
                          "warm_up_stall": round(warming.longest, 3), "docks": len(viewer.window.dock_widgets),
                          "warm_ups": sorted(WARMING)}), flush=True)  # fmt: skip
    viewer.close()


if __name__ == "__main__":
    main()
