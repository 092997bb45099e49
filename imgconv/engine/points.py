"""Per-element transforms of the band driver's rows (``engine/stream.py``), compiled, with
their numpy twins: sRGB decoding by table as rows enter, the blend with the original rows
(``--strength``), sRGB encoding by table and the store into the image's dtype as they
leave.

Each ``*_rows`` function here (``@njit(parallel=True)``, rows shared out among numba's
threads) has a numpy twin of the same name in ``engine/vector.py``, used while the compiled
kernels are not cached (the caller picks the one its convolutions run by): the same
float32 operations in the same order, table lookups and comparisons, so the same bits
(tests/test_stream.py).  A NaN stored into an integer is 0 in both (``cpu._finished``).

The tables are ``colour.Encoder``'s (8-bit encoding: a value's level is the level at the
start of its bucket of float32 patterns, plus one from the bucket's threshold on) and
``colour.srgb_to_linear`` of every level (decoding, exact for 8 and 16 bits).
"""

from imgconv.engine._cache import configure_numba_cache, guard_numba_cache
from imgconv.engine._threads import prefer_tbb

configure_numba_cache()
prefer_tbb()

import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

guard_numba_cache()

COMPILE_OPTIONS = dict(cache=True, nogil=True, parallel=True)


@njit(cache=True, nogil=True)
def _clamp(v, low, high):
    """``v`` clipped to ``low .. high`` as ``np.minimum(np.maximum(v, low), high)``: a NaN stays NaN."""
    if v < low:
        return low
    if v > high:
        return high
    return v


@njit(**COMPILE_OPTIONS)
def decode_rows(source, table, alpha_table, channels, has_alpha, out):
    """``out = table[source]`` element by element (``alpha_table`` for the last channel
    when ``has_alpha``): integer rows to float32."""
    n, width = source.shape
    for i in prange(n):
        row, target = source[i], out[i]
        for j in range(width):
            if has_alpha and j % channels == channels - 1:
                target[j] = alpha_table[row[j]]
            else:
                target[j] = table[row[j]]


@njit(cache=True, nogil=True)
def _blended(v, o, strength, alpha, unit, low, high, rounding):
    """``o + strength * (v - o)``, alpha clipped to ``0 .. unit``, then rounded and clipped
    to ``low .. high`` when ``rounding`` (a NaN rounded is 0)."""
    v = o + strength * (v - o)
    if alpha:
        v = _clamp(v, np.float32(0.0), unit)
    if rounding:
        v = np.rint(v)
        if v != v:
            v = np.float32(0.0)
        v = _clamp(v, low, high)
    return v


@njit(**COMPILE_OPTIONS)
def blend_rows(work, source, table, alpha_table, strength, channels, has_alpha, unit, finish, out):
    """The blend with the original rows (``--strength``) of integer ``source`` rows:
    ``v = o + strength * (v - o)`` for each element ``v`` of ``work`` and its original
    ``o = table[source]`` (each level in the work's units; ``alpha_table`` for alpha),
    alpha clipped to ``0 .. unit``; stored in ``out`` by ``finish`` (``low, high,
    rounding``: rounded and clipped for an integer ``out``; float32 ``out`` takes ``v``)."""
    n, width = work.shape
    low, high, rounding = finish[0], finish[1], finish[2] != 0
    for i in prange(n):
        row, original, target = work[i], source[i], out[i]
        for j in range(width):
            alpha = has_alpha and j % channels == channels - 1
            o = alpha_table[original[j]] if alpha else table[original[j]]
            target[j] = _blended(row[j], o, strength, alpha, unit, low, high, rounding)


@njit(**COMPILE_OPTIONS)
def blend_float_rows(work, original, strength, channels, has_alpha, unit, finish, out):
    """:func:`blend_rows` with float32 originals (``original`` rows themselves)."""
    n, width = work.shape
    low, high, rounding = finish[0], finish[1], finish[2] != 0
    for i in prange(n):
        row, first, target = work[i], original[i], out[i]
        for j in range(width):
            alpha = has_alpha and j % channels == channels - 1
            target[j] = _blended(row[j], first[j], strength, alpha, unit, low, high, rounding)


@njit(**COMPILE_OPTIONS)
def encode_rows(values, bits, levels, limits, shift, offset, count, channels, alpha_scale, out):
    """8-bit sRGB levels of linear float32 ``values`` (``bits``: the same memory as int32)
    by ``colour.Encoder``'s tables into ``out`` (uint8); where ``alpha_scale`` > 0 the last
    channel is alpha: ``rint(v * alpha_scale)`` clipped to 0 .. 255."""
    n, width = values.shape
    for i in prange(n):
        row, pattern, target = values[i], bits[i], out[i]
        for j in range(width):
            if alpha_scale > 0 and j % channels == channels - 1:
                v = np.rint(row[j] * alpha_scale)
                if v != v:
                    v = np.float32(0.0)
                target[j] = min(max(v, np.float32(0.0)), np.float32(255.0))
            else:
                k = min(max((pattern[j] >> shift) - offset, 0), count + 1)
                target[j] = levels[k] + (1 if row[j] >= limits[k] else 0)


@njit(**COMPILE_OPTIONS)
def premultiply_rows(block, inverse, channels, premultiplied, opacity):
    """Colour times opacity as rows enter (``--alpha premultiplied``): ``opacity = alpha *
    inverse`` and ``premultiplied = colour * opacity``, float32, from interleaved rows
    ``block`` (m, W * C) into (m, W * (C - 1)) and (m, W)."""
    m, width = opacity.shape
    colours = channels - 1
    for i in prange(m):
        row, target, alphas = block[i], premultiplied[i], opacity[i]
        for p in range(width):
            a = np.float32(row[p * channels + colours]) * inverse
            alphas[p] = a
            for c in range(colours):
                target[p * colours + c] = np.float32(row[p * channels + c]) * a


@njit(**COMPILE_OPTIONS)
def unpremultiply_rows(filtered, opacity, straight, transparent, offset, absolute, scale, finish, out):
    """Divided by the filtered opacity as rows leave, mapped and stored: for each pixel,
    colour ``v = filtered / opacity`` where ``opacity > transparent``, else ``straight``
    (the colour filtered straight; empty: every pixel divided); ``v + offset``
    (when not 0), ``abs`` when ``absolute``, clipped, rounded and clipped again by
    ``finish`` (``low, high, rounding``) for an integer ``out`` (a NaN is 0); alpha
    ``opacity * scale`` stored the same way.  ``out`` is (n, W * C), interleaved."""
    n, width = opacity.shape
    colours = filtered.shape[1] // width
    channels = colours + 1
    low, high, rounding = finish[0], finish[1], finish[2] != 0
    fallback = straight.shape[0] > 0
    for i in prange(n):
        row, alphas, target = filtered[i], opacity[i], out[i]
        for p in range(width):
            a = alphas[p]
            visible = a > transparent or not fallback
            for c in range(colours):
                v = row[p * colours + c] / a if visible else straight[i, p * colours + c]
                if offset != 0:
                    v = v + offset
                if absolute:
                    v = abs(v)
                target[p * channels + c] = _stored(v, low, high, rounding)
            target[p * channels + colours] = _stored(a * scale, low, high, rounding)


@njit(cache=True, nogil=True)
def _stored(v, low, high, rounding):
    """``v`` as ``filtering._store`` stores it: for an integer output clipped, rounded, clipped
    (a NaN is 0); a float32 output as it is."""
    if rounding:
        v = np.rint(_clamp(v, low, high))
        if v != v:
            v = np.float32(0.0)
        v = _clamp(v, low, high)
    return v
