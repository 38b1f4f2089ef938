"""npe2 sample-data hooks (File > Open Sample > napari-casper)."""

from __future__ import annotations


def drosophila_sample():
    """Drosophila embryo atlas (BDTNP) over a rendered embryo, with the scRNA reference attached."""
    from napari_casper.display.layers import spatialdata_to_layers
    from napari_casper.io.samples import load_drosophila

    return spatialdata_to_layers(load_drosophila(), source="sample:drosophila")


def mob_sample():
    """Mouse olfactory bulb section 1: H&E with 379 legacy-ST spots and their counts."""
    from napari_casper.display.layers import spatialdata_to_layers
    from napari_casper.io.samples import load_mob

    return spatialdata_to_layers(load_mob(), source="sample:mob")
