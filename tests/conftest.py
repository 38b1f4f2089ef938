"""Test data: the samples shipped in the package first, ``../shared/data`` for the rest.

Most tests run on the real data shipped inside the package (``src/napari_casper/sample_data``,
see :mod:`napari_casper.io.samples`), so a fresh clone tests the core without anything else:

* :func:`drosophila_atlas` -- the BDTNP atlas, exactly as ``../shared/data/drosophila/bdtnp_insitu.h5ad``
  (the packaged copy's 3-D positions moved back into ``obsm["spatial"]``);
* :func:`drosophila_reference` -- the Karaiskos reference as packaged: all 1297 cells, the 2000 most
  variable genes plus every atlas gene and its case variants (2006 of the 8924 genes);
* :func:`mob_path` -- the four mouse olfactory bulb sections ``MOB1..4`` (``.h5ad`` + ``.jpg``),
  byte-for-byte the files of ``../shared/data/mob``.

What the package cannot ship is read from ``../shared/data`` through :func:`shared_path`, which
skips the calling test with a reason when the file is absent: the HER2+ sections (no licence
published), the seqFISH/Tasic pair and the Xenium section (GPL-3), and the full Drosophila source
files (only to check the packaged copy against them).

Environment
-----------
``NAPARI_CASPER_SHARED_DATA``
    Folder of the real data (default: ``../shared/data`` beside the repository). Point it at a
    folder that does not exist to run the suite as a newcomer's fresh clone would::

        NAPARI_CASPER_SHARED_DATA=/nonexistent .venv/bin/python -m pytest -q -rs
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # tests run beside each other (scripts/run_tests.sh): one compute thread each, set before torch
    # is imported, so that two workers on two cores do not fight over four threads
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

# slide embeddings of pretrained encoders are cached here, never in the user's ~/.cache
if "NAPARI_CASPER_CACHE" not in os.environ:
    os.environ["NAPARI_CASPER_CACHE"] = tempfile.mkdtemp(prefix="napari-casper-cache-")
    atexit.register(shutil.rmtree, os.environ["NAPARI_CASPER_CACHE"], ignore_errors=True)

GUI_FIXTURES = {"qtbot", "make_napari_viewer"}


@pytest.fixture()
def make_torchscript_encoder():
    """``make(path, seed)``: a small pretrained-encoder stand-in (three strided convolutions, global pooling, 64
    features; random weights from ``seed``) saved as a TorchScript file, as a user exports UNI & co."""
    import torch

    def make(path, seed: int = 0):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(  # a patchifying stem, as vision transformers have: cheap at 224 px
            torch.nn.Conv2d(3, 16, 4, stride=4), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 2, stride=2), torch.nn.ReLU(),
            torch.nn.Conv2d(32, 64, 2, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        ).eval()  # fmt: skip
        torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 32, 32)), str(path))
        return path

    return make


def pytest_collection_modifyitems(config, items):
    """Mark every test that drives a viewer or a widget as ``gui``: scripts/run_tests.sh runs those
    (and the ``serial`` ones, which time a latency) one at a time, the rest side by side."""
    for item in items:
        if GUI_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.gui)



def pytest_sessionfinish(session, exitstatus):
    """Let the docks' warm-up threads (imports, numba compilation) end before the interpreter does: a
    daemon thread still importing or compiling while Python finalises can crash the process at exit."""
    import sys

    activity = sys.modules.get("napari_casper._widgets.common.activity")
    for thread in list(getattr(activity, "WARMING", {}).values()):
        if thread.ident is not None:  # started (a dock's warm-up starts after its first paint)
            thread.join(timeout=120)


SHARED_DATA = Path(os.environ.get("NAPARI_CASPER_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")

#: what each ../shared/data folder holds that the package does not ship, for skip reasons
NOT_PACKAGED = {
    "her2st": "the HER2+ breast cancer sections (no licence published, so not shipped in the package)",
    "her2st_labels": "the labelled HER2+ sections (no licence published, so not shipped in the package)",
    "seqfish": "the seqFISH cortex / Tasic scRNA-seq pair (GPL-3, so not shipped in the package)",
    "xenium": "the Xenium mouse brain section (GPL-3, so not shipped in the package)",
    "drosophila": "the full Drosophila source files (the package ships a 2-D atlas and a 2006-gene reference)",
    "mob": "the MOB source files",
}


def shared_path(*parts: str) -> Path:
    """Path inside ``../shared/data`` (or ``$NAPARI_CASPER_SHARED_DATA``); skips the calling test when absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        what = NOT_PACKAGED.get(parts[0], "real data that is not packaged") if parts else "the real data folder itself"
        _skip(
            f"needs {what}: {path} is absent (place the workplace's ../shared/data beside the repository, "
            "see ../shared/data/README.md, or set NAPARI_CASPER_SHARED_DATA)"
        )
    return path


def _skip(reason: str) -> None:
    """``pytest.skip``, reported (``-rs``) at the skipped test rather than at this file."""
    try:
        from _pytest.outcomes import Skipped

        skipped = Skipped(reason, allow_module_level=False, _use_item_location=True)
    except (ImportError, TypeError):  # another pytest: its own location, same reason
        pytest.skip(reason)
    raise skipped


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of ``../shared/data``; skips when the folder is absent."""
    return shared_path()


# --- the packaged samples -------------------------------------------------------------------


def packaged_path(name: str) -> Path:
    """A file of the packaged sample data (it must exist: the package ships it)."""
    from napari_casper.io.samples import SAMPLE_DIR

    path = Path(str(SAMPLE_DIR / name))
    assert path.is_file(), f"packaged sample file {path} is missing: run scripts/build_sample_data.py"
    return path


def drosophila_atlas():
    """BDTNP atlas (3039 locations x 84 genes, xyz microns) as in ``../shared/data/drosophila/bdtnp_insitu.h5ad``."""
    import anndata as ad

    atlas = ad.read_h5ad(packaged_path("drosophila_atlas.h5ad"))
    atlas.obsm["spatial"] = atlas.obsm.pop("spatial_3d")  # the packaged obsm["spatial"] is a 2-D projection
    atlas.uns = {"source": atlas.uns["source"]}
    return atlas


#: the packaged Karaiskos reference (1297 cells x 2006 genes, log-normalised, sparse)
DROSOPHILA_REFERENCE = "drosophila_reference.h5ad"


def drosophila_reference():
    """Karaiskos scRNA-seq reference as packaged: 2000 most variable genes + every atlas gene and case variant."""
    import anndata as ad

    return ad.read_h5ad(packaged_path(DROSOPHILA_REFERENCE))


def drosophila_subset():
    """BDTNP atlas (every 4th location) + the Karaiskos reference restricted to 300 genes (84 shared)."""
    st = drosophila_atlas()[::4].copy()
    ref = drosophila_reference()
    extra = [g for g in ref.var_names if g not in set(st.var_names)][:216]
    return st, ref[:, list(st.var_names) + extra].copy()


_MOB_DIR: list[Path] = []


def mob_path(name: str) -> Path:
    """``<name>.h5ad`` (``MOB1``..``MOB4``) of a copy of the packaged MOB sections; the ``.jpg`` lies beside it.

    The copies sit in a temporary folder named ``mob``, as in ``../shared/data/mob``: commands that
    take a dataset folder recognise it by that name, and no test can write into the package.
    """
    if not _MOB_DIR:
        from napari_casper.io.samples import MOB_SECTIONS

        root = Path(tempfile.mkdtemp(prefix="napari-casper-tests-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        folder = root / "mob"
        folder.mkdir()
        for section in MOB_SECTIONS:
            for suffix in (".h5ad", ".jpg"):
                shutil.copyfile(packaged_path(section + suffix), folder / f"{section}{suffix}")
        _MOB_DIR.append(folder)
    path = _MOB_DIR[0] / f"{name}.h5ad"
    assert path.is_file(), f"no packaged MOB section {name!r}"
    return path


def data_path(folder: str, file: str) -> Path:
    """``../shared/data/<folder>/<file>``, taken from the package when it ships that file (the MOB sections)."""
    if folder == "mob":
        return mob_path(Path(file).stem).with_suffix(Path(file).suffix)
    return shared_path(folder, file)
