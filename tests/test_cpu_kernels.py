"""The CPU kernels' summation order, pinned bit for bit, whichever way a row is swept.

The CPU and CUDA backends promise one order (engine/cpu.py module notes): the
non-zero taps in row-major order, four at a time, ``((w0 a + w1 b) + w2 c) + w3 d``
added to the running sum.  The reference here sums exactly so in numpy float32,
and every sweep must give its bits: the fused sweeps (9, 13, 17 taps, the longer in
two sweeps), several output rows a sweep (four for one-column kernels and the separable
column pass; with AVX-512, four for the dense 3x3 and three for the dense 5x5, else
one), the group sweeps for other
counts, float32 rows read in place (with their ends summed apart) and rows through
line buffers, at image edges, for heights that leave rows outside a whole sweep
(every remainder), widths that fill no whole vector, images narrower than the
kernel, several bands and threads.
"""

import numpy as np
import pytest

from conftest import MODES, assert_close_to_reference, scipy_convolve

import imgconv
from imgconv import tunables
from imgconv.engine import borders, cpu
from imgconv.engine.finish import FLOAT32


def _element_map(width, channels, before, after, mode):
    pixels = borders.index_map(width, before, after, mode)
    return np.where(pixels[:, None] >= 0, pixels[:, None] * channels + np.arange(channels), -1).ravel()


def _extended(rows, channels, kh, kw, mode, cval):
    """The image as the kernels read it: rows extended by the border maps, float32."""
    top, left = (kh - 1) // 2, (kw - 1) // 2
    row_map = borders.index_map(rows.shape[0], top, kh - 1 - top, mode)
    col_map = _element_map(rows.shape[1] // channels, channels, left, kw - 1 - left, mode)
    ext = rows.astype(np.float32)[np.clip(row_map, 0, None)][:, np.clip(col_map, 0, None)]
    ext[row_map < 0, :] = np.float32(cval)
    ext[:, col_map < 0] = np.float32(cval)
    return ext, row_map


def _in_order(products):
    """float32 products summed four at a time, each group added to the running sum."""
    total = None
    for first in range(0, len(products), 4):
        group = products[first]
        for product in products[first + 1 : first + 4]:
            group = group + product
        total = group if total is None else total + group
    return total


def ordered_direct(rows, channels, kernel, mode, cval):
    flipped = np.asarray(kernel, np.float64)[::-1, ::-1]
    kh, kw = flipped.shape
    height, width = rows.shape
    ext, _ = _extended(rows, channels, kh, kw, mode, cval)
    taps = list(zip(*np.nonzero(flipped)))
    if not taps:
        return np.zeros(rows.shape, np.float32)
    return _in_order([np.float32(flipped[u, v]) * ext[u : u + height, v * channels : v * channels + width] for u, v in taps])


def ordered_separable(rows, channels, column, row, mode, cval):
    row, column = np.asarray(row, np.float64), np.asarray(column, np.float64)
    height, width = rows.shape
    ext, row_map = _extended(rows, channels, len(column), len(row), mode, cval)
    across = _in_order([np.float32(w) * ext[:, v * channels : v * channels + width] for v, w in enumerate(row[::-1])])
    across[row_map < 0, :] = np.float32(cval * row.sum())  # rows beyond the image: cval * sum(row)
    return _in_order([np.float32(w) * across[u : u + height] for u, w in enumerate(column[::-1])])


def _kernel(rng, shape, zeros=()):
    kernel = rng.normal(size=shape)
    for index in zeros:
        kernel[index] = 0.0
    return kernel


# (name, shape, zero taps): which sweep each takes is in the comment.
DIRECT_KERNELS = [
    ("3x3", (3, 3), ()),  # 9 taps fused, four rows a sweep (dense 3x3)
    ("5x5", (5, 5), ()),  # 25 taps, three rows in two sweeps (dense 5x5); rows beyond them: group sweeps
    ("3x3 sparse", (3, 3), [(0, 0), (0, 2), (2, 0), (2, 2)]),  # 5 taps: group sweeps
    ("3x3 one zero", (3, 3), [(1, 1)]),  # 8 taps
    ("13x1", (13, 1), ()),  # 13 fused, four rows a sweep (one column)
    ("17x1", (17, 1), ()),  # four rows in two sweeps (12 + 5 taps)
    ("25x1", (25, 1), ()),  # four rows in two sweeps (12 + 13 taps)
    ("7x1", (7, 1), ()),  # one column, a count not fused: four rows, each by group sweeps
    ("1x13", (1, 13), ()),
    ("1x17", (1, 17), ()),  # 17 fused, one row in two sweeps
    ("3x5", (3, 5), [(1, 1), (2, 3)]),  # 13 taps fused, not paired
    ("4x7", (4, 7), ()),  # 28: group sweeps
    ("2x2", (2, 2), ()),
    ("zeros", (3, 3), [(u, v) for u in range(3) for v in range(3)]),
]


@pytest.fixture(params=["in place", "line buffers"])
def float_rows(request, monkeypatch):
    """Read float32 rows in place wherever the kernels can, or never."""
    monkeypatch.setattr(tunables, "CPU_IN_PLACE_EDGE_WORK", float("inf") if request.param == "in place" else 0.0)
    return request.param


def test_dense_sweeps_follow_the_cpu(monkeypatch):
    # Several dense rows a sweep with AVX-512's registers, one without (numba's target CPU).
    assert (cpu.ROWS_DENSE3X3, cpu.ROWS_DENSE5X5) == ((4, 3) if cpu.DENSE_SWEEPS else (1, 1))
    assert cpu.ROWS_PER_SWEEP[cpu.PAIR_DENSE3X3] == cpu.ROWS_DENSE3X3 and cpu.ROWS_COLUMN == 4
    from numba.core import config

    monkeypatch.setattr(config, "CPU_FEATURES", "+avx,+avx2,+avx512f,+fma")
    assert cpu._wide_vectors()
    monkeypatch.setattr(config, "CPU_FEATURES", "+avx,+avx2,-avx512f,+fma")
    assert not cpu._wide_vectors()
    monkeypatch.setattr(config, "CPU_FEATURES", None)
    monkeypatch.setattr(config, "CPU_NAME", "generic")
    assert not cpu._wide_vectors()


@pytest.mark.parametrize("side", [3, 5])
def test_dense_sweeps_of_every_row_count_sum_in_the_one_order(rng, side):
    """The generated dense sweeps for 1 to 4 output rows (whichever this CPU runs): each row
    the taps of its source rows, summed as ``_sum_expression`` orders them."""
    from numba import njit

    width = 37
    lines = rng.random((side + 3, width + side), dtype=np.float32)
    weights = rng.normal(size=side * side).astype(np.float32)
    offsets = np.arange(side, dtype=np.int64)
    rows = np.arange(side + 3, dtype=np.int64)[::-1].copy()  # (any rows, in any order)
    for group in (1, 2, 3, 4):
        namespace = {}
        exec(cpu._rows_source("sweep", side * side, side, group), {}, namespace)  # noqa: S102 - the engine's template
        sums = np.full((group, width + 2), np.nan, np.float32)
        njit(namespace["sweep"])(sums, 1, lines, rows, offsets, weights, 0, width)
        for r in range(group):
            terms = [weights[t] * lines[rows[r + t // side], t % side : t % side + width] for t in range(side * side)]
            for first in range(0, len(terms), 4):  # the groups of four, then their running sum
                block = terms[first]
                for term in terms[first + 1 : first + 4]:
                    block = block + term
                expected = block if first == 0 else expected + block
            np.testing.assert_array_equal(sums[r, 1 : 1 + width], expected)
            assert np.isnan(sums[r, 0]) and np.isnan(sums[r, -1])


def test_ring_rows_spread_over_the_cache_sets(rng):
    # A ring row holds its elements in an odd number of 64-byte lines (at most two more),
    # so rows 4 KB long (1024 grey float32 pixels) do not put one column of every row in
    # one cache set; the sums over such rows are scipy's.
    for n in list(range(1, 200)) + [1024, 2048, 6144, 6150, 12288]:
        length = cpu._ring_row(n)
        assert length >= n and length % 16 == 0 and (length // 16) % 2 == 1 and length - n < 48, n
    # float32 rows read in place unless a sweep's rows crowd one cache set: a 13x1 kernel's
    # 16 rows of 1024 pixels go through the (spread) line buffers, of 1000 pixels in place.
    assert not cpu._in_place(np.zeros((40, 1024), np.float32), 1, 1, 13, cpu._rows_at_once(cpu.PAIR_COLUMN, 13, None))
    assert cpu._in_place(np.zeros((40, 1000), np.float32), 1, 1, 13, 16)
    assert cpu._in_place(np.zeros((40, 1024), np.float32), 1, 5, 25, cpu._rows_at_once(cpu.PAIR_NONE, 5, np.repeat(np.arange(5), 5)))
    image = rng.integers(0, 256, (40, 1024)).astype(np.float32)
    for kernel in (rng.random((13, 1)), np.outer(rng.random(13), rng.random(9))):
        for strategy in ("direct", "separable"):
            for rows in (image, image.astype(np.uint8)):  # float32 rows in place, integer rows in the ring
                got = imgconv.convolve(rows, kernel, mode="constant", cval=3.0, strategy=strategy)
                assert_close_to_reference(got, image, kernel, "constant", 3.0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name, kshape, zeros", DIRECT_KERNELS, ids=[k[0] for k in DIRECT_KERNELS])
def test_direct_sums_in_the_one_order(rng, float_rows, mode, name, kshape, zeros):
    kernel = _kernel(rng, kshape, zeros)
    cval = float(rng.normal())
    # Heights leaving 0 to 3 rows beyond whole sweeps of four (0 to 2 beyond sweeps of three), widths
    # filling no whole vector, an image narrower and shorter than the kernel, interleaved colour.
    shapes = [((23, 37), np.float32), ((16, 40), np.float32), ((18, 25), np.float32), ((3, 2), np.float32), ((11, 19, 3), np.uint8), ((9, 33), np.uint16)]
    for shape, dtype in shapes:
        image = rng.random(shape) * (1 if dtype == np.float32 else np.iinfo(dtype).max)
        image = image.astype(dtype)
        channels = 1 if image.ndim == 2 else image.shape[2]
        rows = image.reshape(shape[0], -1)
        got = imgconv.convolve(image, kernel, mode=mode, cval=cval, strategy="direct")
        np.testing.assert_array_equal(got.reshape(rows.shape), ordered_direct(rows, channels, kernel, mode, cval), err_msg=f"{shape} {dtype}")


SEPARABLE_LENGTHS = [(9, 13), (13, 13), (17, 17), (25, 3), (5, 9), (2, 6), (1, 25)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lengths", SEPARABLE_LENGTHS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_separable_sums_in_the_one_order(rng, float_rows, mode, lengths):
    column, row = rng.normal(size=lengths[0]), rng.normal(size=lengths[1])
    cval = float(rng.normal())
    for shape, dtype in [((29, 41), np.float32), ((30, 18), np.float32), ((4, 3), np.float32), ((12, 21, 3), np.uint8), ((7, 10, 3), np.uint8)]:
        image = (rng.random(shape) * (1 if dtype == np.float32 else 255)).astype(dtype)
        channels = 1 if image.ndim == 2 else image.shape[2]
        rows = image.reshape(shape[0], -1)
        out = np.empty(rows.shape, np.float32)
        cpu._separable_call(rows, channels, column, row, mode, cval, FLOAT32)(rows, out)
        np.testing.assert_array_equal(out, ordered_separable(rows, channels, column, row, mode, cval), err_msg=f"{shape} {dtype}")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bands", [1, 3])
def test_bands_and_threads_change_no_bit(rng, monkeypatch, threads, bands):
    import numba

    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip("one thread only here")
    monkeypatch.setattr(tunables, "CPU_BANDS_PER_THREAD", bands)  # bands of odd heights: rows beyond whole sweeps inside
    image = rng.random((61, 150)).astype(np.float32)
    for kernel in (rng.normal(size=(3, 3)), rng.normal(size=(5, 5)), rng.normal(size=(13, 1))):
        got = imgconv.convolve(image, kernel, mode="reflect", strategy="direct", threads=threads)
        np.testing.assert_array_equal(got, ordered_direct(image, 1, kernel, "reflect", 0.0))
    column, row = rng.normal(size=13), rng.normal(size=17)
    got = imgconv.convolve(image, np.outer(column, row), mode="wrap", strategy="separable", threads=threads)
    assert_close_to_reference(got, image, np.outer(column, row), "wrap")


def test_views_and_finishes_of_in_place_rows(rng):
    base = rng.random((40, 90, 2)).astype(np.float32)
    kernel = rng.normal(size=(3, 3))
    for image in (base[::2, ::3, 0], base[..., 1], np.asfortranarray(base[..., 0])):  # copied to canonical rows first
        got = imgconv.convolve(image, kernel, mode="mirror", strategy="direct")
        np.testing.assert_array_equal(got, ordered_direct(np.ascontiguousarray(image), 1, kernel, "mirror", 0.0))
    # A finish in the kernel (offset, absolute value, uint8 rounding) on rows read in place.
    image = (rng.random((31, 64)) * 255).astype(np.float32)
    result = imgconv.apply_filter(image.astype(np.uint8).astype(np.float32), "sharpen")
    assert result.dtype == np.float32
    assert_close_to_reference(result, image.astype(np.uint8), np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], float), "reflect")


def test_which_sweeps_the_kernels_take():
    assert cpu._pairing(np.ones((3, 3))) == cpu.PAIR_DENSE3X3
    assert cpu._pairing(np.ones((5, 5))) == cpu.PAIR_DENSE5X5
    assert cpu._pairing(np.ones((13, 1))) == cpu.PAIR_COLUMN
    sparse = np.ones((3, 3))
    sparse[1, 1] = 0
    assert cpu._pairing(sparse) == cpu.PAIR_NONE and cpu._pairing(np.ones((1, 9))) == cpu.PAIR_NONE
    wide = np.zeros((64, 4096), np.float32)
    assert cpu._in_place(wide, 1, 5, 25)  # read in place
    assert not cpu._in_place(wide[:, :40], 1, 5, 25)  # narrow: the ends would cost more than the row
    assert not cpu._in_place(wide.astype(np.uint8), 1, 3, 9)  # integer rows: line buffers, converted once
    for count in cpu.FUSED_TAPS:
        assert callable(getattr(cpu, f"_sum{count}"))
    assert cpu._sum_expression(["a", "b", "c", "d", "e", "f"]) == "((((a + b) + c) + d) + (e + f))"


@pytest.mark.parametrize("mode", MODES)
def test_pillows_rgb_rows_give_the_packed_bits(rng, mode):
    """8-bit RGB in Pillow's rows of 4 bytes a pixel (``pixel_stride=4``: read through the
    line buffers, finished into the same layout, pad bytes 255): the packed rows' bits, for
    every sweep, odd widths, images narrower and shorter than the kernel, several bands."""
    from imgconv.engine.finish import Finish
    from imgconv.engine.plan import make_plan

    finishes = [Finish(np.uint8), Finish(np.uint8, 128.0, False), Finish(np.uint8, 0.0, True)]
    kernels = [(name, _kernel(rng, shape, zeros), "direct") for name, shape, zeros in DIRECT_KERNELS]
    kernels += [(f"{c}x{r} separable", np.outer(rng.normal(size=c), rng.normal(size=r)), "separable") for c, r in SEPARABLE_LENGTHS]
    cval = float(rng.normal() * 100)
    for shape in [(23, 37), (16, 40), (3, 2), (1, 1), (9, 1)]:
        storage = rng.integers(0, 256, size=shape + (4,), dtype=np.uint8)
        packed = np.ascontiguousarray(storage[..., :3]).reshape(shape[0], -1)
        for name, kernel, strategy in kernels:
            plan = make_plan(kernel, shape + (3,), strategy=strategy)
            entry = cpu.run_direct if plan.strategy == "direct" else cpu.run_separable  # (a 1 x n kernel: direct)
            for finish in finishes:
                want, _ = entry(plan, packed, 3, mode, cval, finish, 1)
                for bands in (None, 3):
                    got, finished = entry(plan, storage.reshape(shape[0], -1), 3, mode, cval, finish, 1, bands=bands, pixel_stride=4)
                    assert finished and got.shape == (shape[0], shape[1] * 4)
                    cells = got.reshape(shape + (4,))
                    np.testing.assert_array_equal(cells[..., :3].reshape(shape[0], -1), want, err_msg=f"{shape} {name} {finish}")
                    assert (cells[..., 3] == 255).all()


def test_pillows_rgb_rows_against_scipy(rng):
    """Through the library's door: a view of 4-byte rows is filtered in that layout, and
    the result is the float64 reference rounded."""
    from imgconv.engine import run
    from imgconv.engine.finish import Finish

    storage = rng.integers(0, 256, size=(31, 45, 4), dtype=np.uint8)
    image = storage[..., :3]
    kernel = rng.random((5, 5))
    kernel /= kernel.sum()
    for strategy in ("direct", "separable"):
        weights = kernel if strategy == "direct" else np.outer(kernel.sum(1), kernel.sum(0)) / kernel.sum()
        got, _ = run.convolve_planned(image, weights, mode="mirror", cval=0.0, strategy=strategy, finish=Finish(np.uint8))
        assert run.padded_rows(got) is not None and run.pads_set(got)
        reference = np.clip(np.rint(scipy_convolve(image, weights, "mirror")), 0, 255)
        assert np.abs(got.astype(float) - reference).max() <= 1  # float32 round-off may cross a .5
        packed, _ = run.convolve_planned(np.ascontiguousarray(image), weights, mode="mirror", cval=0.0, strategy=strategy, finish=Finish(np.uint8))
        np.testing.assert_array_equal(got, packed)


def test_pixel_strides_are_for_integer_rows_finished_in_the_kernel():
    from imgconv.engine.plan import make_plan

    plan = make_plan(np.ones((3, 3)), (4, 4, 3), strategy="direct")
    with pytest.raises(ValueError, match="pixel stride"):
        cpu.run_direct(plan, np.zeros((4, 16), np.float32), 3, "reflect", 0.0, FLOAT32, 1, pixel_stride=4)
