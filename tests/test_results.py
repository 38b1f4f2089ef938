"""Results tables: versioned atomic saving and reopening as the same layers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_casper.casper.results import ATTENTION_KEY, predictions_table, save_predictions
from napari_casper.display.layers import spatialdata_to_layers
from napari_casper.errors import CasperInputError
from napari_casper.io.samples import load_drosophila
from napari_casper.io.store_writes import save_spatialdata
from napari_casper.io.stores import next_free_name, read_spatialdata


@pytest.fixture(scope="module")
def drosophila_store(tmp_path_factory):
    return save_spatialdata(load_drosophila(), tmp_path_factory.mktemp("store") / "dros.zarr")


def atlas_values(genes):
    sdata = load_drosophila()
    atlas = sdata.tables["atlas"]
    return pd.DataFrame(atlas[:, genes].X, columns=genes), atlas.obs["spot_id"].to_numpy()


def test_next_free_name():
    assert next_free_name({"table"}, "casper_predictions") == "casper_predictions"
    assert next_free_name({"casper_predictions", "casper_predictions_2"}, "casper_predictions") == "casper_predictions_3"
    with pytest.raises(CasperInputError, match="invalid element name"):
        next_free_name(set(), "bad/name")


def test_save_and_reopen_shows_the_same_values(drosophila_store):
    genes = ["eve", "ftz"]
    values, ids = atlas_values(genes)
    rng = np.random.default_rng(0)
    attention = rng.dirichlet(np.ones(5), size=len(ids))
    order = rng.permutation(len(ids))  # rows need not follow the element's order
    table = predictions_table(
        "cells", ids[order], values.iloc[order].reset_index(drop=True), attention=attention[order],
        centroid_names=[f"c{i}" for i in range(5)], checkpoint="model.pt",
        centroid_colours=["#000000", "#111111", "#222222", "#333333", "#ff0000"],
    )
    first = save_predictions(drosophila_store, table)
    second = save_predictions(drosophila_store, table)
    assert (first, second) == ("casper_predictions", "casper_predictions_2")
    sdata = read_spatialdata(drosophila_store)
    assert sdata.tables["atlas"].n_vars == 84  # the measured table is untouched
    reopened = sdata.tables[first]
    np.testing.assert_allclose(reopened.obsm[ATTENTION_KEY], attention[order].astype(np.float32))
    assert reopened.uns["napari_casper"]["checkpoint"] == "model.pt"
    layers = {kw["name"]: (data, kw, kind) for data, kw, kind in spatialdata_to_layers(sdata)}
    eve_data, eve_kw, kind = layers["casper:eve"]
    assert kind == "points"
    np.testing.assert_allclose(eve_kw["features"]["value"], values["eve"], rtol=1e-6)
    dominant_kwargs = layers["casper dominant centroid"][1]
    dominant = dominant_kwargs["features"]["category"]
    assert (dominant.astype(str).to_numpy() == np.array([f"c{i}" for i in attention.argmax(axis=1)])).all()
    assert list(reopened.uns["casper_dominant_centroid_colors"]) == ["#000000", "#111111", "#222222", "#333333", "#ff0000"]
    red = attention.argmax(axis=1) == 4  # the colour saved for c4 is the colour drawn
    np.testing.assert_allclose(dominant_kwargs["face_color"][red], np.tile([1.0, 0, 0, 1], (red.sum(), 1)))
    # the measured table is still there, with its values
    np.testing.assert_allclose(np.asarray(sdata.tables["atlas"][:, "eve"].X).ravel(), values["eve"], rtol=1e-6)
    # the dominant centroid comes back with its saved colours and its on-canvas legend
    legend = layers["casper dominant centroid legend"][1]
    assert list(legend["features"]["label"]) == ["dominant centroid", *[f"c{i}" for i in range(5)], ""]


def test_bad_predictions():
    with pytest.raises(CasperInputError, match="no genes to save"):
        predictions_table("cells", np.arange(3), pd.DataFrame(index=range(3)))
    with pytest.raises(CasperInputError, match="2 prediction rows for 3 spots"):
        predictions_table("cells", np.arange(3), pd.DataFrame({"a": [1.0, 2.0]}))
