"""Faults while writing: SIGKILL mid-write, two runs on one output, a read-only folder, a full disk,
and the real console command (exit status, no traceback, ``--debug``)."""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import pytest
from bad_world import build_world, junk, snapshot

from napari_casper.cli import main

CONSOLE = str(Path(sys.executable).parent / "napari-casper")

#: the real command, with h5py slowed down after its third dataset (test code, not product code),
#: so the test can SIGKILL it while the output's temporary file is half written
SLOW_WRITER = """
import sys, time, h5py
original = h5py.Group.create_dataset
calls = [0]
def slow(self, *args, **kwargs):
    result = original(self, *args, **kwargs)
    calls[0] += 1
    if calls[0] == 3:
        self.file.flush()
        time.sleep(120)
    return result
h5py.Group.create_dataset = slow
from napari_casper.cli import main
sys.exit(main(sys.argv[1:]))
"""

#: holds the lock of sys.argv[1] until killed
LOCK_HOLDER = """
import sys, time
from napari_casper.io.outputs import OutputLock
OutputLock(sys.argv[1]).__enter__()
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture(scope="module")
def world() -> Path:
    return build_world()


def _start(script: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _size(path: Path) -> int:
    """Bytes in ``path``; 0 once it is gone (the writer's short-lived probe files vanish between glob and stat)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _wait_for_scratch(out: Path, child: subprocess.Popen, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p for p in out.parent.glob(f".{out.name}.casper-tmp-*") if _size(p) > 0]
        if found:
            return found[0]
        assert child.poll() is None, child.communicate()
        time.sleep(0.05)
    raise AssertionError("the temporary output never appeared")


def _kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def test_sigkill_while_histology_predict_saves_keeps_the_earlier_result(world, tmp_path, capsys):
    out = tmp_path / "pred.h5ad"
    args = ["histology-predict", "--model", world / "histology.pt", "--spots", world / "MOB1.h5ad"]
    assert main([*map(str, args), "--out", str(out)]) == 0  # the earlier result
    earlier = out.read_bytes()
    child = _start(SLOW_WRITER, *args, "--out", out)
    scratch = _wait_for_scratch(out, child)
    _kill(child)
    assert out.read_bytes() == earlier  # SIGKILL mid-write: the earlier result is untouched and readable
    assert ad.read_h5ad(out).n_obs > 200
    assert scratch.exists()  # the killed run's half-written temporary file ...
    assert main([*map(str, args), "--out", str(out)]) == 0  # ... is cleared by the rerun, which works
    assert junk(tmp_path) == [] and ad.read_h5ad(out).n_obs > 200


def test_sigkill_while_impute_writes_h5ad_then_rerun_works(world, tmp_path, capsys):
    out = tmp_path / "imputed.h5ad"
    args = ["impute", "--model", world / "casper.pt", "--st", world / "st.h5ad", "--genes", "eve,ftz", "--out", out]
    child = _start(SLOW_WRITER, *args)
    _wait_for_scratch(out, child)
    _kill(child)
    assert not out.exists()  # no unreadable .h5ad at the output (the rerun used to refuse: "already exists")
    assert main(list(map(str, args))) == 0
    assert list(ad.read_h5ad(out).var_names) == ["eve", "ftz"]
    assert junk(tmp_path) == []


def test_two_imputes_on_one_output_the_second_is_told_and_nothing_is_left(world, tmp_path, capsys):
    out = tmp_path / "imputed.h5ad"
    args = ["impute", "--model", world / "casper.pt", "--st", world / "st.h5ad", "--genes", "eve,ftz", "--out", out]
    first = _start(SLOW_WRITER, *args)  # a real impute run, busy writing the output
    _wait_for_scratch(out, first)
    assert main(list(map(str, args))) == 1
    err = capsys.readouterr().err
    assert f"another run is writing {out} since" in err and f"process {first.pid}" in err and "Traceback" not in err
    _kill(first)
    assert main(list(map(str, args))) == 0  # the killed run's lock is not in the way
    assert junk(tmp_path) == [] and ad.read_h5ad(out).n_vars == 2


def test_two_imputes_on_one_zarr_output(world, tmp_path, capsys):
    out = tmp_path / "imputed.zarr"
    holder = _start(LOCK_HOLDER, out)
    assert holder.stdout.readline().strip() == "held"
    args = ["impute", "--model", str(world / "casper.pt"), "--st", str(world / "st.h5ad"), "--genes", "eve,ftz", "--quiet",
            "--out", str(out)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "another run is writing" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".*casper-partial"))  # the loser touched nothing
    _kill(holder)
    assert main(args) == 0 and ad.read_zarr(out).shape[1] == 2
    assert junk(tmp_path) == []


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write: chmod 555, or (as root, who ignores modes) /sys."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        return folder
    (folder / "probe").unlink()
    folder.chmod(0o755)
    try:
        (Path("/sys") / "napari-casper-probe").touch()
    except OSError:
        return Path("/sys")
    pytest.skip("no read-only folder available (root, and /sys is writable)")


@pytest.mark.parametrize("command", ["train", "impute-h5ad", "impute-zarr", "histology-predict", "benchmark"])
def test_read_only_output_folder(command, world, tmp_path, capsys):
    folder = read_only_folder(tmp_path)
    before = snapshot(world)
    out = {"train": "m.pt", "impute-h5ad": "x.h5ad", "impute-zarr": "x.zarr", "histology-predict": "p.h5ad", "benchmark": "bench"}[command]
    out = folder / f"napari-casper-test-{out}"
    argv = {
        "train": ["train", "--st", world / "st.h5ad", "--reference", world / "ref.h5ad", "--epochs", "50"],
        "impute-h5ad": ["impute", "--model", world / "casper.pt", "--st", world / "st.h5ad", "--genes", "eve"],
        "impute-zarr": ["impute", "--model", world / "casper.pt", "--st", world / "st.h5ad", "--genes", "eve"],
        "histology-predict": ["histology-predict", "--model", world / "histology.pt", "--spots", world / "MOB1.h5ad"],
        "benchmark": ["benchmark", "--st", world / "st.h5ad", "--reference", world / "ref.h5ad", "--methods", "mean"],
    }[command]
    start = time.perf_counter()
    assert main([*map(str, argv), "--out", str(out)]) == 1
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert f"cannot write {out}: the folder {folder} is read-only" in err and "Traceback" not in err
    assert seconds < 5  # refused before any training or imputation
    assert not out.exists() and snapshot(world) == before


@pytest.mark.parametrize("command", ["impute", "histology-predict"])
def test_full_disk_names_the_path_and_keeps_the_earlier_result(command, world, tmp_path, capsys, monkeypatch):
    out = tmp_path / "result.h5ad"
    if command == "impute":
        argv = ["impute", "--model", world / "casper.pt", "--st", world / "st.h5ad", "--genes", "eve", "--out", out]
    else:
        argv = ["histology-predict", "--model", world / "histology.pt", "--spots", world / "MOB1.h5ad", "--out", out]
        assert main(list(map(str, argv))) == 0  # an earlier result to keep
    earlier = out.read_bytes() if out.exists() else None
    original = ad.AnnData.write_h5ad

    def fills_the_disk(self, path, *args, **kwargs):
        original(self, path, *args, **kwargs)  # most of the file is written ...
        raise OSError(errno.ENOSPC, "No space left on device", str(path))  # ... then the disk is full

    monkeypatch.setattr(ad.AnnData, "write_h5ad", fills_the_disk)
    assert main(list(map(str, argv))) == 1
    err = capsys.readouterr().err
    assert f"cannot write {out}: the disk is full" in err and "Traceback" not in err
    assert (out.read_bytes() if out.exists() else None) == earlier  # absent stays absent, earlier stays intact
    assert junk(tmp_path) == []


def test_console_command_exit_status_and_debug(world, tmp_path):
    """The installed ``napari-casper`` command: one-line errors, status 1 / 2, a traceback only with --debug."""
    bad = [CONSOLE, "impute", "--model", str(world / "notes.pt"), "--st", str(world / "st.h5ad"), "--genes", "eve",
           "--out", str(tmp_path / "x.h5ad")]
    plain = subprocess.run(bad, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().startswith("napari-casper impute: error:") and "notes.pt" in plain.stderr
    debug = subprocess.run([CONSOLE, "--debug", *bad[1:]], capture_output=True, text=True, timeout=300)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "CheckpointMismatchError" in debug.stderr
    usage = subprocess.run([CONSOLE, "histology-train", str(world / "MOB1.h5ad"), "--epochs", "0", "--out", str(tmp_path / "h.pt")],
                           capture_output=True, text=True, timeout=300)
    assert usage.returncode == 2 and "must be at least 1" in usage.stderr and "Traceback" not in usage.stderr
    helped = subprocess.run([CONSOLE, "--help"], capture_output=True, text=True, timeout=300)
    assert "--debug" in helped.stdout and "traceback" in helped.stdout
    assert list(tmp_path.iterdir()) == []


def test_debug_after_the_command_name_also_shows_the_traceback(world, tmp_path):
    from napari_casper.errors import CheckpointMismatchError

    with pytest.raises(CheckpointMismatchError):
        main(["impute", "--model", str(world / "notes.pt"), "--st", str(world / "st.h5ad"), "--genes", "eve",
              "--out", str(tmp_path / "x.h5ad"), "--debug"])
    assert junk(tmp_path) == []


def test_an_unexpected_failure_is_one_line_that_says_bug(world, tmp_path, capsys, monkeypatch):
    import napari_casper.cli.impute as impute

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(impute, "_run_h5ad", broken)
    assert main(["impute", "--model", str(world / "casper.pt"), "--st", str(world / "st.h5ad"), "--genes", "eve",
                 "--out", str(tmp_path / "x.h5ad")]) == 1
    err = capsys.readouterr().err
    assert "unexpected ZeroDivisionError" in err and "--debug" in err and "Traceback" not in err
    assert junk(tmp_path) == []


#: the real command, with torch.save made to hang after writing (test code, not product code): the
#: checkpoint is complete at its temporary name but not yet renamed into place when the test kills it
SLOW_CHECKPOINT = """
import sys, time, torch
original = torch.save
def slow(obj, f, *args, **kwargs):
    original(obj, f, *args, **kwargs)
    time.sleep(120)
torch.save = slow
from napari_casper.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", ["train", "histology-train"])
def test_sigkill_while_a_checkpoint_is_saved_keeps_the_earlier_one(command, world, tmp_path, capsys):
    """Checkpoints (CASPER and histology) go to a temporary name renamed into place: a kill keeps the earlier model."""
    import shutil

    earlier = world / ("casper.pt" if command == "train" else "histology.pt")
    out = tmp_path / earlier.name
    shutil.copyfile(earlier, out)
    before = out.read_bytes()
    if command == "train":
        args = ["train", "--st", world / "st.h5ad", "--reference", world / "ref.h5ad", "--epochs", "1", "--steps-per-epoch", "2",
                "--device", "cpu", "--quiet", "--out", out]
    else:
        args = ["histology-train", world / "MOB1.h5ad", world / "MOB2.h5ad", "--epochs", "1", "--predictor", "ridge", "--threads", "1",
                "--n-model-genes", "50", "--genes", "Penk,Nrgn", "--out", out]
    child = _start(SLOW_CHECKPOINT, *args)
    _wait_for_scratch(out, child, timeout=180)
    _kill(child)
    assert out.read_bytes() == before  # the earlier model is intact and still loads
    assert main([*map(str, args)]) == 0  # the rerun clears the killed run's temporary file and lock
    assert junk(tmp_path) == []
