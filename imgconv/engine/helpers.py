"""Helper threads for the work numpy runs in parallel (the FFT's tiles, engine/vector.py's
and engine/stream.py's bands), kept between calls.

Each calling thread has its own helpers, so callers in different threads (a batch's
threads, Dask's workers) never wait for each other's work.  Kept, not started per call:
starting a thread costs a wake-up and a fresh malloc arena, whose pages fault in again
on every call (numpy's FFT temporaries, the tiles' buffers).  Daemon threads, unlike a
ThreadPoolExecutor's, are not joined at interpreter exit: a filter abandoned by Ctrl-C
in a library call does not hold up the exit.
"""

import os
import queue
import threading
import weakref

_STOP = object()


def _serve(jobs):
    while True:
        job = jobs.get()
        if job is _STOP:
            return
        job()
        del job  # (its closure holds the caller's arrays)


class _Helper:
    """One daemon thread running the jobs put to it; it ends once this object is gone (its
    calling thread ended)."""

    def __init__(self):
        self.jobs = queue.SimpleQueue()
        threading.Thread(target=_serve, args=(self.jobs,), name="imgconv-helper", daemon=True).start()
        weakref.finalize(self, self.jobs.put, _STOP)


_local = threading.local()  # per calling thread: (process id, its helpers)


def _helpers(count):
    """``count`` helpers of the calling thread (made as first needed; a forked child, whose
    threads did not come with it, makes its own)."""
    crew = getattr(_local, "crew", None)
    if crew is None or crew[0] != os.getpid():
        crew = _local.crew = (os.getpid(), [])
    found = crew[1]
    while len(found) < count:
        found.append(_Helper())
    return found[:count]


def in_threads(function, items, count, *, here=True):
    """``function(item)`` for every item, in ``count`` threads: the calling one and helpers,
    or (``here`` false) helpers only.

    The items are taken in order, each by the next free thread.  The first exception
    stops the others at their next item and is raised here, once all have stopped.
    """
    pending, lock, errors, end = iter(items), threading.Lock(), [], object()

    def drain():
        while not errors:
            with lock:
                item = next(pending, end)
            if item is end:
                return
            try:
                function(item)
            except BaseException as exc:  # handed to the calling thread
                errors.append(exc)

    finished = []
    for helper in _helpers(count - 1 if here else count):
        done = threading.Event()

        def job(done=done):
            try:
                drain()
            finally:
                done.set()

        helper.jobs.put(job)
        finished.append(done)
    if here:
        drain()
    for done in finished:
        done.wait()
    if errors:
        raise errors[0]
