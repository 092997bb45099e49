"""CPU backend: ``@njit(parallel=True, cache=True)`` kernels.

The image is seen as one 2-D array of rows of ``W * C`` elements (interleaved
colour stays interleaved: a tap one pixel to the right is ``C`` elements
along).  Each thread takes a band of output rows.  An output row is the sum
over the kernel's non-zero taps of ``w * row[offset : offset + W * C]``, in
loops LLVM vectorises, over column tiles (``tunables.CPU_COLUMN_TILE``).

Where the taps read from:

- **float32 rows, in place.**  An output row whose taps all fall on rows of the
  image (every mode but ``constant`` at the top and bottom) reads the source
  rows where they are, for every column whose taps stay inside the row.  The
  few columns at each end whose taps leave the row (``(kw - 1) * C`` in all)
  are gathered through the border index map for the whole band at once and
  summed down the rows (``_row_ends``).  Nothing is copied.  (Not where a sweep's
  rows would crowd one cache set, ``_crowded``: rows a multiple of 4 KB long
  put one column of every row in one set.)
- **A ring of line buffers** otherwise: uint8 and uint16 rows (converted to
  float32 once, so integer images need no full-size float copy), constant-mode
  rows beyond the image, and images too narrow for the in-place columns to pay
  (``tunables.CPU_IN_PLACE_EDGE_WORK``).  Each thread keeps ``kh + G - 1`` line
  buffers (``G``: a sweep's output rows); a source row, converted and extended beyond its ends through the
  border index map (so there is no padded copy of the image), is filled once
  and serves the output rows that need it.  Ring rows are an odd number of
  cache lines long (``_ring_row``), for the same reason.

**The order of the sum** is one order, whichever path reads the taps: the
non-zero taps in row-major order, four at a time, ``((w0 a + w1 b) + w2 c) +
w3 d`` added to the running sum, no fused multiply-add.  The CUDA backend
sums in the same order (``cuda._correlate_kernel``), so its float32 results
are the CPU's bit for bit; change the two together.

**How the sum is swept.**  Tap counts in ``FUSED_TAPS`` (9, 13, 17: dense 3x3
kernels, the 1-D passes of Gaussians of sigma 1, 1.5 and 2) are summed in one
sweep with every tap in registers, so each output element is written once
(beyond 13 taps, in sweeps of 12 and 13 taps that fit the registers); other
counts take one sweep per group of four taps over a column tile.  Where
output rows share their source rows -- the column pass of the separable kernel, a
direct kernel of one column, a dense 3x3 or 5x5 -- several rows are computed in
one sweep, each loaded source element serving all of them (``_rows*``): four rows
(three for a dense 5x5, whose loads would not fit the registers), so a sweep loads
fewer elements per output and the image's rows pass fewer times.  These loops are generated from one template
(``_sum_expression``), so the order above is written once.  Compiling them all
makes a cold first call of a kernel slower (docs/performance.md, "CPU kernels");
``cache=True`` keeps them.

The separable kernel runs both 1-D passes in one sweep: each band keeps a ring
of row-pass results and builds the output rows from it, four at a time, so
there is no full-size intermediate image; float32 rows are read in place by
the row pass as above.  Both kernels finish each row on the spot (offset,
absolute value, rounding and clipping into the output dtype), so filtering a
uint8 photograph to a uint8 result allocates no float image at all.

``engine/vector.py`` does the same sums in numpy (while these kernels are not yet
cached, and for small images): change the two together; tests/test_vector.py
compares them bit for bit.

Source rows are uint8, uint16 or float32, C-contiguous and writable
(``engine.run`` hands them over in that one form, so each kernel has one
compiled signature per dtype); every compiled function has ``cache=True``.
8-bit RGB may also come in Pillow's own rows, 4 bytes a pixel (R, G, B, a pad
byte): the same (H, W * 4) uint8 array type with a pixel stride of 4, read by
``_fill_line`` into packed line buffers and finished into 4-byte pixels by
``_finish_rgb`` (pad bytes 255), so that ``imgconv.io``
neither packs the decoded image nor unpacks the result for the encoder; the
sums, and so the bits, are those of the packed rows.
Compiled callees are never handed literal integers (numba compiles a callee
once per literal value it is called with).  The entry points ``run_direct``
and ``run_separable`` have ``engine.run``'s signature.
"""

from imgconv.engine._cache import configure_numba_cache, guard_numba_cache
from imgconv.engine._threads import prefer_tbb

configure_numba_cache()
prefer_tbb()

import hashlib  # noqa: E402

import numpy as np  # noqa: E402
from numba import get_num_threads, njit, prange  # noqa: E402

guard_numba_cache()

from imgconv import tunables  # noqa: E402
from imgconv.engine import borders  # noqa: E402
from imgconv.engine.helpers import new_rows  # noqa: E402
from imgconv.engine.sweeps import DENSE_PAIRS, FUSED_TAPS, PAIRED_TAPS  # noqa: E402  (the planner reads them too)

COMPILE_OPTIONS = dict(cache=True, nogil=True)

# How output rows of a kernel share source rows (run_direct decides): not at all, a
# one-column kernel (its taps are kh consecutive rows), a dense 3x3 or 5x5.
PAIR_NONE, PAIR_COLUMN, PAIR_DENSE3X3, PAIR_DENSE5X5 = 0, 1, 2, 3


def _wide_vectors() -> bool:
    """Whether numba compiles for AVX-512 (its target CPU: the host's, or NUMBA_CPU_NAME and
    NUMBA_CPU_FEATURES)."""
    from numba.core import config

    features = config.CPU_FEATURES
    if features is None:
        if config.CPU_NAME not in (None, "host"):
            return False  # (a named CPU without its features: the narrow choice)
        import llvmlite.binding as ll

        features = ll.get_host_cpu_features().flatten()
    return "+avx512f" in features.split(",")


DENSE_SWEEPS = _wide_vectors()

# Output rows a sweep for each (AVX-512, AMD Zen 5: four 12-31 % faster than two, 2048 x 2048
# float32 on one thread, for one-column kernels of 9 to 25 taps and the dense 3x3; the
# dense 5x5, whose sweeps hold more loads, gained 7 % with three and lost it again with
# four).  With AVX2's 16 vector registers (AMD Zen 3) the dense sweeps' sums and loads
# spill: one row a sweep was the fastest there, 3.06 against 3.86 ms with four for the
# 3x3, 5.20 against 6.93 with three for the 5x5; one-column kernels, within 10 % either
# way of one row, keep four (docs/performance.md, bench/sweep_rows.py).  numba compiles for this CPU, and keys
# its cache to it, so the choice and the compiled sweeps go together.
ROWS_COLUMN = 4
ROWS_DENSE3X3, ROWS_DENSE5X5 = (4, 3) if DENSE_SWEEPS else (1, 1)
ROWS_PER_SWEEP = {PAIR_NONE: 1, PAIR_COLUMN: ROWS_COLUMN, PAIR_DENSE3X3: ROWS_DENSE3X3, PAIR_DENSE5X5: ROWS_DENSE5X5}
_DENSE_KINDS = {3: PAIR_DENSE3X3, 5: PAIR_DENSE5X5}

# The float32 rows handed to the kernels when the source is not float32 (never read then).
_NO_FLOAT_ROWS = np.empty((0, 0), np.float32)


# --- the fused sweeps, generated from one template -----------------------------------------------


def _sum_expression(terms, running=None):
    """``terms`` (``"w * x"`` strings, in tap order, starting at a group of four) summed in
    the one order: four at a time, ``((a + b) + c) + d``, each group added to the running
    sum -- ``running`` when given (the sum of the taps before them), else the first group.

    >>> _sum_expression(["a", "b", "c", "d", "e"])
    '((((a + b) + c) + d) + e)'
    >>> _sum_expression(["e"], "s")
    '(s + e)'
    """
    groups = []
    for first in range(0, len(terms), 4):
        group = terms[first]
        for term in terms[first + 1 : first + 4]:
            group = f"({group} + {term})"
        groups.append(group)
    total = running if running is not None else groups.pop(0)
    for group in groups:
        total = f"({total} + {group})"
    return total


def _sweeps(count):
    """``(first, last)`` tap ranges of the sweeps one fused function makes: one sweep up to
    13 taps, else sweeps of 12 (whole groups) and a last of up to 13, so that a sweep's
    weights and loads fit the registers (two rows a sweep of a dense 5x5 in one sweep kept
    80 loads where two sweeps keep 37, and ran 20-30 % slower).

    >>> list(_sweeps(9)), list(_sweeps(25))
    ([(0, 9)], [(0, 12), (12, 25)])
    """
    bounds = [0] + list(range(12, count - 1, 12)) + [count] if count > 13 else [0, count]
    return zip(bounds, bounds[1:])


def _fused_sources():
    """Source of the generated sweeps (one string):

    - ``_sum{T}(acc, lines, rows, offsets, weights, j0, n)`` for ``T`` in ``FUSED_TAPS``:
      ``acc[j] = sum_t weights[t] * lines[rows[t], j0 + offsets[t] + j]`` for ``j < n``;
    - ``_rows{T}(sums, s0, lines, rows, offsets, weights, j0, n)`` for ``T`` in
      ``PAIRED_TAPS``: the same for ``G = ROWS_PER_SWEEP[PAIR_COLUMN]`` output rows over
      ``T + G - 1`` consecutive rows with no column offsets, ``sums[r, s0 : s0 + n]`` from
      ``rows[r .. r + T - 1]``;
    - ``_rows_dense{S}(sums, s0, lines, rows, offsets, weights, j0, n)`` for ``S`` in
      ``DENSE_PAIRS``: a dense S x S kernel (taps ``t = S u + v``) for its
      ``ROWS_PER_SWEEP`` output rows ``sums[r]``, from ``rows[0 .. S + G - 2]`` and column
      offsets ``offsets[0 .. S - 1]``;
    - ``_fused_sum`` / ``_fused_rows``: the dispatch on the tap count (False: not fused).

    Every view is a slice taken before the loop (the loop indexes it with the plain range
    variable), and every weight a scalar, so LLVM keeps them in registers and vectorises
    the loop over ``j``; the loads shared by several rows are loaded once.
    """
    parts = []
    for count in FUSED_TAPS:
        body = []
        for first, last in _sweeps(count):
            body += [f"    x{t} = lines[rows[{t}], j0 + offsets[{t}] : j0 + offsets[{t}] + n]" for t in range(first, last)]
            body += [f"    w{t} = weights[{t}]" for t in range(first, last)]
            terms = [f"w{t} * x{t}[j]" for t in range(first, last)]
            body += ["    for j in range(n):", f"        acc[j] = {_sum_expression(terms, 'acc[j]' if first else None)}"]
        parts.append(f"def _sum{count}(acc, lines, rows, offsets, weights, j0, n):\n" + "\n".join(body) + "\n")
    # Several output rows: taps on consecutive rows (no column offsets), or a dense side x side kernel.
    shapes = [(f"_rows{count}", count, 1, ROWS_PER_SWEEP[PAIR_COLUMN]) for count in PAIRED_TAPS]
    shapes += [(f"_rows_dense{side}", side * side, side, ROWS_PER_SWEEP[_DENSE_KINDS[side]]) for side in DENSE_PAIRS]
    parts += [_rows_source(name, count, side, group) for name, count, side, group in shapes]
    branches = "".join(f"    if ntaps == {c}:\n        _sum{c}(acc, lines, rows, offsets, weights, j0, n)\n        return True\n" for c in FUSED_TAPS)
    parts.append(f"def _fused_sum(ntaps, acc, lines, rows, offsets, weights, j0, n):\n{branches}    return False\n")
    branches = "".join(f"    if ntaps == {c}:\n        _rows{c}(sums, s0, lines, rows, offsets, weights, j0, n)\n        return True\n" for c in PAIRED_TAPS)
    parts.append(f"def _fused_rows(ntaps, sums, s0, lines, rows, offsets, weights, j0, n):\n{branches}    return False\n")
    return "\n\n".join(parts)


def _rows_source(name, count, side, group):
    """Source of ``name(sums, s0, lines, rows, offsets, weights, j0, n)``: ``group`` output rows
    ``sums[r, s0 : s0 + n]`` of a dense kernel of ``count`` taps ``side`` columns wide (taps
    ``t = side u + v``) in one sweep a ``_sweeps`` range, each over ``rows[r + u]`` and column
    offsets ``offsets[v]`` (``bench/sweep_rows.py`` times it for other ``group``s)."""
    body = [f"    o{d} = sums[{d}, s0 : s0 + n]" for d in range(group)]
    for first, last in _sweeps(count):
        used = sorted({(t // side + d, t % side) for t in range(first, last) for d in range(group)})
        body += [f"    x{u}_{v} = lines[rows[{u}], j0 + offsets[{v}] : j0 + offsets[{v}] + n]" for u, v in used]
        body += [f"    w{t} = weights[{t}]" for t in range(first, last)]
        body.append("    for j in range(n):")
        body += [f"        a{u}_{v} = x{u}_{v}[j]" for u, v in used]
        for d in range(group):
            terms = [f"w{t} * a{t // side + d}_{t % side}" for t in range(first, last)]
            body.append(f"        o{d}[j] = {_sum_expression(terms, f'o{d}[j]' if first else None)}")
    return f"def {name}(sums, s0, lines, rows, offsets, weights, j0, n):\n" + "\n".join(body) + "\n"


def _compile_fused():
    """Define the generated sweeps in this module, compiled as every other function here.

    The code objects carry this file's name, so numba's cache keys them to this file
    like the rest (an edit here recompiles them).  Line numbers in their tracebacks
    are those of ``print(_fused_sources())``.
    """
    namespace = {}
    exec(compile(_fused_sources(), __file__, "exec"), globals(), namespace)  # noqa: S102 - our own template
    for name, function in namespace.items():
        globals()[name] = njit(**COMPILE_OPTIONS)(function)


_compile_fused()


# --- the sums -----------------------------------------------------------------------------------


@njit(**COMPILE_OPTIONS)
def _fill_line(line, src, r, col_map, cval, lead, channels, stride):
    """Row ``r`` of ``src`` as float32, packed, extended by the border map; ``r < 0``: all
    ``cval``.  ``src`` holds ``stride`` elements a pixel, its ``channels`` first: packed
    (``stride == channels``), or Pillow's RGB rows (3 of 4, the pad byte unread)."""
    if r < 0:
        line[:] = cval
        return
    row = src[r]
    pixels = src.shape[1] // stride
    width = pixels * channels
    middle = line[lead : lead + width]
    if stride == channels:
        for j in range(width):
            middle[j] = row[j]
    else:
        # Written out, so LLVM vectorises the interleaved loads (a loop over the channels
        # ran 4x slower): as fast as the packed loop, measured.
        for q in range(pixels):
            middle[3 * q] = row[4 * q]
            middle[3 * q + 1] = row[4 * q + 1]
            middle[3 * q + 2] = row[4 * q + 2]
    # The border map gives packed elements: pixel c // channels, channel c % channels.
    for j in range(lead):
        c = col_map[j]
        line[j] = row[(c // channels) * stride + c % channels] if c >= 0 else cval
    for j in range(lead + width, col_map.shape[0]):  # (a ring's rows are longer: _ring_row)
        c = col_map[j]
        line[j] = row[(c // channels) * stride + c % channels] if c >= 0 else cval


@njit(**COMPILE_OPTIONS)
def _ring_row(n):
    """The length of a ring buffer's rows holding ``n`` float32 elements: an odd number of
    whole 64-byte cache lines, so that one column of consecutive rows falls in different
    L1 cache sets.  (Rows a multiple of 4 KB long, a 2048-pixel RGB row's 24 KB, put a
    column of every row in one set of 8 ways: the column pass's 16 rows then missed the
    cache, and ran 2-3 times slower, measured.)"""
    lines = (n + 15) // 16
    if lines % 2 == 0:
        lines += 1
    return lines * 16


@njit(**COMPILE_OPTIONS)
def _weighted_sum(acc, lines, rows, offsets, weights, j0, n):
    """``acc[:n] = sum_t weights[t] * lines[rows[t], j0 + offsets[t] :][:n]``, in the one order.

    The counts in ``FUSED_TAPS`` in one sweep, others one sweep per group of four taps.
    """
    ntaps = weights.shape[0]
    if ntaps == 0:
        acc[:n] = 0.0
    elif not _fused_sum(ntaps, acc, lines, rows, offsets, weights, j0, n):
        _group_sweeps(acc, lines, rows, offsets, weights, j0, n)


@njit(**COMPILE_OPTIONS)
def _group_sweeps(acc, lines, rows, offsets, weights, j0, n):
    """``_weighted_sum`` one sweep over the tile per group of four taps.

    The first group of four is stored; every later group, and a first group of
    fewer taps, is added to ``acc`` (set to -0.0 first: ``-0.0 + x`` is ``x``,
    bit for bit), which keeps the loops compiled to five.
    """
    ntaps = weights.shape[0]
    t = 0
    if ntaps < 4:
        acc[:n] = -0.0
    while t < ntaps:
        group = min(4, ntaps - t)
        w0 = weights[t]
        s = j0 + offsets[t]
        a = lines[rows[t], s : s + n]
        if group == 4:
            w1, w2, w3 = weights[t + 1], weights[t + 2], weights[t + 3]
            s1, s2, s3 = j0 + offsets[t + 1], j0 + offsets[t + 2], j0 + offsets[t + 3]
            b = lines[rows[t + 1], s1 : s1 + n]
            c = lines[rows[t + 2], s2 : s2 + n]
            d = lines[rows[t + 3], s3 : s3 + n]
            if t == 0:
                for j in range(n):
                    acc[j] = ((w0 * a[j] + w1 * b[j]) + w2 * c[j]) + w3 * d[j]
            else:
                for j in range(n):
                    acc[j] += ((w0 * a[j] + w1 * b[j]) + w2 * c[j]) + w3 * d[j]
        elif group == 3:
            w1, w2 = weights[t + 1], weights[t + 2]
            s1, s2 = j0 + offsets[t + 1], j0 + offsets[t + 2]
            b = lines[rows[t + 1], s1 : s1 + n]
            c = lines[rows[t + 2], s2 : s2 + n]
            for j in range(n):
                acc[j] += (w0 * a[j] + w1 * b[j]) + w2 * c[j]
        elif group == 2:
            w1 = weights[t + 1]
            s1 = j0 + offsets[t + 1]
            b = lines[rows[t + 1], s1 : s1 + n]
            for j in range(n):
                acc[j] += w0 * a[j] + w1 * b[j]
        else:
            for j in range(n):
                acc[j] += w0 * a[j]
        t += group


@njit(**COMPILE_OPTIONS)
def _sweep_rows(kind):
    """``ROWS_PER_SWEEP[kind]``, for the compiled drivers."""
    if kind == PAIR_COLUMN:
        return ROWS_COLUMN
    if kind == PAIR_DENSE3X3:
        return ROWS_DENSE3X3
    if kind == PAIR_DENSE5X5:
        return ROWS_DENSE5X5
    return 1


@njit(**COMPILE_OPTIONS)
def _next_sweep(kind, i, last):
    """(kind, rows) for the sweep at output row ``i`` of a band ending before ``last``: a
    whole sweep of ``kind``, else (the band's last rows, fewer) one row alone."""
    group = _sweep_rows(kind)
    if i + group <= last:
        return kind, group
    return PAIR_NONE, 1


@njit(**COMPILE_OPTIONS)
def _weighted_rows(sums, s0, lines, rows, offsets, weights, kind, j0, n):
    """``_sweep_rows(kind)`` output rows ``sums[r, s0 : s0 + n]`` in one sweep where they share
    source rows, each in ``_weighted_sum``'s order.  ``kind``: ``PAIR_COLUMN``, taps on
    ``ntaps`` consecutive rows with no column offsets, ``rows[r ..]`` for row ``r``;
    ``PAIR_DENSE3X3`` / ``PAIR_DENSE5X5``, a dense S x S kernel on ``rows[0 ..]`` with the
    column offsets of its first kernel row."""
    ntaps = weights.shape[0]
    if kind == PAIR_DENSE3X3:
        _rows_dense3(sums, s0, lines, rows, offsets, weights, j0, n)
        return
    if kind == PAIR_DENSE5X5:
        _rows_dense5(sums, s0, lines, rows, offsets, weights, j0, n)
        return
    if _fused_rows(ntaps, sums, s0, lines, rows, offsets, weights, j0, n):
        return
    for r in range(ROWS_COLUMN):
        _weighted_sum(sums[r, s0 : s0 + n], lines, rows[r : r + ntaps], offsets, weights, j0, n)


@njit(**COMPILE_OPTIONS)
def _finished(v, offset, absolute, rounding, low, high):
    """``clip(round(|v + offset|), low, high)`` (abs and round when asked); a NaN
    rounded for an integer output is 0 (storing NaN in an integer is undefined)."""
    v = v + offset
    if absolute:
        v = abs(v)
    if rounding:
        v = np.rint(v)
        if v != v:
            v = np.float32(0.0)
    return min(max(v, low), high)


@njit(**COMPILE_OPTIONS)
def _finish(acc, out_row, offset, absolute, rounding, low, high):
    """``out_row = _finished(acc)``, element by element."""
    for j in range(acc.shape[0]):
        out_row[j] = _finished(acc[j], offset, absolute, rounding, low, high)


@njit(**COMPILE_OPTIONS)
def _finish_rgb(acc, out_row, j0, offset, absolute, rounding, low, high):
    """``_finish`` into Pillow's RGB pixels: ``acc`` (packed R, G, B sums of whole pixels,
    from packed element ``j0``, a pixel's first) finished into ``out_row``'s pixels of 4
    elements, the pad element 255 as Pillow's own unpacker sets it."""
    pixels = acc.shape[0] // 3
    q0 = j0 // 3
    target = out_row[4 * q0 : 4 * (q0 + pixels)]
    # Every element of each 4 stored, so LLVM vectorises the interleaved stores (with the
    # pad left out it did not: 4x slower); 0.4 ns a pixel more than the packed finish, where
    # a finish into a tile and then a copy into the pixels took 0.9 (measured, 12 MP).
    for q in range(pixels):
        target[4 * q] = _finished(acc[3 * q], offset, absolute, rounding, low, high)
        target[4 * q + 1] = _finished(acc[3 * q + 1], offset, absolute, rounding, low, high)
        target[4 * q + 2] = _finished(acc[3 * q + 2], offset, absolute, rounding, low, high)
        target[4 * q + 3] = 255


@njit(**COMPILE_OPTIONS)
def _sum_columns(outs, sums, count, lines, rows, offsets, weights, kind, shift, first, last, tile, finish, channels, stride):
    """``outs[r, first:last]`` for the ``count`` output rows of a sweep (``_sweep_rows(kind)``,
    or 1 with ``kind`` ``PAIR_NONE``): the taps of ``lines`` (element ``e`` reads
    ``e + shift``), tile by tile, finished.

    The sums go to ``sums``: the float32 output rows themselves when the finish is plain
    (nothing to do), else tile-sized buffers, a row each, finished into ``outs``.
    Output rows of ``stride`` elements a pixel (not ``channels``: Pillow's RGB rows) get
    each tile finished into their pixels (``_finish_rgb``; tiles then start on whole pixels).
    """
    offset, absolute, rounding, low, high = finish[0], finish[1] != 0, finish[2] != 0, finish[3], finish[4]
    plain = finish[5] != 0
    for j0 in range(first, last, tile):
        n = min(last, j0 + tile) - j0
        s0 = j0 if plain else 0
        if kind == PAIR_NONE:
            _weighted_sum(sums[0, s0 : s0 + n], lines, rows, offsets, weights, j0 + shift, n)
        else:
            _weighted_rows(sums, s0, lines, rows, offsets, weights, kind, j0 + shift, n)
        if plain:
            continue
        for r in range(count):
            if stride == channels:
                _finish(sums[r, :n], outs[r, j0 : j0 + n], offset, absolute, rounding, low, high)
            else:
                _finish_rgb(sums[r, :n], outs[r], j0, offset, absolute, rounding, low, high)


# --- the ends of rows read in place ---------------------------------------------------------------


@njit(**COMPILE_OPTIONS)
def _edge_block(block, src, row_map, first, col_map, x0, cval):
    """``block[x, q]``: the extended float32 image at row ``first + q``, column ``x0 + x``."""
    for q in range(block.shape[1]):
        r = row_map[first + q]
        for x in range(block.shape[0]):
            c = col_map[x0 + x]
            block[x, q] = src[r, c] if r >= 0 and c >= 0 else cval


@njit(**COMPILE_OPTIONS)
def _row_ends(ends, src, row_map, first, reach, col_map, cval, lead, inner, rows, tap_rows, tap_offsets, weights):
    """The sums at the ends of rows read in place, where taps leave the row: ``ends[q, k]``
    for output row ``first + q`` and element ``k`` of ``[0, lead)`` then ``[lead + inner, W * C)``.

    Per end, the few extended columns its taps read are gathered for the whole band
    (``reach``: rows the taps read below the last output row), transposed, and each
    element is one sum down the rows, in ``_weighted_sum``'s order.
    """
    count, span = ends.shape
    width = inner + span
    acc = np.empty(count, np.float32)
    zero = np.int64(0)
    for side in range(2):
        x0, k0 = (zero, zero) if side == 0 else (lead + inner, lead)
        e_last = lead if side == 0 else width
        if e_last <= x0:
            continue
        block = np.empty((e_last - x0 + span, count + reach), np.float32)
        _edge_block(block, src, row_map, first, col_map, x0, cval)
        for e in range(x0, e_last):
            for t in range(weights.shape[0]):
                rows[t] = e - x0 + tap_offsets[t]
            _weighted_sum(acc, block, rows, tap_rows, weights, zero, count)
            ends[:, k0 + e - x0] = acc


@njit(**COMPILE_OPTIONS)
def _store_ends(out_row, ends, lead, inner, finish):
    """``_row_ends``' sums for one row into ``out_row``'s ends, finished."""
    offset, absolute, rounding, low, high = finish[0], finish[1] != 0, finish[2] != 0, finish[3], finish[4]
    plain = finish[5] != 0
    for k in range(ends.shape[0]):
        e = k if k < lead else k + inner
        out_row[e] = ends[k] if plain else _finished(ends[k], offset, absolute, rounding, low, high)


# --- the kernels ---------------------------------------------------------------------------------


@njit(parallel=True, **COMPILE_OPTIONS)
def _direct_rows(src, fsrc, tap_rows, tap_offsets, tap_weights, kh, row_map, col_map, cval, lead, in_place, pair, bands, tile, finish, out, fout, channels, stride):
    """``out[i, j] = finish(sum_t w_t * ext[i + tap_rows[t], j + tap_offsets[t] - lead])``.

    ``ext`` is ``src`` extended by ``row_map`` / ``col_map`` (-1: ``cval``);
    ``src`` and ``out`` are (H, W * C); ``fsrc`` is ``src`` when it is float32
    (else an empty float32 array); ``in_place``: read float32 rows where they
    are; ``pair``: how output rows share their taps' rows (``PAIR_*``, swept
    ``ROWS_PER_SWEEP`` rows at a time; see the module notes); ``finish`` is (offset, absolute, rounding, low, high,
    plain) as float32 (``engine.finish.Finish.spec``); ``fout`` is ``out`` when
    the finish is plain (float32, nothing to do: the sums go straight into it),
    else an empty float32 array; ``tile`` is the column tile
    (``tunables.CPU_COLUMN_TILE``); ``channels`` and ``stride``: ``src`` and ``out`` hold
    ``stride`` elements a pixel, its ``channels`` first (packed: equal; see
    :func:`run_direct`), and ``W * C`` above counts the ``channels`` only.
    """
    height, width = out.shape[0], out.shape[1] // stride * channels
    plain = finish[5] != 0
    ntaps = tap_weights.shape[0]
    line_len = col_map.shape[0]
    inner = width - (line_len - width)  # elements whose taps all stay inside the row
    group = _sweep_rows(pair)
    slots = kh + group - 1  # ring slots: the rows of one sweep's output rows
    zero = np.int64(0)
    bands = max(1, min(height, bands))
    band = (height + bands - 1) // bands
    for b in prange(bands):
        first = b * band
        last = min(height, first + band)
        if first >= last:
            continue
        lines = np.empty((0, line_len), np.float32)  # the ring, made when a row first needs it
        acc = np.empty((group, min(width, tile)), np.float32)
        rows = np.empty(max(ntaps, slots), np.int64)
        ends = np.empty((last - first, line_len - width), np.float32)
        if in_place:
            _row_ends(ends, fsrc, row_map, first, kh - 1, col_map, cval, lead, inner, rows, tap_rows, tap_offsets, tap_weights)
        filled = first  # the ring holds extended rows filled - slots .. filled - 1, row p in slot p % slots
        i = first
        while i < last:
            kind, count = _next_sweep(pair, i, last)
            reach = kh + count - 2  # extended rows i .. i + reach are read
            direct = in_place
            for u in range(reach + 1):
                if row_map[i + u] < 0:
                    direct = False
            if direct:
                source, shift, j_first, j_last = fsrc, -lead, lead, lead + inner
            else:
                if lines.shape[0] == 0:
                    lines = np.empty((slots, _ring_row(line_len)), np.float32)
                for p in range(max(filled, i), i + reach + 1):
                    _fill_line(lines[p % slots], src, row_map[p], col_map, cval, lead, channels, stride)
                filled = i + reach + 1
                source, shift, j_first, j_last = lines, zero, zero, width
            # Single rows: each tap's row; sweeps of several: the rows of extended rows i .. i + reach.
            for t in range(reach + 1 if kind != PAIR_NONE else ntaps):
                u = t if kind != PAIR_NONE else tap_rows[t]
                rows[t] = row_map[i + u] if direct else (i + u) % slots
            row_taps = rows if kind != PAIR_NONE else rows[:ntaps]
            sums = fout[i : i + count] if plain else acc
            _sum_columns(out[i : i + count], sums, count, source, row_taps, tap_offsets, tap_weights, kind, shift, j_first, j_last, tile, finish, channels, stride)
            if direct:
                for r in range(i, i + count):
                    _store_ends(out[r], ends[r - first], lead, inner, finish)
            i += count


@njit(parallel=True, **COMPILE_OPTIONS)
def _separable_rows(src, fsrc, row_offsets, row_weights, col_weights, row_map, col_map, cval, ring_cval, lead, in_place, bands, tile, finish, out, fout, channels, stride):
    """Both passes of a separable convolution in one sweep (see the module notes).

    The row pass correlates each extended row with ``row_weights`` (element
    offsets ``row_offsets``), reading float32 rows in place when ``in_place``
    (``fsrc`` as for ``_direct_rows``); the column pass correlates ``kh``
    consecutive row-pass results with ``col_weights``, several output rows at a
    time (``ROWS_COLUMN``).  Rows beyond the image in constant mode hold ``cval`` everywhere, so
    their row-pass result is ``ring_cval``; ``fout``, ``channels`` and ``stride`` as for
    ``_direct_rows`` (the row-pass results are packed).
    """
    height, width = out.shape[0], out.shape[1] // stride * channels
    plain = finish[5] != 0
    kh = col_weights.shape[0]
    nrow = row_weights.shape[0]
    line_len = col_map.shape[0]
    inner = width - (line_len - width)
    slots = kh + ROWS_COLUMN - 1  # ring slots: the rows of one sweep's output rows
    zero, single, one = np.int64(0), np.int64(PAIR_NONE), np.int64(1)
    bands = max(1, min(height, bands))
    band = (height + bands - 1) // bands
    row_finish = np.zeros(6, np.float32)
    row_finish[3], row_finish[4], row_finish[5] = -np.inf, np.inf, 1  # row-pass results stay plain float32
    for b in prange(bands):
        first = b * band
        last = min(height, first + band)
        if first >= last:
            continue
        line = np.empty((1, line_len), np.float32)
        ring = np.empty((slots, _ring_row(width)), np.float32)
        acc = np.empty((ROWS_COLUMN, min(width, tile)), np.float32)
        line_slots = np.zeros(nrow, np.int64)
        source_rows = np.empty(nrow, np.int64)
        ring_slots = np.empty(slots, np.int64)
        ring_offsets = np.zeros(kh, np.int64)
        ends = np.empty((last + kh - 1 - first, line_len - width), np.float32)  # row-pass results at the row ends
        if in_place:
            _row_ends(ends, fsrc, row_map, first, zero, col_map, cval, lead, inner, source_rows, line_slots, row_offsets, row_weights)
        i = first  # the next output row
        for p in range(first, last + kh - 1):
            # Row-pass result for extended row p into ring slot p % slots.
            r = row_map[p]
            slot = p % slots
            target = ring[slot]
            if r < 0:
                target[:] = ring_cval
            else:
                if in_place:
                    source_rows[:] = r
                    source, rows, shift, j_first, j_last = fsrc, source_rows, -lead, lead, lead + inner
                else:
                    _fill_line(line[0], src, r, col_map, cval, lead, channels, stride)
                    source, rows, shift, j_first, j_last = line, line_slots, zero, zero, width
                results = ring[slot : slot + 1]
                _sum_columns(results, results, one, source, rows, row_offsets, row_weights, single, shift, j_first, j_last, tile, row_finish, channels, channels)
                if in_place:
                    _store_ends(target, ends[p - first], lead, inner, row_finish)
            # Output rows i .. i + count - 1 once their kh + count - 1 row-pass results are in the
            # ring (a band's last rows, fewer than a sweep's, one at a time).
            kind, count = _next_sweep(PAIR_COLUMN, i, last)
            while i < last and p >= i + kh + count - 2:
                for u in range(kh + count - 1):
                    ring_slots[u] = (i + u) % slots
                rows = ring_slots if kind != PAIR_NONE else ring_slots[:kh]
                sums = fout[i : i + count] if plain else acc
                _sum_columns(out[i : i + count], sums, count, ring, rows, ring_offsets, col_weights, kind, zero, zero, width, tile, finish, channels, stride)
                i += count
                kind, count = _next_sweep(PAIR_COLUMN, i, last)


@njit(**COMPILE_OPTIONS)
def gather_region(src, row_map, col_map, channels, channel, cval, region):
    """Fill ``region`` with the extended image at the positions the maps give
    (-1: ``cval``), for one channel of interleaved (H, W * C) rows.  Positions
    beyond the maps' ends (a last, partial tile) are left as they are."""
    rows = min(region.shape[0], row_map.shape[0])
    cols = min(region.shape[1], col_map.shape[0])
    # The longest run of consecutive source columns (the tile's inside) is copied without
    # the map: a tile at a border reads the rest through it.
    run_first, run_end, b = 0, 0, 0
    while b < cols:
        e = b + 1
        if col_map[b] >= 0:
            while e < cols and col_map[e] == col_map[e - 1] + 1:
                e += 1
            if e - b > run_end - run_first:
                run_first, run_end = b, e
        b = e
    base = (col_map[run_first] - run_first) * channels + channel if run_end > run_first else 0
    for a in range(rows):
        r = row_map[a]
        line = region[a]
        if r < 0:
            line[:cols] = cval
            continue
        row = src[r]
        for b in range(run_first):
            c = col_map[b]
            line[b] = row[c * channels + channel] if c >= 0 else cval
        for b in range(run_first, run_end):
            line[b] = row[base + b * channels]
        for b in range(run_end, cols):
            c = col_map[b]
            line[b] = row[c * channels + channel] if c >= 0 else cval


@njit(**COMPILE_OPTIONS)
def store_tile(out, piece, i0, j0, channels, channel, finish):
    """``piece`` (one channel of an FFT tile's float32 results) finished (``finish``:
    ``Finish.spec``) into ``out[i0 + a, (j0 + b) * channels + channel]``, in one pass:
    numpy's finish and strided store took four (``fft.store_tile``)."""
    offset, absolute, rounding, low, high = finish[0], finish[1] != 0, finish[2] != 0, finish[3], finish[4]
    base = j0 * channels + channel
    for a in range(piece.shape[0]):
        row = out[i0 + a]
        values = piece[a]
        for b in range(piece.shape[1]):
            row[base + b * channels] = _finished(values[b], offset, absolute, rounding, low, high)


# The arguments a whole-image call derives from its plan, image shape, mode and finish (the
# border maps, the tap tables, the finish's spec), kept for calls that repeat them: making
# them costs 30 us a call with warm caches and 150-250 us right after a large image went
# through them, a twentieth of a 3x3 over 2048 x 2048 float32 (docs/performance.md, "CPU
# kernels").  A plain dict, emptied when full: threads share it without a lock.
_PREPARED = {}
_PREPARED_SIZE = 64


def _prepared(weights, rows, channels, stride, mode, cval, finish, bands, make):
    """``make()``, or what it gave before for the same ``weights`` (a tuple of the kernel's
    keys, :func:`_weights_key`) and call settings."""
    key = (weights, rows.shape, rows.dtype.char, channels, stride, mode, float(cval), finish, bands)
    found = _PREPARED.get(key)
    if found is None:
        if len(_PREPARED) >= _PREPARED_SIZE:
            _PREPARED.clear()
        found = _PREPARED[key] = make()
    return found


def _bands(threads):
    """Bands of output rows for ``threads`` (the entry point's count, which engine.run has
    set numba to; asking numba again costs a lock)."""
    return tunables.CPU_BANDS_PER_THREAD * (get_num_threads() if threads is None else threads)


def _in_place(rows, channels, kw, ntaps, rows_at_once=1):
    """Whether the kernels read ``rows`` where they are (then handed as ``fsrc``): float32
    rows whose end columns, summed apart, are little work beside the row
    (``tunables.CPU_IN_PLACE_EDGE_WORK``), and whose ``rows_at_once`` rows a sweep reads do
    not crowd one cache set (:func:`_crowded`); other rows go through line buffers."""
    if rows.dtype != np.float32:
        return False
    width = rows.shape[1]
    edge = (kw - 1) * channels  # elements per row whose taps leave it
    if _crowded(rows.strides[0], rows_at_once):
        return False
    return bool(width > edge and edge * max(ntaps, 1) <= tunables.CPU_IN_PLACE_EDGE_WORK * width)


def _crowded(stride, count):
    """Whether ``count`` rows ``stride`` bytes apart put one column's elements more than 8
    to an L1 cache set (64 sets of 64-byte lines, a 4 KB period; 8 ways on Zen 3, 12 on
    Zen 5 and recent Intel).  Rows of 2048 float32 all land in one set: a 13x1 kernel's
    sweep of 16 of them ran in 14.3 ms in place over 2048 x 2048, 6.7 through the line
    buffers (``_ring_row``); a 5x1 kernel's 8 rows ran as fast in place (measured, Zen 3).

    >>> _crowded(8192, 16), _crowded(8192, 8), _crowded(8160, 16)
    (True, False, False)
    """
    sets = {}
    for r in range(count):
        line = (r * stride // 64) % 64
        sets[line] = sets.get(line, 0) + 1
    return max(sets.values(), default=0) > 8


def _rows_at_once(pairing, kh, tap_rows):
    """How many source rows one sweep of a direct kernel reads together: a sweep's rows of a
    one-column or dense kernel, the rows of a fused tap count, else a group of four taps'."""
    if pairing != PAIR_NONE:
        return kh + ROWS_PER_SWEEP[pairing] - 1
    return len(set(tap_rows.tolist())) if len(tap_rows) in FUSED_TAPS else 4


def _weights_key(weights):
    """``weights`` (float64) as part of a :func:`_prepared` key: their bytes, or a digest of
    a large kernel's (the memo keeps its keys)."""
    data = weights.tobytes()
    return data if len(data) <= 4096 else hashlib.blake2b(data, digest_size=16).digest()


def _pairing(kernel):
    """How the output rows of a sweep of ``kernel`` (flipped, as the kernel sums it) share source rows."""
    kh, kw = kernel.shape
    if not np.all(kernel != 0) or kh < 2:
        return PAIR_NONE
    if kw == 1:
        return PAIR_COLUMN
    return {(3, 3): PAIR_DENSE3X3, (5, 5): PAIR_DENSE5X5}.get((kh, kw), PAIR_NONE)


class KernelCall:
    """One of the two kernels (``_direct_rows``, ``_separable_rows``) with every argument but
    its source rows and output prepared: ``call(rows, out, row_map=None)`` fills ``out``
    from ``rows`` of the shape and dtype it was prepared for.  Kept in :data:`_PREPARED`,
    and by ``engine.run.Repeat`` for calls that repeat one convolution."""

    __slots__ = ("kernel", "in_place", "full_map", "taps", "rest", "plain", "channels", "stride")

    def __init__(self, kernel, in_place, full_map, taps, rest, finish, channels, stride):
        self.kernel, self.in_place, self.full_map, self.taps, self.rest = kernel, in_place, full_map, taps, rest
        self.plain, self.channels, self.stride = finish.plain, np.int64(channels), np.int64(stride)

    def __call__(self, rows, out, row_map=None):
        fsrc = rows if self.in_place else _NO_FLOAT_ROWS
        fout = out if self.plain else _NO_FLOAT_ROWS  # (one compiled signature per input dtype)
        self.kernel(rows, fsrc, *self.taps, self.full_map if row_map is None else row_map, *self.rest, out, fout, self.channels, self.stride)


def _separable_call(rows, channels, column, row, mode, cval, finish, bands=None, stride=None, threads=None):
    """The :class:`KernelCall` of the rank-1 kernel ``outer(column, row)``, both passes in one
    sweep (``bands``, ``stride``, ``threads``: as for :func:`run_direct`)."""
    row = np.asarray(row, np.float64)
    column = np.asarray(column, np.float64)
    stride = _checked_stride(rows, channels, stride, finish)
    bands = _bands(threads) if bands is None else bands
    weights = ("separable", _weights_key(row), _weights_key(column))

    def prepare():
        height, width = rows.shape[0], rows.shape[1] // stride
        full_map, col_map, lead = borders.extended_maps(height, width, channels, len(column), len(row), mode)
        in_place = _in_place(rows, channels, len(row), len(row))
        offsets = (np.arange(len(row)) * channels).astype(np.int64)
        row_weights = np.ascontiguousarray(row[::-1], dtype=np.float32)
        column_weights = np.ascontiguousarray(column[::-1], dtype=np.float32)
        # Rows beyond the image hold cval in every column: their row pass gives cval * sum(row).
        rest = (col_map, np.float32(cval), np.float32(cval * row.sum()), lead, in_place, bands, _tile(channels, stride), finish.spec())
        return KernelCall(_separable_rows, in_place, full_map, (offsets, row_weights, column_weights), rest, finish, channels, stride)

    return _prepared(weights, rows, channels, stride, mode, cval, finish, bands, prepare)


def _checked_stride(rows, channels, stride, finish):
    """The pixel stride of ``rows`` (``channels`` when packed).  The other stride is Pillow's
    RGB rows' (3 channels, 4 elements a pixel), read through line buffers only, into an
    output finished in the kernel: integer rows, an integer finish (float32 rows read in
    place, and plain float32 sums, are packed)."""
    if stride is None or stride == channels:
        return channels
    if (channels, stride) != (3, 4) or rows.dtype == np.float32 or finish.plain or rows.shape[1] % stride:
        raise ValueError(f"pixel stride 4 is for 3-channel integer rows finished in the kernel, got {rows.dtype} rows, stride {stride}, {channels} channels")
    return int(stride)


def _tile(channels, stride):
    """The column tile: whole pixels where the output goes into Pillow's RGB pixels."""
    tile = tunables.CPU_COLUMN_TILE
    return tile if stride == channels else max(channels, tile - tile % channels)


# --- entry points: engine.run's signature (plan, rows, channels, mode, cval, finish, threads) -> (out, finished)
# (numba's thread count is set by engine.run around the call)


def run_direct(plan, rows, channels, mode, cval, finish, threads, *, row_map=None, out=None, bands=None, pixel_stride=None):
    """Every non-zero tap of ``plan.kernel`` per output element, finished in the kernel.

    For the band driver (``engine/stream.py``): ``row_map`` (int64, ``len(out) + kh - 1``)
    says which row of ``rows`` each extended row of the ``len(out)`` output rows reads
    (-1: ``cval``), in place of the whole image's border map; ``out`` receives them;
    ``bands`` is how many bands the kernel's threads share out (default: as for the image).

    ``pixel_stride``: ``rows`` hold that many elements a pixel, the ``channels`` first
    (Pillow's RGB rows: 4, ``engine.run.pixel_stride``), and so does the output, its
    extra elements 255; integer rows and finish only (``_checked_stride``).
    """
    if out is None:
        out = new_rows(rows.shape, finish.dtype, threads, rows)
    _direct_call(plan, rows, channels, mode, cval, finish, threads, bands, pixel_stride)(rows, out, row_map)
    return out, True


def _direct_call(plan, rows, channels, mode, cval, finish, threads, bands=None, pixel_stride=None):
    """The :class:`KernelCall` of :func:`run_direct`."""
    kernel = plan.kernel
    stride = _checked_stride(rows, channels, pixel_stride, finish)
    bands = _bands(threads) if bands is None else bands
    weights = ("direct", _weights_key(kernel), kernel.shape)

    def prepare():
        flipped = kernel[::-1, ::-1]
        kh, kw = flipped.shape
        height, width = rows.shape[0], rows.shape[1] // stride
        full_map, col_map, lead = borders.extended_maps(height, width, channels, kh, kw, mode)
        taps_u, taps_v = np.nonzero(flipped)  # zero taps cost nothing
        pairing = _pairing(flipped)
        in_place = _in_place(rows, channels, kw, len(taps_u), _rows_at_once(pairing, kh, taps_u))
        taps = (taps_u.astype(np.int64), (taps_v * channels).astype(np.int64), np.ascontiguousarray(flipped[taps_u, taps_v], dtype=np.float32), kh)
        rest = (col_map, np.float32(cval), lead, in_place, pairing, bands, _tile(channels, stride), finish.spec())
        return KernelCall(_direct_rows, in_place, full_map, taps, rest, finish, channels, stride)

    return _prepared(weights, rows, channels, stride, mode, cval, finish, bands, prepare)


def one_pass_call(plan, rows, channels, mode, cval, finish, threads):
    """The :class:`KernelCall` that runs ``plan`` over packed ``rows`` like these in one
    pass (a direct kernel, or one separable pair), as :func:`run_direct` and
    :func:`run_separable` run it; None for plans of several passes."""
    if plan.strategy == "direct":
        return _direct_call(plan, rows, channels, mode, cval, finish, threads)
    if plan.strategy == "separable" and len(plan.factors) == 1:
        (column, row), = plan.factors
        return _separable_call(rows, channels, column, row, mode, cval, finish, threads=threads)
    return None


def run_separable(plan, rows, channels, mode, cval, finish, threads, *, row_map=None, out=None, bands=None, pixel_stride=None):
    """The sum of ``plan.factors``' rank-1 passes; one pair is finished in the
    kernel, several are summed in float32 and left to the shared finish
    (``row_map``, ``out``, ``bands``, ``pixel_stride``: as for :func:`run_direct`; ``out``
    is then float32 for several pairs, which take packed rows only)."""
    from imgconv.engine.finish import FLOAT32

    shape = rows.shape if out is None else out.shape
    if len(plan.factors) == 1:
        (column, row), = plan.factors
        if out is None:
            out = new_rows(shape, finish.dtype, threads, rows)
        _separable_call(rows, channels, column, row, mode, cval, finish, bands, pixel_stride, threads)(rows, out, row_map)
        return out, True
    _checked_stride(rows, channels, pixel_stride, FLOAT32)  # several pairs: packed only
    total = new_rows(shape, np.float32, threads) if out is None else out
    part = new_rows(shape, np.float32, threads)
    for index, (column, row) in enumerate(plan.factors):
        _separable_call(rows, channels, column, row, mode, cval, FLOAT32, bands, None, threads)(rows, total if index == 0 else part, row_map)
        if index:
            total += part
    return total, False
