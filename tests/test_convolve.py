"""imgconv.convolve against scipy.ndimage.convolve (float64) on fresh random data."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from conftest import MODES, assert_close_to_reference, plain_scipy_convolve, scipy_convolve

import imgconv
from imgconv.errors import BackendError
from imgconv.engine.plan import make_plan, rank1_factors

KERNEL_SHAPES = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (1, 7), (6, 1), (3, 8), (9, 2), (15, 15), (14, 15)]
IMAGE_SHAPES = [(1, 1), (1, 9), (8, 1), (2, 3), (17, 23), (40, 33)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kshape", KERNEL_SHAPES, ids=lambda s: f"k{s[0]}x{s[1]}")
def test_matches_scipy_every_mode_and_kernel_shape(rng, mode, kshape):
    kernel = rng.normal(size=kshape)
    for shape in IMAGE_SHAPES:  # including images smaller than the kernel
        image = rng.random(shape) * 255
        cval = float(rng.normal() * 100)
        assert_close_to_reference(imgconv.convolve(image, kernel, mode=mode, cval=cval), image, kernel, mode, cval)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", ["direct", "separable", "fft", "auto"])
def test_every_strategy_matches_scipy(rng, mode, strategy):
    for kshape in [(2, 2), (3, 5), (7, 7), (16, 4), (31, 31)]:
        kernel = np.outer(rng.normal(size=kshape[0]), rng.normal(size=kshape[1]))
        for shape in [(5, 4), (29, 31), (64, 3)]:
            image = rng.random(shape)
            got = imgconv.convolve(image, kernel, mode=mode, cval=0.25, strategy=strategy)
            assert_close_to_reference(got, image, kernel, mode, 0.25)


@pytest.mark.parametrize("mode", MODES)
def test_reference_is_scipy_where_scipy_is_right(rng, mode):
    for shape, kshape in [((9, 8), (3, 3)), ((6, 7), (6, 4)), ((20, 5), (15, 15)), ((3, 3), (7, 7))]:
        image, kernel = rng.random(shape), rng.normal(size=kshape)
        np.testing.assert_allclose(
            scipy_convolve(image, kernel, mode, 0.5), plain_scipy_convolve(image, kernel, mode, 0.5), atol=1e-12
        )


@pytest.mark.parametrize("mode", MODES)
def test_kernel_much_larger_than_image(rng, mode):
    image = rng.random((3, 2))
    kernel = rng.normal(size=(25, 18))
    assert_close_to_reference(imgconv.convolve(image, kernel, mode=mode, cval=-1.5), image, kernel, mode, -1.5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64, np.bool_])
def test_any_real_dtype(rng, dtype):
    if dtype is np.bool_:
        image = rng.random((20, 21)) > 0.5
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        image = rng.integers(info.min, info.max, size=(20, 21), endpoint=True).astype(dtype)
    else:
        image = (rng.random((20, 21)) * 2 - 1).astype(dtype)
    kernel = rng.normal(size=(3, 4))
    assert_close_to_reference(imgconv.convolve(image, kernel), image, kernel, "reflect")


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_channels_filtered_independently(rng, channels):
    image = rng.integers(0, 256, size=(19, 26, channels)).astype(np.uint8)
    kernel = rng.normal(size=(5, 3))
    got = imgconv.convolve(image, kernel, mode="wrap")
    assert_close_to_reference(got, image, kernel, "wrap")
    for c in range(channels):
        np.testing.assert_array_equal(got[..., c], imgconv.convolve(image[..., c], kernel, mode="wrap"))


def test_views_and_strides(rng):
    base = rng.random((40, 50, 3))
    kernel = rng.normal(size=(4, 3))
    views = [
        base[::2, ::3, 1],  # strided
        base[::-1, :, 0],  # negative stride
        base[..., 2].T,  # transposed
        base[5:20, 7:9],  # a window, 3-D
        np.asfortranarray(base[..., 0]),
    ]
    for view in views:
        assert_close_to_reference(imgconv.convolve(view, kernel, mode="mirror"), view, kernel, "mirror")


def test_input_never_modified_and_read_only_accepted(rng):
    image = rng.random((16, 16)).astype(np.float32)
    before = image.copy()
    image.setflags(write=False)
    out = imgconv.convolve(image, np.ones((3, 3)) / 9)
    np.testing.assert_array_equal(image, before)
    assert out is not image and not np.shares_memory(out, image)


def test_identity_kernel_is_exact(rng):
    image = rng.integers(0, 65536, size=(12, 9, 3)).astype(np.uint16)
    for kernel in ([[1]], [[0, 0, 0], [0, 1, 0], [0, 0, 0]]):
        np.testing.assert_array_equal(imgconv.convolve(image, kernel), image.astype(np.float32))


def test_even_kernel_centre_is_scipys():
    # An impulse shows where the kernel's centre lands: at index (kh // 2, kw // 2).
    image = np.zeros((7, 7))
    image[3, 3] = 1
    kernel = np.arange(1, 13, dtype=float).reshape(3, 4)
    out = imgconv.convolve(image, kernel, mode="constant")
    np.testing.assert_array_equal(out[2:5, 1:5], kernel)


def test_empty_image():
    out = imgconv.convolve(np.zeros((0, 5)), np.ones((3, 3)))
    assert out.shape == (0, 5) and out.dtype == np.float32


def test_mode_aliases(rng):
    image = rng.random((9, 8))
    kernel = rng.normal(size=(5, 5))
    for alias, mode in [("reflect101", "mirror"), ("replicate", "nearest"), ("symmetric", "reflect"), ("REFLECT", "reflect")]:
        np.testing.assert_array_equal(imgconv.convolve(image, kernel, mode=alias), imgconv.convolve(image, kernel, mode=mode))


@pytest.mark.parametrize(
    "kernel, message",
    [
        ([[1.0, np.nan]], "NaN or infinite"),
        ([[np.inf]], "NaN or infinite"),
        (np.zeros((0, 3)), "empty"),
        ([1, 2, 3], "2-D"),
        (np.ones((2, 2, 2)), "2-D"),
        ([["a"]], "real numbers"),
    ],
)
def test_bad_kernels(kernel, message):
    with pytest.raises(ValueError, match=message):
        imgconv.convolve(np.zeros((4, 4)), kernel)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mode="reflekt"), "unknown border mode 'reflekt'"),
        (dict(mode=3), "unknown border mode 3"),
        (dict(cval=float("nan")), "cval must be a finite number"),
        (dict(cval="1"), "cval must be a finite number"),
        (dict(backend="gpu"), "backend must be one of"),
        (dict(strategy="fast"), "strategy must be one of"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        imgconv.convolve(np.zeros((4, 4)), np.ones((3, 3)), **kwargs)


@pytest.mark.parametrize("image", [np.zeros((4, 4), complex), np.zeros(4), np.zeros((2, 2, 2, 2)), "abc"])
def test_bad_images(image):
    with pytest.raises(ValueError, match="image must"):
        imgconv.convolve(image, np.ones((3, 3)))


def test_cuda_backend_without_a_device_is_a_clear_error():
    from imgconv.engine.plan import cuda_unavailable_reason

    if cuda_unavailable_reason() is None:
        pytest.skip("a CUDA device (or numba's simulator) is present: test_cuda.py runs the backend")
    with pytest.raises(BackendError, match=r"not available: .*pip install 'imgconv\[cuda12\]'.*backend 'cpu'"):
        imgconv.convolve(np.zeros((4, 4)), np.ones((3, 3)), backend="cuda")


def test_separable_refused_for_full_rank_kernel(rng):
    with pytest.raises(ValueError, match="rank 3 or less"):
        imgconv.convolve(np.zeros((4, 4)), rng.normal(size=(5, 5)), strategy="separable")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_low_rank_kernels_as_sums_of_separable_passes(rng, mode, rank):
    kernel = sum(np.outer(rng.normal(size=9), rng.normal(size=7)) for _ in range(rank))
    image = rng.random((30, 26, 2))
    got, plan = imgconv.convolve(image, kernel, mode=mode, cval=2.0, strategy="separable", explain=True)
    assert len(plan.factors) == rank
    assert_close_to_reference(got, image, kernel, mode, 2.0)


@pytest.mark.parametrize("mode", MODES)
def test_fft_tiles_every_mode(rng, mode):
    # Images spanning several tiles, partial last tiles, colour, odd/even kernels.
    for shape, kshape in [((300, 257), (31, 31)), ((70, 45, 3), (8, 13)), ((5, 4), (21, 17)), ((200, 3), (2, 40))]:
        image = rng.random(shape) * 100
        kernel = rng.normal(size=kshape)
        got = imgconv.convolve(image, kernel, mode=mode, cval=-3.0, strategy="fft", threads=2)
        assert_close_to_reference(got, image, kernel, mode, -3.0)


@pytest.mark.parametrize("mode", MODES)
def test_fft_interior_tiles_every_mode(rng, mode, monkeypatch):
    # Tiles of 64 on images of several, so some tiles reach no border (copied as a slice).
    from imgconv.engine import fft

    monkeypatch.setattr(fft, "tile_size", lambda image_shape, kernel_shape: 64)
    for shape, kshape, dtype in [((300, 257), (9, 9), np.float64), ((200, 190, 3), (8, 13), np.uint8)]:
        image = (rng.random(shape) * 100).astype(dtype)
        kernel = rng.normal(size=kshape)
        got = imgconv.convolve(image.astype(np.float32), kernel, mode=mode, cval=-3.0, strategy="fft", threads=2)
        assert_close_to_reference(got, image, kernel, mode, -3.0)
        if dtype == np.uint8:  # the uint8 rows themselves, cast as they are copied
            got = imgconv.convolve(image, kernel, mode=mode, cval=-3.0, strategy="fft", threads=2)
            assert_close_to_reference(got, image, kernel, mode, -3.0)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_fft_tiles_finished_into_integer_results(rng, dtype, monkeypatch):
    # The compiled store (finish and strided store in one pass) gives numpy's bits, and
    # the reference's values rounded half to even and clipped, for every channel of tiles
    # inside and at the borders.
    from imgconv.engine import fft
    from imgconv.engine.finish import Finish
    from imgconv.engine.run import canonical_rows

    monkeypatch.setattr(fft, "tile_size", lambda image_shape, kernel_shape: 64)
    top = np.iinfo(dtype).max
    image = rng.integers(0, top, (150, 170, 3), endpoint=True).astype(dtype)
    kernel = rng.normal(size=(9, 12))
    plan = make_plan(kernel, image.shape, strategy="fft")
    rows, channels = canonical_rows(image)
    for finish in (Finish(dtype), Finish(dtype, offset=top / 2, absolute=True)):
        compiled, _ = fft.run_fft(plan, rows, channels, "mirror", 7.0, finish, 2)
        numpy_store, _ = fft.run_fft(plan, rows, channels, "mirror", 7.0, finish, 2, store=fft.store_tile)
        assert compiled.dtype == dtype
        np.testing.assert_array_equal(compiled, numpy_store)
        reference = scipy_convolve(image, kernel, "mirror", 7.0) + finish.offset
        reference = np.clip(np.rint(np.abs(reference) if finish.absolute else reference), 0, top).reshape(rows.shape)
        # Float32 round-off may move a value across a rounding boundary: one unit at most.
        assert np.abs(compiled.astype(np.int64) - reference).max() <= 1


def test_fft_single_thread_matches_threads(rng):
    image, kernel = rng.random((260, 270)), rng.normal(size=(25, 25))
    one = imgconv.convolve(image, kernel, strategy="fft", threads=1)
    np.testing.assert_array_equal(one, imgconv.convolve(image, kernel, strategy="fft", threads=2))


def test_fft_kept_spectra_and_buffers_never_mix_kernels_or_sizes(rng, monkeypatch):
    # The spectra and tile buffers kept between calls: kernels of one shape that differ in one
    # weight, or only in dtype, images whose tiles differ, each against scipy, twice over.
    from imgconv.engine import fft

    base = rng.normal(size=(17, 17))
    other = base.copy()
    other[3, 5] += 1.0
    cases = [(base, (150, 170)), (other, (150, 170)), (base.astype(np.float32), (150, 170)), (other, (400, 90, 3)), (base, (40, 30))]
    for _ in range(2):
        for kernel, shape in cases:
            image = rng.random(shape)
            got = imgconv.convolve(image, kernel, mode="wrap", strategy="fft", threads=2)
            assert_close_to_reference(got, image, kernel.astype(np.float64), "wrap", 0.0)
    # A full cache drops the least recently used spectra, and never holds more than its bytes.
    from collections import OrderedDict

    n = fft.tile_size((60, 60), base.shape)
    monkeypatch.setattr(fft, "_spectra", OrderedDict())
    monkeypatch.setattr(fft, "SPECTRA_BYTES", n * (n // 2 + 1) * 8)  # one spectrum
    image = rng.random((60, 60))
    for kernel in (base, other):
        got = imgconv.convolve(image, kernel, mode="nearest", strategy="fft")
        assert_close_to_reference(got, image, kernel, "nearest", 0.0)
    assert [key[2] for key in fft._spectra] == [other.tobytes()]
    monkeypatch.setattr(fft, "SPECTRA_BYTES", 0)  # larger than the cache: not kept
    got = imgconv.convolve(image, base, mode="nearest", strategy="fft")
    assert_close_to_reference(got, image, base, "nearest", 0.0)
    assert [key[2] for key in fft._spectra] == [other.tobytes()]


def test_helper_threads_are_kept_and_raise_the_first_error():
    import os
    import threading

    from imgconv.engine import helpers

    def idents(count):
        seen, lock = set(), threading.Lock()

        def note(item):
            with lock:
                seen.add(threading.get_ident())
            threading.Event().wait(0.01)  # (so that every thread takes an item)

        helpers.in_threads(note, range(12), count)
        return seen

    first = idents(3)
    assert len(first) == 3 and idents(3) == first  # the same threads, kept
    done = []

    def fail(item):
        if item == 2:
            raise KeyError("tile 2")
        done.append(item)

    with pytest.raises(KeyError, match="tile 2"):
        helpers.in_threads(fail, range(50), 2)
    assert len(done) < 49  # the others stopped at their next item
    where = []
    helpers.in_threads(lambda item: where.append(threading.get_ident()), range(3), 1, here=False)
    assert len(where) == 3 and threading.get_ident() not in where  # here=False: helpers only
    # A forked child's helpers are its own (its parent's threads did not come with it).
    pid = os.fork()
    if pid == 0:
        try:
            count = []
            helpers.in_threads(count.append, range(5), 2)
            os._exit(0 if sorted(count) == list(range(5)) else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("threads", [0, -1, 10**6, 1.5, True])
def test_bad_thread_counts(threads):
    with pytest.raises(ValueError, match="threads must be"):
        imgconv.convolve(np.zeros((4, 4)), np.ones((3, 3)), threads=threads)


def test_threads_give_the_same_answer(rng):
    image, kernel = rng.random((97, 64, 3)), rng.normal(size=(5, 4))
    np.testing.assert_array_equal(imgconv.convolve(image, kernel, threads=1), imgconv.convolve(image, kernel, threads=2))


def test_plan_prefers_fft_for_large_dense_kernels_and_direct_for_small(rng):
    assert make_plan(rng.normal(size=(31, 31)), (4096, 4096)).strategy == "fft"
    assert make_plan(rng.normal(size=(3, 3)), (4096, 4096)).strategy == "direct"
    rank2 = np.outer(rng.normal(size=13), rng.normal(size=13)) + np.outer(rng.normal(size=13), rng.normal(size=13))
    plan = make_plan(rank2, (4096, 4096))
    assert plan.strategy == "separable" and len(plan.factors) == 2


def test_the_planner_knows_which_kernels_hold_their_taps_in_registers(rng, monkeypatch):
    from imgconv import tunables
    from imgconv.engine import cpu, sweeps
    from imgconv.engine.plan import direct_cost

    shapes = [(3, 3), (5, 5), (7, 7), (9, 9), (1, 9), (1, 13), (1, 25), (9, 1), (13, 1), (25, 1), (11, 1), (3, 5), (4, 4), (2, 2), (1, 1)]
    for shape in shapes:
        for holes in (0, 1, 4):
            kernel = rng.normal(size=shape)
            kernel.flat[rng.choice(kernel.size, min(holes, kernel.size - 1), replace=False)] = 0
            flipped = kernel[::-1, ::-1]
            taps = int(np.count_nonzero(kernel))
            pairing = cpu._pairing(flipped)
            # As the compiled drivers dispatch: several rows a sweep, else one fused sweep.
            held = pairing in (cpu.PAIR_DENSE3X3, cpu.PAIR_DENSE5X5) or (pairing == cpu.PAIR_COLUMN and taps in sweeps.PAIRED_TAPS) or taps in sweeps.FUSED_TAPS
            assert sweeps.in_registers(shape, taps) == held, (shape, holes)
    monkeypatch.setattr(tunables, "DIRECT_PIXEL_NS", 1.0)
    monkeypatch.setattr(tunables, "DIRECT_TAP_NS", 0.01)
    monkeypatch.setattr(tunables, "DIRECT_GROUP_TAP_NS", 0.1)
    assert direct_cost(np.ones((3, 3))) == pytest.approx(1.09)
    assert direct_cost(np.ones((7, 7))) == pytest.approx(5.9)
    assert direct_cost(np.ones((7, 7)), 9) == pytest.approx(1.09)  # 9 non-zero taps: one fused sweep


def test_the_cost_model_is_the_fit_of_this_kind_of_cpu(tmp_path):
    from imgconv import tunables

    names = {"DIRECT_PIXEL_NS", "DIRECT_TAP_NS", "DIRECT_GROUP_TAP_NS", "SEPARABLE_PIXEL_NS", "PASS_SUM_NS", "FFT_TILE_NS", "FFT_LARGE_TILE_NS"}
    sizes = set(tunables.CPU_COST_FITS["avx2"]["FFT_TILE_NS"])
    for fit in tunables.CPU_COST_FITS.values():
        assert set(fit) == names and set(fit["FFT_TILE_NS"]) == sizes
    chosen = tunables.CPU_COST_FITS[tunables.CPU_COST_FIT]
    assert all(getattr(tunables, name) == chosen[name] for name in names)
    # The kind from the first processor's vendor and "flags" lines; no such file (not
    # Linux), or no AVX-512: the AVX2 fit.
    info = tmp_path / "cpuinfo"

    def kind(*blocks):
        info.write_text("\n".join(f"processor\t: {i}\nvendor_id\t: {vendor}\nflags\t\t: {flags}\n" for i, (vendor, flags) in enumerate(blocks)))
        return tunables._cpu_kind(str(info))

    assert kind(("GenuineIntel", "fpu sse2 avx2 avx512f avx512bw"), ("GenuineIntel", "fpu")) == "avx512-intel"
    assert kind(("AuthenticAMD", "fpu sse2 avx2 avx512f avx512bw"), ("GenuineIntel", "fpu")) == "avx512-amd"
    assert kind(("GenuineIntel", "fpu sse2 avx2 avx512_vnni_like"), ("GenuineIntel", "avx512f")) == "avx2"
    assert kind(("AuthenticAMD", "fpu sse2 avx2")) == "avx2"
    assert tunables._cpu_kind(str(tmp_path / "missing")) == "avx2"
    assert set(tunables.CPU_COST_FITS) == {"avx512-intel", "avx512-amd", "avx2"}


def test_plan_explains_its_choice(rng):
    taps = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    gaussian = np.outer(taps, taps) / taps.sum() ** 2
    out, plan = imgconv.convolve(np.zeros((64, 64)), gaussian, explain=True)
    assert plan.strategy == "separable" and plan.backend == "cpu"
    assert "rank 1" in plan.explain() and "estimated ns/pixel" in plan.explain()
    assert make_plan(gaussian, (8, 8), strategy="direct").strategy == "direct"


def test_rank1_factors(rng):
    column, row = rng.normal(size=6), rng.normal(size=4)
    factors = rank1_factors(np.outer(column, row))
    np.testing.assert_allclose(np.outer(*factors), np.outer(column, row), atol=1e-12)
    assert rank1_factors(np.outer(column, row) + 1e-3 * rng.normal(size=(6, 4))) is None
    assert rank1_factors(np.zeros((3, 3))) is None


@settings(max_examples=60, deadline=None)
@given(
    image_shape=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    kernel_shape=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    mode=st.sampled_from(MODES),
    cval=st.floats(-10, 10),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_shape_any_mode_property(image_shape, kernel_shape, mode, cval, seed):
    rng = np.random.default_rng(seed)
    image, kernel = rng.normal(size=image_shape), rng.normal(size=kernel_shape)
    assert_close_to_reference(imgconv.convolve(image, kernel, mode=mode, cval=cval), image, kernel, mode, cval)


@pytest.mark.slow  # the float64 scipy reference: about 2e9 multiply-adds
def test_kernel_longer_than_every_listed_fft_size(rng):
    image = rng.random((4, 5))
    kernel = rng.normal(size=(2, 8200))
    out, plan = imgconv.convolve(image, kernel, mode="wrap", explain=True)
    assert plan.strategy == "direct"
    assert_close_to_reference(out, image, kernel, "wrap")


def test_threads_validated_for_empty_images():
    with pytest.raises(ValueError, match="threads must be"):
        imgconv.convolve(np.zeros((0, 4)), np.ones((3, 3)), threads=0)


# --- output= -------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["compiled", "numpy"])
@pytest.mark.parametrize("strategy", ["direct", "separable", "fft"])
def test_output_array_receives_the_result(rng, monkeypatch, route, strategy):
    """A float32 C-contiguous ``output`` is filled by the kernels and returned; every other
    float target gets the same values; each is the default result, bit for bit."""
    from imgconv.engine import compiled

    if route == "numpy":
        monkeypatch.setattr(compiled, "use_vector", lambda strategy, work: True)
    kernel = np.outer(rng.normal(size=5), rng.normal(size=4))
    images = [(rng.random(shape) * scale).astype(dtype) for shape, dtype, scale in [((37, 29), np.float32, 1), ((23, 18, 3), np.uint8, 255), ((30, 41), np.uint16, 65535), ((9, 5), np.float64, 1)]]
    images.append(rng.integers(0, 256, size=(14, 11, 4), dtype=np.uint8)[:, :, :3])  # Pillow's RGB rows
    for image in images:
        shape = image.shape
        expected = imgconv.convolve(image, kernel, mode="mirror", strategy=strategy)
        assert_close_to_reference(expected, image, kernel, "mirror")
        frame = np.full(shape, np.nan, np.float32)
        got, plan = imgconv.convolve(image, kernel, mode="mirror", strategy=strategy, output=frame, explain=True)
        assert got is frame and plan.strategy == strategy
        np.testing.assert_array_equal(frame, expected)
        wide = np.full(shape, np.nan, np.float64)
        assert imgconv.convolve(image, kernel, mode="mirror", strategy=strategy, output=wide) is wide
        np.testing.assert_array_equal(wide, expected.astype(np.float64))
        strided = np.full((shape[0] * 2,) + shape[1:], np.nan, np.float32)[::2]  # not contiguous
        assert imgconv.convolve(image, kernel, mode="mirror", strategy=strategy, output=strided) is strided
        np.testing.assert_array_equal(strided, expected)


def test_output_may_be_the_image_itself(rng):
    """Filtering in place: the result is computed apart where the target overlaps the
    image the kernels read."""
    kernel = rng.normal(size=(3, 3))
    base = rng.random((40, 52)).astype(np.float32)
    expected = imgconv.convolve(base, kernel, mode="wrap")
    image = base.copy()
    assert imgconv.convolve(image, kernel, mode="wrap", output=image) is image
    np.testing.assert_array_equal(image, expected)
    # A target overlapping the image shifted by a row.
    memory = np.concatenate([base, np.zeros((1, 52), np.float32)])
    source, target = memory[:40], memory[1:41]
    imgconv.convolve(source, kernel, mode="wrap", output=target)
    np.testing.assert_array_equal(target, expected)


def test_output_as_a_dtype(rng):
    image = rng.random((12, 15)).astype(np.float32)
    kernel = rng.normal(size=(3, 3))
    got = imgconv.convolve(image, kernel, output=np.float64)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, imgconv.convolve(image, kernel).astype(np.float64))


@pytest.mark.parametrize(
    "output, message",
    [
        (np.zeros((4, 5), np.float32), "output must have the image's shape"),
        (np.zeros((5, 4), np.int16), "floating-point array"),
        (np.int32, "floating-point dtype"),
        ("not a dtype", "an array or a dtype"),
    ],
)
def test_unusable_output_is_refused(output, message):
    with pytest.raises(ValueError, match=message):
        imgconv.convolve(np.zeros((5, 4), np.float32), np.ones((3, 3)), output=output)


def test_read_only_output_is_refused():
    frame = np.zeros((5, 4), np.float32)
    frame.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        imgconv.convolve(np.zeros((5, 4), np.float32), np.ones((3, 3)), output=frame)


def test_output_of_unusual_layouts(rng):
    """Targets the kernels cannot write as they are -- unaligned, byte-swapped, Fortran-ordered --
    and images with no pixels get the same values as a new array."""
    image = rng.random((21, 17)).astype(np.float32)
    kernel = rng.normal(size=(3, 3))
    expected = imgconv.convolve(image, kernel)
    memory = np.zeros(image.size * 4 + 1, np.uint8)
    unaligned = memory[1:].view(np.float32).reshape(image.shape)
    assert not unaligned.flags.aligned
    for target in (unaligned, np.zeros(image.shape, ">f4"), np.zeros(image.shape, np.float32, order="F")):
        assert imgconv.convolve(image, kernel, output=target) is target
        np.testing.assert_array_equal(target, expected)
    for shape in [(0, 4), (4, 0), (0, 4, 3), (0, 0)]:
        empty = np.zeros(shape, np.float32)
        target = np.full(shape, np.nan, np.float32)
        assert imgconv.convolve(empty, kernel, output=target) is target
        assert imgconv.convolve(empty.astype(np.uint8), kernel, output=target).shape == shape


# --- repeated calls (filtering._REPEATS) ---------------------------------------------------------


def _fresh_result(image, kernel, **kwargs):
    """The call's result with nothing kept from earlier calls."""
    from imgconv import filtering

    filtering._REPEATS.clear()
    return imgconv.convolve(image, kernel, **kwargs)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(37, 29), (23, 31, 3)])
@pytest.mark.parametrize("kernel_kind", ["dense", "separable", "sparse"])
def test_repeated_calls_are_the_first_calls_bit_for_bit(rng, dtype, shape, kernel_kind):
    mode = rng.choice(MODES)
    kernel = {
        "dense": rng.normal(size=(3, 3)),
        "separable": np.outer(rng.normal(size=5), rng.normal(size=3)),
        "sparse": rng.normal(size=(4, 6)) * (rng.random((4, 6)) < 0.4),
    }[kernel_kind]
    kernel[0, 0] = 1.0  # (never all zero)
    scale = 200 if dtype == np.uint8 else 60000 if dtype == np.uint16 else 1
    for _ in range(3):  # new pixels each call: what is kept must be the call, never its result
        image = (rng.random(shape) * scale).astype(dtype)
        cval = float(rng.normal())
        frame = np.empty(shape, np.float32)
        got = imgconv.convolve(image, kernel, mode=mode, cval=cval)
        again = imgconv.convolve(image, kernel, mode=mode, cval=cval)
        into = imgconv.convolve(image, kernel, mode=mode, cval=cval, output=frame)
        assert into is frame
        assert_close_to_reference(got, image, kernel, mode, cval)
        fresh = _fresh_result(image, kernel, mode=mode, cval=cval)
        for result in (got, again, into):
            np.testing.assert_array_equal(result, fresh)


def test_a_repeated_call_skips_planning(rng, monkeypatch):
    from imgconv.engine import run

    image, kernel = rng.random((48, 40)).astype(np.float32), rng.normal(size=(5, 5))
    first, plan = imgconv.convolve(image, kernel, mode="wrap", explain=True)

    def no_planning(*args, **kwargs):
        raise AssertionError("planned again")

    monkeypatch.setattr(run, "make_plan", no_planning)
    image2 = rng.random((48, 40)).astype(np.float32)
    second, plan2 = imgconv.convolve(image2, kernel, mode="wrap", explain=True)
    assert plan2 is plan
    assert_close_to_reference(second, image2, kernel, "wrap")
    with pytest.raises(AssertionError, match="planned again"):  # another kernel is planned
        imgconv.convolve(image2, kernel * 2, mode="wrap")


def test_repeated_calls_keep_every_setting_apart(rng):
    image = rng.random((30, 26)).astype(np.float32)
    kernel = np.array([[0.0, 0.0, 1.0]])  # the first column reads only outside the image
    results = {}
    for cval in (0.0, -0.0, 2.0, 2):
        for mode in ("constant", "wrap", "nearest"):
            for threads in (None, 1, 2):
                got = imgconv.convolve(image, kernel, mode=mode, cval=cval, threads=threads)
                fresh = _fresh_result(image, kernel, mode=mode, cval=cval, threads=threads)
                np.testing.assert_array_equal(got, fresh)
                assert np.array_equal(np.signbit(got), np.signbit(fresh))
                results[cval, mode, threads] = got
    np.testing.assert_array_equal(results[2.0, "constant", 1][:, 0], 2.0)
    np.testing.assert_array_equal(results[2.0, "wrap", 2][:, 0], image[:, -1])


def test_a_repeated_call_still_checks_its_output_and_threads(rng):
    import numba

    image, kernel = rng.random((20, 24)).astype(np.float32), rng.normal(size=(3, 3))
    frame = np.empty(image.shape, np.float32)
    imgconv.convolve(image, kernel, output=frame, threads=1)
    imgconv.convolve(image, kernel, output=frame, threads=1)
    with pytest.raises(ValueError, match="output must have the image's shape"):
        imgconv.convolve(image, kernel, output=np.empty((20, 23), np.float32), threads=1)
    with pytest.raises(ValueError, match="output is read-only"):
        locked = np.empty(image.shape, np.float32)
        locked.setflags(write=False)
        imgconv.convolve(image, kernel, output=locked, threads=1)
    # Into the image itself (the kernels would read what they write): made apart, copied in.
    expected = _fresh_result(image, kernel, threads=1)
    imgconv.convolve(image, kernel, output=frame, threads=1)
    assert imgconv.convolve(image, kernel, output=image, threads=1) is image
    np.testing.assert_array_equal(image, expected)
    before = numba.get_num_threads()
    imgconv.convolve(frame, kernel, threads=1)
    imgconv.convolve(frame, kernel, threads=1)
    assert numba.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be"):
        imgconv.convolve(frame, kernel, threads=10**6)


def test_large_results_laid_apart_from_their_image_and_mapped_up_front(rng):
    """Results of the kernels (engine/helpers.py ``new_rows``): a float32 result of 256 KB or
    more lies 2 KB + 64 from its float32 image modulo 4 KB, and one of 32 MiB or more made
    for one thread has its pages mapped before the kernel writes it; the sums are the same."""
    from imgconv.engine import helpers

    image = rng.random((400, 300)).astype(np.float32)
    for kernel in (rng.normal(size=(3, 3)), np.outer(rng.normal(size=5), rng.normal(size=7))):
        for _ in range(2):  # the first call and its repeat
            got = imgconv.convolve(image, kernel, mode="mirror")
            assert (got.ctypes.data - image.ctypes.data) % 4096 == helpers._APART
            assert got.flags.c_contiguous and got.flags.writeable and got.flags.aligned
            assert_close_to_reference(got, image, kernel, "mirror")
    large = rng.random((3000, 3000)).astype(np.float32)
    assert large.nbytes >= helpers.POPULATE_MIN_BYTES
    kernel = rng.normal(size=(3, 3))
    got = imgconv.convolve(large, kernel, mode="nearest", threads=1)
    np.testing.assert_array_equal(got, imgconv.convolve(large, kernel, mode="nearest", threads=2))
    rows = slice(0, 3000, 997)
    expected = plain_scipy_convolve(large[:, :], kernel, "nearest")[rows]
    np.testing.assert_allclose(got[rows], expected, rtol=0, atol=1e-5)


def test_large_results_recycle_only_memory_nothing_still_holds(rng, monkeypatch):
    """A result of 32 MiB or more is made over the memory of one the caller has dropped, never
    over one still held, whole or through a view; a result of another size releases the
    kept memory, and RESULT_RECYCLE_BYTES = 0 keeps none."""
    from imgconv import tunables
    from imgconv.engine import helpers

    shape = (3000, 3000)  # 36 MB of float32
    kernel = rng.normal(size=(3, 3))
    rows = slice(1, 3000, 1499)

    def check(got, image):
        expected = plain_scipy_convolve(image, kernel, "wrap")[rows]
        np.testing.assert_allclose(got[rows], expected, rtol=0, atol=1e-5)

    images = [rng.random(shape, dtype=np.float32) for _ in range(3)]
    for threads in (1, 2):
        helpers.release_recycled()
        first = imgconv.convolve(images[0], kernel, mode="wrap", threads=threads)
        view = first[2000:]  # holds the memory after `first` goes
        kept = view.copy()
        address = first.ctypes.data
        del first
        second = imgconv.convolve(images[1], kernel, mode="wrap", threads=threads)
        assert not np.shares_memory(second, view)
        np.testing.assert_array_equal(view, kept)
        check(second, images[1])
        del view
        gone = second.ctypes.data
        del second
        assert len(helpers._free_memory) == 2
        third = imgconv.convolve(images[2], kernel, mode="wrap", threads=threads)
        assert abs(third.ctypes.data - gone) < 4096 or abs(third.ctypes.data - address) < 4096
        assert (third.ctypes.data - images[2].ctypes.data) % 4096 == helpers._APART
        check(third, images[2])
        del third
    other = imgconv.convolve(rng.random((3100, 3000), dtype=np.float32), kernel)
    assert helpers._free_memory == []
    del other
    assert len(helpers._free_memory) == 1
    monkeypatch.setattr(tunables, "RESULT_RECYCLE_BYTES", 0)
    helpers.release_recycled()
    dropped = imgconv.convolve(images[0], kernel, mode="wrap")
    del dropped
    assert helpers._free_memory == []
