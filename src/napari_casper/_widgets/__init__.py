"""napari dock widgets (thin: they only call the Qt-free core)."""
