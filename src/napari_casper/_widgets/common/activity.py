"""Which napari-casper worker threads are running now, in this process (any widget).

Python work on the GUI thread made of many short calls (e.g. vispy rendering text glyphs) runs
~30x slower beside a busy Python worker: at every switch of the GIL it waits out the worker's turn.
Such work waits for :func:`workers_busy` to be False (:mod:`napari_casper._widgets.common.glyphs`).
The runners (:mod:`napari_casper._widgets.common.background`) register here.
"""

from __future__ import annotations

#: the runners with a worker thread running now
ACTIVE: set = set()
#: the docks' warm-up threads, by kind (one per process)
WARMING: dict = {}


def workers_busy() -> bool:
    """Whether a napari-casper worker thread or warm-up is running now (any widget)."""
    return bool(ACTIVE) or any(thread.is_alive() for thread in WARMING.values())
