"""Writing outputs without losing anything: one writer per output, temporary names, clear errors.

* :class:`OutputLock` -- a lock file ``.NAME.casper-lock`` beside an output. A second run that
  wants the same output gets :class:`~napari_casper.errors.OutputBusyError` ("another run is
  writing X since ..."). The lock is an ``flock`` on that file, so the kernel releases it when its
  process dies (even by SIGKILL): a lock left by a killed run is never in the way.
* :func:`atomic_path` -- write a file or folder under a temporary name in the same folder and
  rename it into place once complete; an earlier result at the target stays intact until then.
* :func:`remove_stale_scratch` -- temporary files of killed runs (``.NAME.casper-tmp-*``),
  removed by the next writer of the same output while it holds the lock.
* :func:`write_error` -- an ``OSError`` (read-only folder, full disk, missing folder) as an
  :class:`~napari_casper.errors.OutputError` that names the path and what to do.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from napari_casper.errors import OutputBusyError, OutputError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: exclusive creation instead of flock
    fcntl = None

SCRATCH_TAG = ".casper-tmp-"
LOCK_TAG = ".casper-lock"

_held: dict[str, tuple[int, int, int | None]] = {}  # lock file -> (owning thread, depth, fd)
_held_guard = threading.Lock()


def lock_file(target: str | Path) -> Path:
    """The lock file of output ``target``: ``.NAME.casper-lock`` in the same folder."""
    target = Path(target)
    return target.parent / f".{target.name}{LOCK_TAG}"


def scratch_path(target: str | Path, suffix: str = "") -> Path:
    """A fresh temporary name beside ``target`` (same folder, so the final rename is atomic)."""
    target = Path(target)
    return target.parent / f".{target.name}{SCRATCH_TAG}{uuid.uuid4().hex[:8]}{suffix}"


def write_error(err: OSError, path: str | Path, *, kept: str = "") -> OutputError:
    """``err`` as an :class:`OutputError` naming ``path`` and the fix (``kept``: what stayed intact)."""
    path = Path(path)
    where = Path(err.filename) if getattr(err, "filename", None) else path
    tail = f" {kept}" if kept else " Nothing was written there."
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return OutputError(f"cannot write {path}: the disk is full (no space left on device).{tail} "
                           "Free some space or choose an output on another disk.")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot write {path}: the folder {path.parent} is read-only (permission denied).{tail} "
                           "Choose an output folder you can write to.")
    if err.errno == errno.ENOENT and not path.parent.exists():
        return OutputError(f"cannot write {path}: the folder {path.parent} does not exist. Create it or choose another output path.")
    return OutputError(f"cannot write {path} ({err.strerror or err} at {where}).{tail} Check the output path and free space.")


#: room kept free beyond an output's estimated size (file system metadata, HDF5 headers)
FREE_SPACE_MARGIN = 1.1, 1 << 20


def require_free_space(target: str | Path, nbytes: int, *, kept: str = "") -> None:
    """An :class:`OutputError` ("the disk is full") when ``target``'s file system has less room than
    about ``nbytes``. Checked before writing, because HDF5 (h5py) may crash the whole process with a
    segmentation fault when the disk fills up during a write (measured on a full tmpfs), instead of
    raising an error that could be reported."""
    import shutil

    target = Path(target)
    folder = target.parent if not target.is_dir() else target
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # the write itself reports an unusable folder
    needed = int(nbytes * FREE_SPACE_MARGIN[0]) + FREE_SPACE_MARGIN[1]
    if free < needed:
        tail = f" {kept}" if kept else " Nothing was written there."
        raise OutputError(
            f"cannot write {target}: the disk is full (it needs about {needed / 1e6:.1f} MB, {free / 1e6:.1f} MB are free)."
            f"{tail} Free some space or choose an output on another disk."
        )


def h5ad_size(adata) -> int:
    """About how many bytes ``adata.write_h5ad`` (uncompressed, anndata's default) writes."""
    import numpy as np

    def size(value) -> int:
        if hasattr(value, "data") and hasattr(value, "indices"):  # scipy sparse
            return int(value.data.nbytes + value.indices.nbytes + value.indptr.nbytes)
        if hasattr(value, "memory_usage"):  # a data frame
            return int(value.memory_usage(deep=True).sum())
        if hasattr(value, "nbytes"):  # numpy, and dask without computing it
            return int(value.nbytes)
        return int(np.asarray(value).nbytes) if value is not None else 0

    total = size(adata.X) + size(adata.obs) + size(adata.var)
    for mapping in (adata.obsm, adata.varm, adata.layers, adata.obsp, adata.varp):
        total += sum(size(v) for v in mapping.values())
    return total


def _describe_holder(lock: Path) -> str:
    try:
        pid, host, since = lock.read_text().split("\n")[0].split(" ", 2)
        return f"since {since} (process {pid} on {host})"
    except (OSError, ValueError):
        return "right now"


def _busy(target: Path, lock: Path) -> OutputBusyError:
    return OutputBusyError(
        f"another run is writing {target} {_describe_holder(lock)}; nothing was changed. Wait for it to finish "
        "(or stop it) and run again, or choose another output."
    )


class OutputLock:
    """Hold the lock of output ``target`` (a context manager; re-entrant within one thread)."""

    def __init__(self, target: str | Path):
        self.target = Path(target)
        self.path = lock_file(self.target)

    def __enter__(self) -> OutputLock:
        key = str(self.path.absolute())
        me = threading.get_ident()
        with _held_guard:
            if key in _held:
                owner, depth, fd = _held[key]
                if owner != me:
                    raise _busy(self.target, self.path)
                _held[key] = (owner, depth + 1, fd)
                return self
            fd = self._acquire()
            _held[key] = (me, 1, fd)
        return self

    def __exit__(self, *exc) -> None:
        key = str(self.path.absolute())
        with _held_guard:
            owner, depth, fd = _held[key]
            if depth > 1:
                _held[key] = (owner, depth - 1, fd)
                return
            del _held[key]
            self.path.unlink(missing_ok=True)  # still holding it: nobody else can be mid-acquire on it
            if fd is not None:
                os.close(fd)

    def _acquire(self) -> int | None:
        stamp = f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode()
        for _ in range(20):
            try:
                if fcntl is None:  # pragma: no cover
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                else:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileExistsError:  # pragma: no cover - Windows: held (or left by a killed run)
                raise _busy(self.target, self.path) from None
            except OSError as err:
                raise write_error(err, self.target) from err
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise _busy(self.target, self.path) from None
                try:  # the holder may have removed the file between our open and flock: retry
                    if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                        os.close(fd)
                        continue
                except FileNotFoundError:
                    os.close(fd)
                    continue
            try:
                os.ftruncate(fd, 0)
                os.write(fd, stamp)
            except OSError as err:
                os.close(fd)
                self.path.unlink(missing_ok=True)
                raise write_error(err, self.target) from err
            return fd
        raise _busy(self.target, self.path)  # pragma: no cover - a lock file that keeps changing


def remove_stale_scratch(target: str | Path) -> list[Path]:
    """Remove temporary files/folders that killed runs left beside ``target`` (hold its lock first)."""
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for path in target.parent.glob(f".{target.name}{SCRATCH_TAG}*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


@contextmanager
def atomic_path(target: str | Path, suffix: str = "", *, lock: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; when the block ends normally it is renamed to
    ``target`` (replacing an earlier file; a folder target must not exist). On any error the
    temporary path is removed and ``target`` is as it was; an ``OSError`` becomes an
    :class:`OutputError` naming ``target``.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(err, target) from err
    with OutputLock(target) if lock else _nothing():
        remove_stale_scratch(target)
        scratch = scratch_path(target, suffix)
        kept = "The earlier file there is intact." if target.exists() else ""
        try:
            yield scratch
            os.replace(scratch, target)
        except OSError as err:
            raise write_error(err, target, kept=kept) from err
        finally:
            if scratch.is_dir():
                shutil.rmtree(scratch, ignore_errors=True)
            else:
                scratch.unlink(missing_ok=True)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def check_writable_folder(target: str | Path) -> Path:
    """Fail early (before hours of work) when ``target``'s folder cannot be written: a probe file is
    created and removed there. Creates the folder when it is missing. Returns ``target``."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        probe = scratch_path(target, ".probe")
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise write_error(err, target) from err
    return target
