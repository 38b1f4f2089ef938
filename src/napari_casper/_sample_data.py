"""The packaged samples as napari layer data.

File > Open Sample > napari-casper opens them through the reader by their URIs (``napari.yaml``
``sample_data``; :func:`~napari_casper.io.store_kind.sample_uri`), so that napari's menu reads them in a
worker like any store (:mod:`napari_casper._widgets.common.background_open`). These functions give the
same layers in a script.
"""

from __future__ import annotations


def drosophila_sample():
    """Drosophila embryo atlas (BDTNP) over a rendered embryo, with the scRNA reference attached."""
    return _sample_layers("drosophila")


def mob_sample():
    """Mouse olfactory bulb section 1: H&E with 379 legacy-ST spots and their counts."""
    return _sample_layers("mob")


def _sample_layers(key: str) -> list[tuple]:
    from napari_casper.display.layers import read_layers
    from napari_casper.io.store_kind import sample_uri

    return read_layers(sample_uri(key))[0]
