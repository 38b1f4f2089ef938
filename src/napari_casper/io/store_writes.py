"""Writing into SpatialData stores without ever losing data.

:func:`write_new_elements` adds one or more elements (a regions layer and its table, predicted
spots and theirs) to an existing store as **one commit**:

1. under the store's lock, every element is written into a temporary store beside it;
2. a commit note listing them is written into that temporary store (the commit point);
3. each element folder is renamed into the store, then the store's metadata is refreshed.

A run killed before step 2 leaves the store as it was (its temporary store is removed by the
next write). A run killed during step 3 leaves a committed temporary store: the next write to
the store, or :func:`finish_interrupted_writes`, moves the remaining elements in, so a pair is
never left half-saved for good. An existing element is replaced only with ``overwrite=True``,
and the old one is kept aside until the new one is in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
import warnings
from pathlib import Path

import anndata as ad

from napari_casper.errors import CasperInputError
from napari_casper.io.outputs import SCRATCH_TAG, OutputLock, remove_stale_scratch, scratch_path, write_error
from napari_casper.io.stores import ELEMENT_GROUPS, element_kind, element_names, read_spatialdata

#: the commit note inside a temporary store: the elements to move in, in order
COMMIT_NOTE = "casper-commit.json"
#: an element replaced with overwrite=True waits under this prefix until the new one is in place
OLD_TAG = ".casper-old-"


def element_group_for(element) -> str:
    """The store group an in-memory element belongs to, from its SpatialData model."""
    from spatialdata.models import (
        Image2DModel,
        Image3DModel,
        Labels2DModel,
        Labels3DModel,
        PointsModel,
        ShapesModel,
        TableModel,
        get_model,
    )

    groups = {
        Image2DModel: "images",
        Image3DModel: "images",
        Labels2DModel: "labels",
        Labels3DModel: "labels",
        PointsModel: "points",
        ShapesModel: "shapes",
        TableModel: "tables",
    }
    if isinstance(element, ad.AnnData):
        return "tables"
    try:
        return groups[get_model(element)]
    except Exception as err:  # noqa: BLE001
        raise CasperInputError(
            f"cannot write a {type(element).__name__}: parse it with a spatialdata model first "
            "(ShapesModel.parse, TableModel.parse, ...)."
        ) from err


def write_new_element(store: str | Path, name: str, element, *, overwrite: bool = False) -> Path:
    """Add ``element`` as ``name`` to the SpatialData store at ``store``, atomically.

    An existing ``name`` is refused unless ``overwrite`` (then the old element is kept aside
    until the new one is in place). Returns the folder of the new element inside the store.
    """
    return write_new_elements(store, {name: element}, overwrite=overwrite)[name]


@contextlib.contextmanager
def quiet_writes():
    """Silence what spatialdata and zarr say on every write that a user cannot act on: a lone table
    "annotates an absent element" (its element is in the store already), and zarr's notice about its
    next release's sharding default."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*which is not present in the SpatialData object")
        warnings.filterwarnings("ignore", message=".*autosharding")
        yield


def write_new_elements(store: str | Path, elements: dict, *, overwrite: bool = False) -> dict[str, Path]:
    """Add every ``{name: element}`` to the SpatialData store at ``store`` as one commit (see the module).

    Returns each name's folder inside the store.
    """
    import spatialdata as sd

    store = Path(store)
    if not elements:
        return {}
    for name in elements:
        if not name or not isinstance(name, str) or "/" in name or name.startswith("."):
            raise CasperInputError(f"invalid element name {name!r}: use letters, digits, '_' or '-'.")
    groups: dict[str, dict] = {}
    plan = []
    for name, element in elements.items():
        group = element_group_for(element)
        groups.setdefault(group, {})[name] = element
        plan.append((group, name))
    with OutputLock(store):
        finish_interrupted_writes(store, locked=True)  # a killed commit first, so the names are checked against it
        current = read_spatialdata(store)
        present = element_names(current)
        for group, name in plan:
            if name in present and not overwrite:
                raise CasperInputError(
                    f"{store} already has an element named {name!r}; nothing was written. Choose a new name "
                    "(e.g. add a version suffix) or pass overwrite=True to replace it."
                )
            if name in present and element_kind(current, name) != group:
                raise CasperInputError(
                    f"{name!r} is a {element_kind(current, name)} element in {store}; it cannot be replaced by {group}."
                )
        scratch = scratch_path(store)
        try:
            with quiet_writes():  # a lone table "annotates an absent element": expected here
                sd.SpatialData(**groups).write(scratch)
            _write_note(scratch, plan, overwrite)  # the commit point
            targets = _install(store, scratch, plan, overwrite)
        except OSError as err:
            where = store / plan[0][0] / plan[0][1]
            raise write_error(err, where, kept=f"The store {store} is as it was.") from err
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return targets


def finish_interrupted_writes(store: str | Path, *, locked: bool = False) -> list[str]:
    """Complete or discard what killed writes left beside ``store``; returns the element names moved in.

    A temporary store with a commit note was fully written: its remaining elements are moved in.
    One without a note was cut off while writing: it is removed. Elements left aside by an
    interrupted ``overwrite`` are removed once their replacement is in place.
    """
    store = Path(store)
    if not store.is_dir():  # nothing to finish (and no lock to take) beside a store that is not there
        return []
    if not locked:
        with OutputLock(store):
            return finish_interrupted_writes(store, locked=True)
    finished: list[str] = []
    for scratch in sorted(store.parent.glob(f".{store.name}{SCRATCH_TAG}*")):
        note = scratch / COMMIT_NOTE
        if scratch.is_dir() and note.is_file():
            recorded = json.loads(note.read_text())
            plan = [(g, n) for g, n in recorded["elements"] if (scratch / g / n).exists()]
            _install(store, scratch, plan, bool(recorded["overwrite"]))
            finished += [name for _, name in plan]
        if scratch.is_dir():
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            scratch.unlink(missing_ok=True)
    for group in ELEMENT_GROUPS:
        for old in (store / group).glob(f".*{OLD_TAG}*") if (store / group).is_dir() else ():
            if (old.parent / old.name[1:].split(OLD_TAG)[0]).exists():
                shutil.rmtree(old, ignore_errors=True)
    return finished


def _write_note(scratch: Path, plan: list[tuple[str, str]], overwrite: bool) -> None:
    partial = scratch / f".{COMMIT_NOTE}.partial"
    with open(partial, "w") as handle:
        json.dump({"elements": [list(p) for p in plan], "overwrite": overwrite}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, scratch / COMMIT_NOTE)


def _install(store: Path, scratch: Path, plan: list[tuple[str, str]], overwrite: bool) -> dict[str, Path]:
    """Move each planned element folder from ``scratch`` into ``store``, then refresh the metadata."""
    targets = {name: _move_in(store, group, name, scratch / group / name, overwrite) for group, name in plan}
    reconsolidate(store)
    return targets


def install_element(store: Path, group: str, name: str, source: Path, *, overwrite: bool = False) -> Path:
    """Move the finished element folder ``source`` to ``store/group/name`` and refresh the
    store's metadata. ``source`` must be on the store's file system (beside the store)."""
    target = _move_in(Path(store), group, name, source, overwrite)
    reconsolidate(Path(store))
    return target


def _move_in(store: Path, group: str, name: str, source: Path, overwrite: bool) -> Path:
    """Rename ``source`` to ``store/group/name``, creating the group when the store has none yet."""
    if not (store / group).exists():
        import zarr

        zarr.open_group(str(store), mode="r+").require_group(group)
    return move_into_place(source, store / group / name, overwrite=overwrite)


def move_into_place(source: Path, target: Path, *, overwrite: bool = False) -> Path:
    """Rename ``source`` to ``target``. An existing ``target`` is replaced only with
    ``overwrite``, and is kept aside (``.NAME.casper-old-*``) until ``source`` is in place."""
    if target.exists() and not overwrite:
        raise CasperInputError(f"{target} already exists; nothing was replaced. Choose a new name or path.")
    backup = None
    if target.exists():
        backup = target.parent / f".{target.name}{OLD_TAG}{uuid.uuid4().hex[:8]}"
        os.replace(target, backup)
    os.replace(source, target)
    if backup is not None:
        shutil.rmtree(backup)
    return target


def reconsolidate(store: Path) -> None:
    """Refresh the store's consolidated metadata so readers see the new element."""
    import zarr

    try:
        with warnings.catch_warnings():  # zarr warns that v3 consolidation is not in the spec yet
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(str(store))
    except Exception as err:  # noqa: BLE001
        raise CasperInputError(f"the element was written but {store}'s metadata could not be refreshed: {err}") from err


def save_spatialdata(sdata, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write a whole SpatialData object to a new store at ``path`` (atomic rename).

    An existing ``path`` is refused unless ``overwrite``; then it is replaced only once the
    new store is complete.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise CasperInputError(
            f"{path} already exists; nothing was written. Choose a new path, or add elements to it "
            "with write_new_element(...), or pass overwrite=True."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(err, path) from err
    with OutputLock(path):
        remove_stale_scratch(path)
        scratch = scratch_path(path)
        try:
            with quiet_writes():
                sdata.write(scratch)
            move_into_place(scratch, path, overwrite=True)
        except OSError as err:
            raise write_error(err, path, kept="An earlier store there is intact." if path.exists() else "") from err
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return path
