"""CPU backend: ``@njit(parallel=True, cache=True)`` kernels.

Every kernel works on one canonical type — C-contiguous float32 planes,
float32 weights, int64 index maps — so each compiles once per process and is
then loaded from numba's cache.  Borders are handled by index maps built in
:mod:`imgconv.borders` (no padded copy of the image): each output row gathers
the source rows it needs into a short line buffer, then accumulates
``w * line[v : v + W]`` for each tap, a form LLVM vectorises.
"""

from imgconv._cache import configure_numba_cache

configure_numba_cache()

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

from imgconv import borders  # noqa: E402

COMPILE_OPTIONS = dict(cache=True, nogil=True)


@njit(parallel=True, **COMPILE_OPTIONS)
def _correlate_plane(src, weights, row_map, col_map, cval, out):
    """Correlate ``src`` with ``weights`` into ``out`` (all float32, 2-D).

    ``row_map``/``col_map`` give, for each position of the extended image, the
    source row/column (-1: outside, read ``cval``).  The caller flips the
    kernel, so this computes a true convolution.
    """
    height, width = out.shape
    kh, kw = weights.shape
    line_len = width + kw - 1
    # Columns left .. left + width - 1 of the line are the row itself: one slice copy.
    left = (kw - 1) // 2
    for i in prange(height):
        line = np.empty(line_len, np.float32)
        acc = np.zeros(width, np.float32)
        for u in range(kh):
            r = row_map[i + u]
            if r < 0:
                line[:] = cval
            else:
                row = src[r]
                for j in range(left):
                    c = col_map[j]
                    line[j] = row[c] if c >= 0 else cval
                line[left : left + width] = row
                for j in range(left + width, line_len):
                    c = col_map[j]
                    line[j] = row[c] if c >= 0 else cval
            for v in range(kw):
                w = weights[u, v]
                window = line[v : v + width]
                for j in range(width):
                    acc[j] += w * window[j]
        out[i] = acc


def correlate(plane, weights, mode, cval):
    """Correlate one float32 plane with float32 ``weights`` whose centre is at
    ``((kh - 1) // 2, (kw - 1) // 2)`` — the centre of the flipped kernel of a
    true convolution, as ``scipy.ndimage.convolve`` places it."""
    height, width = plane.shape
    kh, kw = weights.shape
    top, left = (kh - 1) // 2, (kw - 1) // 2
    row_map = borders.index_map(height, top, kh - 1 - top, mode)
    col_map = borders.index_map(width, left, kw - 1 - left, mode)
    out = np.empty((height, width), np.float32)
    _correlate_plane(plane, weights, row_map, col_map, np.float32(cval), out)
    return out


def convolve_direct(plane, kernel, mode, cval):
    """True 2-D convolution of a float32 plane with a 2-D kernel."""
    flipped = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)
    return correlate(plane, flipped, mode, cval)


def convolve_separable(plane, column, row, mode, cval):
    """Convolution with the rank-1 kernel ``outer(column, row)`` as two 1-D passes."""
    flipped_row = np.ascontiguousarray(row[::-1].reshape(1, -1), dtype=np.float32)
    flipped_col = np.ascontiguousarray(column[::-1].reshape(-1, 1), dtype=np.float32)
    across = correlate(plane, flipped_row, mode, cval)
    # The rows beyond the image hold cval in every column, so after the first
    # pass they would read cval * sum(row): pass that to the second pass.
    return correlate(across, flipped_col, mode, float(cval) * float(np.sum(row, dtype=np.float64)))
