"""apply_filter: the filter layer over convolve (normalisation, bias, combining,
alpha, out-range, and the conversion back to the image's dtype)."""

import numpy as np
import pytest

from conftest import MODES, scipy_convolve

import imgconv
from imgconv.kernels import Filter, Kernel


def make_filter(*matrices, combine="single", bias=0.0, out_range="clip", name="test"):
    kernels = []
    for matrix in matrices:
        matrix = np.array(matrix, dtype=np.float64)
        matrix.setflags(write=False)
        kernels.append(Kernel(matrix=matrix, factors=None))
    combine = combine if len(kernels) > 1 else "single"
    return Filter(name=name, description="a test filter", params={}, kernels=tuple(kernels), combine=combine, bias=bias, out_range=out_range)


def rounded_reference(image, kernel, mode, cval=0.0):
    info = np.iinfo(image.dtype)
    return np.clip(np.rint(scipy_convolve(image, kernel, mode, cval)), info.min, info.max)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_integer_result_is_rounded_clipped_reference(rng, mode, dtype):
    top = np.iinfo(dtype).max
    image = rng.integers(0, top + 1, size=(31, 27, 3)).astype(dtype)
    kernel = rng.normal(size=(4, 5))
    got = imgconv.apply_filter(image, make_filter(kernel), mode=mode, cval=top / 3)
    assert got.dtype == dtype and got.shape == image.shape
    # float32 against float64 may land on the other side of a .5: at most one level.
    assert np.abs(got.astype(np.int64) - rounded_reference(image, kernel, mode, top / 3)).max() <= 1


@pytest.mark.parametrize("shape", [(9, 7), (9, 7, 2), (9, 7, 3), (9, 7, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("alpha", ["premultiplied", "separate", "ignore"])
def test_identity_reproduces_input_exactly(rng, shape, dtype, alpha):
    if dtype is np.float32:
        image = rng.random(shape).astype(dtype)
    else:
        image = rng.integers(0, np.iinfo(dtype).max + 1, size=shape).astype(dtype)
    got = imgconv.apply_filter(image, make_filter([[1.0]]), alpha=alpha)
    if dtype is np.float32 and alpha == "premultiplied" and len(shape) == 3 and shape[2] in (2, 4):
        np.testing.assert_allclose(got, image, rtol=1e-5, atol=1e-6)  # divided by alpha and back
    else:
        np.testing.assert_array_equal(got, image)


@pytest.mark.parametrize("mode", MODES)
def test_opaque_rgba_filters_like_rgb(rng, mode):
    rgb = rng.integers(0, 256, size=(23, 19, 3)).astype(np.uint8)
    rgba = np.concatenate([rgb, np.full((23, 19, 1), 255, np.uint8)], axis=-1)
    for matrix in (np.full((5, 5), 1 / 25), [[0, -1, 0], [-1, 5, -1], [0, -1, 0]], [[1, 0], [0, -1]]):
        flt = make_filter(matrix)
        from_rgb = imgconv.apply_filter(rgb, flt, mode=mode, cval=40)
        from_rgba = imgconv.apply_filter(rgba, flt, mode=mode, cval=40)
        np.testing.assert_array_equal(from_rgba[..., :3], from_rgb)
        np.testing.assert_array_equal(from_rgba[..., 3], 255)


def half_transparent_red():
    image = np.zeros((8, 8, 4), np.uint8)
    image[:, :4] = (255, 0, 0, 255)  # opaque red beside fully transparent black
    return image


def test_premultiplied_blur_has_no_dark_fringe():
    blur = make_filter(np.full((3, 3), 1 / 9))
    out = imgconv.apply_filter(half_transparent_red(), blur)
    edge = out[:, 4]  # was transparent, now partly covered by red
    assert np.all(edge[:, 3] == 85) and np.all(edge[:, 0] == 255) and np.all(edge[:, 1:3] == 0)
    separate = imgconv.apply_filter(half_transparent_red(), blur, alpha="separate")
    assert np.all(separate[:, 4, 0] == 85)  # straight filtering mixes in the black
    assert np.all(separate[:, 4, 3] == 85)


def test_alpha_ignore_keeps_alpha():
    image = half_transparent_red()
    out = imgconv.apply_filter(image, make_filter(np.full((3, 3), 1 / 9)), alpha="ignore")
    np.testing.assert_array_equal(out[..., 3], image[..., 3])


def test_edge_detector_keeps_alpha_when_premultiplied():
    image = half_transparent_red()
    image[..., 3] = 200
    out = imgconv.apply_filter(image, make_filter([[0, 1, 0], [1, -4, 1], [0, 1, 0]]))
    np.testing.assert_array_equal(out[..., 3], 200)


def test_fully_transparent_pixels_keep_their_colour_filtered_straight(rng):
    image = rng.integers(0, 256, size=(6, 6, 4)).astype(np.uint8)
    image[..., 3] = 0
    blur = make_filter(np.full((3, 3), 1 / 9))
    out = imgconv.apply_filter(image, blur)
    np.testing.assert_array_equal(out[..., 3], 0)
    np.testing.assert_array_equal(out, imgconv.apply_filter(image, blur, alpha="separate"))


def test_out_range_mappings():
    image = np.zeros((5, 5), np.uint8)
    image[2, 2] = 100
    laplacian = [[0, 1, 0], [1, -4, 1], [0, 1, 0]]  # centre -400, neighbours +100
    flt = make_filter(laplacian)
    clip = imgconv.apply_filter(image, flt, mode="constant")
    assert clip[2, 2] == 0 and clip[1, 2] == 100
    absolute = imgconv.apply_filter(image, flt, mode="constant", out_range="abs")
    assert absolute[2, 2] == 255 and absolute[1, 2] == 100
    offset = imgconv.apply_filter(image, flt, mode="constant", out_range="offset")
    assert offset[0, 0] == 128 and offset[1, 2] == 228 and offset[2, 2] == 0
    normalized = imgconv.apply_filter(image, flt, mode="constant", out_range="normalize")
    assert normalized[2, 2] == 0 and normalized[1, 2] == 255 and normalized[0, 0] == 204


def test_out_range_default_comes_from_the_filter():
    image = np.zeros((5, 5), np.uint8)
    image[2, 2] = 100
    flt = make_filter([[0, 1, 0], [1, -4, 1], [0, 1, 0]], out_range="abs")
    assert imgconv.apply_filter(image, flt, mode="constant")[2, 2] == 255


def test_bias_is_a_fraction_of_full_scale():
    flat8 = np.full((6, 6), 77, np.uint8)
    flat16 = np.full((6, 6), 7777, np.uint16)
    emboss = make_filter([[-1, 0, 0], [0, 0, 0], [0, 0, 1]], bias=0.5)
    np.testing.assert_array_equal(imgconv.apply_filter(flat8, emboss), 128)
    np.testing.assert_array_equal(imgconv.apply_filter(flat16, emboss), 32768)


@pytest.mark.parametrize("mode", MODES)
def test_magnitude_combines_two_kernels(rng, mode):
    image = rng.random((21, 17)).astype(np.float32)
    gx, gy = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    got = imgconv.apply_filter(image, make_filter(gx, gy, combine="magnitude"), mode=mode)
    expected = np.hypot(scipy_convolve(image, gx, mode), scipy_convolve(image, gy, mode))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_float_images_are_not_clipped(rng):
    image = rng.random((8, 8)).astype(np.float32)
    out = imgconv.apply_filter(image, make_filter([[0, 0, 0], [0, 3, 0], [0, 0, 0]]))
    assert out.dtype == np.float32 and out.max() > 1.0


def test_named_filter_with_parameters(rng):
    image = rng.integers(0, 256, size=(20, 20)).astype(np.uint8)
    out = imgconv.apply_filter(image, "gaussian", sigma=1.5)
    assert out.dtype == np.uint8 and out.std() < image.std()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(alpha="straight"), "alpha must be one of"),
        (dict(out_range="wrap"), "out_range must be one of"),
        (dict(mode="bogus"), "unknown border mode"),
        (dict(sigma=2), "already resolved"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        imgconv.apply_filter(np.zeros((4, 4), np.uint8), make_filter([[1.0]]), **kwargs)


def test_boolean_images_refused():
    with pytest.raises(ValueError, match="boolean"):
        imgconv.apply_filter(np.zeros((4, 4), bool), make_filter([[1.0]]))


def test_normalize_stretches_the_results_own_range():
    image = np.array([[100, 110], [120, 140]], np.uint8)
    out = imgconv.apply_filter(image, make_filter([[1.0]]), out_range="normalize")
    np.testing.assert_array_equal(out, [[0, 64], [128, 255]])
    flat = imgconv.apply_filter(np.full((3, 3), 7, np.uint8), make_filter([[1.0]]), out_range="normalize")
    np.testing.assert_array_equal(flat, 0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("out_range", ["clip", "abs", "offset"])
@pytest.mark.parametrize("strategy", ["direct", "separable", "fft"])
def test_every_strategy_finishes_pixels_alike(rng, mode, out_range, strategy):
    # The kernels round, clip and map on the fly; the FFT route does it afterwards.
    image = rng.integers(0, 256, size=(37, 29, 3)).astype(np.uint8)
    column, row = rng.normal(size=5), rng.normal(size=4)
    matrix = np.outer(column, row)
    matrix.setflags(write=False)
    flt = Filter(name="t", description="", params={}, kernels=(Kernel(matrix=matrix, factors=(column, row)),), combine="single", bias=0.1, out_range=out_range)
    got = imgconv.apply_filter(image, flt, mode=mode, cval=50, strategy=strategy)
    values = scipy_convolve(image, matrix, mode, 50.0) + 0.1 * 255
    if out_range == "abs":
        values = np.abs(values)
    elif out_range == "offset":
        values = values + 127.5
    expected = np.clip(np.rint(values), 0, 255)
    assert got.dtype == np.uint8
    assert np.abs(got.astype(np.int64) - expected).max() <= 1


@pytest.mark.parametrize("dtype", [np.int32, np.uint32, np.int64])
def test_wide_integer_images_saturate_instead_of_wrapping(dtype):
    # float32 cannot hold 2**31 - 1: clipping to it must not round up and overflow the cast back.
    info = np.iinfo(dtype)
    image = np.array([[info.max, info.max], [info.min, 0]], dtype)
    out = imgconv.apply_filter(image, make_filter([[2.0]]))
    assert out.dtype == dtype
    assert out[0, 0] > info.max // 2 and out[1, 1] == 0
    assert out[1, 0] == info.min or out[1, 0] < info.min // 2
