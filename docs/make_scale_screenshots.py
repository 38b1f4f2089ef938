"""Regenerate docs/images/scale_*.png: the Genes widget on Xenium data (real runs, under Xvfb).

``xvfb-run -a -s "-screen 0 1700x1100x24" .venv/bin/python docs/make_scale_screenshots.py``

1. the real Xenium mouse-brain section (``../shared/data/xenium``, 36,602 cells) with one gene;
2. the same section tiled 28 times (1,024,856 cells; the store written by
   ``benchmarks/bench_scale_display.py`` under /tmp/napari-casper-bench, created if missing).
"""

from __future__ import annotations

import sys
from pathlib import Path

from _screenshots import new_viewer, shot

from napari_casper._widgets.genes.widget import GenesWidget

ROOT = Path(__file__).resolve().parents[1]
XENIUM = ROOT.parent / "shared" / "data" / "xenium" / "xenium_mouse_brain.h5ad"


def show(path: Path, gene: str, name: str) -> None:
    viewer = new_viewer()
    viewer.open(str(path), plugin="napari-casper")
    widget = GenesWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Genes", area="right")
    widget.show_gene("Gad1")
    widget.wait()
    widget.show_gene(gene)  # a switch, so the status line shows its time
    viewer.reset_view()
    shot(viewer, name)
    viewer.close()


def main() -> None:
    show(XENIUM, "Slc17a7", "scale_1_xenium_genes.png")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_scale_display import store_for

    store, _ = store_for(28, Path("/tmp/napari-casper-bench"))
    show(store, "Slc17a7", "scale_2_million_cells.png")


if __name__ == "__main__":
    main()
