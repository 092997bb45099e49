"""engine/vector.py gives engine/cpu.py's results bit for bit, without importing numba.

Every case runs both backends on the same fresh random rows and compares the bits:
uint8, uint16 and float32 rows (float32 with NaN, infinities and -0.0), every
finish, border mode and channel count, kernels odd, even, sparse, larger than the
image, of 1 to 30 taps (9, 13, 17 and 25 take the compiled kernels' fused and
paired sweeps), separable plans of 1, 2 and 3 pairs, float32 rows read in place
and through line buffers by the compiled kernels, several bands and threads, and
the FFT's tile gather.  One thing is compared as equal though its bits may
differ (engine/vector.py module notes): which NaN payload a float result carries.
An integer output holds 0 where the sum is NaN, in both.
"""

import subprocess
import sys

import numpy as np
import pytest

from conftest import MODES, assert_close_to_reference

from imgconv import tunables
from imgconv.engine import cpu, fft, vector
from imgconv.engine.finish import FLOAT32, Finish
from imgconv.engine.plan import make_plan

# Finishes per row dtype (integer outputs beyond uint8/uint16 from float32 rows only:
# each (rows, output) dtype pair is one more compiled signature of each kernel).
FINISHES = {
    np.uint8: [Finish(np.uint8), FLOAT32, Finish(np.uint8, offset=128.0), Finish(np.uint8, absolute=True), Finish(np.float32, offset=0.5, absolute=True)],
    np.uint16: [Finish(np.uint16), FLOAT32, Finish(np.float32, offset=0.5, absolute=True)],
    np.float32: [FLOAT32, Finish(np.float32, offset=0.5, absolute=True), Finish(np.uint8), Finish(np.uint8, offset=128.0, absolute=True), Finish(np.uint16)],
}
WIDE_FINISHES = [Finish(np.int16), Finish(np.int32)]  # from float32 rows, direct only

# (name, shape, zero taps)
DIRECT_KERNELS = [
    ("1x1", (1, 1), ()),
    ("2x2", (2, 2), ()),
    ("3x3", (3, 3), ()),  # 9 taps: fused, two rows a sweep in cpu.py
    ("sharpen", (3, 3), [(0, 0), (0, 2), (2, 0), (2, 2)]),  # 5 taps
    ("5x5", (5, 5), ()),  # 25 taps, two rows a sweep
    ("3x5 sparse", (3, 5), [(1, 1), (2, 3)]),  # 13 taps, fused
    ("4x7", (4, 7), ()),  # 28 taps
    ("1x9", (1, 9), ()),
    ("1x17", (1, 17), ()),  # fused in two sweeps
    ("13x1", (13, 1), ()),  # one column: two rows a sweep
    ("25x1", (25, 1), ()),
    ("6x4", (6, 4), [(0, 1), (5, 3)]),
    ("zeros", (3, 3), [(u, v) for u in range(3) for v in range(3)]),
    # Weights of 1 and -1 (summed with no product in vector.py), 5, 0.5.
    ("sharpen weights", np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]), ()),
    ("box", np.ones((3, 3)), ()),
    ("+-1", np.array([[1, -1, 0.5, -1, 1], [-1, 1, 1, 2, -1]]), ()),
]

# (column length, row length)
SEPARABLE_LENGTHS = [(3, 3), (9, 13), (17, 17), (25, 3), (5, 9), (2, 6), (4, 1)]


def _image(rng, shape, dtype):
    """Random rows of ``dtype``; float32 ones with NaN, +-inf, -0.0 (a block of it, where
    whole sums are -0.0), huge values and exact zeros sprinkled in."""
    if dtype != np.float32:
        return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
    image = (rng.normal(size=shape) * 100).astype(np.float32)
    pick = rng.random(shape)
    for low, value in ((0.000, np.nan), (0.004, np.inf), (0.008, -np.inf), (0.012, 1e30), (0.016, -0.0), (0.04, 0.0)):
        image[(pick >= low) & (pick < low + (0.004 if low < 0.016 else 0.024))] = value
    image[: shape[0] // 3, : shape[1] // 3] = -0.0
    return image


def _kernel(rng, shape, zeros=()):
    """Random weights of ``shape`` with ``zeros`` at those taps, or ``shape`` itself when it is a kernel."""
    if isinstance(shape, np.ndarray):
        return shape.astype(np.float64)
    kernel = rng.normal(size=shape)
    for index in zeros:
        kernel[index] = 0.0
    return kernel


def _bits(values):
    """The bits to compare: floats with every NaN made the one NaN (payloads may differ)."""
    if values.dtype.kind != "f":
        return values
    values = np.where(np.isnan(values), np.array(np.nan, values.dtype), values)
    return values.view(np.dtype(f"u{values.dtype.itemsize}"))


def _check(strategy, plan, rows, channels, mode, cval, finish, threads=1):
    """Run ``strategy`` in both backends and compare every bit."""
    compiled, compiled_finished = getattr(cpu, f"run_{strategy}")(plan, rows, channels, mode, cval, finish, 1)
    got, finished = getattr(vector, f"run_{strategy}")(plan, rows, channels, mode, cval, finish, threads)
    assert finished == compiled_finished
    assert got.dtype == compiled.dtype and got.shape == compiled.shape == rows.shape
    if finished and got.dtype.kind in "iu" and rows.dtype == np.float32:
        # Where the sum is NaN both store 0 (the cast alone would be undefined).
        sums, _ = getattr(vector, f"run_{strategy}")(plan, rows, channels, mode, cval, FLOAT32, 1)
        assert not got[np.isnan(sums)].any() and not compiled[np.isnan(sums)].any()
    where = f"{strategy} {plan.kernel.shape} on {rows.shape} {rows.dtype} C={channels} {mode} cval={cval} {finish}"
    np.testing.assert_array_equal(_bits(got), _bits(compiled), err_msg=where)


# Row dtypes, and how the compiled kernels read float32 rows: in place wherever they can, or
# never (integer rows always go through their line buffers).
ROWS = [(np.uint8, "line buffers"), (np.uint16, "line buffers"), (np.float32, "in place"), (np.float32, "line buffers")]


def _reading(monkeypatch, reading):
    monkeypatch.setattr(tunables, "CPU_IN_PLACE_EDGE_WORK", float("inf") if reading == "in place" else 0.0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype, reading", ROWS, ids=lambda v: getattr(v, "__name__", v))
def test_direct_matches_cpu(rng, monkeypatch, dtype, reading, mode):
    _reading(monkeypatch, reading)
    finishes = FINISHES[dtype]
    for index, (name, shape, zeros) in enumerate(DIRECT_KERNELS):
        kernel = _kernel(rng, shape, zeros)
        channels = 1 + index % 4
        cval = float(rng.normal() * 50)
        # An odd size (a row left unpaired by the compiled pairs), and a tiny one (1 to 4
        # pixels a side: smaller than most of the kernels).
        for height, width in ((23, 37), (rng.integers(1, 5), rng.integers(1, 5))):
            rows = _image(rng, (height, width * channels), dtype)
            plan = make_plan(kernel, (height, width, channels), strategy="direct")
            _check("direct", plan, rows, channels, mode, cval, finishes[(index + height) % len(finishes)])


@pytest.mark.parametrize("count", range(1, 31))
def test_every_tap_count_matches_cpu(rng, count):
    """1 to 30 non-zero taps at random places of a 5x6 kernel."""
    kernel = np.zeros((5, 6))
    kernel.flat[rng.choice(30, count, replace=False)] = np.where(rng.random(count) < 0.3, rng.choice([-1.0, 1.0], count), rng.normal(size=count))
    mode = MODES[count % len(MODES)]
    for dtype, channels in ((np.float32, 1 + count % 4), (np.uint8, 3)):
        rows = _image(rng, (19, 25 * channels), dtype)
        plan = make_plan(kernel, (19, 25, channels), strategy="direct")
        _check("direct", plan, rows, channels, mode, float(rng.normal()), FINISHES[dtype][count % len(FINISHES[dtype])])


@pytest.mark.parametrize("finish", WIDE_FINISHES, ids=str)
def test_wider_integer_outputs_match_cpu(rng, finish):
    rows = _image(rng, (17, 60), np.float32) * np.float32(1e3)  # beyond int16's range: saturates
    for name, shape, zeros in DIRECT_KERNELS[2:5]:
        plan = make_plan(_kernel(rng, shape, zeros), (17, 20, 3), strategy="direct")
        _check("direct", plan, rows, 3, "reflect", 0.0, finish)


@pytest.mark.filterwarnings("ignore:invalid value encountered in add:RuntimeWarning")  # cpu.py's total += part
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("dtype, reading", ROWS, ids=lambda v: getattr(v, "__name__", v))
def test_separable_matches_cpu(rng, monkeypatch, dtype, reading, rank):
    _reading(monkeypatch, reading)
    finishes = FINISHES[dtype]
    for index, (kh, kw) in enumerate(SEPARABLE_LENGTHS):
        factors = [(rng.normal(size=kh), rng.normal(size=kw)) for _ in range(rank)]
        factors[0][1][kw // 2] = 0.0  # a zero tap the row pass still sums (0 * inf is NaN)
        factors[-1][0][rng.random(kh) < 0.3] = rng.choice([-1.0, 1.0])
        kernel = sum(np.outer(column, row) for column, row in factors)
        channels = 1 + index % 4
        mode = MODES[(index + rank) % len(MODES)]
        for height, width in ((21, 29), (rng.integers(1, 4), rng.integers(1, 4))):
            rows = _image(rng, (height, width * channels), dtype)
            plan = make_plan(kernel, (height, width, channels), strategy="separable", factors=factors)
            assert len(plan.factors) == rank
            # constant mode: rows beyond the image take cval * sum(row) as their row pass
            _check("separable", plan, rows, channels, mode, float(rng.normal() * 50), finishes[(index + rank) % len(finishes)])


def test_bands_chunks_and_threads_change_no_bit(rng, monkeypatch):
    # Many small bands and chunks (chunks of 1 to 3 rows, bands of 7 rows) ...
    monkeypatch.setattr(vector, "CHUNK_ELEMENTS", 100)
    monkeypatch.setattr(vector, "PARALLEL_CHUNK_ELEMENTS", 100)
    monkeypatch.setattr(vector, "BAND_ROWS", 7)
    monkeypatch.setattr(vector, "PARALLEL_MIN_ELEMENTS", 0)
    column, row = rng.normal(size=9), rng.normal(size=5)
    for channels, width in ((1, 37), (3, 15)):
        rows = _image(rng, (40, width * channels), np.float32)
        for threads in (1, 2):
            direct = make_plan(rng.normal(size=(5, 4)), (40, width, channels), strategy="direct")
            _check("direct", direct, rows, channels, "constant", 1.5, Finish(np.uint8), threads)
            separable = make_plan(np.outer(column, row), (40, width, channels), strategy="separable", factors=[(column, row)])
            _check("separable", separable, rows, channels, "constant", -2.0, FLOAT32, threads)
    # ... and the defaults on an image large enough for the thread pool.
    monkeypatch.undo()
    rows = _image(rng, (400, 4 * 350), np.uint8)
    assert rows.size >= vector.PARALLEL_MIN_ELEMENTS
    _check("direct", make_plan(rng.normal(size=(3, 3)), (400, 350, 4), strategy="direct"), rows, 4, "reflect", 0.0, Finish(np.uint8), 2)
    factors = [(rng.normal(size=7), rng.normal(size=7)) for _ in range(2)]
    plan = make_plan(sum(np.outer(c, r) for c, r in factors), (400, 350, 4), strategy="separable", factors=factors)
    _check("separable", plan, rows, 4, "mirror", 0.0, Finish(np.uint8), 2)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_wide_rows_match_cpu(rng, dtype):
    """Rows longer than the compiled kernels' column tile (tunables.CPU_COLUMN_TILE)."""
    rows = _image(rng, (6, 3 * 1500), dtype)
    for kernel in (rng.normal(size=(3, 3)), rng.normal(size=(1, 17))):
        _check("direct", make_plan(kernel, (6, 1500, 3), strategy="direct"), rows, 3, "wrap", 0.0, FINISHES[dtype][0])
    column, row = rng.normal(size=13), rng.normal(size=13)
    plan = make_plan(np.outer(column, row), (6, 1500, 3), strategy="separable", factors=[(column, row)])
    _check("separable", plan, rows, 3, "nearest", 0.0, FINISHES[dtype][0])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_fft_with_either_gather(rng, dtype):
    kernel = rng.normal(size=(9, 8))
    for index, mode in enumerate(MODES):
        channels = 1 + index % 4
        height, width = (70, 45) if index % 2 else (5, 3)
        rows = _image(rng, (height, width * channels), dtype)
        if dtype == np.float32:
            rows[~np.isfinite(rows)] = 1.0  # NaN payloads through an FFT: not this test's business
        plan = make_plan(kernel, (height, width, channels), strategy="fft")
        finish = FINISHES[dtype][index % len(FINISHES[dtype])]
        compiled, _ = fft.run_fft(plan, rows, channels, mode, 2.5, finish, 2)
        got, finished = vector.run_fft(plan, rows, channels, mode, 2.5, finish, 2)
        assert finished
        np.testing.assert_array_equal(_bits(got), _bits(compiled), err_msg=f"{mode} {rows.shape} {finish}")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_gather_region_matches_cpu(rng, dtype):
    for channels in (1, 3, 4):
        src = _image(rng, (11, 7 * channels), dtype)
        for case in range(6):
            # Maps inside the image, running on (a slice), or anywhere with -1s (constant borders).
            start = rng.integers(0, 4)
            row_map = np.arange(start, start + rng.integers(1, 8)) if case % 2 else rng.integers(-1, 11, size=rng.integers(1, 15))
            col_map = np.arange(start, start + rng.integers(1, 4)) if case % 3 else rng.integers(-1, 7, size=rng.integers(1, 15))
            shape = (rng.integers(1, 12), rng.integers(1, 12))  # larger than the maps: the rest is left as it was
            expected, got = np.full(shape, -7.0, np.float32), np.full(shape, -7.0, np.float32)
            channel = int(rng.integers(channels))
            cpu.gather_region(src, row_map.astype(np.int64), col_map.astype(np.int64), channels, channel, np.float32(3.5), expected)
            vector.gather_region(src, row_map.astype(np.int64), col_map.astype(np.int64), channels, channel, np.float32(3.5), got)
            np.testing.assert_array_equal(_bits(got), _bits(expected))


def test_against_scipy(rng):
    """An independent reference: scipy.ndimage.convolve in float64."""
    image = rng.random((31, 26, 3)).astype(np.float32)
    rows = image.reshape(31, -1)
    kernel = rng.normal(size=(5, 4))
    for mode in ("reflect", "constant"):
        got, _ = vector.run_direct(make_plan(kernel, image.shape, strategy="direct"), rows, 3, mode, 0.5, FLOAT32, 1)
        assert_close_to_reference(got.reshape(image.shape), image, kernel, mode, 0.5)
    column, row = rng.normal(size=7), rng.normal(size=11)
    plan = make_plan(np.outer(column, row), image.shape, strategy="separable", factors=[(column, row)])
    got, _ = vector.run_separable(plan, rows, 3, "wrap", 0.0, FLOAT32, 1)
    assert_close_to_reference(got.reshape(image.shape), image, np.outer(column, row), "wrap")


def test_finish_details():
    """-0.0 kept by a plain finish, made +0.0 by any other (cpu._finished adds the offset,
    0 too); NaN stored as 0 in integers."""
    rows = np.full((4, 6), -0.0, np.float32)
    rows[2, 3] = np.nan
    plan = make_plan(np.array([[0.5, 0.25]]), (4, 6), strategy="direct")
    plain, _ = vector.run_direct(plan, rows, 1, "nearest", 0.0, FLOAT32, 1)
    assert np.signbit(plain[0]).all() and np.isnan(plain[2, 2:4]).all()
    shifted, _ = vector.run_direct(plan, rows, 1, "nearest", 0.0, Finish(np.float32, absolute=True), 1)
    assert not np.signbit(shifted).any()
    wider, _ = vector.run_direct(plan, rows, 1, "nearest", 0.0, Finish(np.float64), 1)
    assert wider.dtype == np.float64 and not np.signbit(wider).any() and np.isnan(wider[2, 2:4]).all()
    for dtype in (np.uint8, np.uint16, np.int16, np.int32):
        stored, _ = vector.run_direct(plan, rows, 1, "nearest", 0.0, Finish(dtype, offset=3.0), 1)
        assert stored[2, 2] == stored[2, 3] == 0 and (stored[0] == 3).all()


def test_never_imports_numba():
    """Imported and run in a fresh interpreter (0.2 s), numba stays out."""
    script = (
        "import sys, numpy as np\n"
        "from imgconv.engine import vector\n"
        "from imgconv.engine.plan import make_plan\n"
        "from imgconv.engine.finish import Finish\n"
        "rows = np.arange(40 * 90, dtype=np.uint8).reshape(40, 90)\n"
        "for strategy in ('direct', 'separable', 'fft'):\n"
        "    plan = make_plan(np.ones((9, 9)) / 81, (40, 30, 3), strategy=strategy)\n"
        "    out, _ = getattr(vector, 'run_' + strategy)(plan, rows, 3, 'reflect', 0.0, Finish(np.uint8), 2)\n"
        "    assert out.shape == rows.shape and out.dtype == np.uint8\n"
        "assert 'numba' not in sys.modules, sorted(m for m in sys.modules if 'numba' in m)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
