"""Kernel algebra and formatting: composing two kernels into one, centring a
kernel on its origin, scaling, the zero-sum test, turning a kernel by an EXIF
orientation, and kernels as aligned text.

Every function here works on float64 numpy arrays (or :class:`Kernel`) and
keeps imgconv's convention for where a kernel's centre is: element
``shape // 2`` on each axis, as ``scipy.ndimage.convolve`` places it.

Imports only numpy and the standard library (never numba).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from numpy.typing import ArrayLike

from imgconv.choices import ZERO_SUM_TOLERANCE
from imgconv.kernels.types import Filter, Kernel

__all__ = [
    "compose",
    "centre_on",
    "scaled",
    "sums_to_zero",
    "format_matrix",
    "EXIF_ORIENTATIONS",
    "inverse_orientation",
    "orient_array",
    "orient_kernel",
    "orient_filter",
]

#: ``compose`` sums products directly up to this many multiply-adds (the two
#: kernels' sizes multiplied), and uses an FFT beyond.  The direct sum is exact
#: (integer and dyadic kernels compose to exact values, zeros stay zero; the FFT
#: leaves round-off near 1e-12 of the largest value, which ``show`` would print)
#: and at this size still takes only 2-7 ms (numpy, measured); beyond it the
#: direct cost keeps growing linearly while the FFT stays at a few ms.
DIRECT_COMPOSE_MAX_PRODUCTS = 4_000_000


def _full_convolve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The full 2-D convolution of two small arrays (float64)."""
    if a.size > b.size:
        a, b = b, a
    shape = (a.shape[0] + b.shape[0] - 1, a.shape[1] + b.shape[1] - 1)
    if a.size * b.size > DIRECT_COMPOSE_MAX_PRODUCTS:
        fshape = [1 << (n - 1).bit_length() for n in shape]
        spectrum = np.fft.rfft2(a, fshape) * np.fft.rfft2(b, fshape)
        return np.fft.irfft2(spectrum, fshape)[: shape[0], : shape[1]]
    out = np.zeros(shape)
    for (u, v), weight in np.ndenumerate(a):
        if weight:
            out[u : u + b.shape[0], v : v + b.shape[1]] += weight * b
    return out


def centre_on(matrix: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    """``matrix`` padded with zeros so that element ``origin`` (row, column)
    lands where imgconv (and scipy) centre a kernel: index ``size // 2``.

    Parameters
    ----------
    matrix : ndarray, shape (H, W)
        The kernel as written.
    origin : tuple of int
        The (row, column) of the element that is to be the centre.

    Returns
    -------
    ndarray
        ``matrix`` itself when ``origin`` already is its centre, else a padded copy.
    """
    pads = []
    for size, o in zip(matrix.shape, origin):
        if o >= size - 1 - o:
            # The origin is at or right of the middle: pad after it, to the
            # shortest length whose middle (length // 2) is the origin.
            total = 2 * o if 2 * o >= size else 2 * o + 1
            pads.append((0, total - size))
        else:
            # Left of the middle: pad before it until it is the middle.
            pads.append(((size - 1 - o) - o, 0))
    if all(p == (0, 0) for p in pads):
        return matrix
    return np.pad(matrix, pads)


def compose(first: ArrayLike, second: ArrayLike) -> np.ndarray:
    """The kernel of convolving with ``first`` and then ``second``.

    Centred as imgconv centres kernels (element ``shape // 2``), so that for
    any image ``convolve(convolve(f, first), second) == convolve(f, compose(first, second))``
    away from the borders (and everywhere in ``wrap`` mode).

    Parameters
    ----------
    first, second : array_like, 2-D
        The kernels, in the order they are applied.

    Returns
    -------
    ndarray of float64
    """
    first = np.asarray(first, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    full = _full_convolve(first, second)
    origin = (first.shape[0] // 2 + second.shape[0] // 2, first.shape[1] // 2 + second.shape[1] // 2)
    return centre_on(full, origin)


def scaled(kernel: Kernel, scale: float) -> Kernel:
    """``kernel`` multiplied by ``scale``, keeping its separable factors (the column takes the scale)."""
    if scale == 1.0:
        return kernel
    factors = None
    if kernel.factors is not None:
        column, row = kernel.factors
        factors = (column * scale, row)
    return Kernel(kernel.matrix * scale, factors)


def sums_to_zero(matrix: np.ndarray) -> bool:
    """Whether ``matrix`` sums to zero within ``ZERO_SUM_TOLERANCE`` of its absolute sum
    (so that normalising it would divide by round-off)."""
    return abs(float(matrix.sum())) <= ZERO_SUM_TOLERANCE * float(np.abs(matrix).sum())


# ---------------------------------------------------------------------------
# EXIF orientation
#
# The EXIF Orientation tag (1..8) says how a viewer turns the stored pixels S to
# show them: D = T(S).  Each T is a signed permutation of the two axes, written
# here as (transpose, flip rows, flip columns), applied in that order (checked
# against Pillow's ImageOps.exif_transpose in tests/test_orientation.py).
#
# Filtering the image as displayed and keeping the stored pixels and the tag
# means computing T^-1(D * K).  The border modes are symmetric under flips and
# transposes (reflecting, mirroring, repeating the edge, wrapping or padding a
# flipped image is flipping the padded image), so T^-1(T(S) * K) = S * K' for
# every mode, where K' = T^-1(K) with its centre where T^-1 takes K's centre:
#
#     (D * K)[p] = sum_q K[q] D[p - q + c] = sum_q K[q] S[A (p - q + c) + b]
#
# (A, b: T's index map); with r = A p + b and q' = A q + s (the array transform
# T^-1 applied to K's indices) this is sum_q' K'[q'] S[r - q' + (s + A c)], a
# convolution of S with K' centred at s + A c, the image of c.  A transpose or
# a flip of an odd side takes the centre index n // 2 to the centre of the turned
# kernel.  Flipping an even side n takes it to n // 2 - 1, one before the centre
# imgconv (and scipy) use: a zero is added before it (``centre_on``), so the
# turned kernel is n + 1 long on that side, with the same non-zero taps, exactly.

#: Orientation -> (transpose, flip rows, flip columns): how a viewer turns the stored pixels.
EXIF_ORIENTATIONS = {
    1: (False, False, False),
    2: (False, False, True),  # mirrored left-right
    3: (False, True, True),  # turned 180 degrees
    4: (False, True, False),  # mirrored top-bottom
    5: (True, False, False),  # transposed
    6: (True, False, True),  # turned 90 degrees clockwise (a phone held upright)
    7: (True, True, True),  # transversed
    8: (True, True, False),  # turned 90 degrees counter-clockwise
}


def _check_orientation(orientation) -> int:
    if isinstance(orientation, bool) or orientation not in EXIF_ORIENTATIONS:
        raise ValueError(f"orientation must be an EXIF orientation from 1 to 8, got {orientation!r}")
    return int(orientation)


def inverse_orientation(orientation: int) -> int:
    """The orientation that undoes ``orientation``: 6 and 8 undo each other, every other one undoes itself."""
    orientation = _check_orientation(orientation)
    return {6: 8, 8: 6}.get(orientation, orientation)


def orient_array(array: ArrayLike, orientation: int) -> np.ndarray:
    """``array`` turned as a viewer turns a picture tagged with EXIF ``orientation``.

    Parameters
    ----------
    array : array_like, shape (H, W) or (H, W, C)
        The stored pixels (or a kernel); only the first two axes are turned.
    orientation : int
        The EXIF Orientation, 1 to 8.

    Returns
    -------
    ndarray
        A view of ``array``: (W, H, ...) for orientations 5 to 8.

    Examples
    --------
    >>> orient_array(np.array([[1, 2, 3], [4, 5, 6]]), 6)
    array([[4, 1],
           [5, 2],
           [6, 3]])
    """
    transpose, flip_rows, flip_cols = EXIF_ORIENTATIONS[_check_orientation(orientation)]
    array = np.asarray(array)
    if transpose:
        array = array.swapaxes(0, 1)
    if flip_rows:
        array = array[::-1]
    if flip_cols:
        array = array[:, ::-1]
    return array


def orient_kernel(kernel: Kernel, orientation: int) -> Kernel:
    """The kernel that does to the stored pixels what ``kernel`` does to the image as displayed.

    For a picture tagged with EXIF ``orientation`` (a viewer shows ``T(S)`` for
    the stored pixels ``S``), convolving ``S`` with the result equals turning
    back the convolution of ``T(S)`` with ``kernel``, for every border mode:
    ``convolve(S, orient_kernel(K, o)) == T^-1(convolve(T(S), K))``.  The
    result is ``kernel`` turned by ``T^-1``; where that moves the centre of an
    even side off imgconv's centre (index ``n // 2``), a zero row or column is
    added so that it is on it again (the side becomes ``n + 1``).  Separable
    factors are turned alongside (swapped by a transpose, reversed by a flip,
    padded with the matrix), so the planner still sees a separable kernel.

    Parameters
    ----------
    kernel : Kernel
    orientation : int
        The EXIF Orientation of the image, 1 to 8; 1 returns ``kernel`` itself.

    Returns
    -------
    Kernel

    Examples
    --------
    >>> orient_kernel(Kernel([[1.0, 2.0, 3.0]]), 6).matrix  # a horizontal kernel, stored sideways
    array([[3.],
           [2.],
           [1.]])
    """
    orientation = _check_orientation(orientation)
    if orientation == 1:
        return kernel
    transpose, flip_rows, flip_cols = EXIF_ORIENTATIONS[inverse_orientation(orientation)]
    matrix = kernel.matrix
    (row, col), (height, width) = (matrix.shape[0] // 2, matrix.shape[1] // 2), matrix.shape
    factors = kernel.factors
    if transpose:
        matrix = matrix.T
        row, col, height, width = col, row, width, height
        factors = None if factors is None else (factors[1], factors[0])
    if flip_rows:
        matrix = matrix[::-1]
        row = height - 1 - row
        factors = None if factors is None else (factors[0][::-1], factors[1])
    if flip_cols:
        matrix = matrix[:, ::-1]
        col = width - 1 - col
        factors = None if factors is None else (factors[0], factors[1][::-1])
    matrix = centre_on(np.ascontiguousarray(matrix), (row, col))
    if factors is not None:
        # Padded as the matrix was, axis by axis, so their outer product stays the matrix exactly.
        column = centre_on(np.ascontiguousarray(factors[0])[:, None], (row, 0))[:, 0]
        across = centre_on(np.ascontiguousarray(factors[1])[None, :], (0, col))[0]
        factors = (column, across)
    return Kernel(matrix, factors)


def orient_filter(flt: Filter, orientation: int) -> Filter:
    """``flt`` with every kernel turned by :func:`orient_kernel` (combining,
    bias and out-range act pixel by pixel, so they need no turning)."""
    if _check_orientation(orientation) == 1:
        return flt
    return dataclasses.replace(flt, kernels=tuple(orient_kernel(k, orientation) for k in flt.kernels))


def _format_value(value: float, tiny: float) -> str:
    """Six significant digits, positional from 1e-4 to 1e7, else scientific."""
    if value == 0 or abs(value) <= tiny:
        return "0"
    if not math.isfinite(value) or not 1e-4 <= abs(value) < 1e7:
        return np.format_float_scientific(value, precision=3, unique=True, trim="-") if math.isfinite(value) else str(value)
    return np.format_float_positional(value, precision=6, unique=True, fractional=False, trim="-")


def format_matrix(matrix: ArrayLike) -> str:
    """A kernel as aligned text.

    Decimals to at most 6 significant digits, points lined up per column
    (1/16 prints as 0.0625), columns two spaces apart; a 1-D array is one row.

    Raises
    ------
    ValueError
        When ``matrix`` is empty or not 1-D or 2-D.
    """
    array = np.asarray(matrix, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"format_matrix needs a non-empty 2-D matrix, got shape {array.shape}")
    largest = float(np.abs(array).max()) if np.all(np.isfinite(array)) else 0.0
    tiny = largest * 1e-12
    cells = [[_format_value(float(v), tiny) for v in row] for row in array]
    split = [[(c.split(".", 1)[0], "." + c.split(".", 1)[1]) if "." in c else (c, "") for c in row] for row in cells]
    columns = list(zip(*split))
    widths = [(max(len(i) for i, _ in col), max(len(f) for _, f in col)) for col in columns]
    lines = []
    for row in split:
        parts = [i.rjust(wi) + f.ljust(wf) for (i, f), (wi, wf) in zip(row, widths)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)
