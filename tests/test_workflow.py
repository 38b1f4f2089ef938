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
    workflow.train(max_steps=100, seed=0, reference_weight=0.0)
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
    # the cells' clusters travel in the checkpoint: loading needs no clustering, names agree
    assert again.groups_ready and again.display_names == workflow.display_names
    np.testing.assert_array_equal(again.display_attention(), workflow.display_attention())
    # the table carries the dominant centroid with scanpy-style colours
    dominant = table.obs["casper_dominant_centroid"]
    assert list(dominant.cat.categories) == workflow.display_names
    np.testing.assert_array_equal(dominant.cat.codes.to_numpy(), workflow.display_attention().argmax(axis=1))
    colours = table.uns["casper_dominant_centroid_colors"]
    assert len(colours) == len(workflow.display_names) and all(c.startswith("#") and len(c) == 7 for c in colours)


@pytest.mark.serial
def test_phases_are_named_and_clustering_is_cancelled_within_a_second():
    """status names every phase; a cancel while the child process clusters stops it and keeps the model."""
    import threading
    import time

    from napari_casper.casper.reference_groups import ClusterJob

    sdata = load_drosophila()
    reference = sdata.tables["reference"]
    workflow = CasperWorkflow.from_layer_metadata(layer_meta(sdata, "cells"), reference, leiden_resolution=0.45)
    cancel, phases, stamps = threading.Event(), [], {}

    def status(text):
        phases.append(text)
        if text == "clustering the reference":
            stamps["asked"] = time.perf_counter()
            cancel.set()

    workflow.train(max_steps=20, steps_per_epoch=10, status=status, cancel=cancel, reference_weight=0.0)
    stopped = time.perf_counter() - stamps["asked"]
    assert phases[0] == "preparing genes and centroids"
    refit = [p for p in phases if p.startswith("refit on all genes and spots: step ")]
    done, total = refit[-1].rsplit("step ", 1)[1].split(" of ")  # as many steps as validation selected, all run
    assert done == total and int(total) in (10, 20), refit
    assert phases[-1] == "encoding the spots" and "clustering the reference" in phases
    assert stopped < 1.0, f"cancel took {stopped:.2f} s while clustering"
    assert workflow.cancelled and workflow.imputer is not None and not workflow.groups_ready
    # the child process is gone: a new job for the same matrix starts from scratch
    job = ClusterJob(reference.X, resolution=0.45)
    assert not job.done
    job.stop()


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
