"""Where batch-imputation blocks run: local threads or ``dask.distributed`` workers.

Both runners offer the same small interface (``scatter``, ``submit``, ``wait_any``, ``cancel``,
``parallelism``) so :mod:`napari_casper.casper.batch.impute` drives them with one loop. Local threads
share this process's memory (``scatter`` is the identity); on dask, ``scatter`` sends an object
to the cluster once and tasks receive a reference to it.
"""

from __future__ import annotations

import concurrent.futures as cf
import os

from napari_casper.errors import CasperInputError


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class LocalRunner:
    """A thread pool in this process; BLAS is pinned to one thread while it is open."""

    pin_blas = False

    def __init__(self, threads: int | None = None):
        self.parallelism = max(1, int(threads or cpu_count()))
        self._pool = None
        self._limits = None

    def __enter__(self):
        from threadpoolctl import threadpool_limits

        self._limits = threadpool_limits(limits=1, user_api="blas")
        self._pool = cf.ThreadPoolExecutor(self.parallelism, thread_name_prefix="casper-block")
        return self

    def __exit__(self, *exc):
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._limits.restore_original_limits()
        return False

    def scatter(self, obj, broadcast: bool = False):
        return obj

    def submit(self, fn, *args):
        return self._pool.submit(fn, *args)

    def wait_any(self, futures):
        return cf.wait(futures, return_when=cf.FIRST_COMPLETED).done

    def cancel(self, futures) -> None:
        for future in futures:
            future.cancel()


class DaskRunner:
    """Tasks on a ``dask.distributed`` cluster: an address, ``local:N`` or a ``Client``."""

    pin_blas = True

    def __init__(self, scheduler):
        try:
            from distributed import Client, LocalCluster
        except ImportError as err:
            raise CasperInputError(
                "--scheduler needs the 'distributed' package: pip install distributed (or napari-casper[all])"
            ) from err
        self._cluster = None
        self._own_client = True
        if isinstance(scheduler, Client):
            self.client, self._own_client = scheduler, False
        elif isinstance(scheduler, str) and scheduler.startswith("local:"):
            try:
                workers = int(scheduler.split(":", 1)[1])
            except ValueError:
                workers = 0
            if workers < 1:
                raise CasperInputError(f"--scheduler {scheduler!r}: write local:N with N >= 1 worker processes, e.g. local:2")
            self._environ = dict(os.environ)  # LocalCluster leaves OMP_NUM_THREADS=1 etc. behind
            self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                         dashboard_address=None, silence_logs=40)
            self.client = Client(self._cluster)
        else:
            try:
                self.client = Client(str(scheduler), timeout="20s")
            except (OSError, TimeoutError, ValueError) as err:
                raise CasperInputError(
                    f"cannot reach the dask scheduler at {scheduler!r} ({err}); start one (dask scheduler) "
                    "and its workers, pass its address (tcp://host:8786), or use local:N"
                ) from err
        self.parallelism = max(1, sum(self.client.nthreads().values()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._own_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()
            os.environ.clear()
            os.environ.update(self._environ)
        return False

    def scatter(self, obj, broadcast: bool = False):
        return self.client.scatter([obj], broadcast=broadcast, hash=False)[0]

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)

    def wait_any(self, futures):
        from distributed import wait

        return wait(futures, return_when="FIRST_COMPLETED").done

    def cancel(self, futures) -> None:
        if futures:
            self.client.cancel(futures)


def make_runner(scheduler=None, threads: int | None = None):
    """A :class:`LocalRunner` (``scheduler`` None) or a :class:`DaskRunner`."""
    return LocalRunner(threads) if scheduler is None else DaskRunner(scheduler)
