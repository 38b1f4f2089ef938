"""CasperWorkflow (what the widget drives), headless, on the packaged Drosophila sample."""

from __future__ import annotations

import numpy as np
import pytest

from napari_casper.casper.workflow import CasperWorkflow
from napari_casper.display.layers import spots_layer
from napari_casper.errors import CasperInputError, CheckpointMismatchError
from napari_casper.io.samples import load_drosophila, load_mob

HELD_OUT = ["eve", "ftz", "hb", "Kr"]


def layer_meta(sdata, element):
    _, kwargs, _ = spots_layer(sdata, element, "global")
    return dict(kwargs["metadata"]["napari_casper"], sdata=sdata)


@pytest.fixture(scope="module")
def trained():
    sdata = load_drosophila()
    workflow = CasperWorkflow.from_layer_metadata(layer_meta(sdata, "cells"), sdata.tables["reference"], centroid_method="cells")
    truth = {g: workflow.measured(g) for g in HELD_OUT}
    workflow.st = workflow.st[:, [g for g in workflow.st.var_names if g not in HELD_OUT]].copy()
    workflow.train(max_steps=100, seed=0)
    return workflow, truth, sdata


def test_held_out_genes_are_predicted(trained):
    workflow, truth, _ = trained
    assert not set(HELD_OUT) & set(workflow.panel_genes)
    predictions = workflow.predict(HELD_OUT)
    pcc = [np.corrcoef(predictions[g], truth[g])[0, 1] for g in HELD_OUT]
    assert np.mean(pcc) > 0.4, pcc


def test_cell_centroid_attention_is_shown_per_cluster(trained):
    workflow, _, _ = trained
    raw = workflow.attention()
    assert raw.shape == (3039, 1297)
    grouped = workflow.display_attention()
    names = workflow.display_names
    assert 3 <= len(names) < 100 and all(n.startswith("leiden_") for n in names)
    np.testing.assert_allclose(grouped.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(grouped, raw @ workflow._attention_groups()[1], rtol=1e-5)
    per_head = workflow.display_attention(head=1)
    assert per_head.shape == grouped.shape and not np.allclose(per_head, grouped)
    with pytest.raises(CasperInputError, match="head 7 does not exist"):
        workflow.attention(head=7)


def test_results_table_and_checkpoint_round_trip(trained, tmp_path):
    workflow, _, sdata = trained
    workflow.predict(["eve"])
    table = workflow.results_table(["eve"])
    assert list(table.var_names) == ["eve"] and table.obsm["casper_attention"].shape[1] == len(workflow.display_names)
    path = workflow.save_checkpoint(tmp_path / "model.pt")
    again = CasperWorkflow.from_layer_metadata(layer_meta(sdata, "cells"), sdata.tables["reference"])
    again.st = workflow.st
    again.load_checkpoint(path)
    # bit-exact for the same request (a gene predicted in a batch of several may differ in
    # the last float bit, from BLAS blocking)
    np.testing.assert_array_equal(again.imputer.predict(["eve"]), workflow.imputer.predict(["eve"]))
    np.testing.assert_array_equal(again.attention(), workflow.attention())


def test_checkpoint_for_other_genes(trained, tmp_path):
    workflow, _, _ = trained
    path = workflow.save_checkpoint(tmp_path / "dros.pt")
    mob = load_mob()
    other = CasperWorkflow.from_layer_metadata(layer_meta(mob, "spots"), workflow.reference)
    with pytest.raises(CheckpointMismatchError, match="lacks"):
        other.load_checkpoint(path)
    assert other.imputer is None


def test_bad_inputs():
    sdata = load_drosophila()
    meta = layer_meta(sdata, "cells")
    with pytest.raises(CasperInputError, match="no scRNA-seq reference chosen"):
        CasperWorkflow.from_layer_metadata(meta, None)
    with pytest.raises(CasperInputError, match="has no column 'cell_type'"):
        CasperWorkflow.from_layer_metadata(meta, sdata.tables["reference"], label_key="cell_type")
    workflow = CasperWorkflow.from_layer_metadata(meta, sdata.tables["reference"])
    with pytest.raises(CasperInputError, match="train CASPER or load a checkpoint first"):
        workflow.predict(["eve"])
    with pytest.raises(CasperInputError, match="genes not in the reference"):
        workflow.imputer = object()
        workflow.predict(["not_a_gene"])
    with pytest.raises(CasperInputError, match="0 spots"):
        CasperWorkflow(st=workflow.st[:0], reference=sdata.tables["reference"])
