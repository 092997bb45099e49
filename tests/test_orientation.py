"""EXIF orientation: filters act on the image as a viewer displays it.

imgconv keeps the stored pixels and the Orientation tag and turns each kernel
instead (imgconv.kernels.orient_kernel).  The proof here: for all 8
orientations, every border mode and asymmetric kernels (even, non-square),
convolving the stored pixels with the turned kernel equals turning the
pixels with numpy as a viewer does, filtering them, and turning the result
back.  Inputs are written with Pillow, never with imgconv.
"""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

import imgconv
from imgconv import io, plot
from imgconv.chain import Chain, parse_chain
from imgconv.cli import cli
from imgconv.engine.plan import make_plan
from imgconv.kernels import Kernel, load_catalog, orient_array, orient_kernel
from imgconv.kernels.algebra import EXIF_ORIENTATIONS, inverse_orientation
from imgconv.pipeline import Job, filter_image

from conftest import MODES, scipy_convolve

ORIENTATIONS = range(1, 9)
ORIENTATION_TAG = 0x0112

# Asymmetric kernels with integer weights (sums exact in float32 and float64):
# even and odd sides, non-square, a row and a column.
KERNELS = {
    "2x4": [[1, 2, 0, -1], [3, -4, 1, 2]],
    "4x3": [[0, 1, 2], [-3, 0, 1], [5, 1, 0], [2, -2, 1]],
    "3x5": [[1, 0, 0, 2, 0], [0, 3, 0, 0, -1], [4, 0, -2, 0, 1]],
    "1x4": [[1, 2, 3, 4]],
}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(use_env=False)


def run(*args, env=None):
    result = CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def tagged(image, orientation):
    """``image`` (Pillow) with EXIF ``orientation`` set, as ``save(exif=...)`` takes it."""
    exif = image.getexif()
    exif[ORIENTATION_TAG] = orientation
    return exif.tobytes()


def displayed(path):
    """The pixels of ``path`` as a viewer shows them (Pillow's exif_transpose)."""
    with Image.open(path) as image:
        return np.array(ImageOps.exif_transpose(image))


def stored(path):
    with Image.open(path) as image:
        return np.array(image)


# ---------------------------------------------------------------------------
# the turns themselves


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 3)])
def test_orient_array_turns_as_viewers_do(rng, orientation, shape):
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    image = Image.fromarray(pixels)
    image.info["exif"] = tagged(image, orientation)
    np.testing.assert_array_equal(orient_array(pixels, orientation), np.array(ImageOps.exif_transpose(image)))
    back = orient_array(orient_array(pixels, orientation), inverse_orientation(orientation))
    np.testing.assert_array_equal(back, pixels)


def test_bad_orientation_is_refused():
    for bad in (0, 9, True, "6", None):
        with pytest.raises(ValueError, match="orientation must be an EXIF orientation from 1 to 8"):
            orient_kernel(Kernel([[1.0]]), bad)


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("mode", MODES)
def test_turned_kernel_on_stored_pixels_is_filtering_as_displayed(rng, mode, orientation, name):
    """convolve(S, orient_kernel(K, o)) == T^-1(convolve(T(S), K)), exactly, for
    scipy (float64) and imgconv (float32, integer sums), every border mode."""
    kernel = np.array(KERNELS[name], dtype=np.float64)
    pixels = rng.integers(0, 200, size=(6, 9)).astype(np.float64)
    show, back = (lambda a: orient_array(a, orientation)), (lambda a: orient_array(a, inverse_orientation(orientation)))
    turned = orient_kernel(Kernel(kernel), orientation)
    want = back(scipy_convolve(show(pixels), kernel, mode, cval=7.0))
    np.testing.assert_array_equal(scipy_convolve(pixels, turned.matrix, mode, cval=7.0), want)
    got = imgconv.convolve(pixels.astype(np.float32), turned.matrix, mode=mode, cval=7.0)
    np.testing.assert_array_equal(got, want.astype(np.float32))


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_even_sides_gain_a_zero_where_a_flip_moves_the_centre(orientation):
    """A flip takes an even side's centre n // 2 to n // 2 - 1: one zero before it puts
    it back on imgconv's (and scipy's) centre, so that side grows to n + 1."""
    kernel = Kernel(KERNELS["2x4"])  # even on both sides
    turned = orient_kernel(kernel, orientation)
    transpose, flip_rows, flip_cols = EXIF_ORIENTATIONS[inverse_orientation(orientation)]
    rows, cols = (4, 2) if transpose else (2, 4)
    assert turned.shape == (rows + flip_rows, cols + flip_cols)
    assert np.count_nonzero(turned.matrix) == np.count_nonzero(kernel.matrix)
    assert orient_kernel(kernel, 1) is kernel


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_separable_factors_turn_with_the_matrix(catalog, orientation):
    for flt in (catalog.resolve("gaussian", {"sigma": 1.5}), catalog.resolve("box", {"size": 4})):
        kernel = flt.kernels[0]
        turned = orient_kernel(kernel, orientation)
        assert turned.factors is not None
        np.testing.assert_array_equal(np.outer(*turned.factors), turned.matrix)
        plan = make_plan(turned.matrix, (64, 48), factors=turned.factors)
        assert plan.strategy == make_plan(kernel.matrix, (48, 64), factors=kernel.factors).strategy


# ---------------------------------------------------------------------------
# the pipeline: every orientation, every mode, the fused path, chains, alpha


def _image(pixels, orientation, has_alpha=False):
    """An ImageData as read_image gives it: the stored pixels and their EXIF orientation."""
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    mode = "F" if pixels.dtype == np.float32 else {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    return io.ImageData(np.ascontiguousarray(pixels), mode, has_alpha, "PNG", orientation=orientation)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("mode", MODES)
def test_pipeline_filters_as_displayed_for_every_orientation(rng, catalog, mode, orientation):
    """filter_image on the stored pixels of a tagged image == filtering the displayed
    pixels and turning back: a plain 2x4 kernel (the fused path, uint8), and a chain
    with sobel-x and emboss on dyadic float32 pixels (float32 work, exact sums)."""
    back = inverse_orientation(orientation)
    plain = parse_chain("[1 2 0 -1; 3 -4 1 2]", catalog)
    chain = parse_chain("[1 2 0 -1; 3 -4 1 2],sobel-x,emboss", catalog)
    cases = [
        (plain, rng.integers(0, 256, size=(7, 10, 3), dtype=np.uint8)),
        (chain, (rng.integers(0, 64, size=(7, 10)) / 16).astype(np.float32)),
    ]
    for flt_chain, pixels in cases:
        job = Job(flt_chain, mode=mode, cval=0.25)
        got, _ = filter_image(job, _image(pixels, orientation))
        shown, _ = filter_image(job, _image(orient_array(pixels, orientation), 1))
        np.testing.assert_array_equal(got, orient_array(shown, back))
        # and "stored" is the stored frame, tag or no tag
        as_stored, _ = filter_image(Job(flt_chain, mode=mode, cval=0.25, orientation="stored"), _image(pixels, orientation))
        untagged, _ = filter_image(job, _image(pixels, 1))
        np.testing.assert_array_equal(as_stored, untagged)


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_alpha_and_combined_kernels_as_displayed(rng, catalog, orientation):
    """sobel (two kernels combined by magnitude) on RGBA, premultiplied."""
    pixels = rng.integers(0, 256, size=(6, 9, 4), dtype=np.uint8)
    pixels[..., 3] = rng.choice([0, 128, 255], size=(6, 9))
    job = Job(Chain.of(catalog.resolve("sobel")))
    got, _ = filter_image(job, _image(pixels, orientation, has_alpha=True))
    shown, _ = filter_image(job, _image(orient_array(pixels, orientation), 1, has_alpha=True))
    diff = np.abs(got.astype(int) - orient_array(shown, inverse_orientation(orientation)).astype(int))
    assert diff.max() <= 1  # the magnitude's square root: float32 round-off, order of the sums


def test_job_orientation_is_checked(catalog):
    with pytest.raises(ValueError, match="orientation must be one of displayed, stored"):
        Job(Chain.of(catalog.resolve("blur")), orientation="upright")


# ---------------------------------------------------------------------------
# files: an Orientation-6 phone photo, JPEG and PNG


def _dot_photo(tmp_path, ext, orientation=6):
    """A dark photo with one bright dot, stored sideways (40 wide, 30 high), tagged."""
    pixels = np.full((30, 40, 3), 20, np.uint8)
    pixels[14:17, 19:22] = 250
    image = Image.fromarray(pixels)
    path = tmp_path / f"phone{ext}"
    image.save(path, exif=tagged(image, orientation), **({"quality": 100, "subsampling": 0} if ext == ".jpg" else {}))
    return path


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_motion_blur_angle_0_is_horizontal_as_displayed(tmp_path, ext):
    source = _dot_photo(tmp_path, ext)
    out = tmp_path / "out.png"
    result = run("apply", "motion-blur", "-p", "angle=0", "-p", "length=9", source, out)
    assert result.exit_code == 0, result.output
    with Image.open(out) as written:
        assert written.getexif()[ORIENTATION_TAG] == 6  # the tag is kept: viewers turn the output too
    shown = displayed(out).astype(int)  # as a viewer shows the output
    lit = np.argwhere(shown[..., 0] > shown[..., 0].min() + 5)
    rows, cols = np.ptp(lit[:, 0]) + 1, np.ptp(lit[:, 1]) + 1
    assert cols >= rows + 6, (rows, cols)  # a horizontal streak on screen

    result = run("apply", "motion-blur", "-p", "angle=0", "-p", "length=9", "--orientation", "stored", source, tmp_path / "old.png")
    assert result.exit_code == 0, result.output
    old = displayed(tmp_path / "old.png").astype(int)
    lit = np.argwhere(old[..., 0] > old[..., 0].min() + 5)
    assert np.ptp(lit[:, 0]) >= np.ptp(lit[:, 1]) + 6  # the stored frame's horizontal: vertical on screen


@pytest.mark.parametrize("ext", [".jpg", ".png"])
@pytest.mark.parametrize("name", ["motion-blur", "sobel-x"])
def test_directional_filter_equals_filtering_the_displayed_pixels(tmp_path, rng, ext, name):
    """The output, as displayed, is the displayed input filtered: compared with
    ImageOps.exif_transpose's pixels (written untagged by Pillow) through the same filter."""
    pixels = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    source = tmp_path / f"phone{ext}"
    image.save(source, exif=tagged(image, 6), **({"quality": 100, "subsampling": 0} if ext == ".jpg" else {}))
    upright = tmp_path / "upright.png"
    Image.fromarray(displayed(source)).save(upright)  # the same decoded pixels, turned, no tag
    assert run("apply", name, source, tmp_path / "a.png").exit_code == 0
    assert run("apply", name, upright, tmp_path / "b.png").exit_code == 0
    got = displayed(tmp_path / "a.png").astype(int)  # tagged 6: turned for display
    want = stored(tmp_path / "b.png").astype(int)
    assert got.shape == want.shape == (32, 24, 3)
    assert np.abs(got - want).max() <= (0 if name == "sobel-x" else 1)  # motion weights: float32 sums in another order
    # --orientation stored: the stored pixels filtered as they are (the old behaviour)
    assert run("apply", name, "--orientation", "stored", source, tmp_path / "c.png").exit_code == 0
    plain = tmp_path / "plain.png"
    Image.fromarray(stored(source)).save(plain)
    assert run("apply", name, plain, tmp_path / "d.png").exit_code == 0
    np.testing.assert_array_equal(stored(tmp_path / "c.png"), stored(tmp_path / "d.png"))


def test_batch_filters_as_displayed(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    photo = _dot_photo(source, ".png")
    assert run("batch", "motion-blur", "-p", "angle=0", source, tmp_path / "out", "-j", "1", "-q").exit_code == 0
    assert run("apply", "motion-blur", "-p", "angle=0", photo, tmp_path / "one.png").exit_code == 0
    np.testing.assert_array_equal(stored(tmp_path / "out" / photo.name), stored(tmp_path / "one.png"))
    out = tmp_path / "stored"
    assert run("batch", "motion-blur", "-p", "angle=0", source, out, "-j", "1", "-q", "--orientation", "stored").exit_code == 0
    assert not np.array_equal(stored(out / photo.name), stored(tmp_path / "one.png"))


@pytest.mark.parametrize("orientation", ["displayed", "stored"])
def test_gallery_tiles_are_upright(tmp_path, monkeypatch, orientation):
    """The tiles are new images without the tag: turned as a viewer shows the photo."""
    source = _dot_photo(tmp_path, ".png", orientation=8)
    tiles = []
    real = plot.contact_sheet

    def spy(found, **options):
        tiles.extend(found)
        return real(found, **options)

    monkeypatch.setattr(plot, "contact_sheet", spy)
    result = run("gallery", source, tmp_path / "sheet.png", "-k", "identity,sobel-x", "--size", "64", "--orientation", orientation)
    assert result.exit_code == 0, result.output
    original = tiles[0][1]
    want = displayed(source) if orientation == "displayed" else stored(source)
    np.testing.assert_array_equal(original, want)  # no scaling at this size: exactly the pixels
    assert original.shape[:2] == ((40, 30) if orientation == "displayed" else (30, 40))
