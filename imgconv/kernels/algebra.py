"""Kernel algebra and formatting: composing two kernels into one, centring a
kernel on its origin, scaling, the zero-sum test, and kernels as aligned text.

Every function here works on float64 numpy arrays (or :class:`Kernel`) and
keeps imgconv's convention for where a kernel's centre is: element
``shape // 2`` on each axis, as ``scipy.ndimage.convolve`` places it.

Imports only numpy and the standard library (never numba).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from imgconv.choices import ZERO_SUM_TOLERANCE
from imgconv.kernels.types import Kernel

__all__ = ["compose", "centre_on", "scaled", "sums_to_zero", "format_matrix"]

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
