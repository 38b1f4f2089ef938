"""The Regions dock's summary plot, drawn off the GUI thread.

Spots per class (bars in the class colours) and the top genes of the last comparison, rendered by
matplotlib's Agg backend to an RGBA array in the worker that computed them; the GUI thread only
shows the pixels. Drawn on the GUI thread, the plot's text layout took 0.3-0.5 s there each time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

#: the plot's size in pixels (width x height) at 100 dpi
SIZE = (420, 220)


def render_summary(
    statistics: pd.DataFrame | None, differential: pd.DataFrame | None, colours: dict[str, str], size=SIZE
) -> np.ndarray:
    """``(height, width, 4)`` uint8 RGBA of the summary plot; ``colours`` maps class names to colours."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    # fixed margins: tight_layout measures every label's text again on each draw
    figure.subplots_adjust(left=0.1, right=0.98, bottom=0.3, top=0.88, wspace=0.9)
    canvas = FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    if statistics is not None:
        classes = statistics[statistics["level"].isin(["class", "outside"])]
        left.bar(
            classes["name"].astype(str), classes["n_spots"], color=[colours.get(str(c), "#cccccc") for c in classes["name"]]
        )
        left.set_title("spots per class", fontsize=8)
        left.tick_params(labelsize=7, axis="both")
        left.tick_params(axis="x", rotation=45)
    else:
        left.axis("off")
    if differential is not None:
        top = differential.head(12)[::-1]
        extra = [c for c in top.columns if c not in ("gene", "score", "log2_fold_change", "pval", "pval_adj")]
        labels = [f"{g} ({e})" for g, e in zip(top["gene"], top[extra[0]])] if extra else top["gene"].astype(str)
        right.barh(labels, top["log2_fold_change"], color="#e6194b")
        right.set_title(f"top genes ({differential.attrs.get('comparison', '')})", fontsize=8)
        right.set_xlabel("log2 fold change", fontsize=7)
        right.tick_params(labelsize=6)
    else:
        right.axis("off")
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()
