"""The band driver: a chain of row-wise layers run band by band, with no full-size float image.

A single filter on a native image runs in one kernel call that reads source rows through
its ring of line buffers and stores finished rows.  Everything else -- chains, repeats,
strength, linear light, alpha -- is a sequence of *layers*, each making float32 rows from
the rows of the layer before: a convolution (:class:`ConvLayer`, one CPU plan), or a
per-row transform defined by its caller (``filtering``: the alpha policies; ``chain``:
sRGB decoding, blending and encoding).  :func:`run_layers` runs them over bands of output
rows: for a band it works back from the last layer which rows each layer must make (a
convolution needs its output rows' extended rows, through the border map: near an edge
or in ``wrap`` mode they may lie at the other end of the image), makes exactly those,
layer after layer, into band buffers, and the last layer writes the band's output rows
in the image's dtype.  So the only full-size arrays are the input and the output.

**What it costs.**  Each band recomputes the halo of each layer: ``kh - 1`` rows for every
later convolution, once per band and layer, and a separable kernel's row pass re-makes its own
``kh - 1`` rows at the top of each band (a Gaussian of sigma 2, 17 taps, repeated twice on a
4240-wide RGB image, 88-row bands: the first pass makes 104 rows a band, its row pass 120).  Buffers: one
float32 band (plus halo) per layer but the last, in each band pipeline, and what a layer
makes per band (:func:`band_buffers`); :func:`band_rows` sizes the bands so that all of them
together hold ``tunables.STREAM_BAND_ELEMENTS`` per buffer, or ``tunables.STREAM_BAND_SHARE``
of the image where that is more (wide images, where so few elements would be few rows and
the halos a large share of them: a 100 MP RGB image, 255 rows a band).  Where the halos would
cost more than ``tunables.STREAM_MAX_RECOMPUTE`` of the work (kernels about as tall as the
image), bands grow, up to one band of the whole image, where each layer keeps a full-size
buffer (as before this driver).

**Threads.**  With several threads and several bands, each thread is a band pipeline: it
takes the next band, runs every layer over it through its own buffers, and every kernel call
on that thread alone (numba's thread count is per calling thread; the numpy twin is called
with one thread).  So a kernel call has a whole band to itself: no waiting at the end of each
call for the slowest thread, and no sub-bands, each re-making the separable row pass's halo
(the 100 MP chain ``gaussian:sigma=2,sharpen``: 2.65x the single filter's time before, 1.09x
after; docs/performance.md, "Every path streams").  One band: its kernel calls share it among
the threads, as a whole-image call does.

**The same bits.**  A convolution layer calls the CPU route's own entry point (compiled,
``engine/cpu.py``, or its numpy twin, ``engine/vector.py``: chosen once for the whole
image, as ``engine.run`` would) with a row map into the band buffer in place of the
image's border map; every output row is the same sum of the same values in the same order
as in a whole-image call, so the result depends neither on the bands nor on the threads.
The per-row layers are numpy or compiled (``points_module``), the same bits either way.

Only ``engine.plan`` chooses a plan; this module runs CPU plans (direct and separable) and
is handed nothing else (``streams``).
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from imgconv import tunables
from imgconv.engine import borders, helpers
from imgconv.engine.finish import Finish, finish_array
from imgconv.engine.plan import Plan

__all__ = ["streams", "ConvLayer", "PointLayer", "run_layers", "rows_of", "band_buffers"]


def points_module(compiled: bool):
    """The band driver's per-element transforms: compiled (``engine/points.py``) where the
    convolutions run compiled, else their numpy twins (``engine/vector.py``): the same bits."""
    if compiled:
        from imgconv.engine import points
    else:
        from imgconv.engine import vector as points
    return points


def streams(plan: Plan) -> bool:
    """Whether ``plan`` can run band by band here (CPU, direct or separable)."""
    return plan.backend == "cpu" and plan.strategy in ("direct", "separable")


def rows_of(prev, index, r0, r1):
    """Rows ``r0 .. r1 - 1`` of the layer before, from its band buffer ``prev`` (``index``:
    image row -> buffer row; None: ``prev`` is the whole image)."""
    if index is None:
        return prev[r0:r1]
    start = index[r0]
    return prev[start : start + (r1 - r0)]


def local_map(row_map, index):
    """``row_map`` (rows of the image, -1: ``cval``) as rows of a band buffer (``index``)."""
    if index is None:
        return np.ascontiguousarray(row_map, np.int64)
    return np.where(row_map >= 0, index[np.maximum(row_map, 0)], -1).astype(np.int64)


class PointLayer:
    """A layer whose output row ``i`` depends on row ``i`` of the layer before only.

    ``compute(prev, index, r0, r1, out)`` makes output rows ``r0 .. r1 - 1`` into ``out``
    (use :func:`rows_of`)."""

    passes = ()

    def needs(self, r0, r1):
        return np.arange(r0, r1, dtype=np.int64)

    def compute(self, prev, index, r0, r1, out):  # pragma: no cover - an interface
        raise NotImplementedError


class Kernel:
    """One plan run over band rows: its border map and route, fixed for the whole image."""

    def __init__(self, plan: Plan, height: int, width: int, channels: int, mode: str, cval: float, threads: int):
        from imgconv.engine.run import band_route

        kh, kw = plan.kernel_shape
        self.plan, self.channels, self.mode, self.cval, self.kh = plan, channels, mode, float(cval), kh
        self.row_map = borders.extended_maps(height, width, channels, kh, kw, mode)[0]
        self.entry, self.compiled = band_route(plan, float(height) * width * channels)
        self.threads = threads

    def needs(self, r0, r1):
        rows = np.unique(self.row_map[r0 : r1 + self.kh - 1])
        return rows[rows >= 0]

    def run(self, prev, index, r0, r1, out, finish: Finish):
        """Output rows ``r0 .. r1 - 1`` into ``out`` (``finish.dtype``), from the band buffer."""
        row_map = local_map(self.row_map[r0 : r1 + self.kh - 1], index)
        several = self.plan.strategy == "separable" and len(self.plan.factors) > 1
        target = np.empty(out.shape, np.float32) if several else out
        threads = getattr(_pipeline, "threads", self.threads)  # in a band pipeline's thread: 1
        args = (self.plan, prev, self.channels, self.mode, self.cval, finish, threads)
        _, finished = self.entry(*args, row_map=row_map, out=target, bands=threads)
        if not finished:  # several separable pairs: summed in float32, finished here
            out[...] = finish_array(target, finish)


class ConvLayer:
    """A convolution of every channel of the layer before by one plan, finished by ``finish``."""

    def __init__(self, plan, shape, mode, cval, finish, threads, label=None):
        height, width, channels = shape
        self.kernel = Kernel(plan, height, width, channels, mode, cval, threads)
        self.plans = [plan]
        # Several separable pairs: their sum and each pair's result (engine.cpu.run_separable).
        self.band_buffers = 2 if plan.strategy == "separable" and len(plan.factors) > 1 else 0
        self.finish = finish
        self.passes = (label,) if label is not None else ()

    def needs(self, r0, r1):
        return self.kernel.needs(r0, r1)

    def compute(self, prev, index, r0, r1, out):
        self.kernel.run(prev, index, r0, r1, out, self.finish)


def _runs(rows):
    """``(r0, r1, position)`` of each run of consecutive rows in sorted ``rows``."""
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(rows)]])
    return [(int(rows[s]), int(rows[e - 1]) + 1, int(s)) for s, e in zip(starts, ends)]


def _needed(layers, a, b):
    """The rows each layer makes for output rows ``a .. b - 1`` of the last (first layer first)."""
    needed = [np.arange(a, b, dtype=np.int64)]
    for layer in layers[:0:-1]:
        parts = [layer.needs(r0, r1) for r0, r1, _ in _runs(needed[0])]
        needed.insert(0, np.unique(np.concatenate(parts)) if len(parts) > 1 else parts[0])
    return needed


def band_buffers(layer) -> float:
    """Float32 buffers of a band's size a layer makes for itself while it computes a band
    (its ``band_buffers``; 0: it writes into the band driver's buffer, or ``out``)."""
    return getattr(layer, "band_buffers", 0)


def band_rows(layers, height, width, workers: int = 1) -> int:
    """Output rows a band.  The band buffers of ``workers`` band pipelines together (each
    keeps one per layer but the last, and whatever its layers make per band:
    :func:`band_buffers`) hold ``tunables.STREAM_BAND_ELEMENTS`` elements per buffer of one
    pipeline, or ``tunables.STREAM_BAND_SHARE`` of the image's elements where that is more
    (wide images: fewer, longer bands, so the halos, ``kh - 1`` rows re-made by each band,
    are a smaller share of the rows); bands grow while the halos would cost more than
    ``tunables.STREAM_MAX_RECOMPUTE`` of the rows made once."""
    width = max(1, width)
    units = max(1.0, len(layers) - 1 + sum(band_buffers(layer) for layer in layers))
    budget = max(tunables.STREAM_BAND_ELEMENTS * units, tunables.STREAM_BAND_SHARE * height * width)
    band = max(1, min(height, int(budget // (workers * units * width))))
    while band < height:
        made = sum(len(rows) for a in range(0, height, band) for rows in _needed(layers, a, min(height, a + band)))
        if made <= (1 + tunables.STREAM_MAX_RECOMPUTE) * height * len(layers):
            break
        band *= 2
    return min(band, height)


def run_layers(layers, source, out, *, threads: int | None = None, band: int | None = None):
    """Run ``layers`` over canonical ``source`` rows (H, W * C) into ``out`` (H, W * C, the
    last layer's dtype), band by band; every earlier layer makes float32 rows.

    Bands run in parallel, one band pipeline per thread (:func:`_sweep`).  A layer whose
    ``mapping`` ``measures`` (out-range ``normalize``: the whole image's minimum and
    maximum) is first run alone, with the layers before it, to measure; then every layer
    runs (so such a layer's rows are computed twice).
    """
    from imgconv.engine.run import run_work, thread_count

    count = thread_count(threads)
    height, width = source.shape
    if height == 0 or width == 0:
        return out
    compiled = any(getattr(layer, "compiled", False) or any(k.compiled for k in kernels_of(layer)) for layer in layers)

    def work():
        for k, layer in enumerate(layers):
            mapping = getattr(layer, "mapping", None)
            if mapping is not None and mapping.measures:
                _sweep(layers[: k + 1], source, None, band, count, compiled)
                mapping.done_measuring()
        return _sweep(layers, source, out, band, count, compiled)

    return run_work(work, compiled, count)


def kernels_of(layer):
    """The :class:`Kernel` objects of a layer (for the route: compiled or numpy)."""
    found = [getattr(layer, "kernel", None)]
    for name in ("group", "all", "colour", "opacity"):
        group = getattr(layer, name, None)
        found += getattr(group, "kernels", [])
    return [k for k in found if isinstance(k, Kernel)]


# Set in a band pipeline's thread (``_alone``): the kernels it calls run on it alone.
_pipeline = threading.local()


@contextlib.contextmanager
def _alone(compiled: bool):
    """The kernels called in this thread within run on it alone, one band a call (numba's
    thread count is per calling thread)."""
    from imgconv.engine.run import numba_threads

    previous = getattr(_pipeline, "threads", None)
    _pipeline.threads = 1
    try:
        with numba_threads(1) if compiled else contextlib.nullcontext():
            yield
    finally:
        if previous is None:
            del _pipeline.threads
        else:
            _pipeline.threads = previous


def _sweep(layers, source, out, band, count=1, compiled=False):
    """One pass of ``layers`` over every band; ``out`` None: the last layer's rows go to a
    scratch buffer (a measuring pass).

    With ``count`` threads and at least two bands, each thread runs whole bands, one after
    another, through its own band buffers, every kernel call on that thread alone: a call
    then has a whole band to itself (sharing a band's few rows among threads, each thread's
    sub-band re-made the separable row pass's ``kh - 1`` halo rows, and each call waited for
    the slowest thread); one band: its kernel calls share it among the threads.  Every row
    is the same sum whichever thread makes it, so the bits do not depend on the threads.
    """
    height, width = source.shape
    band = band_rows(layers, height, width, count) if band is None else band
    starts = range(0, height, band)
    workers = max(1, min(count, len(starts)))
    if workers == 1:
        buffers = [np.empty((0, width), np.float32) for _ in layers]
        for a in starts:
            _band(layers, source, out, a, min(height, a + band), buffers)
        return out
    local = threading.local()

    def one(a):
        buffers = getattr(local, "buffers", None)
        if buffers is None:
            buffers = local.buffers = [np.empty((0, width), np.float32) for _ in layers]
        with _alone(compiled):
            _band(layers, source, out, a, min(height, a + band), buffers)

    helpers.in_threads(one, starts, workers)
    return out


def _band(layers, source, out, a, b, buffers):
    """Output rows ``a .. b - 1`` of the last layer, each layer's rows made into ``buffers``
    (one per layer, grown as needed; ``out`` None: the last layer's too)."""
    height, width = source.shape
    prev, index = source, None
    for k, (layer, rows) in enumerate(zip(layers, _needed(layers, a, b))):
        last = k == len(layers) - 1
        if last and out is not None:
            target = out[a:b]
        else:
            if len(buffers[k]) < len(rows):
                buffers[k] = np.empty((len(rows), width), np.float32)
            target = buffers[k][: len(rows)]
        for r0, r1, position in _runs(rows):
            layer.compute(prev, index, r0, r1, target[position : position + r1 - r0])
        if not last:
            index = np.full(height, -1, np.int64)
            index[rows] = np.arange(len(rows))
            prev = target
