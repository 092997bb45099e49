"""The Dask executor: a batch's files as tasks on a Dask distributed cluster.

``scheduler`` is a scheduler's address (``tcp://host:8786``), or ``"local"``
for a ``LocalCluster`` of ``jobs`` single-threaded worker processes started
here.  Each file is one task, :func:`~imgconv.batch.local.process_one` (or the
``process`` given) on the worker, with numba limited to that task's share of
the worker's cores; at most ``BATCH_DASK_TASKS_PER_SLOT`` tasks per worker
thread are submitted at a time, so a Ctrl-C has little to cancel.  The folders
must be on storage the workers share.  Needs ``imgconv[dask]``.

A time limit (``timeout``) is best effort here: Dask cannot stop a task that is
running, so each task checks the limit itself, when its file is filtered and
before its output is written (:func:`~imgconv.batch.local.process_one`): a file
over the limit fails with the reason ``timeout`` and writes nothing, but a
decoder that never returns holds its worker thread until the worker is
restarted (``dask worker --lifetime``, or the nanny's memory limits).
"""

from __future__ import annotations

from collections import deque

from imgconv import tunables
from imgconv.batch.local import _children_ignore_sigint, limit_numba_threads, usable_cores
from imgconv.batch.report import ABANDONED, FAILED, NOT_STARTED, FileResult, interrupted
from imgconv.engine import compiled
from imgconv.errors import ImgconvError


def _dask_task(job, source, destination, threads, process, out_dir, timeout=None):
    """Filter one file on a Dask worker, with numba limited to this task's share of the cores."""
    if threads is None:
        try:
            from distributed import get_worker

            worker_threads = get_worker().state.nthreads
        except (ImportError, ValueError, AttributeError):
            worker_threads = 1
        threads = max(1, usable_cores() // max(1, worker_threads))
    limit_numba_threads(threads)
    compiled.expect_many_images()  # a Dask worker filters many files: they pay for the compiled kernels
    return process(job, source, destination, out_dir=out_dir, timeout=timeout)


def run_dask(job, tasks, *, scheduler, jobs, process, out_dir, control, timeout=None):
    """Filter ``tasks`` on a Dask cluster; yields a FileResult per task (see the module's docstring)."""
    try:
        from distributed import Client, LocalCluster
        from distributed import wait as dask_wait
    except ImportError:
        raise ImgconvError("--scheduler needs Dask distributed: pip install 'imgconv[dask]'") from None
    import logging

    cluster = None
    try:
        if scheduler == "local":
            count = max(1, min(jobs, len(tasks)))
            with _children_ignore_sigint():
                cluster = LocalCluster(
                    n_workers=count, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
                )
            client = Client(cluster)
            threads = max(1, usable_cores() // count)
        else:
            client = Client(scheduler)  # waits distributed.comm.timeouts.connect (Dask config)
            threads = None  # each worker divides its own cores among its threads
    except (OSError, TimeoutError, ValueError) as exc:  # ValueError: a malformed address
        if cluster is not None:
            cluster.close()
        raise ImgconvError(f"cannot connect to the Dask scheduler '{scheduler}': {exc}") from exc

    queue = deque(tasks)
    running = {}
    control.in_progress = lambda: len(running)
    try:
        slots = max(1, sum(client.nthreads().values()))
        while queue or running:
            if control.stopping:
                while queue:
                    task = queue.popleft()
                    yield interrupted(task, NOT_STARTED)
            if control.abandoning:
                client.cancel(list(running))
                for future, task in running.items():
                    yield interrupted(task, ABANDONED)
                running.clear()
                return
            while queue and len(running) < tunables.BATCH_DASK_TASKS_PER_SLOT * slots:
                task = queue.popleft()
                future = client.submit(
                    _dask_task, job, str(task.source), str(task.destination), threads, process, out_dir, timeout,
                    pure=False, retries=0,
                )
                running[future] = task
            if not running:
                break
            try:
                finished, _ = dask_wait(list(running), timeout=tunables.BATCH_POLL_SECONDS, return_when="FIRST_COMPLETED")
            except TimeoutError:
                continue
            for future in finished:
                task = running.pop(future)
                if future.status == "finished":
                    yield future.result()
                elif future.status == "cancelled" or control.stopping:
                    yield interrupted(task, ABANDONED)
                else:
                    exc = future.exception()
                    message = f"the Dask task failed on '{task.source}': {type(exc).__name__}: {exc}"
                    yield FileResult(str(task.source), str(task.destination), FAILED, message)
    finally:
        if running:
            client.cancel(list(running))
        client.close()
        if cluster is not None:
            cluster.close()
