"""The local pool: worker processes on this machine, each filtering one file at a time.

``jobs`` worker processes (forked from this process once it has imported what
filtering needs, where that is safe, else spawned: :func:`_start_method`), each
taking one file at a time through decode, filter and encode
(:func:`process_one`, over :func:`imgconv.pipeline.filter_file`), each running
numba with ``cores // jobs`` threads, so the workers never oversubscribe the
cores and, at any moment, one worker decodes while another filters or encodes.
The main process only lists the files, hands them out (asking the kernel to read
the next ones ahead) and collects the results; it imports numba, for its workers
to inherit, but never runs a kernel.  Each worker has its own pipe, so when one
dies (a crash in a decoder, the out-of-memory killer) the main process knows
which file it was working on: that file is reported as failed, a fresh worker
takes its place and every other file keeps its output.  With a time limit
(``timeout``), a worker whose file takes longer is stopped (SIGTERM, then
SIGKILL: a hung decoder in compiled code never sees SIGTERM), the file fails
with the reason ``timeout``, and a fresh worker takes its place too.

A worker never outlives the main process: it watches its parent (on Linux the
kernel also sends it SIGTERM when the parent dies, ``PR_SET_PDEATHSIG``), and
ends itself, however the parent ended (SIGKILL included).

Interruption
------------
While a batch runs in the main thread, Ctrl-C (SIGINT) does not raise: the
first one stops handing out files and lets the files in progress finish (their
outputs are written atomically, so none is ever partial); a second one
abandons them (their workers are terminated and their temporary files
removed).  :class:`_Control` holds those requests; the executors read them.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import warnings
from collections import deque
from pathlib import Path

from imgconv import io, tunables
from imgconv.batch.report import ABANDONED, DONE, FAILED, NOT_STARTED, TIMEOUT, FileResult, interrupted
from imgconv.batch.tasks import escapes, output_folder
from imgconv.engine import compiled
from imgconv.engine.run import usable_cores
from imgconv.errors import ImgconvError, ImgconvWarning
from imgconv.pipeline import Job, filter_file

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


class _OutOfTime(ImgconvError):
    """A file that took longer than the batch's time limit."""


def _time_limit_message(source, timeout, what) -> str:
    return f"'{source}' took longer than the time limit ({timeout:g} s): {what}"


def process_one(job: Job, source, destination, *, out_dir=None, timeout=None) -> FileResult:
    """Filter one file and describe the outcome; a failure never raises.

    With ``out_dir``, the output must stay inside it: the folders on the way
    are checked before filtering (:func:`~imgconv.batch.tasks.escapes`), then
    created, checked and opened at the moment of writing, and the output is
    written into the opened folder (:func:`~imgconv.batch.tasks.output_folder`).
    Folders are created only for an output about to be written.  With
    ``timeout`` (seconds), a file that took longer by the time its output
    would be written fails with the reason ``timeout`` and nothing is written
    (the local pool also stops a worker that overruns; see :func:`_run_local`).
    Errors a user can act on (:class:`ImgconvError`, ``OSError``,
    ``MemoryError``) become the message; anything else is a bug, reported with
    its type and where it happened, so that one file never costs the others
    their outputs.
    """
    started = time.perf_counter()
    source, destination = Path(source), Path(destination)
    notes, reason = (), ""

    @contextlib.contextmanager
    def open_folder():
        if timeout is not None and time.perf_counter() - started > timeout:
            raise _OutOfTime(_time_limit_message(source, timeout, "its output was not written"))
        if out_dir is None:
            destination.parent.mkdir(parents=True, exist_ok=True)
            yield None
            return
        with output_folder(destination, out_dir) as fd:
            yield fd

    try:
        with _collecting_warnings() as notes:
            if out_dir is not None and (problem := escapes(destination, out_dir)):
                raise ImgconvError(f"'{source}' not filtered: {problem}")
            filtered = filter_file(job, source, destination, open_folder=open_folder)
    except _OutOfTime as exc:
        message, reason = str(exc), TIMEOUT
    except (ImgconvError, OSError) as exc:
        message = str(exc)
    except MemoryError:
        message = f"not enough memory to filter '{source}'"
    except Exception as exc:  # noqa: BLE001 - isolate the file, but name the cause
        where = traceback.extract_tb(exc.__traceback__)[-1]
        place = f"{Path(where.filename).name}:{where.lineno}"
        message = f"internal error on '{source}': {type(exc).__name__}: {exc} (at {place}; please report it)"
    else:
        seconds = time.perf_counter() - started
        return FileResult(str(source), str(destination), DONE, "", seconds, warnings=tuple(notes), megapixels=filtered.megapixels)
    seconds = time.perf_counter() - started
    return FileResult(str(source), str(destination), FAILED, message, seconds, reason=reason, warnings=tuple(notes))


def limit_numba_threads(threads: int) -> None:
    """Run numba's parallel kernels on ``threads`` threads in this thread
    (before numba is imported: for the whole process)."""
    if "numba" not in sys.modules:
        current = os.environ.get("NUMBA_NUM_THREADS", "")
        if not current.isdigit() or int(current) > threads:
            os.environ["NUMBA_NUM_THREADS"] = str(threads)
        return
    import numba
    from numba.np.ufunc import parallel

    if not parallel._is_initialized and threads < numba.config.NUMBA_NUM_THREADS:
        # Imported, its pool not started yet (a forked worker): a pool of ``threads``, as
        # NUMBA_NUM_THREADS would have made it (some threading layers start every thread).
        numba.config.NUMBA_NUM_THREADS = parallel.NUM_THREADS = threads
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


def _terminate(signum, frame):
    # SystemExit unwinds the worker: the `finally` blocks remove temporary files.
    raise SystemExit(128 + signum)


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _follow_parent(parent: int) -> None:
    """End this process when its parent (``parent``, a pid) ends, however it ends:
    on Linux the kernel sends SIGTERM (``PR_SET_PDEATHSIG``); everywhere, a
    thread watches for the parent to change (an orphan is adopted by another)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before the kernel was asked
        _orphaned()
    threading.Thread(target=_watch_parent, args=(parent,), name="imgconv-parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(tunables.BATCH_PARENT_POLL_SECONDS)
    _orphaned()


def _orphaned() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # the main thread unwinds (_terminate): temporary files go
    time.sleep(tunables.BATCH_KILL_GRACE_SECONDS)
    os._exit(128 + signal.SIGTERM)  # stuck in compiled code, where SIGTERM's handler never runs


def _worker_main(conn, job, threads, process, out_dir, timeout, parent, inherited=()):
    """A local worker process: filter the files sent down ``conn``, one at a time
    (``inherited``: descriptors of the main process's that a forked worker closes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's business
    signal.signal(signal.SIGTERM, _terminate)
    signal.set_wakeup_fd(-1)  # a forked worker's signals are its own, not the main process's
    for fd in inherited:
        with contextlib.suppress(OSError):
            os.close(fd)
    _follow_parent(parent)
    limit_numba_threads(threads)
    compiled.expect_many_images()  # its files pay for loading the compiled kernels
    conn.send(("ready", os.getpid()))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        result = process(job, *task, out_dir=out_dir, timeout=timeout)
        try:
            conn.send(("result", result))
        except OSError:
            return


# ---------------------------------------------------------------------------
# the local pool


# Libraries whose threads or state a forked child would inherit broken (libvips's
# GLib threads; the CUDA driver refuses to run in a child forked after it started).
_NOT_FORK_SAFE = ("pyvips", "numba.cuda")


def _start_method(fork: bool = True) -> str:
    """How to start a worker: ``"fork"`` where it is safe (and ``fork``: the command
    line's own processes, whose state imgconv controls), else ``"spawn"``.

    A forked worker has this process's imports and numba's compiler set up
    (:func:`imgconv.pipeline.warm_up`, done here once before the first fork) and
    filters its first file at once; a spawned one imports numpy, Pillow and numba
    and sets the compiler up itself, about 1.5 CPU seconds apiece.  A fork is safe
    where nothing runs that it would not carry over: no other Python thread, no
    library of ``_NOT_FORK_SAFE`` loaded, and numba's thread pool never started in
    this process (a parallel kernel run or even loaded starts it; the batch's main
    process runs none, the resident worker's copies neither).  A program calling
    :func:`~imgconv.batch.run_batch` holds state imgconv cannot see (signal
    wake-up descriptors, sockets, C libraries' threads): its workers are spawned.
    Linux only: macOS's system libraries are not fork-safe.  Not a fork server: it
    imports modules with its own ``sys.path`` (perhaps another imgconv than the
    caller's)."""
    if not fork or not sys.platform.startswith("linux") or threading.active_count() > 1:
        return "spawn"
    if any(name in sys.modules for name in _NOT_FORK_SAFE):
        return "spawn"
    if "numba" in sys.modules:
        from numba.np.ufunc import parallel

        if getattr(parallel, "_is_initialized", True):
            return "spawn"
    try:
        from imgconv import pipeline

        pipeline.warm_up()
    except Exception:  # noqa: BLE001 - a spawned worker reports what fails to import
        return "spawn"
    return "fork"


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
    try:  # O_NONBLOCK: a FIFO put there since the batch was planned does not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_temporaries(destination, out_dir):
    """Remove what io.write_image leaves when its process is killed mid-write
    (not through a folder that now leads out of ``out_dir``)."""
    if out_dir is not None and escapes(destination, out_dir):
        return
    for leftover in io.temporary_files(destination):
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


@contextlib.contextmanager
def _frozen(forking: bool):
    """Fork with this process's objects out of the collector's reach (``gc.freeze``): the
    worker's collector then never touches, and so never copies, the pages it shares with
    this process; here they are collected again as before once the worker is forked."""
    if not forking:
        yield
        return
    import gc

    frozen_before = gc.get_freeze_count()  # (a resident worker's copy: all frozen already)
    gc.freeze()
    try:
        yield
    finally:
        if not frozen_before:
            gc.unfreeze()


class _Worker:
    def __init__(self, context, job, threads, process, out_dir, timeout, inherited=()):
        self.conn, child = context.Pipe()
        forking = context.get_start_method() == "fork"
        inherited = tuple(inherited) if forking else ()
        self.process = context.Process(
            target=_worker_main,
            args=(child, job, threads, process, out_dir, timeout, os.getpid(), inherited),
            name="imgconv-batch-worker",
            daemon=True,
        )
        with _children_ignore_sigint(), _frozen(forking):
            self.process.start()
        child.close()
        self.ready = False
        self.task = None
        self.started = None  # when the worker began its task (once it is ready)

    def send(self, task):
        self.conn.send((str(task.source), str(task.destination)))
        self.task = task
        self.started = time.monotonic() if self.ready else None

    def became_ready(self):
        self.ready = True
        if self.task is not None and self.started is None:
            self.started = time.monotonic()

    def receive(self):
        """The next message, or None when the worker has died."""
        try:
            return self.conn.recv()
        except (EOFError, OSError, ValueError, TypeError, AttributeError, ImportError, pickle.UnpicklingError):
            # ValueError & co: a message cut short by the worker's death.
            return None

    def died(self):
        self.process.join(timeout=tunables.BATCH_JOIN_SECONDS)
        return _signal_name(self.process.exitcode)

    def stop(self, *, abandon=False):
        with contextlib.suppress(OSError):
            if abandon:
                self.process.terminate()
            else:
                self.conn.send(None)

    def halt(self):
        """Stop the worker now: SIGTERM, and SIGKILL if it has not exited soon after."""
        self.process.terminate()
        self.process.join(timeout=tunables.BATCH_KILL_GRACE_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()

    def close(self):
        self.process.join(timeout=tunables.BATCH_JOIN_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _run_local(job, tasks, *, jobs, process, out_dir, control, timeout=None, fork=False):
    """Filter ``tasks`` in ``jobs`` worker processes; yields a FileResult per task
    (``fork``: the workers may be forked from this process, :func:`_start_method`).

    With ``timeout``, a worker still on its file ``timeout`` seconds after it
    began it is stopped, the file fails (reason ``timeout``) and a fresh worker
    takes its place."""
    import multiprocessing
    from multiprocessing.connection import wait

    queue = deque(tasks)
    count = max(1, min(jobs, len(queue)))
    threads = max(1, usable_cores() // count)
    workers = []
    control.in_progress = lambda: sum(1 for w in workers if w.task is not None)
    read_ahead = 0  # tasks[:read_ahead] have been prefetched

    def start_worker():
        # Decided for each worker: a replacement is forked only if forking is still safe.
        context = multiprocessing.get_context(_start_method(fork))
        # A forked worker closes its copies of the other workers' pipes (so that each
        # pipe's end-of-file still means what it says).
        inherited = [fd for w in workers for fd in (w.conn.fileno(), w.process.sentinel)]
        workers.append(_Worker(context, job, threads, process, out_dir, timeout, inherited))

    def overdue(worker, now):
        return timeout is not None and worker.started is not None and now - worker.started > timeout

    def retire(worker):
        """Take a dead or stopped worker out; returns its task, its temporary files removed."""
        task, worker.task = worker.task, None
        workers.remove(worker)
        worker.conn.close()
        _remove_temporaries(task.destination, out_dir)
        return task

    try:
        for _ in range(count):
            start_worker()
        while True:
            if control.stopping:
                while queue:
                    task = queue.popleft()
                    yield interrupted(task, NOT_STARTED)
            for worker in workers:
                if worker.task is None and queue:
                    worker.send(queue.popleft())
            # Let the kernel read the files handed out next while these are filtered.
            handed_out = len(tasks) - len(queue)
            while read_ahead < min(len(tasks), handed_out + tunables.BATCH_PREFETCH_PER_WORKER * len(workers)):
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
                    _remove_temporaries(worker.task.destination, out_dir)
                    yield interrupted(worker.task, ABANDONED)
                    worker.task = None
                return
            wake = tunables.BATCH_POLL_SECONDS
            if timeout is not None:
                now = time.monotonic()
                for worker in busy:
                    if worker.started is not None:
                        wake = min(wake, max(0.0, worker.started + timeout - now) + 0.01)
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=wake))
            for worker in busy:
                if worker.conn not in ready and worker.process.sentinel not in ready:
                    continue
                message = worker.receive() if worker.conn.poll() else None
                if message is not None and message[0] == "ready":
                    worker.became_ready()
                    continue
                if message is not None:
                    task, worker.task = worker.task, None
                    yield message[1]
                    continue
                # The worker died: its file is the culprit, the others go on.
                cause = worker.died()
                task = retire(worker)
                if control.stopping:  # e.g. a Ctrl-C that reached a worker still starting
                    yield interrupted(task, ABANDONED)
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
            now = time.monotonic()
            for worker in [w for w in workers if w.task is not None and overdue(w, now)]:
                worker.halt()
                # It may have finished just before it was stopped: then its result stands.
                message = worker.receive() if worker.conn.poll() else None
                task = retire(worker)
                if queue and not control.stopping:
                    start_worker()
                if message is not None and message[0] == "result":
                    yield message[1]
                    continue
                message = _time_limit_message(task.source, timeout, "its worker process was stopped")
                yield FileResult(str(task.source), str(task.destination), FAILED, message, now - worker.started, reason=TIMEOUT)
    finally:
        for worker in workers:
            worker.stop(abandon=worker.task is not None)
        for worker in workers:
            worker.close()
