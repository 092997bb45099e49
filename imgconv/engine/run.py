"""The one call that executes any plan: ``run(plan, rows, ...)``.

Every (backend, strategy) has one entry point with one signature,
``(plan, rows, channels, mode, cval, finish, threads) -> (out_rows, finished)``;
``_ROUTES`` names them.  ``rows`` are already in the kernels' canonical form
(:func:`canonical_rows`: C-contiguous, writable, uint8 / uint16 / float32, one
(H, W * C) plane), so each compiled kernel has one signature per dtype whatever
the caller passed (read-only Pillow arrays, views, Fortran order).  A route
that finishes pixels in its kernel returns ``finished=True``; the others return
float32 and :func:`run` applies the one shared finish.

One exception to packed rows: 8-bit RGB in Pillow's own layout, 4 bytes a pixel (R, G,
B and a pad byte; ``imgconv.io`` decodes into it and encodes from it).  Such an image
(the view ``storage[:, :, :3]``, :func:`padded_rows`) is handed to the compiled CPU
kernels as it is, the (H, W * 4) rows and a pixel stride of 4, and their result comes
back in the same layout, pad bytes 255: no packing pass on either side.  Other routes
(numpy, FFT, GPU) and float32 results get packed rows, as before.
"""

from __future__ import annotations

import importlib
import numbers
import os
import queue
import sys
import threading
import weakref

import numpy as np

from imgconv import tunables
from imgconv.choices import NATIVE_DTYPES
from imgconv.engine._threads import prefer_tbb
from imgconv.engine.finish import FLOAT32, Finish, finish_array
from imgconv.engine.helpers import new_rows
from imgconv.engine.plan import Plan, direct_cost, make_plan, separable_cost

# (backend, strategy) -> (module, entry point); imported when a plan runs.
_ROUTES = {
    ("cpu", "direct"): ("imgconv.engine.cpu", "run_direct"),
    ("cpu", "separable"): ("imgconv.engine.cpu", "run_separable"),
    ("cpu", "fft"): ("imgconv.engine.fft", "run_fft"),
    ("cuda", "direct"): ("imgconv.engine.cuda", "run"),
    ("cuda", "separable"): ("imgconv.engine.cuda", "run"),
}
# The same CPU routes in numpy, bit for bit: for when the compiled kernels are not yet
# cached, or an image too small to pay for importing numba (engine/compiled.py decides).
_VECTOR_ROUTES = {
    ("cpu", "direct"): ("imgconv.engine.vector", "run_direct"),
    ("cpu", "separable"): ("imgconv.engine.vector", "run_separable"),
    ("cpu", "fft"): ("imgconv.engine.vector", "run_fft"),
}


def canonical_rows(image: np.ndarray) -> tuple[np.ndarray, int]:
    """``(rows, channels)``: ``image`` (H, W) or (H, W, C) as the one form the
    kernels take -- a C-contiguous, writable (H, W * C) array of a native dtype
    (other dtypes become float32) -- copying only when it is not one already."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    padded = padded_rows(image)
    if padded is not None:  # Pillow's RGB rows, for a route that takes packed rows
        return packed(*padded), channels
    dtype = image.dtype if image.dtype in NATIVE_DTYPES else np.dtype(np.float32)
    rows = np.ascontiguousarray(image, dtype=dtype)
    if not rows.flags.writeable:  # a read-only array is another numba type: a second compile
        rows = rows.copy()
    return rows.reshape(image.shape[0], image.shape[1] * channels), channels


def _padded(image: np.ndarray):
    """``(base, start, stride)`` for :func:`padded_rows`: the memory ``image`` views, where
    its rows begin in it, and the pixel stride; else None."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.dtype != np.uint8 or image.size == 0:
        return None
    height, width, channels = image.shape
    stride = image.strides[1]
    if stride <= channels or image.strides != (width * stride, stride, 1):
        return None
    base = image.base
    while isinstance(base, np.ndarray) and isinstance(base.base, np.ndarray):
        base = base.base
    if not isinstance(base, np.ndarray) or base.dtype != np.uint8 or not base.flags.c_contiguous or not base.flags.writeable:
        return None
    start = image.ctypes.data - base.ctypes.data
    if start < 0 or start + height * width * stride > base.size:
        return None
    return base, start, stride


def padded_rows(image: np.ndarray):
    """``(rows, channels, stride)`` where ``image`` is a uint8 (H, W, C) view of the first
    ``C`` of ``stride > C`` bytes a pixel of writable, C-contiguous memory (Pillow's RGB
    rows, ``storage[:, :, :3]``): ``rows`` are those whole (H, W * stride) rows, a plain
    C-contiguous uint8 array (the kernels' one uint8 signature).  Else None."""
    found = _padded(image)
    if found is None:
        return None
    base, start, stride = found
    height, width, channels = image.shape
    return base.reshape(-1)[start : start + height * width * stride].reshape(height, width * stride), channels, stride


# The memory of pixel-stride rows whose pad elements are known to be 255, as Pillow's own
# RGB rows are (the kernels' outputs, io's decoded RGB): only those go to Pillow unpacked.
_PADS_SET = weakref.WeakValueDictionary()


def mark_pads_set(array: np.ndarray) -> None:
    """Record that the pad elements of ``array`` (an owner of its memory) are 255."""
    _PADS_SET[id(array)] = array


def pads_set(image: np.ndarray) -> bool:
    """Whether ``image`` is a :func:`padded_rows` view of memory marked by :func:`mark_pads_set`."""
    found = _padded(image)
    return found is not None and _PADS_SET.get(id(found[0])) is found[0]


_packer = None  # see set_packer


def set_packer(pack) -> None:
    """Pack (H, W * 4) uint8 RGB rows with ``pack(rows)`` -> (H, W * 3) (``imgconv.io``
    registers Pillow's raw packer: 7 ms for 12 MP, where numpy's strided copy takes 39)."""
    global _packer
    _packer = pack


def packed(rows: np.ndarray, channels: int, stride: int) -> np.ndarray:
    """(H, W * stride) rows of ``stride`` elements a pixel as packed (H, W * channels) rows (a
    new C-contiguous array): for the routes that take packed rows only."""
    height = rows.shape[0]
    if _packer is not None and (channels, stride) == (3, 4):
        out = _packer(rows)
        if out is not None:
            return out
    out = np.empty((height, rows.shape[1] // stride, channels), rows.dtype)
    cells = rows.reshape(height, -1, stride)
    for c in range(channels):  # a channel at a time: numpy's copy of (.., 3) cells is 3x slower
        out[:, :, c] = cells[:, :, c]
    return out.reshape(height, -1)


def _one_cpu_pass(plan: Plan) -> bool:
    return plan.backend == "cpu" and (plan.strategy == "direct" or (plan.strategy == "separable" and len(plan.factors) == 1))


def _takes_stride(plan: Plan, rows: np.ndarray, finish: Finish, compiled_route: bool) -> bool:
    """Whether the route reads and writes rows of a pixel stride (``cpu.run_direct``): the
    compiled CPU kernels, finishing uint8 rows into uint8 in the kernel."""
    return compiled_route and _one_cpu_pass(plan) and rows.dtype == np.uint8 and finish.dtype == np.uint8 and not finish.plain


def takes_pillow_rows(plan: Plan, shape) -> bool:
    """Whether :func:`run` would now hand 8-bit RGB rows of ``shape`` (H, W, 3) to the
    kernels in Pillow's layout for ``plan`` (with a uint8 finish): a compiled CPU pass.
    Elsewhere they would be packed first, so a reader had better pack them itself (the
    packed copy would sit beside Pillow's rows)."""
    if not _one_cpu_pass(plan):
        return False
    from imgconv.engine import compiled

    return not compiled.would_use_vector(plan.strategy, _work(plan, float(np.prod(shape))))


def thread_count(threads: int | None) -> int:
    """How many threads to use: ``threads``, or numba's setting (``NUMBA_NUM_THREADS``).

    Raises
    ------
    ValueError
        ``threads`` is not a whole number from 1 to ``NUMBA_NUM_THREADS``.
    """
    return _thread_setting(threads)[0]


def _thread_setting(threads: int | None) -> tuple[int, int | None]:
    """:func:`thread_count`, and numba's setting in this thread as it was read (None where
    numba is not imported)."""
    if "numba" in sys.modules or not _plain_thread_setting():
        prefer_tbb()  # (reading the setting starts numba's threads)
        import numba  # numba's own reading of an unusual NUMBA_NUM_THREADS: its error or warning

        limit = numba.config.NUMBA_NUM_THREADS
        current = read = numba_thread_setting()
    else:  # numba's own default, read without importing it (engine/vector.py may run instead)
        limit = current = _default_thread_limit()
        read = None
    if threads is None:
        return current, read
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or not 1 <= threads <= limit:
        raise ValueError(f"threads must be a whole number from 1 to {limit} (NUMBA_NUM_THREADS), got {threads!r}")
    return int(threads), read


def _plain_thread_setting() -> bool:
    """``NUMBA_NUM_THREADS`` is unset or a plain positive whole number (read here as numba would)."""
    value = os.environ.get("NUMBA_NUM_THREADS")
    return value is None or (value.isdigit() and value.isascii() and int(value) > 0)


def usable_cores() -> int:
    """The cores this process may run on (numba's default thread count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _default_thread_limit() -> int:
    """``NUMBA_NUM_THREADS`` as numba will read it (when :func:`_plain_thread_setting`): the
    variable, else :func:`usable_cores`."""
    value = os.environ.get("NUMBA_NUM_THREADS")
    return int(value) if value is not None else usable_cores()


def _work(plan: Plan, elements: float) -> float:
    """Multiply-adds the plan takes over ``elements`` row elements (for choosing numpy or numba)."""
    if plan.strategy == "separable":
        taps = sum(len(column) + len(row) for column, row in plan.factors)
    else:
        taps = np.count_nonzero(plan.kernel)
    return float(elements) * taps


def _short(plan: Plan, elements: float, taps: float) -> bool:
    """Whether a CPU direct or separable pass of ``taps`` multiply-adds an element over
    ``elements`` row elements is expected (the planner's one-thread cost model) to take at
    most ``tunables.KERNEL_THREAD_MIN_NS``: it then runs in the calling thread (:func:`run`).
    FFT plans always go to the kernel thread."""
    if plan.backend != "cpu" or plan.strategy == "fft":
        return False
    if plan.strategy == "separable":
        ns = separable_cost(plan.kernel.shape, len(plan.factors))
    else:
        ns = direct_cost(plan.kernel, taps)
    return float(elements) * ns <= tunables.KERNEL_THREAD_MIN_NS


_modules = {}  # a route's module name -> the module, imported once


def _entry(plan: Plan, elements: float, taps: float | None = None):
    """The route's entry point, and whether it is a compiled one (run under numba's thread
    setting); ``taps``: :func:`_work` per element, when the caller has it."""
    routes = _ROUTES
    if plan.backend == "cpu":
        from imgconv.engine import compiled

        work = _work(plan, elements) if taps is None else float(elements) * taps
        if compiled.use_vector(plan.strategy, work):
            routes = _VECTOR_ROUTES
    module, name = routes[(plan.backend, plan.strategy)]
    if module not in _modules:
        _modules[module] = importlib.import_module(module)
    return getattr(_modules[module], name), routes is _ROUTES


def band_route(plan: Plan, elements: float):
    """The entry point that runs ``plan`` for the band driver (``engine/stream.py``), chosen
    once for an image of ``elements`` elements as :func:`run` would choose it, and whether it
    is a compiled one.  The entry points take ``row_map``, ``out`` and ``bands``."""

    return _entry(plan, elements)


class numba_threads:
    """numba's parallel kernels called in this thread within run on ``count`` threads
    (numba's setting is per calling thread); the setting before is restored after.
    ``current``: this thread's setting, where the caller has just read it."""

    __slots__ = ("count", "current", "previous")

    def __init__(self, count: int, current: int | None = None):
        self.count, self.current, self.previous = count, current, None

    def __enter__(self):
        import numba

        previous = numba.get_num_threads() if self.current is None else self.current
        if previous != self.count:  # (else nothing: setting it costs as much as the rest of a small call)
            numba.set_num_threads(self.count)
            self.previous = previous

    def __exit__(self, *exc):
        if self.previous is not None:
            import numba

            numba.set_num_threads(self.previous)


def run_work(work, compiled: bool, count: int):
    """``work()`` (the band driver's loop) under ``count`` numba threads when it runs compiled
    kernels, where Ctrl-C can still interrupt the wait for it (as :func:`run`)."""

    def execute():
        if not compiled:
            return work()
        with numba_threads(count):
            return work()

    return _interruptible(execute)


def run(
    plan: Plan,
    rows: np.ndarray,
    channels: int,
    *,
    mode: str,
    cval: float,
    finish: Finish = FLOAT32,
    threads: int | None = None,
    pixel_stride: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Execute ``plan`` over canonical ``rows`` (see :func:`canonical_rows`), or rows of
    ``pixel_stride`` elements a pixel, the ``channels`` first (:func:`padded_rows`).

    ``out``: C-contiguous float32 (H, W * C) rows, not overlapping ``rows``, for a plain
    float32 ``finish``: the result goes there and ``out`` is returned (the CPU routes
    write it; the GPU's result is copied in).

    Returns (H, W * C) rows in ``finish.dtype``, finished (offset, abs, round,
    clip) by the route's kernel or by the shared finish; for rows of a pixel stride,
    (H, W * stride) rows in that layout (pad elements 255) where the route takes
    them (:func:`_takes_stride`), else packed (H, W * C) rows: tell them by their width.
    """
    count, current = _thread_setting(threads)
    stride = channels if pixel_stride is None else int(pixel_stride)
    if out is not None and not finish.plain:
        raise ValueError("an output array is for a plain float32 finish")
    if rows.size == 0:
        if out is not None:
            out.fill(0)
            return out
        return np.zeros((rows.shape[0], rows.shape[1] // stride * channels), finish.dtype)
    elements = rows.size // stride * channels
    taps = _work(plan, 1.0)
    entry, compiled_route = _entry(plan, elements, taps)
    _last_run.compiled = plan if compiled_route and plan.backend == "cpu" else None
    extra = {}
    if stride != channels:
        if _takes_stride(plan, rows, finish, compiled_route):
            extra = {"pixel_stride": stride}
        else:
            rows = packed(rows, channels, stride)  # the one packing pass, where the route needs it
    if out is not None and plan.backend == "cpu":
        extra["out"] = out  # (float32: never Pillow's strided rows, which go packed above)

    def execute(known=None):
        if not compiled_route:  # numpy: no numba to import or set up
            return entry(plan, rows, channels, mode, cval, finish, count, **extra)
        with numba_threads(count, known):
            return entry(plan, rows, channels, mode, cval, finish, count, **extra)

    # GPU work stays in the calling thread: its stream, buffers and taps are kept per
    # thread (engine/cuda.py), and a launch returns at once; so does a short CPU pass
    # (:func:`_short`); longer CPU kernels run where Ctrl-C can still interrupt the wait
    # (another thread, with its own numba setting).
    here = plan.backend == "cuda" or _short(plan, elements, taps)
    result, finished = execute(current) if here else _interruptible(execute)
    result = result if finished else finish_array(result, finish)
    if out is not None and result is not out:
        np.copyto(out, result)
        return out
    return result


def numba_thread_setting() -> int:
    """``numba.get_num_threads()`` in this thread, once numba's threads have started: its
    reading straight from the threading layer (the public function takes two locks each
    call, 30 us with cold caches); numba's own function before then, or where a numba
    version lacks that reading."""
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if parallel is not None and getattr(parallel, "_is_initialized", False):
        read = getattr(parallel, "_get_num_threads", None)
        if read is not None:
            count = read()
            if count > 0:
                return count
    import numba

    return numba.get_num_threads()


def _tunable_settings() -> tuple:
    """Every setting in ``imgconv.tunables`` as it is now (0.4 us): a :class:`Repeat` is
    made under them."""
    return tuple(vars(tunables).values())


# The plan whose compiled CPU route this thread's last run() took (None: another route), for
# repeat_of: a Repeat is made only of what has just run.
_last_run = threading.local()


class Repeat:
    """:func:`run` of one plan, made once for the calls that repeat it (``filtering.convolve``
    keeps them): every decision :func:`run` makes from the plan, the rows' shape and dtype
    and the settings (thread count, route, the kernel's prepared arguments, this thread or
    the kernel thread) is taken here, so a repeated small call costs the kernel's own call.
    ``repeat(rows, out)`` runs it over rows of that shape and dtype (``out``: None, or
    float32 rows as :func:`run` takes them)."""

    __slots__ = ("plan", "call", "count", "here", "settings")

    def __init__(self, plan, call, count, here):
        self.plan, self.call, self.count, self.here = plan, call, count, here
        self.settings = _tunable_settings()

    def __call__(self, rows, out=None, current=None):
        """The result (``out`` where given), or None where ``imgconv.tunables`` has changed
        since (the decisions kept may no longer be :func:`run`'s: run it instead).
        ``current``: numba's setting in this thread, where the caller has just read it."""
        if _tunable_settings() != self.settings:
            return None
        if out is None:
            out = new_rows(rows.shape, np.float32, self.count, rows)
        call, count = self.call, self.count

        def execute(known=None):
            with numba_threads(count, known):
                call(rows, out)

        if self.here:
            execute(current)
        else:
            _interruptible(execute)
        return out


def repeat_of(plan: Plan, rows: np.ndarray, channels: int, *, mode: str, cval: float, threads: int | None):
    """A :class:`Repeat` of what :func:`run` has just done for packed ``rows`` with a plain
    float32 finish, where that was one compiled CPU pass; else None (numpy's routes, which
    run while the kernels are not loaded, the FFT and several passes)."""
    elements = rows.size
    if elements == 0 or not _one_cpu_pass(plan) or getattr(_last_run, "compiled", None) is not plan:
        return None
    count = _thread_setting(threads)[0]
    from imgconv.engine import cpu

    call = cpu.one_pass_call(plan, rows, channels, mode, cval, FLOAT32, count)
    return None if call is None else Repeat(plan, call, count, _short(plan, elements, _work(plan, 1.0)))


class _KernelThread:
    """One long-lived daemon thread that runs compiled kernels for the main thread.

    Long-lived, so what backends keep per thread (numba's OpenMP team, the CUDA
    stream, device buffers and prepared taps) is made once and reused; a
    daemon, so an abandoned kernel never holds up the end of the process.
    """

    def __init__(self):
        self.jobs = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="imgconv-kernel", daemon=True).start()

    def _serve(self):
        while True:
            work, outcome, done = self.jobs.get()
            try:
                outcome["value"] = work()
            except BaseException as exc:  # handed to the caller's thread
                outcome["error"] = exc
            finally:
                done.set()
            # Not kept until the next job: the work's closure holds its image (a chain's
            # input, say, which would otherwise stay alive through the writing).
            del work, outcome, done

    def call(self, work):
        outcome, done = {}, threading.Event()
        self.jobs.put((work, outcome, done))
        while not done.wait(0.25):  # KeyboardInterrupt is raised here at once
            pass
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]


_kernel_thread = None
_kernel_thread_lock = threading.Lock()


def _interruptible(work):
    """``work()``, run so that Ctrl-C still reaches the main thread.

    A compiled kernel holds the thread that runs it for as long as it runs
    (seconds to minutes for a huge kernel forced direct), and Python runs
    signal handlers only in the main thread, between bytecodes: so from the
    main thread the work runs in the kernel thread (the kernels release the
    GIL) while the main thread waits in short waits, where KeyboardInterrupt
    is raised at once.  An interrupted kernel finishes in the background; the
    CLI exits without waiting for it.  Other threads (batch or Dask workers,
    the FFT's pool) call the work directly.
    """
    global _kernel_thread
    if threading.current_thread() is not threading.main_thread():
        return work()
    if _kernel_thread is None:
        with _kernel_thread_lock:
            if _kernel_thread is None:
                _kernel_thread = _KernelThread()
    return _kernel_thread.call(work)


def convolve_planned(
    image: np.ndarray,
    kernel: np.ndarray,
    *,
    mode: str,
    cval: float,
    backend: str = "auto",
    strategy: str = "auto",
    factors=None,
    threads: int | None = None,
    finish: Finish = FLOAT32,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, Plan]:
    """Plan (memoised) and run one convolution of a validated (H, W) or (H, W, C)
    image; the result, shaped like ``image``, and the plan that ran.  ``out``: a
    C-contiguous float32 array shaped like ``image``, not overlapping it, that receives
    the result (a plain float32 finish only)."""
    plan = make_plan(kernel, image.shape, backend=backend, strategy=strategy, factors=factors)
    out_rows = None if out is None else out.reshape(image.shape[0], int(np.prod(image.shape[1:])))  # (-1 fails for no rows)
    padded = padded_rows(image)
    if padded is not None:  # Pillow's RGB rows: read as they are, the result in that layout
        rows, channels, stride = padded
        result = run(plan, rows, channels, mode=mode, cval=cval, finish=finish, threads=threads, pixel_stride=stride, out=out_rows)
        if result.shape[1] == rows.shape[1]:
            mark_pads_set(result)  # the kernels set every pad element to 255
            return result.reshape(image.shape[:2] + (stride,))[:, :, :channels], plan
        return result.reshape(image.shape), plan
    rows, channels = canonical_rows(image)
    result = run(plan, rows, channels, mode=mode, cval=cval, finish=finish, threads=threads, out=out_rows)
    return result.reshape(image.shape), plan
