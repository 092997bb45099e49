"""The engine's promises: one finish for every route (wide integers saturate),
one canonical input form (no second compiled signature), plans made once and
reported as they ran, and a rank test that stays cheap for long thin kernels."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import assert_close_to_reference

import imgconv
from imgconv.chain import Chain, apply_chain
from imgconv.engine import plan as planner
from imgconv.engine.finish import Finish, finish_array, float32_range, to_dtype
from imgconv.kernels import Filter, Kernel

WIDE = [np.int32, np.uint32, np.int64, np.int16]


@pytest.fixture(scope="module")
def catalog():
    return imgconv.load_catalog()


@pytest.mark.parametrize("dtype", WIDE)
@pytest.mark.parametrize(
    "options",
    [dict(repeat=2), dict(strength=0.5), dict(repeat=3, strength=1.5), dict(linear=True)],
    ids=["repeat", "strength", "repeat-strength", "linear"],
)
def test_wide_integers_saturate_through_chains(catalog, dtype, options):
    info = np.iinfo(dtype)
    low, high = (int(v) for v in float32_range(dtype))
    chain = Chain((catalog.resolve("sharpen"), catalog.resolve("blur")), **options)
    for value, nearest in ((info.max, high), (info.min, low)):
        image = np.full((8, 9), value, dtype)
        with np.errstate(all="raise"):  # no "invalid value encountered in cast"
            got = apply_chain(image, chain)
        assert got.dtype == dtype
        # Flat full-scale areas stay at their end of the range, never wrap to the other.
        assert np.all(np.abs(got.astype(np.float64) - nearest) <= abs(nearest) * 1e-6 + 1), (value, got[0, 0])
    # Overshoot beyond the range saturates too (a sharpened step edge).
    edge = np.full((8, 9), info.max, dtype)
    edge[:, :4] = info.min
    with np.errstate(all="raise"):
        got = apply_chain(edge, Chain.of(catalog.resolve("sharpen"), **options))
    assert got.max() <= info.max and got.min() >= info.min
    assert got[:, -1].min() >= high * (1 - 1e-6) - 1


def test_chain_and_filter_share_one_finish(catalog, rng):
    image = (rng.random((12, 10)) * 2**31).astype(np.int32)
    sharpen = catalog.resolve("sharpen")
    via_chain = apply_chain(image, Chain.of(sharpen, repeat=1, strength=1.0))
    np.testing.assert_array_equal(via_chain, imgconv.apply_filter(image, sharpen))


def test_finish_rounds_clips_and_saturates():
    values = np.array([-1e20, -0.5, 0.5, 1.5, 2.5, 254.5, 255.5, 1e20], np.float32)
    np.testing.assert_array_equal(to_dtype(values.copy(), np.uint8), [0, 0, 0, 2, 2, 254, 255, 255])
    wide = to_dtype(values.copy(), np.int32)
    assert wide[0] == -(2**31) and wide[-1] == int(float32_range(np.int32)[1])
    out = finish_array(np.array([-3.0, 1.0], np.float32), Finish(np.uint8, offset=1.0, absolute=True))
    np.testing.assert_array_equal(out, [2, 2])
    assert Finish().plain and not Finish(np.uint8).plain


def _signatures():
    from imgconv.engine import cpu

    return {name: len(getattr(cpu, name).signatures) for name in ("_direct_rows", "_separable_rows")}


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_read_only_strided_and_fortran_inputs_add_no_signature(rng, dtype, catalog):
    base = (rng.random((40, 50, 3)) * 200).astype(dtype)
    kernel = rng.normal(size=(3, 3))
    gaussian = catalog.resolve("gaussian", {"sigma": "1"})
    imgconv.convolve(base, kernel)  # compile (or load) the writable C-ordered signature
    imgconv.apply_filter(base, gaussian)
    imgconv.apply_filter(base, "sharpen")
    before = _signatures()
    read_only = base.copy()
    read_only.flags.writeable = False
    pillow = np.asarray(Image.fromarray(base[..., 0])) if dtype == np.uint8 else read_only[..., 0]
    variants = [read_only, base[::2, ::3], np.asfortranarray(base), base[..., ::-1], pillow]
    for image in variants:
        assert_close_to_reference(imgconv.convolve(image, kernel), image, kernel, "reflect")
        imgconv.apply_filter(image, gaussian)
        imgconv.apply_filter(image, "sharpen")
    assert _signatures() == before
    assert not read_only.flags.writeable  # and the input is left as it was


def test_plans_are_made_once_and_reused(rng, monkeypatch):
    made = []
    choose = planner._choose
    monkeypatch.setattr(planner, "_choose", lambda *a: made.append(a[1]) or choose(*a))
    kernel = rng.normal(size=(5, 4))
    image = rng.random((33, 31, 4)).astype(np.float32)
    flt = Filter("k", "", {}, (Kernel(kernel / kernel.sum()),), "single", 0.0, "clip")
    apply_chain(image, Chain.of(flt, repeat=4))
    # colour (33, 31, 3) and alpha (33, 31, 1): one plan each, whatever the repeats.
    assert sorted(made) == [(33, 31, 1), (33, 31, 3)]


def test_explain_reports_the_passes_that_ran(rng, catalog):
    image = (rng.random((21, 17, 4)) * 255).astype(np.uint8)
    _, passes = imgconv.apply_filter(image, "box", size=3, explain=True)
    shapes = [(p.channels, p.plan.image_shape) for p in passes]
    assert ("colour", (21, 17, 3)) in shapes and ("alpha", (21, 17, 1)) in shapes
    assert all(p.plan.kernel_shape == (3, 3) for p in passes)
    _, passes = imgconv.apply_filter(image[..., :3], "sobel", explain=True)
    assert [(p.kernel, p.kernels, p.plan.image_shape) for p in passes] == [(1, 2, (21, 17, 3)), (2, 2, (21, 17, 3))]


def test_cli_explain_names_the_shapes_that_ran(tmp_path, rng):
    from imgconv.cli import cli

    path = tmp_path / "in.png"
    Image.fromarray((rng.random((19, 23, 4)) * 255).astype(np.uint8), "RGBA").save(path)
    result = CliRunner().invoke(cli, ["apply", "box:size=5,sharpen", str(path), str(tmp_path / "o.png"), "--explain"])
    assert result.exit_code == 0, result.output
    assert "box:size=5: kernel 5x5 on 19x23x3 (colour)" in result.output
    assert "box:size=5: kernel 5x5 on 19x23x1 (alpha)" in result.output
    assert "sharpen: kernel 3x3 on 19x23x3 (colour)" in result.output
    assert "19x23x4" not in result.output  # nothing ran on all four channels at once


def test_rank_test_of_long_thin_and_large_kernels(rng):
    column, row = rng.normal(size=(2, 3)), rng.normal(size=(2, 6000))
    thin = column.T @ row  # 3 x 6000, rank 2
    factors = planner.low_rank_factors(thin)
    assert len(factors) == 2
    np.testing.assert_allclose(sum(np.outer(c, r) for c, r in factors), thin, atol=1e-9 * np.abs(thin).max())
    # Beyond the exact-SVD side: the randomized route, checked on the kernel itself.
    low = rng.normal(size=(300, 3)) @ rng.normal(size=(3, 280))
    factors = planner.low_rank_factors(low)
    assert len(factors) == 3
    np.testing.assert_allclose(sum(np.outer(c, r) for c, r in factors), low, atol=1e-9 * np.abs(low).max())
    assert planner.low_rank_factors(rng.normal(size=(300, 280))) is None
    assert planner.low_rank_factors(low + 1e-4 * rng.normal(size=low.shape)) is None
    plan = planner.make_plan(thin, (300, 300))
    assert plan.image_shape == (300, 300) and plan.kernel_shape == (3, 6000)


def test_empty_kernels_are_refused_at_the_door():
    with pytest.raises(ValueError, match="empty"):
        Kernel(np.zeros((1, 0)))

    class Borrowed:  # a filter-like object that did not come through Kernel's checks
        name, combine, bias, out_range, params = "empty", "single", 0.0, "clip", {}
        kernels = (type("K", (), {"matrix": np.zeros((1, 0)), "factors": None})(),)

    with pytest.raises(ValueError, match="empty"):
        imgconv.apply_filter(np.zeros((4, 4), np.uint8), Borrowed())
    with pytest.raises(ValueError, match="empty"):
        imgconv.convolve(np.zeros((4, 4)), np.zeros((0, 3)))


def test_short_cpu_passes_run_in_the_calling_thread_long_ones_where_ctrl_c_reaches(monkeypatch):
    """A pass the cost model puts under ``KERNEL_THREAD_MIN_NS`` skips the hand-over to the
    kernel thread; a longer one (and every FFT) is handed over, so Ctrl-C still interrupts it."""
    import threading

    from imgconv import tunables
    from imgconv.engine import compiled, run as engine_run

    monkeypatch.setattr(compiled, "use_vector", lambda strategy, work: True)  # numpy: no compile here
    where = []
    real = engine_run._interruptible
    monkeypatch.setattr(engine_run, "_interruptible", lambda work: where.append("kernel thread") or real(work))
    image = np.random.default_rng(1).random((64, 64), dtype=np.float32)
    kernel = np.random.default_rng(2).normal(size=(3, 3))
    expected = imgconv.convolve(image, kernel, threads=1)
    assert where == [] and threading.current_thread() is threading.main_thread()
    monkeypatch.setattr(tunables, "KERNEL_THREAD_MIN_NS", 1.0)
    assert np.array_equal(imgconv.convolve(image, kernel, threads=1), expected)
    assert where == ["kernel thread"]
    monkeypatch.setattr(tunables, "KERNEL_THREAD_MIN_NS", 1e12)
    imgconv.convolve(image, np.ones((9, 9)), strategy="fft", threads=1)
    assert where == ["kernel thread"] * 2


@pytest.mark.parametrize("mode", ["reflect", "constant", "wrap"])
def test_prepared_kernel_arguments_follow_every_setting(mode):
    """The CPU kernels keep what they derive from a call's settings (engine/cpu.py
    ``_prepared``); a call that differs in cval, finish, dtype, shape or weights gets its own."""
    from imgconv.engine import cpu
    from imgconv.engine.finish import FLOAT32

    rng = np.random.default_rng(3)
    image = (rng.random((23, 17, 3)) * 255).astype(np.uint8)
    kernel = rng.normal(size=(3, 4))
    gaussian = np.outer([1.0, 4, 6, 4, 1], [1.0, 2, 1]) / 64
    for weights, strategy in ((kernel, "direct"), (gaussian, "separable")):
        for cval in (0.0, 7.5):
            for source in (image, image[:, :11], image.astype(np.float32)):
                plain = imgconv.convolve(source, weights, mode=mode, cval=cval, strategy=strategy)
                assert_close_to_reference(plain, source, weights, mode=mode, cval=cval)
                plan = planner.make_plan(weights, source.shape, strategy=strategy)
                rows = np.ascontiguousarray(source).reshape(source.shape[0], -1)
                route = cpu.run_direct if strategy == "direct" else cpu.run_separable
                out, _ = route(plan, rows, 3, mode, cval, Finish(np.float32, offset=2.0, absolute=True), 1)
                assert np.array_equal(out.reshape(source.shape), np.abs(plain + np.float32(2.0)))
                out, _ = route(plan, rows, 3, mode, cval, FLOAT32, 1)
                assert np.array_equal(out.reshape(source.shape), plain)


# --- the thread pool -----------------------------------------------------------------------------

_LAYER_SCRIPT = """
import sys
import numpy as np
if sys.argv[1] == "numba-first":  # a caller that starts numba's threads itself
    import numba
    import imgconv
    numba.set_num_threads(1)
else:
    import imgconv
    import numba
rng = np.random.default_rng(1)
image = rng.random((40, 30), dtype=np.float32)
kernel = rng.normal(size=(3, 3))
out = imgconv.convolve(image, kernel, mode="reflect", threads=2)
from scipy import ndimage
expected = ndimage.convolve(image.astype(np.float64), kernel, mode="reflect")
assert np.allclose(out, expected, rtol=1e-5, atol=1e-5), abs(out - expected).max()
print(numba.threading_layer())
"""


def _layer_after(order, **env):
    import os
    import subprocess
    import sys

    environment = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    environment.update(env, NUMBA_NUM_THREADS="2")
    done = subprocess.run([sys.executable, "-c", _LAYER_SCRIPT, order], capture_output=True, text=True, env=environment, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1]


def _tbb_installed():
    import importlib.metadata
    import platform
    import sys

    try:
        importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        return False
    return sys.platform.startswith("linux") and platform.machine() == "x86_64"


@pytest.mark.skipif(not _tbb_installed(), reason="the tbb wheel is a dependency on Linux x86_64 only")
@pytest.mark.parametrize("order", ["imgconv-first", "numba-first"])
def test_parallel_kernels_run_on_tbb_where_it_is_installed(order):
    # The wheel's library is off the loader's path: without imgconv loading it, numba takes OpenMP.
    assert _layer_after(order) == "tbb"


def test_a_threading_layer_the_user_chose_is_kept():
    assert _layer_after("imgconv-first", NUMBA_THREADING_LAYER="workqueue") == "workqueue"
