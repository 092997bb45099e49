"""The band driver (engine/stream.py): chains, repeat, strength, linear light and alpha
row by row.  Against scipy in float64 in every mode, with kernels larger than the image;
the bands change no bit; the numpy route gives the compiled kernels' bits; no full-size
float image is made."""

import dataclasses
import tracemalloc

import numpy as np
import pytest

from conftest import MODES, scipy_convolve

from imgconv import choices, tunables
from imgconv.chain import Chain, apply_chain, parse_chain
from imgconv.colour import linear_to_srgb, srgb_to_linear
from imgconv.engine import compiled, helpers
from imgconv.kernels import Filter, Kernel, load_catalog


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(use_env=False)


def kernel_step(matrix, bias=0.0, out_range="clip"):
    return Filter("k", "test", {}, (Kernel(np.asarray(matrix, float)),), "single", bias, out_range)


def image_of(rng, dtype, shape):
    if np.dtype(dtype).kind == "f":
        return rng.random(shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


def reference(image, chain, mode, cval, alpha="premultiplied", has_alpha=False):
    """What apply_chain computes, in float64 with scipy, step by step (0..1 units)."""
    scale = float(np.iinfo(image.dtype).max) if image.dtype.kind in "iu" else 1.0
    work = image.astype(np.float64) / scale
    cval = cval / scale
    colour = (Ellipsis, slice(0, -1)) if has_alpha else Ellipsis
    if chain.linear:
        work[colour] = srgb_to_linear(work[colour]).astype(np.float64)
        cval = float(srgb_to_linear(cval))
    original = work.copy()
    for _ in range(chain.repeat):
        for step in chain.steps:
            flt = step.filter
            k = flt.kernels[0].matrix
            offset = flt.bias + (0.5 if flt.out_range == "offset" else 0.0)
            if not has_alpha:
                work = scipy_convolve(work, k, mode, cval) + offset
                if flt.out_range == "abs":
                    work = np.abs(work)
                continue
            c, a = work[..., :-1], work[..., -1:]
            if alpha == "premultiplied":
                filtered = scipy_convolve(c * a, k, mode, cval)
                new_a = np.clip(scipy_convolve(a, k, mode, 1.0), 0, 1)
                c = filtered / new_a
            elif alpha == "separate":
                c = scipy_convolve(c, k, mode, cval)
                new_a = np.clip(scipy_convolve(a, k, mode, cval), 0, 1)
            else:
                c, new_a = scipy_convolve(c, k, mode, cval), a
            work = np.concatenate([c + offset, new_a], axis=-1)
    work = original + chain.strength * (work - original)
    if has_alpha:
        work[..., -1] = np.clip(work[..., -1], 0, 1)
    if chain.linear:
        work[colour] = linear_to_srgb(work[colour]).astype(np.float64)
    work = work * scale
    if image.dtype.kind in "iu":
        work = np.clip(np.rint(work), 0, scale)
    return work


def assert_matches(got, expected, dtype, gain=1.0):
    assert got.dtype == dtype and got.shape == expected.shape
    # Integers: float32 round-off may move a value across a rounding boundary (1 level);
    # floats: round-off of the largest sum (gain: what the chain can multiply a value by).
    atol = 1 if np.dtype(dtype).kind in "iu" else 2e-5 * gain
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=0, atol=atol)


STEPS = {
    "odd, even, non-square": ([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.full((2, 2), 0.25), [[1, 2, 1, 0, 0]]),
    "larger than the image": (np.full((15, 3), 1 / 45), np.full((2, 23), 1 / 46)),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("steps", sorted(STEPS))
def test_chains_match_scipy(rng, mode, dtype, steps):
    image = image_of(rng, dtype, (11, 9, 3))
    chain = Chain(tuple(kernel_step(k) for k in STEPS[steps]))
    cval = 0.25 * (np.iinfo(dtype).max if np.dtype(dtype).kind == "u" else 1)
    gain = 10.0
    for options in ({}, {"repeat": 2}, {"strength": 0.4}, {"strength": 1.5, "repeat": 2}):
        one = dataclasses.replace(chain, **options)
        assert_matches(apply_chain(image, one, mode=mode, cval=cval), reference(image, one, mode, cval), dtype, gain)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_linear_light_matches_scipy(rng, mode, dtype):
    image = image_of(rng, dtype, (10, 13, 3))
    chain = Chain((kernel_step(np.full((3, 4), 1 / 12)), kernel_step([[0.25, 0.5, 0.25]])), linear=True)
    for options in ({}, {"strength": 0.5}, {"repeat": 3}):
        one = dataclasses.replace(chain, **options)
        assert_matches(apply_chain(image, one, mode=mode, cval=0), reference(image, one, mode, 0), dtype)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("alpha", choices.ALPHA_POLICIES)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_alpha_matches_scipy(rng, mode, alpha, dtype):
    image = image_of(rng, dtype, (12, 10, 4))
    top = np.iinfo(dtype).max if np.dtype(dtype).kind == "u" else 1.0
    # Opaque enough everywhere that no result is fully transparent (that fallback has its own test).
    image[..., 3] = (0.2 + 0.8 * rng.random((12, 10))) * top
    blur, small = kernel_step(np.full((3, 3), 1 / 9)), kernel_step(np.full((1, 2), 0.5))
    large = kernel_step(np.full((15, 13), 1 / 195))  # larger than the 12x10 image
    for chain in (Chain((blur, small)), Chain((blur,), repeat=2, strength=0.5), Chain((small,), linear=True), Chain((large, small))):
        expected = reference(image, chain, mode, 0.0, alpha, has_alpha=True)
        assert_matches(apply_chain(image, chain, mode=mode, alpha=alpha), expected, dtype, gain=4.0)


def test_a_fully_transparent_result_keeps_the_straight_colour(rng):
    image = rng.integers(0, 256, (9, 12, 4), dtype=np.uint8)
    image[:, :6, 3] = 0  # left half transparent: its colour filtered straight
    image[:, 6:, 3] = 255
    box = kernel_step(np.full((1, 3), 1 / 3))
    got = apply_chain(image, Chain((box, box)))
    straight = scipy_convolve(scipy_convolve(image[..., :3], box.kernels[0].matrix, "reflect"), box.kernels[0].matrix, "reflect")
    np.testing.assert_allclose(got[:, :4, :3], np.rint(straight[:, :4]), atol=1)
    assert (got[:, :4, 3] == 0).all() and (got[:, 8:, 3] == 255).all()


CASES = [
    ("gaussian:sigma=1.5,sharpen", {}),
    ("gaussian:sigma=1,[1 2; 3 4]:normalize=true", {"repeat": 2}),
    ("sharpen", {"strength": 0.6}),
    ("box:size=4", {"linear": True, "strength": 1.3}),
    ("emboss,blur", {}),
]


def _run_cases(rng, catalog, shape, dtype, modes=MODES, threads=None):
    image = image_of(np.random.default_rng(rng.integers(1 << 30)), dtype, shape)
    results = []
    for text, options in CASES:
        chain = dataclasses.replace(parse_chain(text, catalog), **options)
        for mode in modes:
            for alpha in (choices.ALPHA_POLICIES if shape[-1] == 4 else ("premultiplied",)):
                results.append(apply_chain(image, chain, mode=mode, cval=7, alpha=alpha, threads=threads))
    return results


@pytest.mark.parametrize("dtype, shape", [(np.uint8, (23, 17, 3)), (np.uint16, (19, 21)), (np.float32, (17, 15, 4)), (np.uint8, (20, 9, 4))])
def test_bands_change_no_bit(rng, catalog, monkeypatch, dtype, shape):
    seed = rng.integers(1 << 30)
    monkeypatch.setattr(tunables, "STREAM_BAND_ELEMENTS", 10**9)  # one band: the whole image
    whole = _run_cases(np.random.default_rng(seed), catalog, shape, dtype)
    monkeypatch.setattr(tunables, "STREAM_BAND_ELEMENTS", 2 * shape[1])  # bands of 2 rows, halos recomputed
    monkeypatch.setattr(tunables, "STREAM_BAND_SHARE", 0.0)
    monkeypatch.setattr(tunables, "STREAM_MAX_RECOMPUTE", float("inf"))
    banded = _run_cases(np.random.default_rng(seed), catalog, shape, dtype)
    for a, b in zip(whole, banded):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("route", ["compiled", "numpy"])
@pytest.mark.parametrize("dtype, shape", [(np.uint8, (23, 17, 3)), (np.float32, (17, 15, 4)), (np.uint16, (19, 21))])
def test_band_pipelines_change_no_bit(rng, catalog, monkeypatch, route, dtype, shape):
    # Bands of 2 rows, run by one thread, and by two band pipelines (each its own buffers,
    # each kernel call on its thread alone), give one band's bits, in every mode.
    import numba

    from imgconv.engine import stream

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread only here")
    if route == "numpy":
        monkeypatch.setattr(compiled, "use_vector", lambda strategy, work: True)
    seed = rng.integers(1 << 30)
    monkeypatch.setattr(tunables, "STREAM_BAND_ELEMENTS", 10**9)
    whole = _run_cases(np.random.default_rng(seed), catalog, shape, dtype, threads=2)
    monkeypatch.setattr(tunables, "STREAM_BAND_ELEMENTS", 2 * shape[1])
    monkeypatch.setattr(tunables, "STREAM_BAND_SHARE", 0.0)
    monkeypatch.setattr(tunables, "STREAM_MAX_RECOMPUTE", float("inf"))
    one = _run_cases(np.random.default_rng(seed), catalog, shape, dtype, threads=1)
    pipelines, alone = [], []
    real_threads, real_band = helpers.in_threads, stream._band

    def in_threads(function, items, count):
        pipelines.append(count)
        return real_threads(function, items, count)

    def band(*args):
        alone.append(getattr(stream._pipeline, "threads", None))
        return real_band(*args)

    monkeypatch.setattr(helpers, "in_threads", in_threads)
    monkeypatch.setattr(stream, "_band", band)
    two = _run_cases(np.random.default_rng(seed), catalog, shape, dtype, threads=2)
    assert pipelines and set(pipelines) == {2} and set(alone) == {1}
    for a, b, c in zip(whole, one, two):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_band_rows_share_the_budget(catalog, monkeypatch):
    # The band buffers of all the pipelines together: STREAM_BAND_ELEMENTS per buffer of one
    # pipeline (40 rows of a 12240-pixel RGB image), or a share of the image where that is
    # more (wide images: fewer halos re-made); what a layer makes per band counts too.
    from imgconv.engine.finish import FLOAT32
    from imgconv.engine.plan import make_plan
    from imgconv.engine.stream import ConvLayer, band_rows
    from imgconv.filtering import AlphaLayer, _Options

    shape = (8160, 12240, 3)
    width = 12240 * 3
    gaussian = parse_chain("gaussian:sigma=2", catalog).steps[0].filter
    plan = make_plan(gaussian.kernels[0].matrix, shape, factors=gaussian.kernels[0].factors)
    layers = [ConvLayer(plan, shape, "reflect", 0.0, FLOAT32, 2) for _ in range(2)]
    assert band_rows(layers, 8160, width, 2) == 8160 // 32  # a sixteenth of the image, 2 buffers
    assert band_rows(layers, 8160, width, 1) == 8160 // 16
    monkeypatch.setattr(tunables, "STREAM_BAND_SHARE", 0.0)
    assert band_rows(layers, 8160, width, 1) == tunables.STREAM_BAND_ELEMENTS // width == 40
    assert band_rows(layers, 8160, width, 2) == 20  # two pipelines: no more memory than one
    options = _Options("reflect", 0.0, "auto", "auto", 2)
    rgba = AlphaLayer(gaussian, (8160, 3000, 4), options, "premultiplied", 255.0, "clip", np.uint8, 2, "g")
    assert rgba.band_buffers >= 3
    assert band_rows([rgba], 8160, 12000, 1) == tunables.STREAM_BAND_ELEMENTS // 12000
    assert band_rows([rgba], 8160, 12000, 2) == tunables.STREAM_BAND_ELEMENTS // 24000


@pytest.mark.parametrize("dtype, shape", [(np.uint8, (29, 31, 3)), (np.float32, (17, 15, 4)), (np.uint16, (18, 20, 2))])
def test_numpy_route_gives_the_compiled_bits(rng, catalog, monkeypatch, dtype, shape):
    seed = rng.integers(1 << 30)
    monkeypatch.setattr(tunables, "STREAM_BAND_ELEMENTS", 5 * shape[1])
    monkeypatch.setattr(tunables, "STREAM_BAND_SHARE", 0.0)
    compiled_results = _run_cases(np.random.default_rng(seed), catalog, shape, dtype)
    monkeypatch.setattr(compiled, "use_vector", lambda strategy, work: True)
    vector_results = _run_cases(np.random.default_rng(seed), catalog, shape, dtype)
    for a, b in zip(compiled_results, vector_results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("options, channels", [({"repeat": 2}, 3), ({"strength": 0.5}, 3), ({"linear": True}, 3), ({}, 4), ({"linear": True, "strength": 2.0}, 4)])
def test_no_full_size_float_image(catalog, monkeypatch, options, channels):
    monkeypatch.setattr(tunables, "STREAM_BAND_ELEMENTS", 40_000)
    monkeypatch.setattr(tunables, "STREAM_BAND_SHARE", 0.0)  # band buffers of 40,000 elements in all
    image = np.random.default_rng(0).integers(0, 256, (1200, 300, channels), dtype=np.uint8)
    chain = dataclasses.replace(parse_chain("gaussian:sigma=2,sharpen", catalog), **options)
    apply_chain(image, chain)  # plans, tables and kernels made before measuring
    tracemalloc.start()
    try:
        result = apply_chain(image, chain)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    float_image = 4 * image.size
    # The output (a quarter of a float32 image) and band buffers, never a float image.
    assert peak - result.nbytes < 0.5 * float_image, (peak, float_image)


def test_srgb_encoding_table_is_the_curve(rng):
    from imgconv.colour import srgb_encoder

    encoder = srgb_encoder()
    # Around every bucket edge and threshold, and values everywhere (negatives, above 1, NaN-free).
    edges = ((np.arange(encoder.count + 2) + encoder.offset) << encoder.SHIFT).astype(np.int64)
    patterns = np.concatenate([edges - 1, edges, edges + 1]).clip(0, None).astype(np.int32)
    values = np.concatenate([patterns.view(np.float32), rng.random(200_000).astype(np.float32) * 1.4 - 0.2, [0.0, -0.0, 1.0, np.inf, -np.inf]]).astype(np.float32)
    exact = np.clip(np.rint(linear_to_srgb(values) * np.float32(255)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(encoder.encode(values), exact)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_point_transforms_match_their_numpy_twins(rng, dtype):
    from imgconv.colour import srgb_encoder
    from imgconv.engine import points, vector
    from imgconv.engine.finish import float32_range

    shape = (7, 4 * 5)
    work = (rng.random(shape) * 1.6 - 0.3).astype(np.float32)
    work[0, :3] = [np.nan, np.inf, -np.inf]
    source = image_of(rng, dtype, shape)
    top = np.iinfo(dtype).max if np.dtype(dtype).kind == "u" else 1
    spec = np.array([*float32_range(dtype), 1], np.float32) if np.dtype(dtype).kind == "u" else np.array([-np.inf, np.inf, 0], np.float32)
    for has_alpha in (False, True):
        outputs = []
        for module in (points, vector):
            blended = np.empty(shape, dtype)
            if np.dtype(dtype).kind == "u":
                table = (np.arange(top + 1) * 0.9).astype(np.float32)
                module.blend_rows(work.copy(), source, table, table * 2, np.float32(0.7), 4, has_alpha, np.float32(top), spec, blended)
                decoded = np.empty(shape, np.float32)
                module.decode_rows(source, table, table * 2, 4, has_alpha, decoded)
            else:
                module.blend_float_rows(work.copy(), source, np.float32(1.3), 4, has_alpha, np.float32(1), spec, blended)
                decoded = np.empty(0)
            encoded = np.empty(shape, np.uint8)
            encoder, values = srgb_encoder(), work * np.float32(top)
            module.encode_rows(values, values.view(np.int32), encoder.levels, encoder.limits, encoder.SHIFT, encoder.offset,
                               encoder.count, 4, np.float32(255 if has_alpha else 0), encoded)
            outputs.append((blended, decoded, encoded))
        for a, b in zip(*outputs):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_alpha_transforms_match_their_numpy_twins(rng, dtype):
    from imgconv.engine import points, vector
    from imgconv.engine.finish import float32_range

    width, channels, n = 6, 4, 5
    block = image_of(rng, dtype, (n, width * channels))
    top = np.iinfo(dtype).max if np.dtype(dtype).kind == "u" else 1
    spec = np.array([*float32_range(dtype), 1], np.float32) if np.dtype(dtype).kind == "u" else np.array([-np.inf, np.inf, 0], np.float32)
    filtered = (rng.random((n, width * 3)) * 1.5 * top - 0.2 * top).astype(np.float32)
    filtered[0, :2] = [np.nan, np.inf]
    opacity = rng.random((n, width)).astype(np.float32)
    opacity[1, :3] = [0.0, 1e-7, np.nan]
    straight = (rng.random((n, width * 3)) * top).astype(np.float32)
    results = []
    for module in (points, vector):
        premultiplied, alphas = np.empty((n, width * 3), np.float32), np.empty((n, width), np.float32)
        module.premultiply_rows(block, np.float32(1 / top), channels, premultiplied, alphas)
        stored = []
        for offset, absolute, given in ((0.0, False, straight), (0.5 * top, True, np.empty((0, 0), np.float32))):
            out = np.empty((n, width * channels), dtype)
            module.unpremultiply_rows(filtered.copy(), opacity, given, np.float32(1e-6), np.float32(offset), absolute, np.float32(top), spec, out)
            stored.append(out)
        results.append((premultiplied, alphas, *stored))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_explain_says_how_the_rows_went(rng, catalog):
    image = rng.integers(0, 256, (40, 30, 4), dtype=np.uint8)
    _, passes = apply_chain(image, parse_chain("gaussian:sigma=1,sharpen", catalog), explain=True)
    assert passes and all(p.note == "rows streamed band by band" for p in passes)
    assert passes[0].describe().endswith("; rows streamed band by band")
    _, passes = apply_chain(image, parse_chain("blur,sobel", catalog), out_range="normalize", explain=True)
    assert "rows streamed twice (normalize" in passes[-1].describe()
    # Plans the band driver does not run, and other dtypes, say why they took the whole image.
    _, passes = apply_chain(image, parse_chain("gaussian:sigma=1,sharpen", catalog), strategy="fft", explain=True)
    assert all(p.note.startswith("whole image: 'gaussian:sigma=1' runs fft on cpu") for p in passes)
    _, passes = apply_chain(image.astype(np.float64), Chain.of(catalog.resolve("sobel"), repeat=2), explain=True)
    assert all(p.note == "whole image: a float64 image is filtered as a float32 copy" for p in passes)
