"""Filtering every image under a folder (:func:`run_batch`), with a report that
counts what was done, skipped and failed.

A :class:`~imgconv.pipeline.Job` is plain data (the chain and its options)
and each file is handled by a pure function of (job, source, destination),
:func:`~imgconv.batch.local.process_one` over
:func:`imgconv.pipeline.filter_file`, so the files can be handed to any
executor that maps a function over work items.  The package:

- :mod:`~imgconv.batch.tasks`: which files, and where each output goes (:func:`plan_batch`);
- :mod:`~imgconv.batch.report`: :class:`FileResult`, :class:`Report`, the JSON report;
- :mod:`~imgconv.batch.local`: a pool of worker processes on this machine, Ctrl-C handling;
- :mod:`~imgconv.batch.dask`: a Dask distributed cluster (``scheduler=``).

While a batch runs in the main thread, Ctrl-C (SIGINT) does not raise: the
first one stops handing out files and lets the files in progress finish; a
second one abandons them.  :func:`run_batch` then returns a report with
``interrupted`` set (exit code 130), listing every file that was not finished.
The main process runs no kernel; the workers do.
"""

from __future__ import annotations

import datetime
import math
import time
from pathlib import Path

from imgconv.batch.dask import run_dask
from imgconv.batch.local import _Control, _run_local, limit_numba_threads, process_one, usable_cores
from imgconv.batch.report import (
    ABANDONED,
    DONE,
    EXCLUDED,
    EXISTS,
    FAILED,
    INTERRUPTED,
    NOT_IMAGE,
    NOT_REGULAR,
    NOT_STARTED,
    SKIPPED,
    TIMEOUT,
    UNREADABLE_FOLDER,
    FileResult,
    Report,
)
from imgconv.batch.tasks import Task, escapes, find_files, matches, normalize_extension, output_folder, plan_batch
from imgconv.chain import Chain
from imgconv.errors import ImgconvError
from imgconv.pipeline import Job, filter_file

__all__ = [
    "run_batch",
    "Job",
    "Task",
    "FileResult",
    "Report",
    "plan_batch",
    "process_one",
    "filter_file",
    "find_files",
    "matches",
    "normalize_extension",
    "escapes",
    "output_folder",
    "usable_cores",
    "limit_numba_threads",
    "ImgconvError",
    "DONE",
    "SKIPPED",
    "FAILED",
    "INTERRUPTED",
    "EXISTS",
    "NOT_IMAGE",
    "NOT_REGULAR",
    "EXCLUDED",
    "NOT_STARTED",
    "ABANDONED",
    "TIMEOUT",
    "UNREADABLE_FOLDER",
]


def _filter_settings(chain: Chain) -> dict:
    """The report's ``filter`` and ``params``: a single catalog filter's name and
    parameters, or the chain's text (its parameters are in the text)."""
    if chain.is_plain and chain.steps[0].loaded is None:
        flt = chain.steps[0].filter
        return {"filter": flt.name, "params": {str(k): v for k, v in dict(flt.params or {}).items()}}
    return {"filter": chain.name, "params": {}}


def run_batch(
    job: Job,
    in_dir,
    out_dir,
    *,
    jobs=None,
    overwrite=False,
    include=(),
    exclude=(),
    extension=None,
    scheduler=None,
    timeout=None,
    on_start=None,
    on_result=None,
    on_interrupt=None,
    _process=process_one,
    _fork=False,
) -> Report:
    """Filter every image under ``in_dir`` into the same relative path under ``out_dir``.

    Parameters
    ----------
    job : Job
    in_dir, out_dir : str or os.PathLike
        ``out_dir`` may lie inside ``in_dir`` (it is not read) but not be it.
    jobs : int, optional
        Worker processes (default: the number of cores); numba runs each
        worker's kernels on ``cores // jobs`` threads.  With ``scheduler="local"``,
        the number of Dask workers.
    overwrite : bool
        Filter files whose output exists (by default they are skipped, so a
        second run does only what the first did not finish).
    include, exclude : sequence of str
        Glob patterns (see :func:`matches`): only files matching an ``include``
        pattern (when any is given) and no ``exclude`` pattern are filtered.
    extension : str, optional
        Write every output in this format (``"jpg"``, ``".png"``) instead of
        the input's.
    scheduler : str, optional
        A Dask distributed scheduler address (``"tcp://host:8786"``) or
        ``"local"`` for a ``LocalCluster``; the folders must be on storage the
        workers share.  By default, a local pool of worker processes.
    timeout : float, optional
        Seconds a file may take (decode, filter, encode; a worker's first file
        also loads the compiled kernels): a file that takes longer fails with
        the reason ``"timeout"`` and its worker process is replaced.  With
        ``scheduler``, best effort: the limit is checked before the output is
        written, but Dask cannot stop a task that never returns (see
        :mod:`imgconv.batch.dask`).  By default, no limit.
    on_start : callable, optional
        Called with the number of files to filter, once they are known.
    on_result : callable, optional
        Called with each :class:`FileResult` as it arrives.
    on_interrupt : callable, optional
        Called on Ctrl-C with the number of files in progress and whether they
        are being abandoned.

    Returns
    -------
    Report
        ``interrupted`` is set when Ctrl-C stopped the batch.

    Raises
    ------
    ImgconvError
        For a missing input folder, an output folder that is the input, a
        Dask scheduler that cannot be reached, worker processes that cannot start.
    ValueError
        For ``jobs`` below 1, a ``timeout`` that is not a positive number of
        seconds, or an unknown ``extension``.

    Examples
    --------
    >>> import pathlib, tempfile, numpy as np
    >>> from imgconv import io, load_catalog
    >>> from imgconv.chain import Chain
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> (folder / "in").mkdir()
    >>> io.write_image(folder / "in" / "a.png", np.zeros((8, 8), np.uint8))
    >>> report = run_batch(Job(Chain.of(load_catalog().resolve("blur"))), folder / "in", folder / "out", jobs=1)
    >>> report.done, report.failed, report.exit_code
    (1, 0, 0)
    """
    if jobs is None:
        jobs = usable_cores()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a whole number of at least 1, got {jobs!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0
    ):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if extension is not None:
        try:
            extension = normalize_extension(extension)
        except ImgconvError as exc:
            raise ValueError(f"extension: {exc}") from exc
    include, exclude = tuple(include), tuple(exclude)
    wall = time.perf_counter()
    report = Report(started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    report.settings = {
        "in_dir": str(Path(in_dir).absolute()),
        "out_dir": str(Path(out_dir).absolute()),
        **_filter_settings(job.chain),
    }
    tasks, decided = plan_batch(in_dir, out_dir, include=include, exclude=exclude, extension=extension, overwrite=overwrite)
    for result in decided:
        report.add(result)
        if on_result is not None:
            on_result(result)
    if on_start is not None:
        on_start(len(tasks))

    out_root = str(Path(out_dir).absolute())
    control = _Control(on_interrupt)
    if scheduler:
        report.workers = f"Dask: {scheduler}" + (f", {max(1, min(jobs, len(tasks)))} workers" if scheduler == "local" else "")
        results = run_dask(
            job, tasks, scheduler=scheduler, jobs=jobs, process=_process, out_dir=out_root, control=control, timeout=timeout
        )
    else:
        count = max(1, min(jobs, len(tasks)))
        threads = max(1, usable_cores() // count)
        report.workers = f"{count} worker process{'es' if count > 1 else ''} x {threads} numba thread{'s' if threads > 1 else ''}"
        results = _run_local(
            job, tasks, jobs=jobs, process=_process, out_dir=out_root, control=control, timeout=timeout, fork=_fork
        )
    with control.handling_sigint():
        if tasks:
            try:
                for result in results:
                    report.add(result)
                    if on_result is not None:
                        on_result(result)
            finally:
                results.close()
    report.interrupted = control.stopping
    report.seconds = time.perf_counter() - wall
    return report
