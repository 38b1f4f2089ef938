"""Large spot sets (> LARGE_SPOT_SET) open as a hidden Points layer + a raster overview."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp
from conftest import shared_path
from test_value_layers import sample_levels

from napari_casper.display.layers import LARGE_SPOT_SET, spatialdata_to_layers
from napari_casper.io.convert import anndata_to_spatialdata


def test_large_section_gets_a_total_counts_raster_and_hidden_points():
    xenium = ad.read_h5ad(shared_path("xenium", "xenium_mouse_brain.h5ad"))
    copies = int(np.ceil((LARGE_SPOT_SET + 1) / xenium.n_obs))
    xy = np.asarray(xenium.obsm["spatial"], dtype=float)[:, :2]
    width = np.ptp(xy[:, 0]) * 1.05
    tiled = ad.AnnData(sp.vstack([xenium.X] * copies, format="csr"), var=xenium.var.copy())
    tiled.obs_names = [f"c{i}" for i in range(tiled.n_obs)]
    tiled.obsm["spatial"] = np.concatenate([xy + [i * width, 0] for i in range(copies)])
    layers = spatialdata_to_layers(anndata_to_spatialdata(tiled, spot_diameter=10.0))
    kinds = {kwargs["name"]: (kind, kwargs) for _, kwargs, kind in layers}
    assert kinds["spots"][0] == "points" and kinds["spots"][1]["visible"] is False
    (overview,) = [layer for layer in layers if layer[1]["metadata"]["napari_casper"]["kind"] == "spots_overview"]
    levels, kwargs, kind = overview
    assert kind == "image" and "total counts" in kwargs["name"] and kwargs["multiscale"]
    assert kwargs["metadata"]["napari_casper"]["units"] == "log1p total counts per spot"
    # known truth at each cell centre: log1p of that cell's total counts
    expected = np.log1p(np.asarray(tiled.X.sum(axis=1)).ravel())
    shown = sample_levels(levels, kwargs["affine"], tiled.obsm["spatial"][:, ::-1])
    assert np.mean(np.isclose(shown, expected, rtol=1e-5)) > 0.95
