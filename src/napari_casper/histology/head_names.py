"""The names of the histology prediction heads, in a leaf module: the Histology dock lists them in
its menu without importing the engine (anndata, scikit-learn) on the GUI thread. They are
implemented in :mod:`napari_casper.histology.predict`."""

#: prediction heads, in the order they are tried
HEADS: tuple[str, ...] = ("ridge", "retrieval", "ensemble", "crossmodal")
