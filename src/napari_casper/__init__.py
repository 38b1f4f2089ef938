"""napari-casper: spatial-transcriptomics imputation and histology-to-expression, viewed in napari."""

__version__ = "0.1.0"
