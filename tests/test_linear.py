"""--linear: sRGB decoded to linear light before filtering and encoded after, at
float precision; ICC profiles whose tone curve is not sRGB's are refused."""

import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import imgconv
from imgconv.kernels import load_catalog
from imgconv.chain import Chain, apply_chain
from imgconv.cli import cli
from imgconv.colour import check_srgb_profile, linear_to_srgb, profile_description, srgb_to_linear

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


# ---------------------------------------------------------------------------
# the transfer functions


def test_known_values():
    np.testing.assert_allclose(srgb_to_linear([0.0, 0.04045, 0.5, 1.0]), [0.0, 0.04045 / 12.92, 0.21404114, 1.0], rtol=1e-6)
    np.testing.assert_allclose(linear_to_srgb([0.0, 0.0031308, 0.21404114, 1.0]), [0.0, 0.0031308 * 12.92, 0.5, 1.0], rtol=1e-6)
    # Beyond 0..1 the curve continues, mirrored through zero.
    np.testing.assert_allclose(srgb_to_linear([-0.5, 1.2]), [-0.21404114, 1.2**2.4 * ((1 + 0.055 / 1.2) / 1.055) ** 2.4], rtol=1e-6)
    assert srgb_to_linear(np.float32(0.5)).dtype == np.float32


@pytest.mark.parametrize("top", [255, 65535])
def test_round_trip_is_exact_for_integer_images(top):
    levels = np.arange(top + 1) / top
    back = np.rint(linear_to_srgb(srgb_to_linear(levels.astype(np.float32))) * top)
    np.testing.assert_array_equal(back, np.arange(top + 1))


@pytest.mark.parametrize("dtype, channels", [(np.uint8, 3), (np.uint16, None), (np.uint8, 4)])
def test_identity_in_linear_light_changes_nothing(rng, dtype, channels):
    top = np.iinfo(dtype).max
    shape = (9, 11) if channels is None else (9, 11, channels)
    image = rng.integers(0, top + 1, shape, dtype=dtype)
    identity = load_catalog(use_env=False).resolve("identity")
    np.testing.assert_array_equal(apply_chain(image, Chain((identity,), linear=True)), image)


def test_a_blur_in_linear_light_does_not_darken_the_edge():
    red_green = np.zeros((8, 16, 3), np.uint8)
    red_green[:, :8, 0] = 255
    red_green[:, 8:, 1] = 255
    box = load_catalog(use_env=False).resolve("box", {"size": 2})
    plain = imgconv.apply_filter(red_green, box)
    linear = apply_chain(red_green, Chain((box,), linear=True))
    # The one column that mixes the two: half red, half green light is
    # sRGB(0.5) = 188 in each channel, not the dark 128 of mixing stored values.
    (mixed,) = np.flatnonzero((plain[0, :, 0] > 0) & (plain[0, :, 1] > 0))
    assert tuple(plain[0, mixed]) == (128, 128, 0)
    assert tuple(linear[0, mixed]) == (188, 188, 0)
    assert (linear[:, 2:6] == red_green[:, 2:6]).all()


def test_linear_light_with_strength_and_float_images(rng):
    image = rng.random((10, 10)).astype(np.float32)
    blur = load_catalog(use_env=False).resolve("blur")
    np.testing.assert_allclose(apply_chain(image, Chain((blur,), linear=True, strength=0.0)), image, atol=1e-6)
    out = apply_chain(image, Chain((blur,), linear=True))
    expected = linear_to_srgb(imgconv.apply_filter(srgb_to_linear(image), blur))
    np.testing.assert_allclose(out, expected, atol=1e-6)


# ---------------------------------------------------------------------------
# ICC profiles


def make_profile(space=b"RGB ", curve=("gamma", 2.2), name="Test profile", version=0x02100000):
    """A minimal ICC profile: header, 'desc' and the tone curves."""

    def curv(values):
        return b"curv" + b"\0" * 4 + struct.pack(">I", len(values)) + b"".join(struct.pack(">H", v) for v in values)

    kind, value = curve if curve else (None, None)
    if kind == "gamma":
        trc = curv([round(value * 256)])
    elif kind == "table":
        trc = curv([round(v * 65535) for v in value])
    elif kind == "para":
        trc = b"para" + b"\0" * 4 + struct.pack(">HH", len(value) == 5 and 3 or 0, 0)
        trc += b"".join(struct.pack(">i", round(p * 65536)) for p in value)
    else:
        trc = None
    text = name.encode("ascii")
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(text) + 1) + text + b"\0" + b"\0" * 79
    signatures = [b"rTRC", b"gTRC", b"bTRC"] if space == b"RGB " else [b"kTRC"]
    tags = [(b"desc", desc)] + ([(s, trc) for s in signatures] if trc else [])
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    directory, data = b"", b""
    for signature, body in tags:
        body += b"\0" * (-len(body) % 4)
        directory += struct.pack(">4sII", signature, offset + len(data), len(body))
        data += body
    size = 128 + table_size + len(data)
    header = struct.pack(">I4sI4s4s4s", size, b"none", version, b"mntr", space, b"XYZ ") + b"\0" * 12 + b"acsp"
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + directory + data


SRGB_PARA = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)


def test_profiles_with_the_srgb_curve_pass():
    from PIL import ImageCms

    lcms = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert check_srgb_profile(lcms) is None and "sRGB" in profile_description(lcms)
    assert check_srgb_profile(make_profile(curve=("para", SRGB_PARA), name="Display P3")) is None
    assert check_srgb_profile(make_profile(b"GRAY", ("para", SRGB_PARA))) is None
    table = srgb_to_linear(np.linspace(0, 1, 1024)).astype(float)
    assert check_srgb_profile(make_profile(curve=("table", table))) is None
    assert check_srgb_profile(make_profile(curve=None, name="sRGB v4 ICC preference")) is None


@pytest.mark.parametrize(
    "profile, message",
    [
        (make_profile(curve=("gamma", 2.2), name="Adobe RGB (1998)"), "'Adobe RGB (1998)' has a tone curve other than sRGB's (gamma 2.2)"),
        (make_profile(b"GRAY", ("gamma", 1.8)), "gamma 1.8"),
        (make_profile(curve=("table", np.linspace(0, 1, 256))), "a 256-entry table"),
        (make_profile(curve=("gamma", 1.0)), "gamma 1"),
        (make_profile(b"CMYK", None), "for the CMYK colour space"),
        (make_profile(curve=None, name="Some LUT profile"), "has no tone curve imgconv can read"),
        (b"\0" * 200, "malformed"),
    ],
)
def test_other_profiles_are_named(profile, message):
    problem = check_srgb_profile(profile)
    assert problem is not None and message in problem


def test_non_srgb_input_is_refused_with_linear(tmp_path):
    source = tmp_path / "adobe.png"
    Image.open(SAMPLES / "chelsea.png").resize((40, 30)).save(source, icc_profile=make_profile(name="Adobe RGB (1998)"))
    out = tmp_path / "out.png"
    result = run("apply", "blur", source, out, "--linear")
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "cannot filter" in result.output and "Adobe RGB (1998)" in result.output and "--linear" in result.output
    assert not out.exists()
    assert run("apply", "blur", source, out).exit_code == 0  # without --linear it is filtered as stored


def test_srgb_input_with_linear_keeps_its_profile(tmp_path):
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = tmp_path / "srgb.png"
    Image.open(SAMPLES / "chelsea.png").resize((40, 30)).save(source, icc_profile=profile)
    out = tmp_path / "out.png"
    result = run("apply", "gaussian:sigma=1.5", source, out, "--linear")
    assert result.exit_code == 0, result.output
    assert Image.open(out).info.get("icc_profile") == profile


@pytest.mark.slow
def test_batch_with_linear_fails_only_the_misread_file(tmp_path):
    (tmp_path / "in").mkdir()
    small = Image.open(SAMPLES / "camera.png").resize((32, 24))
    small.save(tmp_path / "in" / "plain.png")
    small.save(tmp_path / "in" / "gamma18.png", icc_profile=make_profile(b"GRAY", ("gamma", 1.8), name="Gray Gamma 1.8"))
    result = run("batch", "blur", tmp_path / "in", tmp_path / "out", "--linear", "-j", "1")
    assert result.exit_code == 1
    assert "gamma18.png" in result.output and "Gray Gamma 1.8" in result.output and "1 done" in result.output
