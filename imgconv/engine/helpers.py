"""Helper threads for the work numpy runs in parallel (the FFT's tiles, engine/vector.py's
and engine/stream.py's bands), kept between calls; and :func:`new_rows`, the kernels'
result arrays, whose large ones are recycled once the caller drops them.

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

from imgconv import tunables

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
    """``np.empty(shape, dtype)`` for a kernel's result: laid apart from the rows it is
    computed from, and, where it is large, in recycled memory or mapped up front.

    ``apart_from``: the rows the kernel reads as it writes these (float32 rows are read
    in place).  Where a store and a later load have the same address modulo 4 KB the core
    takes the load to depend on the store and waits (4K aliasing), and two arrays from
    the allocator usually start at the same offset in a page: a float32 3x3 over 2048 x
    2048 took 3.71 ms into a result at the image's offset, 3.2-3.4 ms at offsets 1-3 KB
    away (one thread, 50 ms before each call; docs/performance.md, "Fresh pages").  So a
    float32 result of at least 256 KB over float32 rows is laid 2 KB and a cache line
    from them modulo 4 KB: a view into an allocation 4 KB larger.

    A result of 32 MiB or more is mapped afresh by the allocator on every call, and each
    fresh page faults in, zeroed by the OS, when first written: for a 64 MB result 8.4 ms,
    as long as a 3x3 over its image takes into existing memory.  So such a result is
    made over the memory of one the caller has dropped (:func:`_recycled`), and where
    none is free and one thread will write it, its pages are mapped in one madvise call
    before the sweep, so that the OS's zeroing does not evict the rows the sweep is
    reading (34.5 against 37.6 ms for a 13-tap Gaussian over 4096 x 4096 float32; with
    several threads their faults are zeroed in parallel, which one call would serialise).
    """
    dtype = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize  # (np.prod: 150 us with cold caches)
    apart = (
        apart_from is not None
        and nbytes >= _APART_MIN_BYTES
        and dtype == np.float32
        and apart_from.dtype == np.float32
    )
    if nbytes >= POPULATE_MIN_BYTES:
        memory, fresh = _recycled(nbytes + _ALIAS_PERIOD)
        start = _start_apart(memory, apart_from) if apart else 0
        out = np.asarray(_Lent(memory, start, tuple(shape), dtype))
        if fresh and threads == 1:
            _populate(out)
        return out
    if not apart:
        return np.empty(shape, dtype)
    memory = np.empty(nbytes + _ALIAS_PERIOD, np.uint8)
    start = _start_apart(memory, apart_from)
    return memory[start : start + nbytes].view(dtype).reshape(shape)


def _start_apart(memory, rows) -> int:
    """The byte in ``memory`` (4 KB more than the result) where a result starts _APART bytes
    from ``rows`` modulo 4 KB."""
    return (rows.ctypes.data + _APART - memory.ctypes.data) % _ALIAS_PERIOD


# The memory of large results their callers have dropped, newest last, for the next
# result of the same size (see new_rows and tunables.RESULT_RECYCLE_BYTES).
_free_memory = []
_free_lock = threading.RLock()  # (re-entrant: a result may be dropped while the lock is held)


class _Lent:
    """The memory under one large result, lent to it: numpy keeps this object as the
    result's base, alive as long as the result or any view of it is, and when the last
    goes the memory is kept for the next result of its size instead of unmapped."""

    __slots__ = ("memory", "__array_interface__")

    def __init__(self, memory, start, shape, dtype):
        self.memory = memory
        self.__array_interface__ = {
            "data": (memory.ctypes.data + start, False),
            "shape": shape,
            "typestr": dtype.str,
            "version": 3,
        }

    def __del__(self):
        try:
            _give_back(self.memory)
        except Exception:  # (at interpreter exit the module may be half gone)
            pass


def _give_back(memory) -> None:
    limit = tunables.RESULT_RECYCLE_BYTES
    if memory.nbytes > limit:
        return
    with _free_lock:
        _free_memory.append(memory)
        total = sum(m.nbytes for m in _free_memory)
        while total > limit:
            total -= _free_memory.pop(0).nbytes


def _recycled(nbytes):
    """(memory of ``nbytes`` bytes, whether it is fresh): a dropped result's where one that
    size is kept.  Where none is, every kept one is released first: the sizes being asked
    for have changed, and keeping them would only add to the memory in use."""
    with _free_lock:
        for i in range(len(_free_memory) - 1, -1, -1):
            if _free_memory[i].nbytes == nbytes:
                return _free_memory.pop(i), False
        _free_memory.clear()
    return np.empty(nbytes, np.uint8), True


def release_recycled() -> None:
    """Unmap every kept result's memory now (the memory a program holds after dropping
    large results, back to the OS)."""
    with _free_lock:
        _free_memory.clear()


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
