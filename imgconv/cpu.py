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

Source rows are uint8, uint16 or float32 (other dtypes are converted to float32
first), so at most three signatures of each kernel are ever compiled; every
compiled function has ``cache=True``.
"""

from imgconv._cache import configure_numba_cache

configure_numba_cache()

import numpy as np  # noqa: E402
from numba import get_num_threads, njit, prange  # noqa: E402

from imgconv import borders  # noqa: E402

COMPILE_OPTIONS = dict(cache=True, nogil=True)

# Elements of an output row processed together: the accumulator and four
# windows of this many float32 (20 KiB) stay in a 48 KiB L1 data cache.
COLUMN_TILE = 1024

# The dtypes the kernels read directly; anything else is converted to float32.
NATIVE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


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


@njit(parallel=True, **COMPILE_OPTIONS)
def _correlate_rows(src, tap_rows, tap_offsets, tap_weights, kh, row_map, col_map, cval, lead, bands, out):
    """``out[i, j] = sum_t w_t * ext[i + tap_rows[t], j + tap_offsets[t] - lead]``.

    ``ext`` is ``src`` extended by ``row_map`` / ``col_map`` (-1: ``cval``);
    ``src`` and ``out`` are (H, W * C); taps with zero weight are not passed.
    """
    height, width = out.shape
    ntaps = tap_weights.shape[0]
    line_len = col_map.shape[0]
    bands = max(1, min(height, bands))
    band = (height + bands - 1) // bands
    for b in prange(bands):
        first = b * band
        last = min(height, first + band)
        if first >= last:
            continue
        lines = np.empty((kh, line_len), np.float32)
        # Ring slot s holds extended row (i + u) with (i + u) % kh == s.
        for u in range(kh - 1):
            _fill_line(lines[(first + u) % kh], src, row_map[first + u], col_map, cval, lead)
        for i in range(first, last):
            _fill_line(lines[(i + kh - 1) % kh], src, row_map[i + kh - 1], col_map, cval, lead)
            acc_row = out[i]
            if ntaps == 0:
                acc_row[:] = 0.0
                continue
            for j0 in range(0, width, COLUMN_TILE):
                j1 = min(width, j0 + COLUMN_TILE)
                acc = acc_row[j0:j1]
                n = j1 - j0
                t = 0
                while t < ntaps:
                    # Up to four taps per pass over the accumulator.
                    group = min(4, ntaps - t)
                    w0 = tap_weights[t]
                    a = lines[(i + tap_rows[t]) % kh, j0 + tap_offsets[t] : j0 + tap_offsets[t] + n]
                    if group == 4:
                        w1, w2, w3 = tap_weights[t + 1], tap_weights[t + 2], tap_weights[t + 3]
                        b1 = lines[(i + tap_rows[t + 1]) % kh, j0 + tap_offsets[t + 1] : j0 + tap_offsets[t + 1] + n]
                        c2 = lines[(i + tap_rows[t + 2]) % kh, j0 + tap_offsets[t + 2] : j0 + tap_offsets[t + 2] + n]
                        d3 = lines[(i + tap_rows[t + 3]) % kh, j0 + tap_offsets[t + 3] : j0 + tap_offsets[t + 3] + n]
                        if t == 0:
                            for j in range(n):
                                acc[j] = w0 * a[j] + w1 * b1[j] + w2 * c2[j] + w3 * d3[j]
                        else:
                            for j in range(n):
                                acc[j] += w0 * a[j] + w1 * b1[j] + w2 * c2[j] + w3 * d3[j]
                    elif group == 3:
                        w1, w2 = tap_weights[t + 1], tap_weights[t + 2]
                        b1 = lines[(i + tap_rows[t + 1]) % kh, j0 + tap_offsets[t + 1] : j0 + tap_offsets[t + 1] + n]
                        c2 = lines[(i + tap_rows[t + 2]) % kh, j0 + tap_offsets[t + 2] : j0 + tap_offsets[t + 2] + n]
                        if t == 0:
                            for j in range(n):
                                acc[j] = w0 * a[j] + w1 * b1[j] + w2 * c2[j]
                        else:
                            for j in range(n):
                                acc[j] += w0 * a[j] + w1 * b1[j] + w2 * c2[j]
                    elif group == 2:
                        w1 = tap_weights[t + 1]
                        b1 = lines[(i + tap_rows[t + 1]) % kh, j0 + tap_offsets[t + 1] : j0 + tap_offsets[t + 1] + n]
                        if t == 0:
                            for j in range(n):
                                acc[j] = w0 * a[j] + w1 * b1[j]
                        else:
                            for j in range(n):
                                acc[j] += w0 * a[j] + w1 * b1[j]
                    else:
                        if t == 0:
                            for j in range(n):
                                acc[j] = w0 * a[j]
                        else:
                            for j in range(n):
                                acc[j] += w0 * a[j]
                    t += group


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


def as_rows(image):
    """``image`` (H, W) or (H, W, C) as a C-contiguous (H, W * C) array of a
    native dtype, without copying when it already is one."""
    dtype = image.dtype if image.dtype in NATIVE_DTYPES else np.float32
    rows = np.ascontiguousarray(image, dtype=dtype)
    return rows.reshape(rows.shape[0], -1)


def correlate(image, weights, mode, cval, out=None):
    """Correlate an (H, W) or (H, W, C) image with float ``weights`` whose
    centre is at ``((kh - 1) // 2, (kw - 1) // 2)`` — where the flipped kernel
    of a true convolution has it in ``scipy.ndimage.convolve``.

    Returns float32 of the image's shape (written into ``out`` when given).
    """
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    kh, kw = weights.shape
    top, left = (kh - 1) // 2, (kw - 1) // 2
    row_map = borders.index_map(height, top, kh - 1 - top, mode)
    pixel_map = borders.index_map(width, left, kw - 1 - left, mode)
    # Element map of the interleaved row: pixel p, channel c -> element p * C + c.
    col_map = np.where(pixel_map[:, None] >= 0, pixel_map[:, None] * channels + np.arange(channels), -1).ravel()
    rows, cols = np.nonzero(weights)  # zero taps cost nothing
    tap_weights = np.ascontiguousarray(weights[rows, cols], dtype=np.float32)
    if out is None:
        out = np.empty(image.shape, np.float32)
    _correlate_rows(
        as_rows(image),
        rows.astype(np.int64),
        (cols * channels).astype(np.int64),
        tap_weights,
        kh,
        row_map,
        col_map.astype(np.int64),
        np.float32(cval),
        left * channels,
        # A few bands per thread balance the load; each band re-reads kh - 1 rows.
        4 * get_num_threads(),
        out.reshape(height, width * channels),
    )
    return out


def convolve_direct(image, kernel, mode, cval):
    """True 2-D convolution of an (H, W) or (H, W, C) image with a 2-D kernel."""
    return correlate(image, np.asarray(kernel, np.float64)[::-1, ::-1], mode, cval)


def convolve_separable(image, column, row, mode, cval):
    """Convolution with the rank-1 kernel ``outer(column, row)`` as two 1-D passes."""
    row = np.asarray(row, np.float64)
    across = correlate(image, row[::-1].reshape(1, -1), mode, cval)
    # Rows beyond the image hold cval in every column, so after the first pass
    # they read cval * sum(row): the second pass uses that as its constant.
    column = np.asarray(column, np.float64)
    return correlate(across, column[::-1].reshape(-1, 1), mode, float(cval) * float(row.sum()))
