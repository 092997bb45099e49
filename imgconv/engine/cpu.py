"""CPU backend: ``@njit(parallel=True, cache=True)`` kernels.

The image is seen as one 2-D array of rows of ``W * C`` elements (interleaved
colour stays interleaved: a tap one pixel to the right is ``C`` elements
along).  Each thread takes a band of output rows and keeps a ring of ``kh``
line buffers: a source row, converted to float32 (so uint8 and uint16 images
need no full-size float copy) and extended beyond its ends through the border
index map (so there is no padded copy of the image), is filled once and then
serves the ``kh`` output rows that need it.  An output row is the sum over the
kernel's taps of ``w * line[offset : offset + W * C]``: taps are taken four at
a time, over column tiles that stay in the L1 cache, in loops LLVM vectorises.

The separable kernel runs both 1-D passes in one sweep: each band keeps a ring
of ``kh`` row-pass results and builds each output row from it, so there is no
full-size intermediate image.  Both kernels finish each row on the spot
(offset, absolute value, rounding and clipping into the output dtype), so
filtering a uint8 photograph to a uint8 result allocates no float image at all.

Source rows are uint8, uint16 or float32, C-contiguous and writable
(``engine.run`` hands them over in that one form, so each kernel has one
compiled signature per dtype); every compiled function has ``cache=True``.
The entry points ``run_direct`` and ``run_separable`` have ``engine.run``'s
signature.
"""

from imgconv.engine._cache import configure_numba_cache

configure_numba_cache()

import numpy as np  # noqa: E402
from numba import get_num_threads, njit, prange  # noqa: E402

from imgconv import tunables  # noqa: E402
from imgconv.engine import borders  # noqa: E402

COMPILE_OPTIONS = dict(cache=True, nogil=True)


@njit(**COMPILE_OPTIONS)
def _fill_line(line, src, r, col_map, cval, lead):
    """Row ``r`` of ``src`` as float32, extended by the border map; ``r < 0``: all ``cval``."""
    width = src.shape[1]
    if r < 0:
        line[:] = cval
        return
    row = src[r]
    middle = line[lead : lead + width]
    for j in range(width):
        middle[j] = row[j]
    for j in range(lead):
        c = col_map[j]
        line[j] = row[c] if c >= 0 else cval
    for j in range(lead + width, line.shape[0]):
        c = col_map[j]
        line[j] = row[c] if c >= 0 else cval


@njit(**COMPILE_OPTIONS)
def _weighted_sum(acc, lines, slots, offsets, weights, j0, n):
    """``acc[:n] = sum_t weights[t] * lines[slots[t], offsets[t] + j0 :][:n]``, four taps a pass."""
    ntaps = weights.shape[0]
    if ntaps == 0:
        acc[:n] = 0.0
        return
    t = 0
    while t < ntaps:
        group = min(4, ntaps - t)
        w0 = weights[t]
        a = lines[slots[t], j0 + offsets[t] : j0 + offsets[t] + n]
        if group == 4:
            w1, w2, w3 = weights[t + 1], weights[t + 2], weights[t + 3]
            b = lines[slots[t + 1], j0 + offsets[t + 1] : j0 + offsets[t + 1] + n]
            c = lines[slots[t + 2], j0 + offsets[t + 2] : j0 + offsets[t + 2] + n]
            d = lines[slots[t + 3], j0 + offsets[t + 3] : j0 + offsets[t + 3] + n]
            if t == 0:
                for j in range(n):
                    acc[j] = w0 * a[j] + w1 * b[j] + w2 * c[j] + w3 * d[j]
            else:
                for j in range(n):
                    acc[j] += w0 * a[j] + w1 * b[j] + w2 * c[j] + w3 * d[j]
        elif group == 3:
            w1, w2 = weights[t + 1], weights[t + 2]
            b = lines[slots[t + 1], j0 + offsets[t + 1] : j0 + offsets[t + 1] + n]
            c = lines[slots[t + 2], j0 + offsets[t + 2] : j0 + offsets[t + 2] + n]
            if t == 0:
                for j in range(n):
                    acc[j] = w0 * a[j] + w1 * b[j] + w2 * c[j]
            else:
                for j in range(n):
                    acc[j] += w0 * a[j] + w1 * b[j] + w2 * c[j]
        elif group == 2:
            w1 = weights[t + 1]
            b = lines[slots[t + 1], j0 + offsets[t + 1] : j0 + offsets[t + 1] + n]
            if t == 0:
                for j in range(n):
                    acc[j] = w0 * a[j] + w1 * b[j]
            else:
                for j in range(n):
                    acc[j] += w0 * a[j] + w1 * b[j]
        else:
            if t == 0:
                for j in range(n):
                    acc[j] = w0 * a[j]
            else:
                for j in range(n):
                    acc[j] += w0 * a[j]
        t += group


@njit(**COMPILE_OPTIONS)
def _finish(acc, out_row, offset, absolute, rounding, low, high):
    """``out_row = clip(round(|acc + offset|), low, high)`` (abs and round when asked)."""
    for j in range(acc.shape[0]):
        v = acc[j] + offset
        if absolute:
            v = abs(v)
        if rounding:
            v = np.rint(v)
        out_row[j] = min(max(v, low), high)


@njit(parallel=True, **COMPILE_OPTIONS)
def _direct_rows(src, tap_rows, tap_offsets, tap_weights, kh, row_map, col_map, cval, lead, bands, tile, finish, out):
    """``out[i, j] = finish(sum_t w_t * ext[i + tap_rows[t], j + tap_offsets[t] - lead])``.

    ``ext`` is ``src`` extended by ``row_map`` / ``col_map`` (-1: ``cval``);
    ``src`` and ``out`` are (H, W * C); ``finish`` is (offset, absolute,
    rounding, low, high, plain) as float32 (``engine.finish.Finish.spec``);
    ``tile`` is the column tile (``tunables.CPU_COLUMN_TILE``).
    """
    height, width = out.shape
    ntaps = tap_weights.shape[0]
    line_len = col_map.shape[0]
    bands = max(1, min(height, bands))
    band = (height + bands - 1) // bands
    offset, absolute, rounding, low, high = finish[0], finish[1] != 0, finish[2] != 0, finish[3], finish[4]
    plain = finish[5] != 0
    for b in prange(bands):
        first = b * band
        last = min(height, first + band)
        if first >= last:
            continue
        lines = np.empty((kh, line_len), np.float32)
        acc = np.empty(min(width, tile), np.float32)
        slots = np.empty(ntaps, np.int64)
        # Ring slot s holds extended row (i + u) with (i + u) % kh == s.
        for u in range(kh - 1):
            _fill_line(lines[(first + u) % kh], src, row_map[first + u], col_map, cval, lead)
        for i in range(first, last):
            _fill_line(lines[(i + kh - 1) % kh], src, row_map[i + kh - 1], col_map, cval, lead)
            for t in range(ntaps):
                slots[t] = (i + tap_rows[t]) % kh
            out_row = out[i]
            for j0 in range(0, width, tile):
                n = min(width, j0 + tile) - j0
                if plain:  # float32 out and nothing to finish: sum straight into it
                    _weighted_sum(out_row[j0 : j0 + n], lines, slots, tap_offsets, tap_weights, j0, n)
                else:
                    _weighted_sum(acc, lines, slots, tap_offsets, tap_weights, j0, n)
                    _finish(acc[:n], out_row[j0 : j0 + n], offset, absolute, rounding, low, high)


@njit(parallel=True, **COMPILE_OPTIONS)
def _separable_rows(src, row_offsets, row_weights, col_weights, row_map, col_map, cval, ring_cval, lead, bands, tile, finish, out):
    """Both passes of a separable convolution in one sweep (see the module notes).

    The row pass correlates each extended row with ``row_weights`` (element
    offsets ``row_offsets``); the column pass correlates ``kh`` consecutive
    row-pass results with ``col_weights``.  Rows beyond the image in constant
    mode hold ``cval`` everywhere, so their row-pass result is ``ring_cval``.
    """
    height, width = out.shape
    kh = col_weights.shape[0]
    nrow = row_weights.shape[0]
    line_len = col_map.shape[0]
    bands = max(1, min(height, bands))
    band = (height + bands - 1) // bands
    offset, absolute, rounding, low, high = finish[0], finish[1] != 0, finish[2] != 0, finish[3], finish[4]
    for b in prange(bands):
        first = b * band
        last = min(height, first + band)
        if first >= last:
            continue
        line = np.empty((1, line_len), np.float32)
        ring = np.empty((kh, width), np.float32)
        acc = np.empty(min(width, tile), np.float32)
        line_slots = np.zeros(nrow, np.int64)
        ring_slots = np.empty(kh, np.int64)
        ring_offsets = np.zeros(kh, np.int64)
        for p in range(first, last + kh - 1):
            # Row-pass result for extended row p into ring slot p % kh.
            r = row_map[p]
            target = ring[p % kh]
            if r < 0:
                target[:] = ring_cval
            else:
                _fill_line(line[0], src, r, col_map, cval, lead)
                for j0 in range(0, width, tile):
                    n = min(width, j0 + tile) - j0
                    _weighted_sum(target[j0 : j0 + n], line, line_slots, row_offsets, row_weights, j0, n)
            i = p - (kh - 1)
            if i < first:
                continue
            for u in range(kh):
                ring_slots[u] = (i + u) % kh
            out_row = out[i]
            for j0 in range(0, width, tile):
                n = min(width, j0 + tile) - j0
                _weighted_sum(acc, ring, ring_slots, ring_offsets, col_weights, j0, n)
                _finish(acc[:n], out_row[j0 : j0 + n], offset, absolute, rounding, low, high)


@njit(**COMPILE_OPTIONS)
def gather_region(src, row_map, col_map, channels, channel, cval, region):
    """Fill ``region`` with the extended image at the positions the maps give
    (-1: ``cval``), for one channel of interleaved (H, W * C) rows.  Positions
    beyond the maps' ends (a last, partial tile) are left as they are."""
    rows = min(region.shape[0], row_map.shape[0])
    cols = min(region.shape[1], col_map.shape[0])
    for a in range(rows):
        r = row_map[a]
        line = region[a]
        if r < 0:
            line[:cols] = cval
            continue
        row = src[r]
        for b in range(cols):
            c = col_map[b]
            line[b] = row[c * channels + channel] if c >= 0 else cval


def _maps(height, width, channels, kh, kw, mode):
    top, left = (kh - 1) // 2, (kw - 1) // 2
    row_map = borders.index_map(height, top, kh - 1 - top, mode)
    pixel_map = borders.index_map(width, left, kw - 1 - left, mode)
    # Element map of the interleaved row: pixel p, channel c -> element p * C + c.
    col_map = np.where(pixel_map[:, None] >= 0, pixel_map[:, None] * channels + np.arange(channels), -1).ravel()
    return row_map, col_map.astype(np.int64), left * channels


def _bands():
    return tunables.CPU_BANDS_PER_THREAD * get_num_threads()


def _separable_pass(rows, channels, column, row, mode, cval, out, finish):
    """``out`` = the rank-1 kernel ``outer(column, row)`` over ``rows``, both passes in one sweep."""
    row = np.asarray(row, np.float64)
    column = np.asarray(column, np.float64)
    height, width = rows.shape[0], rows.shape[1] // channels
    row_map, col_map, lead = _maps(height, width, channels, len(column), len(row), mode)
    _separable_rows(
        rows,
        (np.arange(len(row)) * channels).astype(np.int64),
        np.ascontiguousarray(row[::-1], dtype=np.float32),
        np.ascontiguousarray(column[::-1], dtype=np.float32),
        row_map,
        col_map,
        np.float32(cval),
        # Rows beyond the image hold cval in every column: their row pass gives cval * sum(row).
        np.float32(cval * row.sum()),
        lead,
        _bands(),
        tunables.CPU_COLUMN_TILE,
        finish.spec(),
        out,
    )


# --- entry points: engine.run's signature (plan, rows, channels, mode, cval, finish, threads) -> (out, finished)
# (numba's thread count is set by engine.run around the call)


def run_direct(plan, rows, channels, mode, cval, finish, threads):
    """Every non-zero tap of ``plan.kernel`` per output element, finished in the kernel."""
    flipped = plan.kernel[::-1, ::-1]
    kh, kw = flipped.shape
    height, width = rows.shape[0], rows.shape[1] // channels
    row_map, col_map, lead = _maps(height, width, channels, kh, kw, mode)
    taps_u, taps_v = np.nonzero(flipped)  # zero taps cost nothing
    out = np.empty(rows.shape, finish.dtype)
    _direct_rows(
        rows,
        taps_u.astype(np.int64),
        (taps_v * channels).astype(np.int64),
        np.ascontiguousarray(flipped[taps_u, taps_v], dtype=np.float32),
        kh,
        row_map,
        col_map,
        np.float32(cval),
        lead,
        _bands(),
        tunables.CPU_COLUMN_TILE,
        finish.spec(),
        out,
    )
    return out, True


def run_separable(plan, rows, channels, mode, cval, finish, threads):
    """The sum of ``plan.factors``' rank-1 passes; one pair is finished in the
    kernel, several are summed in float32 and left to the shared finish."""
    from imgconv.engine.finish import FLOAT32

    if len(plan.factors) == 1:
        (column, row), = plan.factors
        out = np.empty(rows.shape, finish.dtype)
        _separable_pass(rows, channels, column, row, mode, cval, out, finish)
        return out, True
    total = np.empty(rows.shape, np.float32)
    part = np.empty(rows.shape, np.float32)
    for index, (column, row) in enumerate(plan.factors):
        _separable_pass(rows, channels, column, row, mode, cval, total if index == 0 else part, FLOAT32)
        if index:
            total += part
    return total, False
