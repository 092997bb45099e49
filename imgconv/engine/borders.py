"""Border modes: their names, and where an index outside the image reads from.

The modes and their names follow ``scipy.ndimage``; for an image row
``a b c d`` the values read beyond its left edge are:

========  ===================  =========================================
mode      beyond the edge      meaning
========  ===================  =========================================
reflect   ``d c b a | a b c d``  half-sample symmetric: the edge repeats
mirror    ``d c b | a b c d``    whole-sample symmetric: the edge does not
nearest   ``a a a | a b c d``    the edge value repeats
wrap      ``b c d | a b c d``    periodic
constant  ``k k k | a b c d``    a constant ``k`` (``cval``)
========  ===================  =========================================

Each mode is periodic (or constant) far from the image too, so kernels larger
than the image are well defined.  ``map_index`` is written once, in plain
Python, so every backend compiles the same arithmetic.
"""

import numpy as np

from imgconv.choices import MODE_ALIASES as ALIASES  # noqa: F401  (the names, for callers of this module)
from imgconv.choices import canonical_mode

REFLECT = 0
MIRROR = 1
NEAREST = 2
WRAP = 3
CONSTANT = 4

MODES = {"reflect": REFLECT, "mirror": MIRROR, "nearest": NEAREST, "wrap": WRAP, "constant": CONSTANT}


def mode_code(mode):
    """The integer code the compiled kernels use for ``mode`` (a name or alias)."""
    return MODES[canonical_mode(mode)]


def map_index(p, n, mode):
    """Where position ``p`` of a line of length ``n`` reads from under ``mode``.

    Returns an index in ``[0, n)``, or -1 for ``constant`` mode outside the
    line (the caller substitutes ``cval``).  ``n`` must be at least 1.
    Compiled by each backend; keep it to integer arithmetic.
    """
    if p >= 0 and p < n:
        return p
    if mode == REFLECT:
        period = 2 * n
        q = p % period
        if q >= n:
            q = period - 1 - q
        return q
    if mode == MIRROR:
        if n == 1:
            return 0
        period = 2 * n - 2
        q = p % period
        if q >= n:
            q = period - q
        return q
    if mode == NEAREST:
        if p < 0:
            return 0
        return n - 1
    if mode == WRAP:
        return p % n
    return -1


def index_map(n, before, after, mode):
    """Source indices for positions ``-before .. n + after - 1`` of a line of length ``n``.

    The result has ``before + n + after`` entries (int64); -1 marks a constant
    border.  Built once per call and shared by every row, so the compiled
    loops do no modular arithmetic.
    """
    code = mode_code(mode) if isinstance(mode, str) else int(mode)
    # Only the border parts need the mapping; the middle is the identity.
    left = [map_index(p, n, code) for p in range(-before, 0)]
    right = [map_index(p, n, code) for p in range(n, n + after)]
    return np.concatenate(
        [np.array(left, dtype=np.int64), np.arange(n, dtype=np.int64), np.array(right, dtype=np.int64)]
    )


def extended_maps(height, width, channels, kh, kw, mode):
    """``(row_map, col_map, lead)`` for (H, W * C) interleaved rows and a kh x kw kernel
    centred as scipy centres it: the extended image's row map, its element map (pixel
    ``p``, channel ``c`` -> element ``p * C + c``; -1: ``cval``), and the elements before
    the image in an extended row.  The CPU kernels and their numpy twin share them."""
    top, left = (kh - 1) // 2, (kw - 1) // 2
    row_map = index_map(height, top, kh - 1 - top, mode)
    pixel_map = index_map(width, left, kw - 1 - left, mode)
    col_map = np.where(pixel_map[:, None] >= 0, pixel_map[:, None] * channels + np.arange(channels), -1).ravel()
    return row_map, col_map.astype(np.int64), left * channels
