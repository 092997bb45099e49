"""numpy backend: the same sums as ``engine/cpu.py``, in numpy, bit for bit.

For when the compiled kernels are not yet in numba's on-disk cache (the first
run after installing, while ``engine/compiled.py`` compiles them in a background
process) or the image is too small to pay for importing numba.  ``run_direct``,
``run_separable`` and ``gather_region`` compute what their namesakes in
``cpu.py`` compute, in the same float32 operations in the same order, so the
two give the same bits (tests/test_vector.py compares them); **change the two
together.**  ``run_fft`` is ``fft.run_fft`` with this module's gather.  Nothing
here imports numba (nor ``engine.cpu``, which does).

The image is seen as ``cpu.py`` sees it: one 2-D array of rows of ``W * C``
elements, extended beyond its edges through the same border index maps
(``borders.extended_maps``), a tap one pixel to the right being ``C`` elements along.

**Bands and chunks.**  Output rows are cut into bands (``BAND_ROWS``), shared out
among ``threads`` daemon threads when ``threads > 1`` and the image is large enough
to pay (``PARALLEL_MIN_ELEMENTS``; numpy's ufuncs release the GIL).  A band keeps
its extended source rows (plus the kernel's reach below) in one float32 buffer,
filled a chunk at a time just before they are first read (uint8 and uint16 rows
are converted there: an integer image gets no full-size float copy).  The sums
are made over chunks of output rows of about ``CHUNK_ELEMENTS`` elements, so
that a chunk's sum and its two scratch buffers stay in cache while every tap
sweeps them.  About 5 MiB of buffers a thread for a 4000-pixel-wide RGB image.

**The order of the sum** is ``cpu.py``'s: the non-zero taps of the flipped
kernel in row-major order, four at a time, ``((w0 a + w1 b) + w2 c) + w3 d``,
each group added to the running sum.  Each product and each addition is one
ufunc over the whole chunk (``np.multiply(x, w, out=tmp)``,
``np.add(acc, tmp, out=acc)``): float32 in, float32 out, no fused
multiply-add, so each element gets the very operations the compiled loop
gives it.  Two shortcuts change no bits: a weight of 1 or -1 makes no product
(``t + 1 * x`` is ``t + x``, ``t + -1 * x`` is ``t - x``), and a first group of
fewer than four taps is not added to -0.0 as in ``cpu.py`` (``-0.0 + x`` is
``x``).  A kernel with no non-zero tap sums to +0.0, as there.

**The separable kernel** is, as in ``cpu.py``, a row pass over *all* taps of
the row factor (zero taps included: they turn an infinity into NaN) into a
band's buffer of row-pass results, then a column pass over all taps of the
column factor.  An extended row beyond the image in ``constant`` mode is all
``cval``; its row-pass result is taken as ``float32(cval * sum(row))`` (summed
in float64), as ``cpu.py`` does, not computed.  Several factor pairs are
summed ``total += part`` in float32 (here band by band: the same additions
without a full-size ``part``) and left to the shared finish (``finished`` is
False).

**The finish** is ``cpu._finished`` in ufuncs: ``v + offset`` (also an offset
of 0, which makes -0.0 +0.0, except before a rounding or an ``abs``, where that
cannot show), ``abs``, and for an integer output ``rint`` and
``min(max(v, low), high)`` (``np.clip``), then the store; a NaN rounded for an
integer output is stored as 0 in both (storing a NaN in an integer is undefined:
LLVM's ``fptoui`` / ``fptosi`` gave 0, the dtype's minimum or 65535 by dtype and
by where the element fell in a row).  A NaN meeting another NaN in an addition
may keep either one's payload (sign included), in either backend (IEEE leaves
it open, LLVM and numpy order operands as they like): the tests compare NaNs
as NaNs.
"""

import threading

import numpy as np

from imgconv.engine import borders, fft, helpers
from imgconv.engine.finish import FLOAT32

# Output elements summed per chunk.  One thread: the chunk's sum and its two scratch buffers
# (3 x 512 KiB) stay close in the caches while each tap sweeps them.  Several threads: longer
# chunks, so fewer ufunc calls, each of which takes the GIL.  Measured on 3000 rows of 12000
# elements (4000x3000 RGB uint8; sharpen 3x3 direct, Gaussian sigma 2 separable; 2-core AMD
# EPYC, 1 MiB L2 a core), for 2**15 / 2**16 / 2**17 / 2**18 elements a chunk: one thread
# 68 / 50 / 50 / 47 ms direct, 325 / 260 / 260 / 310 ms separable; two threads
# 125 / 80 / 65 / 37 ms direct, 400 / 320 / 215 / 157 ms separable.
CHUNK_ELEMENTS = 1 << 17
PARALLEL_CHUNK_ELEMENTS = 1 << 18
# Output rows per band (a thread's task), rounded up to whole chunks: a band re-reads (and,
# separable, re-computes the row pass of) kh - 1 rows at its top, so it is much taller than a
# kernel; 32, 64 and 128 measured alike (above).
BAND_ROWS = 64
# Bands per thread at the least, when threads > 1 (the last band is often short).
BANDS_PER_THREAD = 4
# Below this many output elements one thread does all: two threads measured slower at
# 196608 elements (256x256 RGB: 0.9 -> 1.2 ms direct, 3.0 -> 3.5 ms separable), faster at
# 786432 (1.55 -> 1.26 ms, 8.7 -> 5.9 ms).
PARALLEL_MIN_ELEMENTS = 1 << 19
# Sums below this bound stay finite in float32 (max 3.4e38), with a margin for round-off.
FINITE_BOUND = 1e38


# --- the extended image ---------------------------------------------------------------------------


def _contiguous(indices):
    """Whether ``indices`` (non-empty) are ``first, first + 1, ...`` (a slice can read them)."""
    return bool(indices[0] >= 0 and indices[-1] - indices[0] == len(indices) - 1 and np.all(np.diff(indices) == 1))


class _Extended:
    """The (H, W * C) rows extended by the border maps of a kh x kw kernel, gathered on request.

    Extended row ``p`` reads source row ``row_map[p]``; extended element ``e`` of it reads
    element ``col_map[e]``; -1 in either reads ``cval`` (float32), as ``cpu._fill_line``.
    """

    def __init__(self, rows, channels, kh, kw, mode, cval, row_map=None):
        self.rows = rows
        self.width = rows.shape[1]
        full_map, col_map, self.lead = borders.extended_maps(rows.shape[0], self.width // channels, channels, kh, kw, mode)
        self.row_map = full_map if row_map is None else row_map  # the band driver's map (cpu.run_direct)
        self.line_len = len(col_map)
        self.cval = np.float32(cval)
        # The elements beyond the row's ends, where they read from, and those that read cval.
        self.ends = np.concatenate([np.arange(self.lead), np.arange(self.lead + self.width, self.line_len)])
        self.end_sources = np.maximum(col_map[self.ends], 0)
        self.cval_elements = np.flatnonzero(col_map < 0)

    def gather(self, lines, p0, p1):
        """``lines[k]`` = extended row ``p0 + k`` as float32, for ``k < p1 - p0``."""
        rmap = self.row_map[p0:p1]
        count, lead = p1 - p0, self.lead
        # Inside the image the rows are consecutive: a slice (no copy); at its edges, a gather.
        block = self.rows[rmap[0] : rmap[0] + count] if _contiguous(rmap) else self.rows[np.maximum(rmap, 0)]
        lines = lines[:count]
        lines[:, lead : lead + self.width] = block  # converted to float32 here, as cpu._fill_line
        if len(self.ends):
            lines[:, self.ends] = block[:, self.end_sources]
            if len(self.cval_elements):
                lines[:, self.cval_elements] = self.cval
        outside = rmap < 0
        if outside.any():
            lines[outside] = self.cval


# --- the sums ---------------------------------------------------------------------------------------


def _add_product(target, x, w, tmp):
    """``target += w * x``, ``tmp`` holding the product; for a weight of 1 or -1 with no
    product at all: ``1 * x`` is ``x``, and ``t + -1 * x`` is ``t - x``, bit for bit."""
    if w == 1:
        np.add(target, x, out=target)
    elif w == -1:
        np.subtract(target, x, out=target)
    else:
        np.multiply(x, w, out=tmp)
        np.add(target, tmp, out=target)


def _weighted_sum(acc, terms, tmp, group):
    """``acc = sum w * x`` over ``terms`` (``(x, w)``: a view shaped like ``acc``, a float32
    weight), in the one order: four at a time, ``((w0 a + w1 b) + w2 c) + w3 d``, each group
    after the first summed in ``group`` and added to ``acc``; ``tmp`` holds each product.
    No terms: +0.0 (as ``cpu._weighted_sum``)."""
    if not terms:
        acc[...] = 0.0
        return
    for first in range(0, len(terms), 4):
        (x, w), *rest = terms[first : first + 4]
        if first and not rest:  # a last group of one tap: acc + w * x
            _add_product(acc, x, w, tmp)
            continue
        target = acc if first == 0 else group
        np.multiply(x, w, out=target)
        for x, w in rest:
            _add_product(target, x, w, tmp)
        if first:
            np.add(acc, group, out=acc)


def _may_be_nan(rows, cval, *passes):
    """Whether sums of ``rows`` with the float32 weights of ``passes`` (applied one after
    the other) can be NaN: float32 rows can hold one; integer rows only when a sum can
    overflow to infinity (or a weight or ``cval`` is not finite)."""
    if rows.dtype.kind == "f":
        return True
    bound = max(float(np.iinfo(rows.dtype).max), abs(float(cval)))
    for weights in passes:
        bound *= float(np.abs(np.asarray(weights, np.float64)).sum())
    return not bound < FINITE_BOUND


class _Output:
    """Where a pass's sums go, chunk by chunk: finished into ``out`` (``finish``; a plain
    float32 finish makes the sums in ``out`` itself), or added to the float32 ``out``
    (``add``: a later separable pair, ``total += part``)."""

    def __init__(self, out, finish, may_be_nan=False, add=False):
        self.out, self.add = out, add
        self.plain = finish.plain and not add
        spec = finish.spec()
        self.offset, self.absolute, self.rounding, self.low, self.high = spec[0], spec[1] != 0, spec[2] != 0, spec[3], spec[4]
        self.nan_to_zero = self.rounding and may_be_nan

    def target(self, i, n, buffers):
        """The float32 array the sums of output rows ``i .. i + n - 1`` are made in."""
        return self.out[i : i + n] if self.plain else buffers["acc"][:n]

    def store(self, sums, i, n, buffers):
        """Output rows ``i .. i + n - 1`` from their ``sums`` (changed in place): ``cpu._finished``."""
        if self.plain:
            return
        rows = self.out[i : i + n]
        if self.add:
            np.add(rows, sums, out=rows)
            return
        if self.offset or not (self.rounding or self.absolute):
            np.add(sums, self.offset, out=sums)  # also + 0.0: it makes -0.0 +0.0, as in the kernels
        if self.absolute:
            np.abs(sums, out=sums)
        # Only integer outputs round and clip (a float's limits are -inf and inf: max, min keep v).
        if self.rounding:
            np.rint(sums, out=sums)
            np.clip(sums, self.low, self.high, out=sums)  # min(max(v, low), high): NaN stays NaN
            if self.nan_to_zero:
                mask = np.isnan(sums, out=buffers["mask"][:n])
                if mask.any():
                    np.copyto(sums, 0.0, where=mask)  # as cpu._finished: the cast alone would be undefined
        np.copyto(rows, sums, casting="unsafe")


class _Pass:
    """One correlation over a band's buffer of extended rows: output row ``i`` of a band
    starting at row ``first`` is ``sum w * buffer[i - first + u, offset : offset + W * C]``
    over ``taps`` (``(u, offset, w)``), in the one order.

    ``fill(rows, p0, p1, buffers)`` puts extended rows ``p0 .. p1 - 1`` (for the separable
    kernel, their row-pass results) into ``rows``, a part of the buffer, whose rows are
    ``width`` long; ``line_len`` is the length of the extended rows it reads, ``weights``
    the float32 weights of each of its passes (for ``_may_be_nan``).
    """

    def __init__(self, taps, kh, fill, width, line_len, weights):
        self.taps, self.kh, self.fill, self.width, self.line_len, self.weights = taps, kh, fill, width, line_len, weights


class _Bands:
    """The bands of output rows of one call of ``passes``, and each thread's buffers (made
    on its first band)."""

    def __init__(self, out, passes, threads):
        self.height, self.width = out.shape
        line_len, kh = max(spec.line_len for spec in passes), max(spec.kh for spec in passes)
        self.threads = threads if out.size >= PARALLEL_MIN_ELEMENTS else 1
        # Several threads: fewer, longer ufunc calls (each takes the GIL).
        elements = CHUNK_ELEMENTS if self.threads == 1 else PARALLEL_CHUNK_ELEMENTS
        chunk = max(1, elements // line_len)  # (extended rows: a long kernel on a narrow image)
        band = max(BAND_ROWS, chunk)
        if self.threads > 1:  # enough bands to share out evenly
            band = min(band, -(-self.height // (self.threads * BANDS_PER_THREAD)))
        self.chunk = max(1, min(self.height, band, chunk))
        self.band = min(self.height, self.chunk * -(-band // self.chunk))  # whole chunks
        self.line_len, self.kh = line_len, kh
        self.local = threading.local()

    def buffers(self):
        made = getattr(self.local, "buffers", None)
        if made is None:
            chunk, width = self.chunk, self.width
            made = {name: np.empty((chunk, width), np.float32) for name in ("acc", "tmp", "group")}
            made["band"] = np.empty((self.band + self.kh - 1, self.line_len), np.float32)
            made["line"] = np.empty((chunk, self.line_len), np.float32)
            made["mask"] = np.empty((chunk, width), bool)
            self.local.buffers = made
        return made

    def run(self, work):
        """``work(first, last, buffers)`` over the bands, in ``threads`` worker threads."""

        def band(first):
            with np.errstate(all="ignore"):  # inf - inf, 0 * inf: NaN, as in the compiled kernels
                work(first, min(self.height, first + self.band), self.buffers())

        starts = range(0, self.height, self.band)
        if self.threads > 1 and len(starts) > 1:
            helpers.in_threads(band, starts, min(self.threads, len(starts)))
        else:
            for first in starts:
                band(first)

    def sweep(self, spec, output, first, last, buffers):
        """Output rows ``first .. last - 1`` of the ``_Pass`` ``spec`` into ``output``, chunk
        by chunk, each chunk's extended rows filled just before it first reads them."""
        width, chunk, reach = self.width, self.chunk, spec.kh - 1
        lines = buffers["band"][: last - first + reach, : spec.width]
        tmp, group = buffers["tmp"], buffers["group"]
        filled = first  # extended rows first .. filled - 1 are in lines
        for i in range(first, last, chunk):
            n = min(chunk, last - i)
            if filled < i + n + reach:
                spec.fill(lines[filled - first : i + n + reach - first], filled, i + n + reach, buffers)
                filled = i + n + reach
            k = i - first
            sums = output.target(i, n, buffers)
            _weighted_sum(sums, [(lines[k + u : k + u + n, offset : offset + width], w) for u, offset, w in spec.taps], tmp[:n], group[:n])
            output.store(sums, i, n, buffers)


# --- entry points: engine.run's signature (plan, rows, channels, mode, cval, finish, threads) -> (out, finished)


def run_direct(plan, rows, channels, mode, cval, finish, threads, *, row_map=None, out=None, bands=None):
    """Every non-zero tap of ``plan.kernel`` per output element, finished as the sums are
    stored: ``cpu.run_direct`` in numpy (``row_map``, ``out`` as there; ``bands`` is the
    compiled kernel's and changes no bit: ignored)."""
    if out is None:
        out = np.empty(rows.shape, finish.dtype)
    if out.size == 0:
        return out, True
    flipped = plan.kernel[::-1, ::-1]
    kh, kw = flipped.shape
    extended = _Extended(rows, channels, kh, kw, mode, cval, row_map)
    taps_u, taps_v = np.nonzero(flipped)  # zero taps cost nothing (non-zero in float64 counts)
    weights = np.ascontiguousarray(flipped[taps_u, taps_v], dtype=np.float32)
    taps = [(int(u), int(v) * channels, w) for u, v, w in zip(taps_u, taps_v, weights)]
    line_len = extended.line_len
    spec = _Pass(taps, kh, lambda lines, p0, p1, buffers: extended.gather(lines, p0, p1), line_len, line_len, (weights,))
    output = _Output(out, finish, _may_be_nan(rows, cval, weights))
    bands = _Bands(out, [spec], threads)
    bands.run(lambda first, last, buffers: bands.sweep(spec, output, first, last, buffers))
    return out, True


def _separable_pass(rows, channels, column, row, mode, cval, row_map=None):
    """The rank-1 kernel ``outer(column, row)`` (``cpu._separable_pass``): its column pass,
    as a ``_Pass`` whose rows are filled with row-pass results."""
    row = np.asarray(row, np.float64)
    column = np.asarray(column, np.float64)
    extended = _Extended(rows, channels, len(column), len(row), mode, cval, row_map)
    row_weights = np.ascontiguousarray(row[::-1], dtype=np.float32)
    column_weights = np.ascontiguousarray(column[::-1], dtype=np.float32)
    # Rows beyond the image hold cval in every column: their row pass gives cval * sum(row).
    ring_cval = np.float32(cval * row.sum())
    width, row_map = extended.width, extended.row_map
    row_taps = [(v * channels, w) for v, w in enumerate(row_weights)]  # every tap, zeros too

    def fill(results, p0, p1, buffers):
        chunk = len(buffers["line"])  # rows per row pass
        for q in range(p0, p1, chunk):
            m = min(chunk, p1 - q)
            line, part = buffers["line"][:m], results[q - p0 : q - p0 + m]
            extended.gather(line, q, q + m)
            _weighted_sum(part, [(line[:, offset : offset + width], w) for offset, w in row_taps], buffers["tmp"][:m], buffers["group"][:m])
            outside = row_map[q : q + m] < 0
            if outside.any():
                part[outside] = ring_cval

    column_taps = [(u, 0, w) for u, w in enumerate(column_weights)]
    return _Pass(column_taps, len(column), fill, width, extended.line_len, (row_weights, column_weights))


def run_separable(plan, rows, channels, mode, cval, finish, threads, *, row_map=None, out=None, bands=None):
    """The sum of ``plan.factors``' rank-1 passes (``cpu.run_separable`` in numpy): one pair
    is finished as it is stored; several are summed in float32 and left to the shared
    finish (``finished`` False); ``row_map``, ``out``, ``bands`` as for :func:`run_direct`."""
    single = len(plan.factors) == 1
    if out is None:
        out = np.empty(rows.shape, finish.dtype if single else np.float32)
    if out.size == 0:
        return out, single
    passes = [_separable_pass(rows, channels, column, row, mode, cval, row_map) for column, row in plan.factors]
    bands = _Bands(out, passes, threads)
    if single:
        outputs = [_Output(out, finish, _may_be_nan(rows, cval, *passes[0].weights))]
    else:  # total, then total += part for each later pair, band by band
        outputs = [_Output(out, FLOAT32)] + [_Output(out, FLOAT32, add=True)] * (len(passes) - 1)

    def work(first, last, buffers):
        for spec, output in zip(passes, outputs):
            bands.sweep(spec, output, first, last, buffers)

    bands.run(work)
    return out, single


def gather_region(src, row_map, col_map, channels, channel, cval, region):
    """Fill ``region`` with the extended image at the positions the maps give (-1:
    ``cval``), for one channel of interleaved (H, W * C) rows; positions beyond the maps'
    ends (a last, partial tile) are left as they are.  ``cpu.gather_region`` in numpy."""
    count, cols = min(region.shape[0], len(row_map)), min(region.shape[1], len(col_map))
    if count == 0 or cols == 0:
        return
    rmap, cmap = row_map[:count], col_map[:cols]
    # Slices where the maps run on (the inner tiles), index arrays at the image's edges.
    rows = slice(rmap[0], rmap[0] + count) if _contiguous(rmap) else np.maximum(rmap, 0)
    if _contiguous(cmap):
        elements = slice(cmap[0] * channels + channel, (cmap[0] + cols - 1) * channels + channel + 1, channels)
    else:
        elements = np.maximum(cmap, 0) * channels + channel
    if isinstance(rows, slice) or isinstance(elements, slice):
        block = src[rows, elements]
    else:
        block = src[rows[:, None], elements[None, :]]
    target = region[:count, :cols]
    target[...] = block
    cval = np.float32(cval)
    if (cmap < 0).any():
        target[:, cmap < 0] = cval
    if (rmap < 0).any():
        target[rmap < 0] = cval


def run_fft(plan, rows, channels, mode, cval, finish, threads, *, out=None):
    """``fft.run_fft`` with this module's ``gather_region`` for the tiles (no numba)."""
    return fft.run_fft(plan, rows, channels, mode, cval, finish, threads, gather=gather_region, out=out)


# --- the band driver's per-element transforms: engine/points.py in numpy -------------------------


def decode_rows(source, table, alpha_table, channels, has_alpha, out):
    """``points.decode_rows`` in numpy."""
    if not has_alpha:
        np.take(table, source, out=out)
        return
    cells, target = source.reshape(len(source), -1, channels), out.reshape(len(out), -1, channels)
    np.take(table, cells[..., :-1], out=target[..., :-1])
    np.take(alpha_table, cells[..., -1], out=target[..., -1])


def blend_rows(work, source, table, alpha_table, strength, channels, has_alpha, unit, finish, out):
    """``points.blend_rows`` in numpy (``work`` is changed)."""
    original = np.empty(work.shape, np.float32)
    decode_rows(source, table, alpha_table, channels, has_alpha, original)
    blend_float_rows(work, original, strength, channels, has_alpha, unit, finish, out)


def blend_float_rows(work, original, strength, channels, has_alpha, unit, finish, out):
    """``points.blend_float_rows`` in numpy (``work`` is changed)."""
    np.subtract(work, original, out=work)
    np.multiply(work, strength, out=work)
    np.add(original, work, out=work)
    if has_alpha:
        alpha = work.reshape(len(work), -1, channels)[..., -1]
        np.minimum(np.maximum(alpha, np.float32(0.0)), unit, out=alpha)
    if finish[2] != 0:
        np.rint(work, out=work)
        work[np.isnan(work)] = 0.0
        np.minimum(np.maximum(work, finish[0]), finish[1], out=work)
    out[...] = work


def encode_rows(values, bits, levels, limits, shift, offset, count, channels, alpha_scale, out):
    """``points.encode_rows`` in numpy."""
    index = bits >> shift
    index -= offset
    np.clip(index, 0, count + 1, out=index)
    step = values >= limits[index]
    np.take(levels, index, out=out)
    out += step
    if alpha_scale > 0:
        alpha = values.reshape(len(values), -1, channels)[..., -1] * np.float32(alpha_scale)
        np.rint(alpha, out=alpha)
        alpha[np.isnan(alpha)] = 0.0
        out.reshape(len(out), -1, channels)[..., -1] = np.minimum(np.maximum(alpha, np.float32(0.0)), np.float32(255.0))


def premultiply_rows(block, inverse, channels, premultiplied, opacity):
    """``points.premultiply_rows`` in numpy."""
    m, width = opacity.shape
    cells = block.reshape(m, width, channels)
    np.multiply(cells[..., -1], inverse, out=opacity, dtype=np.float32)
    np.multiply(cells[..., :-1], opacity[..., None], out=premultiplied.reshape(m, width, channels - 1), dtype=np.float32)


def unpremultiply_rows(filtered, opacity, straight, transparent, offset, absolute, scale, finish, out):
    """``points.unpremultiply_rows`` in numpy (``filtered`` is changed)."""
    n, width = opacity.shape
    colours = filtered.shape[1] // width
    values = filtered.reshape(n, width, colours)
    alphas = opacity[..., None]
    visible = alphas > transparent
    with np.errstate(all="ignore"):  # as the compiled loop: x / 0 is inf, silently
        if len(straight):
            np.divide(values, np.where(visible, alphas, np.float32(1.0)), out=values)
            np.copyto(values, straight.reshape(n, width, colours), where=~visible)
        else:
            np.divide(values, alphas, out=values)
    if offset != 0:
        values += offset
    if absolute:
        np.abs(values, out=values)
    cells = out.reshape(n, width, colours + 1)
    cells[..., :-1] = _stored(values, finish)
    cells[..., -1:] = _stored(alphas * scale, finish)


def _stored(values, finish):
    """``points._stored`` in numpy (``values`` is changed)."""
    if finish[2] != 0:
        low, high = finish[0], finish[1]
        np.minimum(np.maximum(values, low), high, out=values)
        np.rint(values, out=values)
        values[np.isnan(values)] = 0.0
        np.minimum(np.maximum(values, low), high, out=values)
    return values
