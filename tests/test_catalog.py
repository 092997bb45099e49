"""The kernel catalog: the built-in entries, user catalogs, validation errors,
parameter handling and the command-line helpers."""

import math
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from imgconv.errors import CatalogError, ImgconvError
from imgconv.kernels import (
    Catalog,
    Filter,
    Kernel,
    Param,
    builtin_catalog_path,
    format_matrix,
    load_catalog,
    parse_assignments,
)
from imgconv.kernels import catalog as cat

BUILTINS = [
    "identity", "blur", "box", "gaussian", "sharpen", "unsharp", "edge", "laplacian", "log",
    "sobel-x", "sobel-y", "sobel", "prewitt-x", "prewitt-y", "prewitt",
    "scharr-x", "scharr-y", "scharr", "emboss", "motion-blur",
]


@pytest.fixture(autouse=True)
def no_user_catalogs(monkeypatch):
    monkeypatch.delenv("IMGCONV_CATALOG", raising=False)


@pytest.fixture(scope="module")
def builtin():
    return load_catalog(use_env=False)


@pytest.fixture
def write(tmp_path):
    """Write a catalog file from dedented YAML text and return its path."""
    counter = iter(range(1000))

    def _write(text, name=None):
        path = tmp_path / (name or f"catalog{next(counter)}.yaml")
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return _write


def kernel_of(catalog, name, **params):
    (kernel,) = catalog.resolve(name, params).kernels
    return kernel.matrix


def ramp(axis, shape=(12, 12)):
    """Intensity increasing by 1 per pixel along ``axis`` (1: to the right, 0: downward)."""
    rows, cols = np.indices(shape, dtype=np.float64)
    return cols if axis == 1 else rows


# ---------------------------------------------------------------------------
# The built-in catalog


def test_builtin_path_exists():
    path = builtin_catalog_path()
    assert path.is_file() and path.name == "kernels.yaml"


def test_builtin_has_every_documented_entry(builtin):
    assert set(BUILTINS) <= set(builtin.names())
    assert builtin.names() == sorted(builtin.names())
    assert [e.name for e in builtin.entries()] == builtin.names()
    for entry in builtin.entries():
        assert entry.source == "built-in"
        assert entry.description and "\n" not in entry.description
        assert entry.kind in ("matrix", "family", "combined")


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_resolves_with_defaults(builtin, name):
    flt = builtin.resolve(name)
    assert isinstance(flt, Filter) and flt.name == name
    assert flt.combine in cat.COMBINE_MODES and flt.out_range in cat.OUT_RANGES
    assert math.isfinite(flt.bias)
    assert len(flt.kernels) == 1 if flt.combine == "single" else len(flt.kernels) >= 1
    assert set(flt.params) == set(builtin.entry(name).params)
    for kernel in flt.kernels:
        m = kernel.matrix
        assert m.dtype == np.float64 and m.ndim == 2 and m.size > 0
        assert np.all(np.isfinite(m))
        assert not m.flags.writeable
        with pytest.raises(ValueError):
            m[0, 0] = 1.0
        if kernel.factors is not None:
            column, row = kernel.factors
            assert column.shape == (m.shape[0],) and row.shape == (m.shape[1],)
            assert not column.flags.writeable and not row.flags.writeable
            np.testing.assert_array_equal(np.outer(column, row), m)


@pytest.mark.parametrize("name", ["gaussian", "blur", "box", "motion-blur", "unsharp", "identity"])
def test_smoothing_and_sharpening_kernels_sum_to_one(builtin, name):
    assert kernel_of(builtin, name).sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name", ["laplacian", "log", "sobel-x", "sobel-y", "prewitt-x", "prewitt-y", "scharr-x", "scharr-y", "emboss"])
def test_signed_filters_are_zero_sum_and_not_clipped_to_black(builtin, name):
    assert abs(kernel_of(builtin, name).sum()) < 1e-12
    flt = builtin.resolve(name)
    assert flt.out_range != "clip" or flt.bias == 0.5


def test_aliases_lead_to_their_entry(builtin):
    assert builtin.entry("smooth").name == "blur"
    assert "smooth" in builtin and "smooth" not in builtin.names()
    assert builtin.resolve("gauss").name == "gaussian"
    assert builtin.canonical("motion") == "motion-blur"


# -- families -----------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5, 6.0])
def test_gaussian_matches_scipy_gaussian_filter(builtin, rng, sigma):
    flt = builtin.resolve("gaussian", {"sigma": sigma})
    (kernel,) = flt.kernels
    radius = int(4 * sigma + 0.5)
    assert kernel.matrix.shape == (2 * radius + 1,) * 2
    assert kernel.matrix.sum() == pytest.approx(1.0, abs=1e-12)
    assert kernel.factors is not None
    image = rng.random((40, 37))
    np.testing.assert_allclose(
        ndimage.convolve(image, kernel.matrix, mode="reflect"),
        ndimage.gaussian_filter(image, sigma, mode="reflect"),
        atol=1e-12,
    )


def test_gaussian_radius_and_string_parameters(builtin):
    flt = builtin.resolve("gaussian", {"sigma": "2", "radius": "3"})
    assert flt.params == {"sigma": 2.0, "radius": 3}
    assert isinstance(flt.params["sigma"], float) and isinstance(flt.params["radius"], int)
    assert flt.kernels[0].matrix.shape == (7, 7)
    assert flt.kernels[0].matrix.sum() == pytest.approx(1.0)


def test_blur_is_a_gaussian_with_its_own_default(builtin):
    assert builtin.entry("blur").params["sigma"].default == 2.0
    assert builtin.entry("gaussian").params["sigma"].default == 1.0
    np.testing.assert_array_equal(kernel_of(builtin, "blur"), kernel_of(builtin, "gaussian", sigma=2.0))


@pytest.mark.parametrize("size", [1, 2, 3, 4, 8])
def test_box(builtin, size):
    (kernel,) = builtin.resolve("box", {"size": size}).kernels
    np.testing.assert_allclose(kernel.matrix, np.full((size, size), 1 / size**2))
    np.testing.assert_array_equal(np.outer(*kernel.factors), kernel.matrix)


def test_unsharp_is_identity_plus_amount_times_detail(builtin):
    amount, sigma = 1.5, 1.2
    unsharp = kernel_of(builtin, "unsharp", amount=amount, sigma=sigma)
    gaussian = kernel_of(builtin, "gaussian", sigma=sigma)
    assert unsharp.shape == gaussian.shape
    identity = np.zeros_like(gaussian)
    identity[gaussian.shape[0] // 2, gaussian.shape[1] // 2] = 1.0
    np.testing.assert_allclose(unsharp, identity + amount * (identity - gaussian), atol=1e-15)
    assert unsharp.sum() == pytest.approx(1.0)
    assert builtin.resolve("unsharp").kernels[0].factors is None


@pytest.mark.parametrize("sigma", [0.5, 1.4, 3.0])
def test_log_sign_and_scale(builtin, rng, sigma):
    log = kernel_of(builtin, "log", sigma=sigma)
    assert abs(log.sum()) < 1e-12
    c = log.shape[0] // 2
    assert log[c, c] < 0  # the Laplacian: negative on a bright spot
    np.testing.assert_allclose(log, log[::-1, ::-1])
    # Exactly the Laplacian on a quadratic image (like the 3x3 laplacian).
    rows, cols = np.indices((60, 60), dtype=np.float64)
    quadratic = 0.3 * cols**2 - 0.2 * rows * cols + 0.7 * rows**2 + 3 * cols - rows
    interior = slice(log.shape[0], -log.shape[0])
    got = ndimage.convolve(quadratic, log)[interior, interior]
    np.testing.assert_allclose(got, 2 * (0.3 + 0.7), rtol=1e-9)
    # Same sign as scipy's gaussian_laplace on a smooth random image.
    image = ndimage.gaussian_filter(rng.random((64, 64)), 2)
    ours = ndimage.convolve(image, log, mode="reflect").ravel()
    theirs = ndimage.gaussian_laplace(image, sigma, mode="reflect").ravel()
    assert np.corrcoef(ours, theirs)[0, 1] > 0.8  # same sign; the discretisations differ at small sigma


def test_laplacian_is_scipy_laplace(builtin, rng):
    image = rng.random((20, 23))
    np.testing.assert_allclose(ndimage.convolve(image, kernel_of(builtin, "laplacian")), ndimage.laplace(image), atol=1e-12)
    assert builtin.resolve("laplacian").out_range in ("abs", "offset")


def test_motion_blur_horizontal_and_vertical_are_exact_boxes(builtin):
    np.testing.assert_allclose(kernel_of(builtin, "motion-blur", length=3, angle=0), [[1 / 3] * 3])
    np.testing.assert_allclose(kernel_of(builtin, "motion-blur", length=5, angle=90), np.full((5, 1), 0.2))
    np.testing.assert_allclose(kernel_of(builtin, "motion-blur", length=5, angle=-180), np.full((1, 5), 0.2))
    # A fractional length covers its end pixels partly.
    np.testing.assert_allclose(kernel_of(builtin, "motion-blur", length=2.5), [[0.3, 0.4, 0.3]])
    np.testing.assert_allclose(kernel_of(builtin, "motion-blur", length=1), [[1.0]])


def test_motion_blur_angle_is_counter_clockwise_on_screen(builtin):
    k = kernel_of(builtin, "motion-blur", length=7, angle=45)
    assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    # 45 degrees runs from the bottom left to the top right (rows grow downward).
    assert k[1, -2] > 0 and k[-2, 1] > 0
    assert k[1, 1] == 0 and k[-2, -2] == 0
    mirrored = kernel_of(builtin, "motion-blur", length=7, angle=-45)
    np.testing.assert_allclose(mirrored, k[::-1, :])


@settings(max_examples=60, deadline=None)
@given(length=st.floats(1, 60), angle=st.floats(-360, 360))
def test_motion_blur_is_a_normalised_centred_line(length, angle):
    k = cat.FAMILIES["motion"].build(length=length, angle=angle).matrix
    assert k.sum() == pytest.approx(1.0)
    assert k.shape[0] % 2 == 1 and k.shape[1] % 2 == 1
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-12)  # point-symmetric: the flip is harmless
    assert np.all(k >= 0)
    assert max(k.shape) <= math.ceil(length) + 2


@settings(max_examples=40, deadline=None)
@given(sigma=st.floats(0.1, 30), radius=st.integers(0, 40))
def test_gaussian_family_properties(sigma, radius):
    kernel = cat.FAMILIES["gaussian"].build(sigma=sigma, radius=radius)
    r = radius or int(4 * sigma + 0.5)
    assert kernel.matrix.shape == (2 * r + 1, 2 * r + 1)
    assert kernel.matrix.sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(np.outer(*kernel.factors), kernel.matrix)


def test_every_family_default_is_within_its_limits():
    for family in cat.FAMILIES.values():
        for param in family.params:
            assert param.coerce(param.default) == param.default
        kernel = family.build(**{p.name: p.default for p in family.params})
        assert max(kernel.matrix.shape) <= cat.MAX_KERNEL_SIDE


def test_family_limits_keep_kernels_within_the_size_limit():
    for family, params in [
        ("gaussian", {"sigma": 127.0, "radius": 0}),
        ("gaussian", {"sigma": 1.0, "radius": 512}),
        ("log", {"sigma": 127.0}),
        ("motion", {"length": 1025.0, "angle": 0.0}),
        ("motion", {"length": 1025.0, "angle": 33.0}),
        ("box", {"size": 1025}),
    ]:
        kernel = cat.FAMILIES[family].build(**params)
        assert max(kernel.matrix.shape) <= cat.MAX_KERNEL_SIDE, (family, params)


# -- gradients and their sign convention -----------------------------------------


@pytest.mark.parametrize("family", ["sobel", "prewitt", "scharr"])
def test_gradients_are_positive_where_intensity_increases(builtin, family):
    for axis, suffix in [(1, "x"), (0, "y")]:
        kernel = kernel_of(builtin, f"{family}-{suffix}")
        response = ndimage.convolve(ramp(axis), kernel, mode="nearest")[2:-2, 2:-2]
        assert np.all(response > 0), f"{family}-{suffix} on a ramp along axis {axis}"
        other = ndimage.convolve(ramp(1 - axis), kernel, mode="nearest")[2:-2, 2:-2]
        np.testing.assert_allclose(other, 0, atol=1e-12)


@pytest.mark.parametrize("family", ["sobel", "prewitt"])
def test_gradients_match_scipy(builtin, rng, family):
    image = rng.random((19, 24))
    scipy_filter = getattr(ndimage, family)
    for axis, suffix in [(1, "x"), (0, "y")]:
        got = ndimage.convolve(image, kernel_of(builtin, f"{family}-{suffix}"), mode="reflect")
        np.testing.assert_allclose(got, scipy_filter(image, axis=axis, mode="reflect"), atol=1e-12)


@pytest.mark.parametrize("name", ["sobel", "prewitt", "scharr", "edge"])
def test_magnitude_filters_combine_the_two_gradients(builtin, name):
    flt = builtin.resolve(name)
    family = "sobel" if name == "edge" else name
    assert flt.combine == "magnitude" and flt.out_range == "clip"
    assert [k.matrix.tolist() for k in flt.kernels] == [
        kernel_of(builtin, f"{family}-x").tolist(),
        kernel_of(builtin, f"{family}-y").tolist(),
    ]


def test_emboss_makes_flat_areas_mid_grey_and_lights_the_top_left(builtin):
    flt = builtin.resolve("emboss")
    (kernel,) = flt.kernels
    assert flt.bias == 0.5 and kernel.matrix.sum() == 0
    square = np.zeros((12, 12))
    square[4:8, 4:8] = 1.0
    response = ndimage.convolve(square, kernel.matrix, mode="nearest")
    assert response[4, 4] > 0 and response[7, 7] < 0  # highlight top left, shadow bottom right


# -- resolving ------------------------------------------------------------------


def test_resolve_is_cached_and_filters_are_immutable(builtin):
    first = builtin.resolve("gaussian", {"sigma": 2})
    assert builtin.resolve("gaussian", {"sigma": "2.0"}) is first
    assert builtin.resolve("gauss", {"sigma": 2.0, "radius": 0}) is first
    assert builtin.resolve("gaussian", {"sigma": 3}) is not first
    with pytest.raises(TypeError):
        first.params["sigma"] = 5  # type: ignore[index]
    hash(first)
    assert first == Filter(first.name, first.description, dict(first.params), first.kernels, first.combine, first.bias, first.out_range)


def test_resolve_accepts_none_and_numpy_values(builtin):
    assert builtin.resolve("box", None).params == {"size": 3}
    assert builtin.resolve("box", {"size": np.int64(5)}).params == {"size": 5}
    assert builtin.resolve("gaussian", {"sigma": np.float32(1.5)}).params["sigma"] == 1.5
    assert builtin.resolve("box", {"size": 5.0}).params == {"size": 5}


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("gaussian", {"sigma": "abc"}, "kernel 'gaussian': parameter 'sigma' must be a number from 0.1 to 127, got 'abc'"),
        ("gaussian", {"sigma": "200"}, "kernel 'gaussian': parameter 'sigma' must be a number from 0.1 to 127, got '200'"),
        ("gaussian", {"sigma": 0.01}, "parameter 'sigma' must be a number from 0.1 to 127, got 0.01"),
        ("gaussian", {"sigma": "nan"}, "parameter 'sigma' must be a number"),
        ("gaussian", {"sigma": True}, "parameter 'sigma' must be a number"),
        ("box", {"size": "2.5"}, "kernel 'box': parameter 'size' must be an integer from 1 to 1025, got '2.5'"),
        ("box", {"size": 0}, "parameter 'size' must be an integer from 1 to 1025, got 0"),
        ("gaussian", {"sigm": "2"}, "kernel 'gaussian': unknown parameter 'sigm' — did you mean 'sigma'?"),
        ("gaussian", {"zzz": "2"}, "kernel 'gaussian': unknown parameter 'zzz'; its parameters: sigma, radius"),
        ("sharpen", {"sigma": "2"}, "kernel 'sharpen': unknown parameter 'sigma'; it takes no parameters"),
        ("sobel", {"amount": "2"}, "kernel 'sobel': unknown parameter 'amount'; it takes no parameters"),
    ],
)
def test_bad_parameter_values(builtin, name, params, message):
    with pytest.raises(CatalogError) as info:
        builtin.resolve(name, params)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_param_coercion_of_every_kind():
    flag = Param("flag", "bool", False)
    for text, value in [("true", True), ("Yes", True), ("1", True), ("off", False), ("false", False), (True, True), (0, False)]:
        assert flag.coerce(text) is value
    with pytest.raises(CatalogError, match=r"parameter 'flag' must be true or false, got 'maybe'"):
        flag.coerce("maybe")
    mode = Param("mode", "choice", "a", choices=("a", "b"))
    assert mode.coerce("b") == "b"
    with pytest.raises(CatalogError, match=r"parameter 'mode' must be one of a, b, got 'c'"):
        mode.coerce("c")
    count = Param("count", "int", 1, 1, None)
    assert count.coerce(" 7 ") == 7 and count.coerce("7.0") == 7
    with pytest.raises(CatalogError, match=r"an integer >= 1"):
        count.coerce("-3")
    assert Param("x", "float", 0.0).coerce("-1e-3") == -0.001


def test_unknown_kernel_suggests_a_close_name(builtin):
    with pytest.raises(CatalogError) as info:
        builtin.entry("sharpn")
    assert str(info.value) == "unknown kernel 'sharpn' — did you mean 'sharpen'?"
    with pytest.raises(CatalogError, match="did you mean 'smooth'"):
        builtin.resolve("smoth")
    with pytest.raises(CatalogError) as info:
        builtin.resolve("qqqqqq")
    assert str(info.value) == "unknown kernel 'qqqqqq'"
    assert isinstance(info.value, ValueError) and isinstance(info.value, ImgconvError)


# ---------------------------------------------------------------------------
# User catalogs


USER = """\
kernels:
  soft:
    description: Soft 3x3 blur
    matrix: [[1, 2, 1], [2, 4, 2], [1, 2, 1]]
    normalize: true
    scale: 1.0
    aliases: [smooth3]
  sharpen:
    description: A gentler sharpen
    matrix: [[0, -0.5, 0], [-0.5, 3, -0.5], [0, -0.5, 0]]
  wide-blur:
    description: A wide Gaussian
    family: gaussian
    params:
      sigma: {default: 4.0, min: 1, max: 10, description: width}
      radius: 0
"""


def test_user_catalog_adds_and_overrides(write):
    path = write(USER)
    catalog = load_catalog([path])
    assert {"soft", "wide-blur"} <= set(catalog.names())
    soft = catalog.resolve("smooth3")
    np.testing.assert_allclose(soft.kernels[0].matrix, np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16)
    assert catalog.entry("soft").source == str(path)
    sharpen = catalog.entry("sharpen")
    assert sharpen.source == str(path) and sharpen.description == "A gentler sharpen"
    assert kernel_of(catalog, "sharpen")[1, 1] == 3
    wide = catalog.entry("wide-blur").params["sigma"]
    assert (wide.default, wide.minimum, wide.maximum, wide.description) == (4.0, 1.0, 10.0, "width")
    with pytest.raises(CatalogError, match=r"parameter 'sigma' must be a number from 1 to 10, got '20'"):
        catalog.resolve("wide-blur", {"sigma": "20"})
    assert catalog.entry("gaussian").source == "built-in"  # the rest is untouched


def test_user_catalog_from_the_environment(write, monkeypatch):
    first = write(USER)
    second = write(
        """\
        kernels:
          soft:
            description: Softer
            matrix: [[1, 1], [1, 1]]
            normalize: true
        """
    )
    monkeypatch.setenv("IMGCONV_CATALOG", os.pathsep.join([str(first), "", str(second)]))
    catalog = load_catalog()
    assert catalog.entry("soft").description == "Softer"
    assert catalog.entry("soft").source == str(second)
    assert catalog.entry("soft").aliases == ()  # replaced together with its aliases
    assert "smooth3" not in catalog
    assert "soft" not in load_catalog(use_env=False)
    # Explicit paths come after the environment.
    third = write("kernels:\n  soft:\n    description: Third\n    matrix: [[1]]\n")
    assert load_catalog([third]).entry("soft").description == "Third"


def test_catalog_without_builtins(write):
    catalog = load_catalog([write(USER)], builtin=False, use_env=False)
    assert catalog.names() == ["sharpen", "soft", "wide-blur"]
    assert isinstance(catalog, Catalog) and len(catalog) == 3


def test_later_aliases_take_over_and_names_beat_aliases(write):
    catalog = load_catalog(
        [
            write("kernels:\n  mine:\n    description: Mine\n    matrix: [[2]]\n    aliases: [gauss]\n"),
            write("kernels:\n  smooth:\n    description: Now a name\n    matrix: [[3]]\n"),
        ]
    )
    assert catalog.entry("gauss").name == "mine"
    assert "gauss" not in catalog.entry("gaussian").aliases
    assert catalog.entry("smooth").name == "smooth"
    assert "smooth" not in catalog.entry("blur").aliases


def test_references_bind_late_to_overrides(write):
    catalog = load_catalog([write("kernels:\n  sobel-x:\n    description: Flat\n    matrix: [[0, 0, 0]]\n")])
    assert catalog.resolve("sobel").kernels[0].matrix.tolist() == [[0.0, 0.0, 0.0]]


def test_combined_entries_with_inline_matrices_and_parameters(write):
    catalog = load_catalog(
        [
            write(
                """\
                kernels:
                  grad:
                    description: Forward differences
                    combine: magnitude
                    scale: 2
                    kernels:
                      - {matrix: [[1, -1]]}
                      - {matrix: [[1], [-1]], scale: 0.5}
                  wide:
                    description: A referenced family with parameters
                    kernels:
                      - {entry: gaussian, params: {sigma: 2}}
                    bias: 0.25
                    out_range: offset
                """
            )
        ]
    )
    grad = catalog.resolve("grad")
    assert [k.matrix.tolist() for k in grad.kernels] == [[[2.0, -2.0]], [[1.0], [-1.0]]]
    wide = catalog.resolve("wide")
    assert wide.combine == "single" and wide.bias == 0.25 and wide.out_range == "offset"
    np.testing.assert_array_equal(wide.kernels[0].matrix, kernel_of(catalog, "gaussian", sigma=2))


def test_scale_on_a_family_keeps_its_factors_consistent(write):
    catalog = load_catalog([write("kernels:\n  dark:\n    description: Half\n    family: box\n    scale: 0.5\n")])
    (kernel,) = catalog.resolve("dark", {"size": 4}).kernels
    assert kernel.matrix.sum() == pytest.approx(0.5)
    np.testing.assert_allclose(np.outer(*kernel.factors), kernel.matrix)


# ---------------------------------------------------------------------------
# Validation errors: one line, naming the file and the entry


def entry(body, name="bad"):
    return f"kernels:\n  {name}:\n" + textwrap.indent(textwrap.dedent(body), "    ")


BAD_CATALOGS = [
    ("malformed YAML", "kernels:\n  a: [1, 2\n", "invalid YAML"),
    ("python tag", "kernels: !!python/object/apply:os.system ['echo hi']\n", "YAML tag '!!python/object/apply:os.system' is not allowed"),
    ("python tag in a value", entry("description: x\nmatrix: !!python/object:builtins.dict {}\n"), "YAML tag '!!python/object:builtins.dict'"),
    ("duplicate key", entry("description: x\nmatrix: [[1]]\n") + "  bad:\n    description: y\n    matrix: [[2]]\n", "duplicate key 'bad'"),
    ("empty file", "", "the catalog is empty"),
    ("not a mapping", "- a\n", "expected a mapping with a 'kernels' key"),
    ("unknown top-level key", "kernels: {}\nkernel: {}\n", "unknown top-level key 'kernel'; allowed: kernels, version"),
    ("missing kernels", "version: 1\n", "missing the top-level 'kernels' mapping"),
    ("bad version", "version: 2\nkernels: {}\n", "unsupported version 2"),
    ("ragged", entry("description: x\nmatrix: [[1, 2, 1], [2, 4]]\n"), "entry 'bad': matrix row 2 has 2 values, row 1 has 3"),
    ("empty matrix", entry("description: x\nmatrix: []\n"), "entry 'bad': matrix must be a non-empty list of rows"),
    ("empty row", entry("description: x\nmatrix: [[]]\n"), "entry 'bad': matrix row 1 is empty"),
    ("flat list", entry("description: x\nmatrix: [1, 2, 1]\n"), "write a single row as [[1, 2, 1]]"),
    ("NaN", entry("description: x\nmatrix: [[1, 2], [.nan, 1]]\n"), "entry 'bad': matrix row 2, column 1 must be finite, got nan"),
    ("inf", entry("description: x\nmatrix: [[1, -.inf]]\n"), "entry 'bad': matrix row 1, column 2 must be finite, got -inf"),
    ("string", entry("description: x\nmatrix: [[1, a]]\n"), "entry 'bad': matrix row 1, column 2 must be a number, got 'a'"),
    ("exponent read as a string", entry("description: x\nmatrix: [[1e-3]]\n"), "write 1.0e-3"),
    ("boolean", entry("description: x\nmatrix: [[1, true]]\n"), "matrix row 1, column 2 must be a number, got True"),
    ("too large", entry("description: x\nmatrix: [[" + ", ".join(["1"] * 1026) + "]]\n"), "matrix is 1x1026, larger than the 1025x1025 limit"),
    ("unknown entry key", entry("description: x\nmatrix: [[1]]\ncolour: red\n"), "entry 'bad': unknown entry key 'colour'; allowed: description, aliases,"),
    ("missing description", entry("matrix: [[1]]\n"), "entry 'bad': missing 'description'"),
    ("empty description", entry("description: ''\nmatrix: [[1]]\n"), "entry 'bad': description must be a non-empty string"),
    ("two-line description", entry("description: |\n  one\n  two\nmatrix: [[1]]\n"), "entry 'bad': description must be one line"),
    ("not a mapping entry", "kernels:\n  bad: [[1]]\n", "entry 'bad': must be a mapping"),
    ("no kind", entry("description: x\n"), "needs exactly one of 'matrix', 'family' or 'kernels' (found none)"),
    ("two kinds", entry("description: x\nmatrix: [[1]]\nfamily: box\n"), "(found 'matrix' and 'family')"),
    ("key of another kind", entry("description: x\nmatrix: [[1]]\ncombine: magnitude\n"), "'combine' goes with 'kernels', not 'matrix'"),
    ("normalize with zero sum", entry("description: x\nmatrix: [[1, -1]]\nnormalize: true\n"), "normalize: true, but the matrix sums to 0"),
    ("normalize not a bool", entry("description: x\nmatrix: [[1]]\nnormalize: yes please\n"), "normalize must be true or false"),
    ("bad scale", entry("description: x\nmatrix: [[1]]\nscale: big\n"), "entry 'bad': scale must be a number, got 'big'"),
    ("bad bias", entry("description: x\nmatrix: [[1]]\nbias: .inf\n"), "entry 'bad': bias must be a finite number"),
    ("bad out_range", entry("description: x\nmatrix: [[1]]\nout_range: wrap\n"), "out_range must be one of clip, abs, offset, normalize, got 'wrap'"),
    ("unknown family", entry("description: x\nfamily: gauss\n"), "unknown family 'gauss'; families: box, gaussian, log, motion, unsharp"),
    ("family param not declared", entry("description: x\nfamily: gaussian\nparams:\n  sigm: {default: 2}\n"), "family 'gaussian' has no parameter 'sigm' (it has: sigma, radius)"),
    ("param declaration unknown key", entry("description: x\nfamily: gaussian\nparams:\n  sigma: {minimum: 0}\n"), "parameter 'sigma': unknown key 'minimum'; allowed: default, min, max, type, choices, description"),
    ("param default wrong type", entry("description: x\nfamily: gaussian\nparams:\n  sigma: {default: abc}\n"), "parameter 'sigma': default must be a number from 0.1 to 127, got 'abc'"),
    ("param default out of range", entry("description: x\nfamily: gaussian\nparams:\n  sigma: {default: 20, max: 10}\n"), "parameter 'sigma': default must be a number from 0.1 to 10, got 20"),
    ("param widens the family", entry("description: x\nfamily: gaussian\nparams:\n  sigma: {min: 0}\n"), "parameter 'sigma': min 0 is outside the family's limits"),
    ("param min above max", entry("description: x\nfamily: gaussian\nparams:\n  sigma: {min: 5, max: 2}\n"), "min 5 is greater than max 2"),
    ("param default left outside", entry("description: x\nfamily: gaussian\nparams:\n  sigma: {min: 5}\n"), "the family's default 1 is not a number from 5 to 127: give a default"),
    ("param type mismatch", entry("description: x\nfamily: gaussian\nparams:\n  sigma: {type: int}\n"), "type 'int' does not match the family's 'float'"),
    ("param unknown type", entry("description: x\nfamily: gaussian\nparams:\n  sigma: {type: complex}\n"), "type must be one of float, int, bool, choice"),
    ("param int limit", entry("description: x\nfamily: box\nparams:\n  size: {max: 2.5}\n"), "parameter 'size': max must be an integer"),
    ("param choices on a number", entry("description: x\nfamily: box\nparams:\n  size: {choices: [a]}\n"), "choices apply to choice parameters, not int"),
    ("params on a matrix", entry("description: x\nmatrix: [[1]]\nparams: {}\n"), "'params' goes with 'family', not 'matrix'"),
    ("unknown combine", entry("description: x\nkernels: [sobel-x, sobel-y]\ncombine: median\n"), "unknown combine 'median'; allowed: single, magnitude, sum-abs, max"),
    ("several kernels without combine", entry("description: x\nkernels: [sobel-x, sobel-y]\n"), "several kernels need 'combine'"),
    ("single with several kernels", entry("description: x\nkernels: [sobel-x, sobel-y]\ncombine: single\n"), "combine 'single' takes one kernel, got 2"),
    ("empty kernels", entry("description: x\nkernels: []\n"), "kernels must be a non-empty list"),
    ("unknown reference", entry("description: x\nkernels: [sobel-x, sobel-z]\ncombine: magnitude\n"), "entry 'bad': kernels item 2 refers to unknown entry 'sobel-z' — did you mean 'sobel-y'?"),
    ("reference to a combination", entry("description: x\nkernels: [sobel, sobel-x]\ncombine: magnitude\n"), "kernels item 1 refers to 'sobel' (from built-in), which combines several kernels"),
    ("bad inline item", entry("description: x\nkernels: [{matrix: [[1]], entry: box}]\n"), "kernels item 1 needs exactly one of 'matrix' or 'entry'"),
    ("bad inline matrix", entry("description: x\nkernels: [{matrix: [[1, 2], [3]]}]\n"), "kernels item 1 matrix row 2 has 1 values, row 1 has 2"),
    ("bad reference parameter", entry("description: x\nkernels: [{entry: gaussian, params: {sigma: 1000}}]\n"), "kernels item 1: kernel 'gaussian': parameter 'sigma' must be a number from 0.1 to 127"),
    ("self reference", entry("description: x\nkernels: [bad]\n"), "entry 'bad': reference cycle: bad -> bad"),
    (
        "reference cycle",
        "kernels:\n  a:\n    description: x\n    kernels: [b]\n  b:\n    description: x\n    kernels: [c]\n  c:\n    description: x\n    kernels: [a]\n",
        "entry 'a': reference cycle: a -> b -> c -> a",
    ),
    ("alias is an existing name", entry("description: x\nmatrix: [[1]]\naliases: [sobel]\n"), "alias 'sobel' is already the name of an entry (from built-in)"),
    ("alias is its own name", entry("description: x\nmatrix: [[1]]\naliases: [bad]\n"), "alias 'bad' is the entry's own name"),
    (
        "alias shared in a file",
        "kernels:\n  a:\n    description: x\n    matrix: [[1]]\n    aliases: [z]\n  b:\n    description: x\n    matrix: [[1]]\n    aliases: [z]\n",
        "entry 'b': alias 'z' is also an alias of 'a'",
    ),
    ("bad entry name", "kernels:\n  'a b':\n    description: x\n    matrix: [[1]]\n", "entry name 'a b' must be letters, digits"),
    ("entry name read as a boolean", "kernels:\n  yes:\n    description: x\n    matrix: [[1]]\n", "entry name must be a string, got True (quote it in YAML)"),
]


@pytest.mark.parametrize("text, message", [c[1:] for c in BAD_CATALOGS], ids=[c[0] for c in BAD_CATALOGS])
def test_invalid_catalogs(write, text, message):
    path = write(text)
    with pytest.raises(CatalogError) as info:
        load_catalog([path], use_env=False)
    text = str(info.value)
    assert text.startswith(f"{path}: "), text
    assert message in text, text
    assert "\n" not in text


def test_missing_or_unreadable_files_are_named(tmp_path, monkeypatch):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(CatalogError, match=r"nope\.yaml: cannot read catalog"):
        load_catalog([missing])
    with pytest.raises(CatalogError, match="cannot read catalog"):
        load_catalog([tmp_path])
    monkeypatch.setenv("IMGCONV_CATALOG", str(missing))
    with pytest.raises(CatalogError, match=r"nope\.yaml \(from IMGCONV_CATALOG\): cannot read"):
        load_catalog()
    assert "sobel" in load_catalog(use_env=False)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"kernels:\n  a:\n    description: \xff\xfe\n")
    with pytest.raises(CatalogError, match=r"binary\.yaml: catalog is not UTF-8"):
        load_catalog([binary], use_env=False)


def test_an_edited_file_is_read_again(write):
    path = write("kernels:\n  a:\n    description: First\n    matrix: [[1]]\n")
    assert load_catalog([path]).entry("a").description == "First"
    path.write_text("kernels:\n  a:\n    description: Second, longer\n    matrix: [[1]]\n")
    assert load_catalog([path]).entry("a").description == "Second, longer"


def test_resolved_kernel_size_limit(write):
    catalog = load_catalog([write(entry("description: x\nfamily: box\nscale: 1\n"))])
    assert catalog.resolve("bad", {"size": 1025}).kernels[0].matrix.shape == (1025, 1025)
    with pytest.raises(CatalogError, match="must be an integer from 1 to 1025"):
        catalog.resolve("bad", {"size": 1026})


# ---------------------------------------------------------------------------
# Command-line helpers


def test_parse_assignments():
    assert parse_assignments(["sigma=2", "radius=5"]) == {"sigma": "2", "radius": "5"}
    assert parse_assignments(["expr=a=b", "empty="]) == {"expr": "a=b", "empty": ""}
    assert parse_assignments([]) == {}
    with pytest.raises(CatalogError) as info:
        parse_assignments(["sigma2"])
    assert str(info.value) == "bad parameter 'sigma2': expected KEY=VALUE"
    with pytest.raises(CatalogError, match=r"bad parameter '=2': expected KEY=VALUE"):
        parse_assignments(["=2"])
    with pytest.raises(CatalogError, match="given twice"):
        parse_assignments(["sigma=1", "sigma=2"])


def test_parse_assignments_feed_resolve(builtin):
    flt = builtin.resolve("motion-blur", parse_assignments(["length=5", "angle=90"]))
    assert flt.kernels[0].matrix.shape == (5, 1)


def test_format_matrix():
    assert format_matrix([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]) == " 0  -1   0\n-1   5  -1\n 0  -1   0"
    assert format_matrix(np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16) == (
        "0.0625  0.125  0.0625\n"
        "0.125   0.25   0.125\n"
        "0.0625  0.125  0.0625"
    )
    assert format_matrix([[1 / 3, -2.5]]) == "0.333333  -2.5"
    assert format_matrix([1, 2]) == "1  2"
    # Round-off next to large values prints as 0, tiny real values in scientific notation.
    assert format_matrix([[1.0, 1e-20, -0.0]]) == "1  0  0"
    assert format_matrix([[6.5e-6, 1.0]]) == "6.5e-06  1"
    with pytest.raises(ValueError):
        format_matrix([])


def test_format_matrix_of_every_builtin(builtin):
    for name in builtin.names():
        for kernel in builtin.resolve(name).kernels:
            text = format_matrix(kernel.matrix)
            lines = text.split("\n")
            assert len(lines) == kernel.matrix.shape[0]
            assert all(len(line.split()) == kernel.matrix.shape[1] for line in lines)


# ---------------------------------------------------------------------------
# Cost


@pytest.mark.slow
def test_catalog_import_does_not_import_numba():
    code = "import imgconv.kernels, sys; assert 'numba' not in sys.modules, 'numba imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_loading_the_builtin_catalog_is_fast():
    best = math.inf
    for _ in range(3):
        cat._PARSE_CACHE.clear()
        start = time.perf_counter()
        load_catalog(use_env=False)
        best = min(best, time.perf_counter() - start)
    assert best < 0.05, f"load_catalog took {best * 1000:.1f} ms"


def test_kernel_copies_writable_input():
    matrix = np.ones((2, 2))
    kernel = Kernel(matrix, None)
    assert matrix.flags.writeable and not kernel.matrix.flags.writeable
    matrix[0, 0] = 5
    assert kernel.matrix[0, 0] == 1
    assert kernel == Kernel(np.ones((2, 2)), None) and hash(kernel) == hash(Kernel(np.ones((2, 2))))
