"""Filtering files: one file (``filter_file``), or every image under a folder
(``run_batch``), with a report that counts what was done, skipped and failed.

A job is plain data (the resolved filter and its options) and each file is
handled by a pure function of (job, source, destination), so the files can be
handed to any executor that maps a function over work items.  ``run_batch``
has two: a pool of worker processes on this machine, and a Dask distributed
cluster (``scheduler=``).

The local pool
--------------
``jobs`` worker processes (started with ``spawn``: numba's OpenMP threading
layer is not fork-safe), each taking one file at a time through decode,
filter and encode, each running numba with ``cores // jobs`` threads, so the
workers never oversubscribe the cores and, at any moment, one worker decodes
while another filters or encodes.  The main process only lists the files,
hands them out (asking the kernel to read the next ones ahead) and collects the
results.  Each worker has its own pipe, so when one dies (a crash in a
decoder, the out-of-memory killer) the main process knows which file it was
working on: that file is reported as failed, a fresh worker takes its place
and every other file keeps its output.

Interruption
------------
While a batch runs in the main thread, Ctrl-C (SIGINT) does not raise: the
first one stops handing out files and lets the files in progress finish (their
outputs are written atomically, so none is ever partial); a second one
abandons them (their workers are terminated and their temporary files
removed).  ``run_batch`` then returns a report with ``interrupted`` set
(exit code 130), listing every file that was not finished.
"""

from __future__ import annotations

import contextlib
import datetime
import fnmatch
import glob
import json
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from imgconv.errors import ImgconvError, ImgconvWarning

# FileResult.status values
DONE = "done"
SKIPPED = "skipped"
FAILED = "failed"
INTERRUPTED = "interrupted"

# FileResult.reason values for skipped files
EXISTS = "exists"  # the output is already there (and --overwrite was not given)
NOT_IMAGE = "not-image"  # not an image file, by its extension
EXCLUDED = "excluded"  # left out by the include/exclude patterns
# ... and for interrupted files
NOT_STARTED = "not-started"  # still waiting when the batch was stopped
ABANDONED = "abandoned"  # in progress when a second Ctrl-C came


@dataclass(frozen=True)
class Job:
    """What to do to every file: a resolved catalog filter and how to apply it."""

    filter: object  # imgconv.catalog.Filter, or imgconv.chain.Chain (several filters, repeat, strength, linear light)
    mode: str = "reflect"
    cval: float = 0.0
    alpha: str = "premultiplied"
    out_range: str | None = None
    backend: str = "auto"
    strategy: str = "auto"
    threads: int | None = None  # compute threads; None: numba's setting


def filter_file(job, source, destination):
    """Read ``source``, filter it, write ``destination`` atomically.

    The whole input is decoded before anything is written, so ``destination``
    may be ``source``.  Returns the shape of the image's pixel array.
    """
    from imgconv import io
    from imgconv.chain import filter_image

    image = io.read_image(source)
    try:
        # job.filter is a Filter or a chain; every Job option apply_filter takes is passed on.
        pixels = filter_image(job, image, source)
    except MemoryError:
        height, width = image.pixels.shape[:2]
        raise ImgconvError(f"not enough memory to filter '{source}' ({width}x{height})") from None
    io.write_image(destination, pixels, like=image)
    return image.pixels.shape


@dataclass
class FileResult:
    """What happened to one file.

    ``status`` is ``"done"``, ``"skipped"`` (``reason``: ``"exists"``,
    ``"not-image"`` or ``"excluded"``), ``"failed"`` (``message`` says why) or
    ``"interrupted"`` (``reason``: ``"not-started"`` or ``"abandoned"``).
    ``warnings`` are what the output could not keep (see :mod:`imgconv.io`).
    """

    source: str
    destination: str | None
    status: str
    message: str = ""
    seconds: float = 0.0
    reason: str = ""
    warnings: tuple = ()
    megapixels: float = 0.0

    def record(self):
        """The result as a JSON-ready dict."""
        return {
            "source": self.source,
            "destination": self.destination,
            "status": self.status,
            "reason": self.reason or None,
            "error": self.message if self.status == FAILED else None,
            "seconds": round(self.seconds, 4),
            "megapixels": round(self.megapixels, 3),
            "warnings": list(self.warnings),
        }


@dataclass
class Report:
    """Counts of what a batch did; the exit code follows from it."""

    results: list = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    workers: str = ""
    started: str = ""
    settings: dict = field(default_factory=dict)

    def add(self, result):
        self.results.append(result)

    def _count(self, status, reason=None):
        return sum(1 for r in self.results if r.status == status and (reason is None or r.reason == reason))

    @property
    def done(self):
        return self._count(DONE)

    @property
    def skipped(self):
        """Every skipped file: outputs that exist, files that are not images, excluded files."""
        return self._count(SKIPPED)

    @property
    def skipped_existing(self):
        return self._count(SKIPPED, EXISTS)

    @property
    def skipped_not_images(self):
        return self._count(SKIPPED, NOT_IMAGE)

    @property
    def excluded(self):
        return self._count(SKIPPED, EXCLUDED)

    @property
    def failed(self):
        return self._count(FAILED)

    @property
    def unfinished(self):
        """Files not finished because the batch was interrupted."""
        return self._count(INTERRUPTED)

    @property
    def failures(self):
        return [r for r in self.results if r.status == FAILED]

    @property
    def images_per_second(self):
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def megapixels(self):
        """Megapixels filtered (of the files done)."""
        return sum(r.megapixels for r in self.results if r.status == DONE)

    @property
    def megapixels_per_second(self):
        return self.megapixels / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self):
        """130 when interrupted (as a shell reports SIGINT), 1 when any file failed, else 0."""
        if self.interrupted:
            return 130
        return 1 if self.failed else 0

    def summary(self):
        parts = [f"{self.done} done"]
        if self.skipped_existing:
            parts.append(f"{self.skipped_existing} skipped (output exists)")
        if self.skipped_not_images:
            parts.append(f"{self.skipped_not_images} skipped (not images)")
        if self.excluded:
            parts.append(f"{self.excluded} excluded")
        parts.append(f"{self.failed} failed")
        if self.unfinished:
            parts.append(f"{self.unfinished} not finished")
        rates = f"{self.images_per_second:.2f} images/s, {self.megapixels_per_second:.2f} MP/s"
        text = ", ".join(parts) + f" in {self.seconds:.1f} s ({rates})"
        return ("interrupted: " + text) if self.interrupted else text

    def as_dict(self):
        """The whole report, every file included, as JSON-ready data (``--report``)."""
        from imgconv import __version__

        return {
            "imgconv": __version__,
            **self.settings,
            "started": self.started,
            "seconds": round(self.seconds, 3),
            "workers": self.workers,
            "interrupted": self.interrupted,
            "exit_code": self.exit_code,
            "counts": {
                "done": self.done,
                "skipped_existing": self.skipped_existing,
                "skipped_not_image": self.skipped_not_images,
                "excluded": self.excluded,
                "failed": self.failed,
                "interrupted": self.unfinished,
            },
            "images_per_second": round(self.images_per_second, 3),
            "megapixels": round(self.megapixels, 3),
            "megapixels_per_second": round(self.megapixels_per_second, 3),
            "files": [r.record() for r in sorted(self.results, key=lambda r: r.source)],
        }

    def write_json(self, path):
        """Write :meth:`as_dict` to ``path`` as JSON, atomically."""
        path = Path(path)
        temp = path.with_name(f".{path.name}.imgconv-tmp-{os.getpid()}")
        try:
            with open(temp, "w", encoding="utf-8") as stream:
                json.dump(self.as_dict(), stream, indent=1, ensure_ascii=False, default=str)
                stream.write("\n")
            os.replace(temp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.remove(temp)
            raise ImgconvError(f"cannot write the report '{path}': {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------
# what to do with each file


@dataclass(frozen=True)
class Task:
    """One file to filter: ``source`` into ``destination`` (both absolute)."""

    source: Path
    destination: Path


def find_files(in_dir, out_dir):
    """Every file under ``in_dir``, recursively and in a stable order, except
    those under ``out_dir`` (which may lie inside ``in_dir``).  Symbolic links
    to files are listed; links to folders are not followed."""
    in_dir, out_dir = Path(in_dir), Path(out_dir).resolve()
    found = []
    for folder, subfolders, files in os.walk(in_dir):
        folder = Path(folder)
        subfolders[:] = sorted(d for d in subfolders if (folder / d).resolve() != out_dir)
        found.extend(folder / name for name in sorted(files))
    return found


def matches(relative, patterns):
    """Whether a path relative to the input folder (``a/b/c.jpg``) matches any
    glob pattern: the whole relative path, the file name, or any folder above
    it (``raw`` matches everything under ``raw/``).  Case-insensitive."""
    relative = relative.lower()
    parts = relative.split("/")
    candidates = [relative, parts[-1]]
    for depth in range(1, len(parts)):
        candidates.append("/".join(parts[:depth]))
        candidates.append(parts[depth - 1])
    return any(fnmatch.fnmatchcase(c, p.lower()) for p in patterns for c in candidates)


def normalize_extension(ext):
    """``"JPG"``, ``"jpg"`` or ``".jpg"`` -> ``".jpg"``; an unknown format is an ImageError."""
    from imgconv import io

    ext = "." + ext.strip().lstrip(".").lower()
    io.output_format("x" + ext)  # raises for an unknown extension
    return ext


def escapes(destination, out_dir):
    """Why writing ``destination`` would leave ``out_dir`` (a ``..`` in the
    name, or a folder on the way that is a symbolic link to elsewhere), or
    None when it stays inside.  Folders that do not exist yet count as inside."""
    folder = Path(destination).parent
    try:
        folder.resolve().relative_to(Path(out_dir).resolve())
    except ValueError:
        return f"'{folder}' leads outside the output folder '{out_dir}'"
    return None


def plan_batch(in_dir, out_dir, *, include=(), exclude=(), extension=None, overwrite=False):
    """Decide what the batch does with every file under ``in_dir``.

    Returns ``(tasks, results)``: the files to filter, and a :class:`FileResult`
    for each file decided without filtering (skipped, or failed because its
    output would overwrite an input, collide with another output or leave
    ``out_dir``).
    """
    from imgconv import io

    in_dir, out_dir = Path(in_dir).absolute(), Path(out_dir).absolute()
    if not in_dir.is_dir():
        raise ImgconvError(f"input folder '{in_dir}' does not exist or is not a folder")
    if out_dir.exists() and out_dir.resolve() == in_dir.resolve():
        raise ImgconvError(f"output folder '{out_dir}' is the input folder: the outputs would replace the inputs")
    if out_dir.exists() and not out_dir.is_dir():
        raise ImgconvError(f"output folder '{out_dir}' exists and is not a folder")
    sources = find_files(in_dir, out_dir)
    inputs = {os.path.realpath(p) for p in sources}
    claimed = {}
    tasks, results = [], []
    for source in sources:
        relative = source.relative_to(in_dir)
        if (include and not matches(relative.as_posix(), include)) or (exclude and matches(relative.as_posix(), exclude)):
            results.append(FileResult(str(source), None, SKIPPED, "left out by --include/--exclude", reason=EXCLUDED))
            continue
        if not io.is_image_path(source):
            results.append(FileResult(str(source), None, SKIPPED, "not an image file", reason=NOT_IMAGE))
            continue
        destination = out_dir / relative
        if extension is not None:
            destination = destination.with_suffix(extension)
        problem = escapes(destination, out_dir)
        if problem is None and os.path.realpath(destination) in inputs:
            problem = f"its output '{destination}' is an input file of this batch"
        if problem is None and destination in claimed:
            problem = f"its output '{destination}' is also the output of '{claimed[destination]}'"
        if problem is not None:
            results.append(FileResult(str(source), str(destination), FAILED, f"'{source}' not filtered: {problem}"))
            continue
        claimed[destination] = source
        if not overwrite and os.path.lexists(destination):
            results.append(FileResult(str(source), str(destination), SKIPPED, "output exists", reason=EXISTS))
            continue
        tasks.append(Task(source, destination))
    return tasks, results


# ---------------------------------------------------------------------------
# one file, in a worker


_collector = threading.local()
_collector_lock = threading.Lock()
_previous_showwarning = None


def _showwarning(message, category, filename, lineno, file=None, line=None):
    notes = getattr(_collector, "notes", None)
    if notes is not None and issubclass(category, ImgconvWarning):
        notes.append(str(message))
    elif _previous_showwarning is not None:
        _previous_showwarning(message, category, filename, lineno, file, line)


@contextlib.contextmanager
def _collecting_warnings():
    """Collect the ImgconvWarnings this thread raises into a list (thread-safe,
    unlike ``warnings.catch_warnings``, for Dask workers running threads)."""
    global _previous_showwarning
    with _collector_lock:
        if warnings.showwarning is not _showwarning:
            _previous_showwarning = warnings.showwarning
            warnings.showwarning = _showwarning
            warnings.simplefilter("always", ImgconvWarning)
    _collector.notes = notes = []
    try:
        yield notes
    finally:
        _collector.notes = None


def process_one(job, source, destination, *, out_dir=None):
    """Filter one file and describe the outcome; a failure never raises.

    With ``out_dir``, the output must stay inside it: the folders on the way
    are checked before and after they are created.  Errors a user can act on
    (:class:`ImgconvError`, ``OSError``, ``MemoryError``) become the message;
    anything else is a bug, reported with its type and where it happened, so
    that one file never costs the others their outputs.
    """
    started = time.perf_counter()
    source, destination = Path(source), Path(destination)
    notes = ()
    shape = None
    try:
        with _collecting_warnings() as notes:
            if out_dir is not None and (problem := escapes(destination, out_dir)):
                raise ImgconvError(f"'{source}' not filtered: {problem}")
            destination.parent.mkdir(parents=True, exist_ok=True)
            if out_dir is not None and (problem := escapes(destination, out_dir)):
                raise ImgconvError(f"'{source}' not filtered: {problem}")
            shape = filter_file(job, source, destination)
    except (ImgconvError, OSError) as exc:
        message = str(exc)
    except MemoryError:
        message = f"not enough memory to filter '{source}'"
    except Exception as exc:  # noqa: BLE001 - isolate the file, but name the cause
        where = traceback.extract_tb(exc.__traceback__)[-1]
        place = f"{Path(where.filename).name}:{where.lineno}"
        message = f"internal error on '{source}': {type(exc).__name__}: {exc} (at {place}; please report it)"
    else:
        megapixels = shape[0] * shape[1] / 1e6 if isinstance(shape, tuple) and len(shape) >= 2 else 0.0
        return FileResult(
            str(source), str(destination), DONE, "", time.perf_counter() - started, warnings=tuple(notes), megapixels=megapixels
        )
    return FileResult(str(source), str(destination), FAILED, message, time.perf_counter() - started, warnings=tuple(notes))


def usable_cores():
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def limit_numba_threads(threads):
    """Run numba's parallel kernels on ``threads`` threads in this thread
    (before numba is imported: for the whole process)."""
    if "numba" not in sys.modules:
        current = os.environ.get("NUMBA_NUM_THREADS", "")
        if not current.isdigit() or int(current) > threads:
            os.environ["NUMBA_NUM_THREADS"] = str(threads)
        return
    import numba

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


def _terminate(signum, frame):
    # SystemExit unwinds the worker: the `finally` blocks remove temporary files.
    raise SystemExit(128 + signum)


def _worker_main(conn, job, threads, process, out_dir):
    """A local worker process: filter the files sent down ``conn``, one at a time."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's business
    signal.signal(signal.SIGTERM, _terminate)
    limit_numba_threads(threads)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        result = process(job, *task, out_dir=out_dir)
        try:
            conn.send(("result", result))
        except OSError:
            return


# ---------------------------------------------------------------------------
# the local pool


def _interrupted(task, reason):
    what = "not started" if reason == NOT_STARTED else "abandoned in progress"
    return FileResult(str(task.source), str(task.destination), INTERRUPTED, f"{what}: the batch was interrupted", reason=reason)


def _signal_name(exitcode):
    if exitcode is not None and exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def _prefetch(path):
    """Ask the kernel to start reading ``path`` (asynchronous readahead)."""
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_temporaries(destination):
    """Remove what io.write_image leaves when its process is killed mid-write."""
    from imgconv import io

    destination = Path(destination)
    base, ext = os.path.splitext(destination.name)
    # io names them ".NAME.imgconv-tmp-RANDOM.EXT" next to the output.
    for leftover in destination.parent.glob(f".{glob.escape(base)}{io._TMP_MARK}-*{glob.escape(ext)}"):
        with contextlib.suppress(OSError):
            leftover.unlink()


class _Control:
    """Ctrl-C as requests: the first stops handing out files, the second abandons those in progress."""

    def __init__(self, on_interrupt=None):
        self.stopping = False
        self.abandoning = False
        self.on_interrupt = on_interrupt
        self.in_progress = lambda: 0

    def __call__(self, signum=None, frame=None):
        if self.stopping:
            self.abandoning = True
        self.stopping = True
        if self.on_interrupt is not None:
            self.on_interrupt(self.in_progress(), self.abandoning)

    @contextlib.contextmanager
    def handling_sigint(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _children_ignore_sigint():
    """Start processes with SIGINT ignored (an ignored signal stays ignored
    across exec), so that a Ctrl-C at the terminal, which signals the whole
    process group, reaches only this process, which decides what to do.  A
    Ctrl-C meant for this process meanwhile is held (blocked), not lost."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class _Worker:
    def __init__(self, context, job, threads, process, out_dir):
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_worker_main,
            args=(child, job, threads, process, out_dir),
            name="imgconv-batch-worker",
            daemon=True,
        )
        with _children_ignore_sigint():
            self.process.start()
        child.close()
        self.ready = False
        self.task = None

    def send(self, task):
        self.conn.send((str(task.source), str(task.destination)))
        self.task = task

    def receive(self):
        """The next message, or None when the worker has died."""
        try:
            return self.conn.recv()
        except (EOFError, OSError, ValueError, TypeError, AttributeError, ImportError, pickle.UnpicklingError):
            # ValueError & co: a message cut short by the worker's death.
            return None

    def died(self):
        self.process.join(timeout=5)
        return _signal_name(self.process.exitcode)

    def stop(self, *, abandon=False):
        with contextlib.suppress(OSError):
            if abandon:
                self.process.terminate()
            else:
                self.conn.send(None)

    def close(self):
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _run_local(job, tasks, *, jobs, process, out_dir, control):
    """Filter ``tasks`` in ``jobs`` worker processes; yields a FileResult per task."""
    import multiprocessing
    from multiprocessing.connection import wait

    # spawn, not fork: numba's OpenMP threads (once a kernel has run in this
    # process) do not survive a fork; and not a fork server, which imports
    # modules with its own sys.path (perhaps another imgconv than the caller's).
    context = multiprocessing.get_context("spawn")
    queue = deque(tasks)
    count = max(1, min(jobs, len(queue)))
    threads = max(1, usable_cores() // count)
    workers = []
    control.in_progress = lambda: sum(1 for w in workers if w.task is not None)
    read_ahead = 0  # tasks[:read_ahead] have been prefetched

    def start_worker():
        workers.append(_Worker(context, job, threads, process, out_dir))

    try:
        for _ in range(count):
            start_worker()
        while True:
            if control.stopping:
                while queue:
                    task = queue.popleft()
                    yield _interrupted(task, NOT_STARTED)
            for worker in workers:
                if worker.task is None and queue:
                    worker.send(queue.popleft())
            # Let the kernel read the files handed out next while these are filtered.
            handed_out = len(tasks) - len(queue)
            while read_ahead < min(len(tasks), handed_out + len(workers)):
                if read_ahead >= handed_out:
                    _prefetch(tasks[read_ahead].source)
                read_ahead += 1
            busy = [w for w in workers if w.task is not None]
            if not busy:
                return
            if control.abandoning:
                for worker in busy:
                    worker.stop(abandon=True)
                for worker in busy:
                    worker.close()
                    _remove_temporaries(worker.task.destination)
                    yield _interrupted(worker.task, ABANDONED)
                    worker.task = None
                return
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=0.2))
            for worker in busy:
                if worker.conn not in ready and worker.process.sentinel not in ready:
                    continue
                message = worker.receive() if worker.conn.poll() else None
                if message is not None and message[0] == "ready":
                    worker.ready = True
                    continue
                if message is not None:
                    task, worker.task = worker.task, None
                    yield message[1]
                    continue
                # The worker died: its file is the culprit, the others go on.
                cause = worker.died()
                task, worker.task = worker.task, None
                workers.remove(worker)
                worker.conn.close()
                _remove_temporaries(task.destination)
                if control.stopping:  # e.g. a Ctrl-C that reached a worker still starting
                    yield _interrupted(task, ABANDONED)
                    continue
                if not worker.ready:
                    raise ImgconvError(f"a batch worker process failed to start ({cause}); see the messages above")
                yield FileResult(
                    str(task.source),
                    str(task.destination),
                    FAILED,
                    f"the worker process died ({cause}) while filtering '{task.source}'",
                )
                if queue and not control.stopping:
                    start_worker()
    finally:
        for worker in workers:
            worker.stop(abandon=worker.task is not None)
        for worker in workers:
            worker.close()


# ---------------------------------------------------------------------------
# a Dask cluster


def _dask_task(job, source, destination, threads, process, out_dir):
    """Filter one file on a Dask worker, with numba limited to this task's share of the cores."""
    if threads is None:
        try:
            from distributed import get_worker

            worker_threads = get_worker().state.nthreads
        except (ImportError, ValueError, AttributeError):
            worker_threads = 1
        threads = max(1, usable_cores() // max(1, worker_threads))
    limit_numba_threads(threads)
    return process(job, source, destination, out_dir=out_dir)


def _run_dask(job, tasks, *, scheduler, jobs, process, out_dir, control):
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
        raise ImgconvError(f"cannot connect to the Dask scheduler '{scheduler}': {exc}") from None

    queue = deque(tasks)
    running = {}
    control.in_progress = lambda: len(running)
    try:
        slots = max(1, sum(client.nthreads().values()))
        while queue or running:
            if control.stopping:
                while queue:
                    task = queue.popleft()
                    yield _interrupted(task, NOT_STARTED)
            if control.abandoning:
                client.cancel(list(running))
                for future, task in running.items():
                    yield _interrupted(task, ABANDONED)
                running.clear()
                return
            while queue and len(running) < 2 * slots:
                task = queue.popleft()
                future = client.submit(
                    _dask_task, job, str(task.source), str(task.destination), threads, process, out_dir, pure=False, retries=0
                )
                running[future] = task
            if not running:
                break
            try:
                finished, _ = dask_wait(list(running), timeout=0.2, return_when="FIRST_COMPLETED")
            except TimeoutError:
                continue
            for future in finished:
                task = running.pop(future)
                if future.status == "finished":
                    yield future.result()
                elif future.status == "cancelled" or control.stopping:
                    yield _interrupted(task, ABANDONED)
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


# ---------------------------------------------------------------------------
# the batch


def run_batch(
    job,
    in_dir,
    out_dir,
    *,
    jobs=None,
    overwrite=False,
    include=(),
    exclude=(),
    extension=None,
    scheduler=None,
    on_start=None,
    on_result=None,
    on_interrupt=None,
    _process=process_one,
):
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
        For ``jobs`` below 1 or an unknown ``extension``.
    """
    if jobs is None:
        jobs = usable_cores()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a whole number of at least 1, got {jobs!r}")
    if extension is not None:
        try:
            extension = normalize_extension(extension)
        except ImgconvError as exc:
            raise ValueError(f"extension: {exc}") from None
    include, exclude = tuple(include), tuple(exclude)
    wall = time.perf_counter()
    report = Report(started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    report.settings = {
        "in_dir": str(Path(in_dir).absolute()),
        "out_dir": str(Path(out_dir).absolute()),
        "filter": getattr(job.filter, "name", str(job.filter)),
        "params": {str(k): v for k, v in dict(getattr(job.filter, "params", {}) or {}).items()},
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
        results = _run_dask(job, tasks, scheduler=scheduler, jobs=jobs, process=_process, out_dir=out_root, control=control)
    else:
        count = max(1, min(jobs, len(tasks)))
        threads = max(1, usable_cores() // count)
        report.workers = f"{count} worker process{'es' if count > 1 else ''} x {threads} numba thread{'s' if threads > 1 else ''}"
        results = _run_local(job, tasks, jobs=jobs, process=_process, out_dir=out_root, control=control)
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
