"""Batch imputation to a chunked zarr SpatialData table: equality, resume, manifest, dask, stores, CLI.

Real data: Drosophila BDTNP spots (3,039 x 79 visible genes) with a tiny CASPER model trained on the
Karaiskos reference. Blocks are 700 spots x 8 genes over 45 genes: 5 x 6 = 30 blocks, ragged in
both axes (3,039 = 4 x 700 + 239; 45 = 5 x 8 + 5).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import zarr
from conftest import drosophila_atlas, drosophila_reference

from napari_casper.casper.batch import store as batch_store
from napari_casper.casper.batch.impute import impute_to_zarr
from napari_casper.casper.checkpoint import save_checkpoint
from napari_casper.casper.imputation import CasperImputer
from napari_casper.casper.training import train_casper
from napari_casper.cli import main
from napari_casper.errors import CasperInputError
from napari_casper.io.convert import anndata_to_spatialdata

HELD_OUT = ["eve", "ftz", "hb", "Kr", "run"]
CHUNKS = {"spot_chunk": 700, "gene_chunk": 8}
N_BLOCKS = 5 * 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    st = drosophila_atlas()
    ref = drosophila_reference()
    visible = st[:, [g for g in st.var_names if g not in HELD_OUT]].copy()
    visible.write_h5ad(root / "st.h5ad")
    model = train_casper(visible, ref, max_steps=20, steps_per_epoch=10, device="cpu", reference_weight=0.0)
    save_checkpoint(model, root / "model.pt")
    genes = HELD_OUT + [g for g in ref.var_names[:60] if g not in set(st.var_names)][:40]
    reference = impute_to_zarr(model, root / "st.h5ad", genes, root / "reference.zarr", **CHUNKS)
    return root, model, visible, genes, np.asarray(ad.read_zarr(reference.path).X)


class CountingBlocks:
    """Counts block computations (patches :func:`batch_store.compute_block`); can raise after ``stop_after``."""

    def __init__(self, monkeypatch, stop_after: int | None = None):
        self.calls = 0
        self.stop_after = stop_after
        original = batch_store.compute_block

        def counted(*args):
            self.calls += 1
            return original(*args)

        monkeypatch.setattr(batch_store, "compute_block", counted)

    def progress(self, update):
        if self.stop_after is not None and update.computed >= self.stop_after:
            raise KeyboardInterrupt("simulated interruption")


def test_chunked_output_equals_in_memory_and_is_a_spatialdata_table(setup):
    from spatialdata.models import TableModel

    root, model, visible, genes, written = setup
    in_memory = CasperImputer(model, visible).predict(genes)
    assert written.shape == (3039, 45) and np.isfinite(written).all()
    # encoder batches and BLAS blocking differ from the in-memory path: equal to float32 rounding
    np.testing.assert_allclose(written, in_memory, rtol=1e-5, atol=1e-5)
    assert np.abs(written - in_memory).max() < 1e-5 * max(1.0, np.abs(in_memory).max())

    table = ad.read_zarr(root / "reference.zarr")
    assert list(table.var_names) == genes and list(table.obs_names) == list(visible.obs_names)
    TableModel().validate(table)
    assert table.uns["spatialdata_attrs"] == {"region": "spots", "region_key": "region", "instance_key": "spot_id"}
    assert table.obs["region"].dtype == "category" and (table.obs["spot_id"].to_numpy() == np.arange(3039)).all()
    np.testing.assert_array_equal(table.obsm["spatial"], visible.obsm["spatial"])
    X = zarr.open_array(str(root / "reference.zarr" / "X"), mode="r")
    assert X.chunks == (700, 8) and X.dtype == np.float32
    lazy = ad.experimental.read_lazy(root / "reference.zarr")
    assert lazy.X.chunks[0][:2] == (700, 700)
    np.testing.assert_array_equal(lazy.X[:, 40:].compute(), written[:, 40:])
    assert not (root / "reference.zarr" / batch_store.LEDGER).exists()


def test_resume_after_interruption_recomputes_nothing(setup, tmp_path, monkeypatch):
    root, model, _, genes, written = setup
    out = tmp_path / "resumed.zarr"
    first = CountingBlocks(monkeypatch, stop_after=7)
    with pytest.raises(KeyboardInterrupt):
        impute_to_zarr(model, root / "st.h5ad", genes, out, **CHUNKS, progress=first.progress)
    partial = tmp_path / ".resumed.zarr.casper-partial"
    assert not out.exists() and partial.is_dir()
    finished = batch_store.done_blocks(partial)
    # blocks already running when the interruption came are completed and recorded, none is lost
    assert len(finished) == first.calls and 7 <= first.calls < N_BLOCKS

    second = CountingBlocks(monkeypatch)
    result = impute_to_zarr(model, root / "st.h5ad", genes, out, **CHUNKS)
    assert second.calls == result.computed == N_BLOCKS - len(finished)
    assert result.status == "written" and not partial.exists()
    np.testing.assert_array_equal(np.asarray(ad.read_zarr(out).X), written)

    third = CountingBlocks(monkeypatch)
    again = impute_to_zarr(model, root / "st.h5ad", genes, out, **CHUNKS)
    assert again.status == "already complete" and third.calls == 0


def test_manifest_mismatch_is_refused_and_restart_works(setup, tmp_path, monkeypatch):
    root, model, _, genes, written = setup
    out = tmp_path / "mismatch.zarr"
    with pytest.raises(KeyboardInterrupt):
        impute_to_zarr(model, root / "st.h5ad", genes, out, **CHUNKS, progress=CountingBlocks(monkeypatch, 3).progress)
    with pytest.raises(CasperInputError, match="gene_chunk.*--restart"):
        impute_to_zarr(model, root / "st.h5ad", genes, out, spot_chunk=700, gene_chunk=16)
    with pytest.raises(CasperInputError, match="genes.*--restart"):
        impute_to_zarr(model, root / "st.h5ad", genes[:-1], out, **CHUNKS)
    counter = CountingBlocks(monkeypatch)
    impute_to_zarr(model, root / "st.h5ad", genes[:-1], out, **CHUNKS, restart=True)
    assert counter.calls == N_BLOCKS  # started over: every block (44 genes still need 6 gene chunks)
    np.testing.assert_array_equal(np.asarray(ad.read_zarr(out).X), written[:, :-1])
    # a finished output with other settings: refused, then replaced with --restart
    with pytest.raises(CasperInputError, match="other settings"):
        impute_to_zarr(model, root / "st.h5ad", genes, out, **CHUNKS)
    impute_to_zarr(model, root / "st.h5ad", genes, out, **CHUNKS, restart=True)
    np.testing.assert_array_equal(np.asarray(ad.read_zarr(out).X), written)
    foreign = tmp_path / "foreign.zarr"
    foreign.mkdir()
    with pytest.raises(CasperInputError, match="not a napari-casper batch imputation"):
        impute_to_zarr(model, root / "st.h5ad", genes, foreign, **CHUNKS, restart=True)
    with pytest.raises(CasperInputError, match="more than once"):
        impute_to_zarr(model, root / "st.h5ad", ["eve", "eve"], tmp_path / "dup.zarr")



def test_restandardize_streams_the_statistics(setup, tmp_path):
    """A 'new section' measured twice as bright: its own statistics undo the scaling."""
    root, model, visible, genes, written = setup
    assert model.st_normalization == "none"  # relative in situ intensities, used as given
    brighter = visible.copy()
    brighter.X = np.asarray(brighter.X) * 2.0
    brighter.write_h5ad(tmp_path / "brighter.h5ad")
    result = impute_to_zarr(model, tmp_path / "brighter.h5ad", genes[:8], tmp_path / "own.zarr", spot_chunk=700,
                            restandardize=True)
    got = np.asarray(ad.read_zarr(result.path).X)
    np.testing.assert_allclose(got, CasperImputer(model, brighter, restandardize=True).predict(genes[:8]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got, written[:, :8], rtol=1e-4, atol=1e-4)
    plain = impute_to_zarr(model, tmp_path / "brighter.h5ad", genes[:8], tmp_path / "plain.zarr", spot_chunk=700)
    assert np.abs(np.asarray(ad.read_zarr(plain.path).X) - written[:, :8]).max() > 0.1


def test_local_cluster_equals_local_run(setup, tmp_path):
    """A scheduler address (a LocalCluster of two worker processes) and ``local:2``: same bits."""
    import os

    from distributed import LocalCluster

    root, model, _, genes, written = setup
    environ = dict(os.environ)  # LocalCluster sets OMP_NUM_THREADS=1 etc. for good: undone below
    try:
        with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
            result = impute_to_zarr(model, root / "st.h5ad", genes, tmp_path / "dask.zarr", **CHUNKS,
                                    scheduler=cluster.scheduler_address)
    finally:
        os.environ.clear()
        os.environ.update(environ)
    assert result.computed == N_BLOCKS
    np.testing.assert_array_equal(np.asarray(ad.read_zarr(result.path).X), written)
    before = dict(os.environ)
    again = impute_to_zarr(model, root / "st.h5ad", genes, tmp_path / "local2.zarr", **CHUNKS, scheduler="local:2")
    np.testing.assert_array_equal(np.asarray(ad.read_zarr(again.path).X), written)
    assert dict(os.environ) == before  # local:N leaves the caller's environment as it was


def _files(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in store.rglob("*") if p.is_file()}


def test_new_table_in_a_spatialdata_store_leaves_other_elements_alone(setup, tmp_path):
    import spatialdata as sd

    root, model, visible, genes, written = setup
    store = tmp_path / "embryo.zarr"
    anndata_to_spatialdata(visible, spot_diameter=5.0, axes=(0, 2)).write(store)
    before = _files(store)
    result = impute_to_zarr(model, store, genes, store=store, **CHUNKS)
    assert result.table == "casper_imputed"
    after = _files(store)
    changed = {k for k in before if before[k] != after.get(k)}
    assert changed <= {"zarr.json"}  # only the root's consolidated metadata is refreshed
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no partial folder left

    sdata = sd.read_zarr(store)
    assert set(sdata.tables) == {"table", "casper_imputed"} and set(sdata.shapes) == {"spots"}
    imputed = sdata.tables["casper_imputed"]
    assert imputed.uns["spatialdata_attrs"]["region"] == "spots"
    np.testing.assert_array_equal(imputed.obs["spot_id"].to_numpy(), sdata.tables["table"].obs["spot_id"].to_numpy())
    np.testing.assert_allclose(np.asarray(imputed.X), written, rtol=1e-5, atol=1e-5)
    # reopened, the spots keep their measured table (the imputed one sorts first but is a prediction)
    from napari_casper.display.layers import spatialdata_to_layers

    (spots_layer,) = [k for _, k, kind in spatialdata_to_layers(sdata) if kind == "points"]
    assert spots_layer["metadata"]["napari_casper"]["table"] == "table"

    assert impute_to_zarr(model, store, genes, store=store, **CHUNKS).status == "already complete"
    other = impute_to_zarr(model, store, genes[:3], store=store, **CHUNKS)
    assert other.table == "casper_imputed_2"
    # a source table is chosen among measured tables, not among imputed ones
    assert impute_to_zarr(model, store, ["eve"], store=store, table_name="eve_only").table == "eve_only"


def test_cli_end_to_end(setup, tmp_path, capsys):
    root, model, visible, genes, written = setup
    args = ["impute", "--model", str(root / "model.pt"), "--genes", ",".join(genes), "--spot-chunk", "700", "--gene-chunk", "8"]
    assert main([*args, "--st", str(root / "st.h5ad"), "--out", str(tmp_path / "cli.zarr")]) == 0
    out = capsys.readouterr().out
    assert f"block {N_BLOCKS}/{N_BLOCKS}" in out and "spots/s" in out and f"{N_BLOCKS} of {N_BLOCKS} blocks computed" in out
    np.testing.assert_array_equal(np.asarray(ad.read_zarr(tmp_path / "cli.zarr").X), written)
    assert main([*args, "--st", str(root / "st.h5ad"), "--out", str(tmp_path / "cli.zarr")]) == 0
    assert "already complete" in capsys.readouterr().out

    store = tmp_path / "cli_store.zarr"
    anndata_to_spatialdata(visible, spot_diameter=5.0, axes=(0, 2)).write(store)
    assert main([*args, "--st", str(store), "--out-table", "pred", "--quiet"]) == 0
    assert "table 'pred'" in capsys.readouterr().out
    assert ad.read_zarr(store / "tables" / "pred").shape == (3039, 45)

    assert main([*args, "--st", str(root / "st.h5ad")]) == 2
    assert "--out is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # a usage error, caught by argparse before any work
        main([*args, "--st", str(store), "--out", str(tmp_path / "x.zarr"), "--spot-chunk", "0"])
    assert stop.value.code == 2 and "--spot-chunk: must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists()



def test_killed_process_resumes_in_another_with_identical_values(setup, tmp_path):
    """A real interruption: the CLI is killed (SIGKILL) mid-run; this process resumes it."""
    import os
    import signal
    import subprocess
    import sys

    root, model, _, genes, _ = setup
    chunks = {"spot_chunk": 50, "gene_chunk": 8}  # 61 x 6 = 366 small blocks
    expected = impute_to_zarr(model, root / "st.h5ad", genes, tmp_path / "whole.zarr", **chunks)
    out = tmp_path / "killed.zarr"
    code = "import sys; from napari_casper.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "impute", "--model", str(root / "model.pt"), "--st", str(root / "st.h5ad"),
         "--genes", ",".join(genes), "--out", str(out), "--spot-chunk", "50", "--gene-chunk", "8", "--threads", "1",
         "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        # other thread settings than this process: the values must not depend on them
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    )
    for line in proc.stdout:
        if line.startswith("block 2/"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    partial = tmp_path / ".killed.zarr.casper-partial"
    finished = batch_store.done_blocks(partial)
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    assert 2 <= len(finished) < expected.total
    result = impute_to_zarr(model, root / "st.h5ad", genes, out, **chunks)
    assert result.computed == expected.total - len(finished)
    np.testing.assert_array_equal(np.asarray(ad.read_zarr(out).X), np.asarray(ad.read_zarr(expected.path).X))
