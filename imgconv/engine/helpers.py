"""Helper threads for the work numpy runs in parallel (the FFT's tiles, engine/vector.py's
and engine/stream.py's bands), kept between calls; and :func:`new_rows`, the kernels'
result arrays.

Each calling thread has its own helpers, so callers in different threads (a batch's
threads, Dask's workers) never wait for each other's work.  Kept, not started per call:
starting a thread costs a wake-up and a fresh malloc arena, whose pages fault in again
on every call (numpy's FFT temporaries, the tiles' buffers).  Daemon threads, unlike a
ThreadPoolExecutor's, are not joined at interpreter exit: a filter abandoned by Ctrl-C
in a library call does not hold up the exit.
"""

import math
import mmap
import os
import queue
import sys
import threading
import weakref

import numpy as np

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


# glibc maps every allocation over 32 MiB (the most its mmap threshold may rise to on
# 64-bit) afresh, so a result that size always starts as untouched pages.  Smaller ones
# mostly reuse its heap's pages, where mapping them again measured a loss: a 3x3 over
# 2048 x 2048 float32 took 4.44 against 4.26 ms with its 16 MB result mapped first.
POPULATE_MIN_BYTES = 32 << 20
_MADV_POPULATE_WRITE = 23  # Linux 5.14
_madvise = None  # libc's madvise, once looked up; False where there is none


# Where a float32 result's rows lie against its source's, modulo 4 KB (see new_rows).
_ALIAS_PERIOD = 4096
_APART = 2048 + 64  # (measured a little faster than 2048 alone)
_APART_MIN_BYTES = 256 << 10


def new_rows(shape, dtype, threads=None, apart_from=None) -> np.ndarray:
    """``np.empty(shape, dtype)`` for a kernel's result, its pages mapped up front where it
    is large and one thread will write it.

    ``apart_from``: the rows the kernel reads as it writes these (float32 rows are read
    in place).  Where a store and a later load have the same address modulo 4 KB the core
    takes the load to depend on the store and waits (4K aliasing), and two arrays from
    the allocator usually start at the same offset in a page: a float32 3x3 over 2048 x
    2048 took 3.71 ms into a result at the image's offset, 3.2-3.4 ms at offsets 1-3 KB
    away (one thread, 50 ms before each call; docs/performance.md, "Fresh pages").  So a
    float32 result of at least 256 KB over float32 rows is laid 2 KB and a cache line
    from them modulo 4 KB: a view into an allocation 4 KB larger.

    A fresh page faults in (zeroed by the kernel) when first written; the kernel's zeroing
    then evicts the rows the sweep is reading.  Mapping all of them in one madvise call
    before the sweep measured 34.5 against 37.6 ms for a 13-tap Gaussian over 4096 x 4096
    float32 on one thread (docs/performance.md, "Fresh pages").  With several threads
    their faults are zeroed in parallel, which one call in one thread would serialise.
    """
    dtype = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize  # (np.prod: 150 us with cold caches)
    if apart_from is None or nbytes < _APART_MIN_BYTES or dtype != np.float32 or apart_from.dtype != np.float32:
        out = np.empty(shape, dtype)
    else:
        memory = np.empty(nbytes + _ALIAS_PERIOD, np.uint8)
        start = (apart_from.ctypes.data + _APART - memory.ctypes.data) % _ALIAS_PERIOD
        out = memory[start : start + nbytes].view(dtype).reshape(shape)
    if threads == 1 and out.nbytes >= POPULATE_MIN_BYTES:
        _populate(out)
    return out


def _populate(array) -> None:
    global _madvise
    if _madvise is None:
        _madvise = False
        if sys.platform.startswith("linux"):
            import ctypes

            try:
                libc = ctypes.CDLL(None, use_errno=True)
                _madvise = libc.madvise
                _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                _madvise.restype = ctypes.c_int
            except (OSError, AttributeError):
                _madvise = False
    if not _madvise:
        return
    start = array.ctypes.data
    page = mmap.PAGESIZE
    first = -(-start // page) * page  # madvise takes whole pages (the first one faults as before)
    end = start + array.nbytes
    if end > first:
        _madvise(first, end - first, _MADV_POPULATE_WRITE)  # an older kernel's EINVAL: pages fault as before
