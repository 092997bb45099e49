"""imgconv.io: reading, writing, modes, bit depth, metadata, errors, atomic writes.

Images are made here with numpy and Pillow (random content from the seeded
``rng`` fixture), so a failure names exactly what broke.
"""

import io as bytes_io
import os
import stat
import struct
import threading
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from imgconv import io, memory
from imgconv.errors import ImageError, ImgconvWarning

SAMPLES = Path(__file__).resolve().parent.parent / "samples"

# ---------------------------------------------------------------------------
# helpers


def random_pixels(rng, layout, shape=(23, 37)):
    """Random pixels in one of the canonical layouts (odd sizes: no row padding hides bugs)."""
    channels = {"L": 0, "LA": 2, "RGB": 3, "RGBA": 4, "I;16": 0, "F": 0}[layout]
    full = shape + ((channels,) if channels else ())
    if layout == "I;16":
        return rng.integers(0, 65536, size=full, dtype=np.uint16)
    if layout == "F":
        return rng.normal(0.3, 2.0, size=full).astype(np.float32)
    return rng.integers(0, 256, size=full, dtype=np.uint8)


def check_canonical(data):
    """What every ImageData promises."""
    assert isinstance(data, io.ImageData)
    assert data.pixels.flags.c_contiguous
    assert data.pixels.flags.writeable
    assert data.pixels.dtype.isnative
    expected = {
        "L": (2, None, np.uint8),
        "LA": (3, 2, np.uint8),
        "RGB": (3, 3, np.uint8),
        "RGBA": (3, 4, np.uint8),
        "I;16": (2, None, np.uint16),
        "F": (2, None, np.float32),
        # the codec's (16-bit and float colour and grey + alpha)
        "LA;16": (3, 2, np.uint16),
        "RGB;16": (3, 3, np.uint16),
        "RGBA;16": (3, 4, np.uint16),
        "LA;F": (3, 2, np.float32),
        "RGB;F": (3, 3, np.float32),
        "RGBA;F": (3, 4, np.float32),
    }[data.mode]
    ndim, channels, dtype = expected
    assert data.pixels.ndim == ndim
    if channels:
        assert data.pixels.shape[2] == channels
    assert data.pixels.dtype == dtype
    assert data.has_alpha == (data.mode.split(";")[0] in ("LA", "RGBA"))


def read(path):
    data = io.read_image(path)
    check_canonical(data)
    return data


@pytest.fixture
def strict():
    """Turn any ImgconvWarning into an error: for operations that must lose nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImgconvWarning)
        yield


def pillow_save(path, image, **params):
    image.save(path, **params)
    return path


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def handmade_png(array, color_type, bit_depth=16, width=None, height=None, idat=True):
    """A PNG written without Pillow: for what Pillow cannot write (16-bit colour, huge headers)."""
    h, w = array.shape[:2] if array is not None else (height, width)
    ihdr = struct.pack(">IIBBBBB", width or w, height or h, bit_depth, color_type, 0, 0, 0)
    body = chunk(b"IHDR", ihdr)
    if idat:
        sample = ">u2" if bit_depth == 16 else "u1"
        raw = b"".join(b"\x00" + array[y].astype(sample).tobytes() for y in range(h))
        body += chunk(b"IDAT", zlib.compress(raw))
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b"")


_SRGB_PROFILE = []


def srgb_profile():
    # Made once: LittleCMS stamps each new profile with the current time, so two
    # made a second apart differ (and a comparison across them fails by chance).
    if not _SRGB_PROFILE:
        _SRGB_PROFILE.append(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    return _SRGB_PROFILE[0]


def grey_profile():
    """An ICC profile whose header says GRAY (enough for the colour-space check)."""
    profile = bytearray(srgb_profile())
    profile[16:20] = b"GRAY"
    return bytes(profile)


XMP = (
    b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:source="imgconv-test-marker"/>'
    b"</rdf:RDF></x:xmpmeta><?xpacket end=\"w\"?>"
)


def make_exif():
    exif = Image.Exif()
    exif[0x010F] = "imgconv-test-make"  # Make
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    exif.get_ifd(0x8769)[0x9003] = "2020:01:02 03:04:05"  # DateTimeOriginal
    return exif.tobytes()


def assert_exif_tags(exif):
    """The three tags of make_exif, read back by Pillow from raw EXIF bytes."""
    assert exif is not None and exif.startswith(b"Exif\x00\x00")
    parsed = Image.Exif()
    parsed.load(exif)
    assert parsed[0x010F] == "imgconv-test-make"
    assert parsed[0x0112] == 6
    assert parsed.get_ifd(0x8769)[0x9003] == "2020:01:02 03:04:05"


def one_line_error(excinfo, path):
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(path) in message
    return message


# ---------------------------------------------------------------------------
# formats and paths


@pytest.mark.parametrize(
    "name, fmt",
    [("a.png", "PNG"), ("a.PNG", "PNG"), ("b.jpg", "JPEG"), ("b.JPeG", "JPEG"), ("c.tif", "TIFF"),
     ("c.tiff", "TIFF"), ("d.bmp", "BMP"), ("e.webp", "WEBP"), ("f.gif", "GIF"), ("dir.x/f.gif", "GIF")],
)
def test_output_format(name, fmt):
    assert io.output_format(name) == fmt
    assert io.output_format(Path(name)) == fmt


def test_supported_formats_table():
    assert set(io.SUPPORTED_FORMATS) == {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif"}
    assert all(ext == ext.lower() and ext.startswith(".") for ext in io.SUPPORTED_FORMATS)
    assert set(io.SUPPORTED_FORMATS.values()) == {"PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF"}


def test_output_format_unknown_extension():
    with pytest.raises(ImageError) as excinfo:
        io.output_format("x.foo")
    message = one_line_error(excinfo, "x.foo")
    assert message.startswith("cannot write 'x.foo': unknown output extension '.foo' (use one of .bmp, .gif,")
    assert ".webp" in message


def test_output_format_missing_extension():
    with pytest.raises(ImageError, match=r"cannot write 'out/noext': no file extension .*\.png"):
        io.output_format("out/noext")


@pytest.mark.parametrize(
    "name, expected",
    [("a.png", True), ("A.JPG", True), ("x/y.Tiff", True), ("z.webp", True), ("notes.txt", False),
     ("README", False), ("archive.png.zip", False), (".a.png.imgconv-tmp-0a1b2c3d.png", False)],
)
def test_is_image_path(name, expected):
    assert io.is_image_path(name) is expected
    assert io.is_image_path(Path(name)) is expected


# ---------------------------------------------------------------------------
# round trips: every format with every layout it can hold, exactly

LOSSLESS = [
    (".png", "L"), (".png", "LA"), (".png", "RGB"), (".png", "RGBA"), (".png", "I;16"),
    (".tif", "L"), (".tif", "LA"), (".tif", "RGB"), (".tif", "RGBA"), (".tif", "I;16"), (".tif", "F"),
    (".tiff", "RGB"),
    (".bmp", "L"), (".bmp", "RGB"),
    (".webp", "RGB"), (".webp", "RGBA"),
    (".gif", "L"),
]


@pytest.mark.parametrize("ext, layout", LOSSLESS)
def test_lossless_round_trip(tmp_path, rng, strict, ext, layout):
    pixels = random_pixels(rng, layout)
    path = tmp_path / f"image{ext}"
    io.write_image(path, pixels)
    data = read(path)
    assert data.mode == layout
    assert data.format == io.SUPPORTED_FORMATS[ext]
    np.testing.assert_array_equal(data.pixels, pixels)
    # and once more through the ImageData: nothing drifts
    io.write_image(path, data.pixels, like=data)
    np.testing.assert_array_equal(read(path).pixels, pixels)


@pytest.mark.parametrize("layout, expected", [("L", "RGB"), ("LA", "RGBA")])
def test_webp_holds_grey_as_rgb(tmp_path, rng, strict, layout, expected):
    """WebP has no grey: the same values come back in every colour channel."""
    pixels = random_pixels(rng, layout)
    path = tmp_path / "grey.webp"
    io.write_image(path, pixels)
    data = read(path)
    assert data.mode == expected
    grey = pixels if layout == "L" else pixels[..., 0]
    for c in range(3):
        np.testing.assert_array_equal(data.pixels[..., c], grey)
    if layout == "LA":
        np.testing.assert_array_equal(data.pixels[..., 3], pixels[..., 1])


def test_gif_round_trip_of_few_colours(tmp_path, rng, strict):
    palette = rng.integers(0, 256, size=(200, 3), dtype=np.uint8)
    pixels = palette[rng.integers(0, 200, size=(21, 34))]
    path = tmp_path / "few.gif"
    io.write_image(path, pixels)
    data = read(path)
    assert data.mode == "RGB"
    np.testing.assert_array_equal(data.pixels, pixels)


def test_gif_round_trip_with_transparency(tmp_path, rng, strict):
    palette = rng.integers(0, 256, size=(255, 3), dtype=np.uint8)
    rgb = palette[rng.integers(0, 255, size=(19, 28))]
    alpha = np.where(rng.random((19, 28)) < 0.3, 0, 255).astype(np.uint8)
    pixels = np.dstack([rgb, alpha])
    path = tmp_path / "holes.gif"
    io.write_image(path, pixels)
    data = read(path)
    assert data.mode == "RGBA"
    np.testing.assert_array_equal(data.pixels[..., 3], alpha)
    opaque = alpha == 255
    np.testing.assert_array_equal(data.pixels[..., :3][opaque], rgb[opaque])


@pytest.mark.parametrize("layout", ["L", "RGB"])
def test_jpeg_round_trip_is_close(tmp_path, strict, layout):
    source = read(SAMPLES / ("camera.png" if layout == "L" else "chelsea.png"))
    assert source.mode == layout
    path = tmp_path / "photo.jpg"
    io.write_image(path, source.pixels, like=source)
    data = read(path)
    assert data.mode == layout and data.format == "JPEG"
    error = np.abs(data.pixels.astype(np.int16) - source.pixels.astype(np.int16))
    assert error.mean() < 2.5  # quality 95, not Pillow's default 75


@pytest.mark.parametrize("sample", ["astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg"])
def test_samples_read(sample):
    data = read(SAMPLES / sample)
    assert data.pixels.shape[:2] == Image.open(SAMPLES / sample).size[::-1]


# ---------------------------------------------------------------------------
# 16 bit and float


def test_16bit_png_stays_16bit(tmp_path, rng, strict):
    # values that are not multiples of 257: a trip through 8 bits would change them
    pixels = rng.integers(0, 65536, size=(17, 29), dtype=np.uint16)
    pixels[0, :6] = [0, 1, 255, 256, 65534, 65535]
    assert np.count_nonzero(pixels % 257) > pixels.size // 2
    path = tmp_path / "deep.png"
    io.write_image(path, pixels)
    with Image.open(path) as im:  # the file itself is 16-bit
        assert im.mode == "I;16"
    data = read(path)
    assert data.mode == "I;16" and data.pixels.dtype == np.uint16
    np.testing.assert_array_equal(data.pixels, pixels)


def test_16bit_grey_png_from_another_writer(tmp_path, rng):
    pixels = rng.integers(0, 65536, size=(9, 13), dtype=np.uint16)
    path = tmp_path / "other.png"
    path.write_bytes(handmade_png(pixels, color_type=0))
    data = read(path)
    assert data.mode == "I;16"
    np.testing.assert_array_equal(data.pixels, pixels)


def test_big_endian_16bit_tiff(tmp_path, rng, strict):
    pixels = rng.integers(0, 65536, size=(11, 7), dtype=np.uint16)
    path = pillow_save(tmp_path / "be.tif", Image.fromarray(pixels.astype(">u2")))
    with Image.open(path) as im:
        assert im.mode == "I;16B"
    data = read(path)
    assert data.mode == "I;16"
    np.testing.assert_array_equal(data.pixels, pixels)


def test_mode_i_within_16_bits_is_uint16(tmp_path, rng, strict):
    pixels = rng.integers(0, 65536, size=(8, 9)).astype(np.int32)
    path = pillow_save(tmp_path / "int.tif", Image.fromarray(pixels))
    with Image.open(path) as im:
        assert im.mode == "I"
    data = read(path)
    assert data.mode == "I;16" and data.pixels.dtype == np.uint16
    np.testing.assert_array_equal(data.pixels, pixels)


def test_mode_i_outside_16_bits_is_float(tmp_path):
    pixels = np.array([[-5, 0, 70000], [1, 2, 3]], dtype=np.int32)
    path = pillow_save(tmp_path / "wide.tif", Image.fromarray(pixels))
    with pytest.warns(ImgconvWarning, match="outside 0..65535 are read as 32-bit float"):
        data = read(path)
    assert data.mode == "F"
    np.testing.assert_array_equal(data.pixels, pixels.astype(np.float32))


def test_float_tiff_round_trip(tmp_path, rng, strict):
    pixels = random_pixels(rng, "F")
    pixels[0, :4] = [-1.5, 0.0, 1.0, 1e30]  # floats stay floats: no clipping
    path = tmp_path / "float.tiff"
    io.write_image(path, pixels)
    data = read(path)
    assert data.mode == "F" and data.pixels.dtype == np.float32
    np.testing.assert_array_equal(data.pixels, pixels)


# These three asserted the old 8-bit cut (16-bit colour read and written at 8 bits,
# with a warning): the defect of issue 9.  16-bit colour is now kept exactly;
# tests/test_io_deep.py checks it against files of other writers.


def test_16bit_rgb_png_is_read_exactly(tmp_path, rng, strict):
    pixels = rng.integers(0, 65536, size=(6, 5, 3), dtype=np.uint16)
    path = tmp_path / "rgb16.png"
    path.write_bytes(handmade_png(pixels, color_type=2))
    data = read(path)
    assert data.mode == "RGB;16" and data.pixels.dtype == np.uint16
    np.testing.assert_array_equal(data.pixels, pixels)


def test_16bit_grey_alpha_png_is_read_as_la16(tmp_path, rng, strict):
    pixels = rng.integers(0, 65536, size=(6, 5, 2), dtype=np.uint16)
    path = tmp_path / "la16.png"
    path.write_bytes(handmade_png(pixels, color_type=4))
    data = read(path)
    assert data.mode == "LA;16" and data.has_alpha
    np.testing.assert_array_equal(data.pixels, pixels)


def test_16bit_colour_written_as_16bit(tmp_path, rng, strict):
    pixels = rng.integers(0, 65536, size=(7, 6, 3), dtype=np.uint16)
    path = tmp_path / "rgb16.png"
    io.write_image(path, pixels)
    data = read(path)
    assert data.pixels.dtype == np.uint16
    np.testing.assert_array_equal(data.pixels, pixels)


@pytest.mark.parametrize("ext", [".jpg", ".bmp", ".webp", ".gif"])
def test_16bit_grey_to_8bit_format(tmp_path, rng, ext):
    pixels = rng.integers(0, 65536, size=(7, 6), dtype=np.uint16)
    pixels[0, :4] = [0, 128, 129, 65535]
    path = tmp_path / f"grey{ext}"
    with pytest.warns(ImgconvWarning, match="cannot hold 16-bit samples; written as 8-bit"):
        io.write_image(path, pixels)
    data = read(path)
    assert data.pixels.dtype == np.uint8
    if ext != ".jpg":
        grey = data.pixels if data.pixels.ndim == 2 else data.pixels[..., 0]
        np.testing.assert_array_equal(grey, np.round(pixels / 257).astype(np.uint8))
        assert list(grey[0, :4]) == [0, 0, 1, 255]


def test_float_grey_to_png_is_16bit(tmp_path):
    pixels = np.array([[0.0, 0.5, 1.0, -0.25], [1.5, np.nan, 0.25, 1 / 65535]], dtype=np.float32)
    path = tmp_path / "float.png"
    with pytest.warns(ImgconvWarning, match=r"PNG cannot hold floating-point samples; written as 16-bit .*3 values outside"):
        io.write_image(path, pixels)
    data = read(path)
    assert data.mode == "I;16"
    np.testing.assert_array_equal(data.pixels, [[0, 32768, 65535, 0], [65535, 0, 16384, 1]])


@pytest.mark.parametrize("ext", [".jpg"])
def test_float_colour_to_8bit(tmp_path, rng, ext):
    # PNG and TIFF were here too, asserting the old 8-bit cut (issue 9's defect):
    # float colour now goes to 16-bit PNG and to float TIFF (the two tests below).
    pixels = rng.random((5, 8, 3)).astype(np.float32)
    path = tmp_path / f"float{ext}"
    with pytest.warns(ImgconvWarning, match="floating-point .*written as 8-bit"):
        io.write_image(path, pixels)
    data = read(path)
    assert data.mode == "RGB"
    if ext != ".jpg":
        np.testing.assert_array_equal(data.pixels, np.rint(pixels.astype(np.float64) * 255).astype(np.uint8))


def test_float_colour_to_png_is_16bit(tmp_path, rng):
    pixels = rng.random((5, 8, 3)).astype(np.float32)
    path = tmp_path / "float.png"
    with pytest.warns(ImgconvWarning, match="PNG cannot hold floating-point samples; written as 16-bit"):
        io.write_image(path, pixels)
    data = read(path)
    assert data.mode == "RGB;16"
    np.testing.assert_array_equal(data.pixels, np.rint(pixels.astype(np.float64) * 65535).astype(np.uint16))


def test_float_colour_tiff_round_trip(tmp_path, rng, strict):
    pixels = rng.normal(0.3, 2.0, size=(5, 8, 3)).astype(np.float32)  # floats stay floats: no clipping
    path = tmp_path / "float.tif"
    io.write_image(path, pixels)
    data = read(path)
    assert data.mode == "RGB;F"
    np.testing.assert_array_equal(data.pixels, pixels)


# ---------------------------------------------------------------------------
# modes Pillow opens that are expanded


def test_palette_expanded_to_rgb(tmp_path, rng, strict):
    palette = rng.integers(0, 256, size=(256, 3), dtype=np.uint8)
    index = rng.integers(0, 256, size=(12, 15), dtype=np.uint8)
    image = Image.fromarray(index)
    image.putpalette(palette.ravel().tolist())
    path = pillow_save(tmp_path / "pal.png", image)
    data = read(path)
    assert data.mode == "RGB"
    np.testing.assert_array_equal(data.pixels, palette[index])


@pytest.mark.parametrize("ext", [".png", ".gif"])
def test_palette_with_transparency_expanded_to_rgba(tmp_path, rng, strict, ext):
    palette = rng.integers(0, 256, size=(16, 3), dtype=np.uint8)
    index = rng.integers(0, 16, size=(10, 11), dtype=np.uint8)
    image = Image.fromarray(index)
    image.putpalette(palette.ravel().tolist())
    path = pillow_save(tmp_path / f"pal{ext}", image, transparency=3)
    data = read(path)
    assert data.mode == "RGBA" and data.has_alpha
    np.testing.assert_array_equal(data.pixels[..., 3], np.where(index == 3, 0, 255))
    opaque = index != 3
    np.testing.assert_array_equal(data.pixels[..., :3][opaque], palette[index][opaque])


def test_palette_with_partial_alpha(tmp_path, strict):
    image = Image.fromarray(np.array([[0, 1], [2, 1]], dtype=np.uint8))
    image.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90])
    path = pillow_save(tmp_path / "trns.png", image, transparency=bytes([255, 128, 0]))
    data = read(path)
    assert data.mode == "RGBA"
    np.testing.assert_array_equal(data.pixels[..., 3], [[255, 128], [0, 128]])


def test_grey_colour_key_becomes_alpha(tmp_path, strict):
    pixels = np.array([[0, 7, 255], [7, 7, 1]], dtype=np.uint8)
    path = pillow_save(tmp_path / "key.png", Image.fromarray(pixels), transparency=7)
    data = read(path)
    assert data.mode == "LA"
    np.testing.assert_array_equal(data.pixels[..., 0], pixels)
    np.testing.assert_array_equal(data.pixels[..., 1], np.where(pixels == 7, 0, 255))


def test_one_bit_becomes_l(tmp_path, strict):
    bits = np.array([[True, False, True], [False, False, True]])
    path = pillow_save(tmp_path / "bits.png", Image.fromarray(bits))
    with Image.open(path) as im:
        assert im.mode == "1"
    data = read(path)
    assert data.mode == "L"
    np.testing.assert_array_equal(data.pixels, np.where(bits, 255, 0))


def test_gif_first_frame(tmp_path, strict):
    frames = [Image.new("RGB", (6, 4), colour) for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    with Image.open(path) as im:
        assert im.n_frames == 3
    data = read(path)
    assert data.mode == "RGB" and data.format == "GIF"
    assert (data.pixels == [255, 0, 0]).all()


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = pillow_save(tmp_path / "cmyk.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0)), quality=100)
    with pytest.warns(ImgconvWarning, match="CMYK converted to RGB"):
        data = read(path)
    assert data.mode == "RGB"
    assert np.abs(data.pixels.astype(int) - [255, 0, 0]).max() <= 3


def test_rgba_and_la_read(tmp_path, rng, strict):
    for layout in ("LA", "RGBA"):
        pixels = random_pixels(rng, layout)
        path = pillow_save(tmp_path / f"{layout}.png", Image.fromarray(pixels))
        data = read(path)
        assert data.mode == layout and data.has_alpha
        np.testing.assert_array_equal(data.pixels, pixels)


# ---------------------------------------------------------------------------
# what formats cannot hold


@pytest.mark.parametrize("ext, layout, expected", [(".jpg", "RGBA", "RGB"), (".jpg", "LA", "L"), (".bmp", "RGBA", "RGB"), (".bmp", "LA", "L")])
def test_alpha_dropped_with_a_warning(tmp_path, rng, ext, layout, expected):
    pixels = random_pixels(rng, layout)
    path = tmp_path / f"alpha{ext}"
    with pytest.warns(ImgconvWarning, match="cannot hold transparency; the alpha channel was dropped"):
        io.write_image(path, pixels)
    data = read(path)
    assert data.mode == expected
    if ext == ".bmp":
        np.testing.assert_array_equal(data.pixels, pixels[..., :-1] if layout == "RGBA" else pixels[..., 0])


def test_gif_quantises_many_colours_with_a_warning(tmp_path, rng):
    pixels = random_pixels(rng, "RGB", shape=(40, 40))
    path = tmp_path / "many.gif"
    with pytest.warns(ImgconvWarning, match=r"GIF holds at most 256 colours; \d+ colours were quantised"):
        io.write_image(path, pixels)
    data = read(path)
    assert data.mode == "RGB" and data.pixels.shape == pixels.shape
    assert len(np.unique(data.pixels.reshape(-1, 3), axis=0)) <= 256


def test_gif_partial_alpha_thresholded(tmp_path):
    pixels = np.zeros((2, 3, 4), np.uint8)
    pixels[..., 0] = 200
    pixels[..., 3] = [[0, 100, 127], [128, 200, 255]]
    path = tmp_path / "soft.gif"
    with pytest.warns(ImgconvWarning, match="partial alpha was thresholded at 128"):
        io.write_image(path, pixels)
    data = read(path)
    np.testing.assert_array_equal(data.pixels[..., 3], [[0, 0, 0], [255, 255, 255]])


@pytest.mark.parametrize(
    "pixels, problem",
    [
        (np.zeros((4, 4), np.float64), "dtype"),
        (np.zeros((4, 4), np.int32), "dtype"),
        (np.zeros((4, 4, 5), np.uint8), "shape"),
        (np.zeros((4,), np.uint8), "shape"),
        (np.zeros((0, 4), np.uint8), "empty"),
        ([[1, 2], [3, 4]], "numpy array"),
    ],
)
def test_write_rejects_bad_pixels(tmp_path, pixels, problem):
    with pytest.raises(ValueError, match=problem):
        io.write_image(tmp_path / "bad.png", pixels)
    assert list(tmp_path.iterdir()) == []


def test_single_channel_3d_is_grey(tmp_path, rng, strict):
    pixels = random_pixels(rng, "L")
    io.write_image(tmp_path / "g.png", pixels[..., None])
    np.testing.assert_array_equal(read(tmp_path / "g.png").pixels, pixels)


def test_non_contiguous_pixels(tmp_path, rng, strict):
    pixels = random_pixels(rng, "RGB", shape=(30, 40))[::2, ::-3]
    io.write_image(tmp_path / "view.png", pixels)
    np.testing.assert_array_equal(read(tmp_path / "view.png").pixels, pixels)


# ---------------------------------------------------------------------------
# metadata


@pytest.fixture
def tagged_jpeg(tmp_path, rng):
    """A JPEG with EXIF, an sRGB profile, XMP and dpi; wider than tall (rotation would show)."""
    pixels = random_pixels(rng, "RGB", shape=(8, 16))
    path = tmp_path / "tagged.jpg"
    Image.fromarray(pixels).save(path, exif=make_exif(), icc_profile=srgb_profile(), dpi=(300, 150), xmp=XMP)
    return path


def test_metadata_read(tagged_jpeg):
    data = read(tagged_jpeg)
    assert data.pixels.shape == (8, 16, 3)  # EXIF orientation is not applied
    assert_exif_tags(data.exif)
    assert data.icc_profile == srgb_profile()
    assert data.xmp is not None and b"imgconv-test-marker" in data.xmp
    assert data.dpi == (300.0, 150.0)


@pytest.mark.parametrize("ext, has_dpi", [(".png", True), (".jpg", True), (".tif", True), (".webp", False)])
def test_metadata_carried(tmp_path, tagged_jpeg, strict, ext, has_dpi):
    source = read(tagged_jpeg)
    path = tmp_path / f"out{ext}"
    io.write_image(path, source.pixels, like=source)
    data = read(path)
    assert data.pixels.shape == (8, 16, 3)
    assert_exif_tags(data.exif)
    assert data.icc_profile == source.icc_profile
    assert data.xmp is not None and b"imgconv-test-marker" in data.xmp
    assert data.dpi == ((300.0, 150.0) if has_dpi else None)
    with Image.open(path) as im:  # and other readers see it where they look for it
        assert im.getexif()[0x010F] == "imgconv-test-make"
        assert im.info["icc_profile"] == source.icc_profile


def test_metadata_survives_a_chain(tmp_path, tagged_jpeg, strict):
    data = read(tagged_jpeg)
    for name in ("a.tif", "b.png", "c.webp", "d.jpg", "e.tif", "f.jpg"):
        io.write_image(tmp_path / name, data.pixels, like=data)
        data = read(tmp_path / name)
        assert_exif_tags(data.exif)
        assert b"imgconv-test-marker" in data.xmp
        assert data.icc_profile == srgb_profile()


def test_tiff_exif_leaves_out_layout_tags(tmp_path, rng, strict):
    pixels = random_pixels(rng, "RGBA")
    path = pillow_save(tmp_path / "cam.tif", Image.fromarray(pixels), exif=make_exif())
    data = read(path)
    assert_exif_tags(data.exif)
    parsed = Image.Exif()
    parsed.load(data.exif)
    assert not {256, 257, 258, 273, 277, 279, 338} & set(parsed)
    # written as a grey TIFF, it must not claim four samples or RGB photometry
    grey = pixels[..., 0]
    io.write_image(tmp_path / "grey.tif", grey, like=data)
    again = read(tmp_path / "grey.tif")
    np.testing.assert_array_equal(again.pixels, grey)
    assert_exif_tags(again.exif)


def test_png_dpi_snapped_to_whole_numbers(tmp_path, strict):
    path = pillow_save(tmp_path / "dpi.png", Image.new("L", (3, 3)), dpi=(300, 72))
    with Image.open(path) as im:
        assert im.info["dpi"] != (300, 72)  # pHYs holds dots per metre
    assert read(path).dpi == (300.0, 72.0)


def test_icc_profile_dropped_for_grey_output(tmp_path, tagged_jpeg):
    source = read(tagged_jpeg)
    grey = source.pixels[..., 0].copy()
    path = tmp_path / "grey.png"
    with pytest.warns(ImgconvWarning, match="the RGB ICC profile does not fit the grey output; it was dropped") as record:
        io.write_image(path, grey, like=source)
    assert len(record) == 1
    data = read(path)
    assert data.icc_profile is None
    assert_exif_tags(data.exif)  # everything else still carried


def test_grey_profile_dropped_for_colour_output_kept_for_grey(tmp_path, rng):
    like = io.ImageData(random_pixels(rng, "L"), "L", False, "PNG", icc_profile=grey_profile())
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImgconvWarning)
        io.write_image(tmp_path / "grey.png", like.pixels, like=like)
    assert read(tmp_path / "grey.png").icc_profile == grey_profile()
    with pytest.warns(ImgconvWarning, match="the grey ICC profile does not fit the RGB output"):
        io.write_image(tmp_path / "rgb.png", random_pixels(rng, "RGB"), like=like)
    assert read(tmp_path / "rgb.png").icc_profile is None


def test_malformed_icc_profile_dropped(tmp_path, rng):
    like = io.ImageData(random_pixels(rng, "RGB"), "RGB", False, icc_profile=b"short")
    with pytest.warns(ImgconvWarning, match="a malformed ICC profile"):
        io.write_image(tmp_path / "x.png", like.pixels, like=like)


@pytest.mark.parametrize("ext", [".bmp", ".gif"])
def test_metadata_the_format_cannot_hold(tmp_path, tagged_jpeg, ext):
    source = read(tagged_jpeg)
    path = tmp_path / f"plain{ext}"
    with pytest.warns(ImgconvWarning, match="cannot hold the EXIF, ICC profile, XMP of the input"):
        io.write_image(path, source.pixels[:, :, :], like=source)
    assert path.exists()


def test_oversized_exif_dropped_for_jpeg(tmp_path, rng):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00" + b"x" * 70000  # UserComment
    like = io.ImageData(random_pixels(rng, "RGB"), "RGB", False, exif=exif.tobytes(), xmp=XMP)
    path = tmp_path / "big.jpg"
    with pytest.warns(ImgconvWarning, match="EXIF of \\d+ bytes does not fit a JPEG segment"):
        io.write_image(path, like.pixels, like=like)
    data = read(path)
    assert data.exif is None and b"imgconv-test-marker" in data.xmp


# ---------------------------------------------------------------------------
# read errors: one ImageError, one line, naming the file


def test_missing_file(tmp_path):
    path = tmp_path / "absent.png"
    with pytest.raises(ImageError) as excinfo:
        io.read_image(path)
    assert one_line_error(excinfo, path) == f"cannot read '{path}': no such file"


def test_directory(tmp_path):
    folder = tmp_path / "photos.png"
    folder.mkdir()
    with pytest.raises(ImageError) as excinfo:
        io.read_image(folder)
    assert one_line_error(excinfo, folder).endswith("is a directory")


def test_permission_denied_simulated(tmp_path, monkeypatch, rng):
    """Root ignores file modes, so the refusal is simulated where Pillow opens the file."""
    path = tmp_path / "secret.png"
    io.write_image(path, random_pixels(rng, "L"))
    real_open = open

    def refusing_open(file, *args, **kwargs):
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)
    with pytest.raises(ImageError) as excinfo:
        io.read_image(path)
    assert one_line_error(excinfo, path).endswith("permission denied")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file")
def test_permission_denied_real(tmp_path, rng):
    path = tmp_path / "secret.png"
    io.write_image(path, random_pixels(rng, "L"))
    path.chmod(0)
    try:
        with pytest.raises(ImageError, match="permission denied"):
            io.read_image(path)
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize(
    "content",
    [b"hello, this is text\n", b"", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\x00" * 100],
    ids=["text", "empty", "png-signature-only", "gif-signature-only", "zeros"],
)
def test_not_an_image(tmp_path, content):
    path = tmp_path / "fake.png"
    path.write_bytes(content)
    with pytest.raises(ImageError) as excinfo:
        io.read_image(path)
    message = one_line_error(excinfo, path)
    assert message.startswith(f"cannot read '{path}': ")


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image at all\n")
    with pytest.raises(ImageError) as excinfo:
        io.read_image(path)
    assert "not a recognised image file" in one_line_error(excinfo, path)


def test_format_outside_the_supported_six(tmp_path):
    path = pillow_save(tmp_path / "image.png", Image.new("RGB", (4, 4)), format="PPM")
    with pytest.raises(ImageError, match="not a recognised image file"):
        io.read_image(path)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif", ".webp", ".gif", ".bmp"])
def test_truncated(tmp_path, ext):
    source = read(SAMPLES / "chelsea.png")
    whole = tmp_path / f"whole{ext}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImgconvWarning)  # GIF quantising
        io.write_image(whole, source.pixels)
    data = whole.read_bytes()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as excinfo:
        io.read_image(cut)
    message = one_line_error(excinfo, cut)
    assert "truncated" in message or "corrupt" in message or "not a" in message


def test_truncated_png_and_jpeg_say_truncated(tmp_path):
    for sample in ("chelsea.png", "rocket.jpg"):
        data = (SAMPLES / sample).read_bytes()
        cut = tmp_path / f"cut-{sample}"
        cut.write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(ImageError) as excinfo:
            io.read_image(cut)
        assert "truncated or corrupt image data" in one_line_error(excinfo, cut)


def test_corrupt_png_data(tmp_path):
    data = bytearray((SAMPLES / "camera.png").read_bytes())
    start = data.index(b"IDAT") + 200
    data[start : start + 64] = bytes(64)  # wreck the compressed stream (CRC too)
    path = tmp_path / "wrecked.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError) as excinfo:
        io.read_image(path)
    one_line_error(excinfo, path)


@pytest.mark.filterwarnings("ignore::UserWarning:PIL")  # Pillow's own notes on damaged TIFF tags
def test_fuzzed_files_raise_only_image_error(tmp_path, rng):
    """Random damage anywhere in a file: an image or an ImageError, never anything else."""
    base = Image.fromarray(random_pixels(rng, "RGB", shape=(24, 32)))
    for fmt, ext in [("PNG", ".png"), ("JPEG", ".jpg"), ("TIFF", ".tif"), ("BMP", ".bmp"), ("WEBP", ".webp"), ("GIF", ".gif")]:
        buffer = bytes_io.BytesIO()
        base.save(buffer, format=fmt, **({} if fmt in ("GIF", "BMP") else {"exif": make_exif()}))
        original = buffer.getvalue()
        path = tmp_path / f"fuzz{ext}"
        for _ in range(60):
            damaged = bytearray(original)
            for position in rng.integers(0, len(damaged), size=rng.integers(1, 6)):
                damaged[position] = rng.integers(0, 256)
            if rng.random() < 0.3:
                damaged = damaged[: rng.integers(0, len(damaged))]
            path.write_bytes(bytes(damaged))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ImgconvWarning)
                try:
                    check_canonical(io.read_image(path))
                except ImageError as exc:
                    assert "\n" not in str(exc) and str(path) in str(exc)


# ---------------------------------------------------------------------------
# write errors


def test_unknown_output_extension_writes_nothing(tmp_path, rng):
    with pytest.raises(ImageError, match="unknown output extension '.foo'"):
        io.write_image(tmp_path / "x.foo", random_pixels(rng, "L"))
    assert list(tmp_path.iterdir()) == []


def test_missing_output_folder(tmp_path, rng):
    path = tmp_path / "nowhere" / "x.png"
    with pytest.raises(ImageError) as excinfo:
        io.write_image(path, random_pixels(rng, "L"))
    message = one_line_error(excinfo, path)
    assert f"folder '{tmp_path / 'nowhere'}' does not exist" in message
    assert not (tmp_path / "nowhere").exists()  # not created here


def test_output_folder_is_a_file(tmp_path, rng):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ImageError, match="is not a folder"):
        io.write_image(tmp_path / "file" / "x.png", random_pixels(rng, "L"))


def test_output_is_a_directory(tmp_path, rng):
    (tmp_path / "out.png").mkdir()
    with pytest.raises(ImageError, match="is a directory"):
        io.write_image(tmp_path / "out.png", random_pixels(rng, "L"))


def test_relative_output_path(tmp_path, rng, monkeypatch, strict):
    monkeypatch.chdir(tmp_path)
    pixels = random_pixels(rng, "RGB")
    io.write_image("here.png", pixels)
    np.testing.assert_array_equal(read("here.png").pixels, pixels)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere")
def test_output_folder_not_writable(tmp_path, rng):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ImageError, match="permission denied"):
            io.write_image(locked / "x.png", random_pixels(rng, "L"))
    finally:
        locked.chmod(0o700)


# ---------------------------------------------------------------------------
# atomic writes


def failing_save(exception):
    """A stand-in for Image.save that writes part of a file, then fails."""
    calls = []

    def save(self, fp, format=None, **params):
        calls.append(getattr(fp, "name", fp))
        fp.write(b"\x89PNG\r\n\x1a\npartial")
        fp.flush()
        raise exception

    return save, calls


def test_failed_write_leaves_nothing(tmp_path, rng, monkeypatch):
    save, calls = failing_save(OSError(28, "No space left on device"))
    monkeypatch.setattr(Image.Image, "save", save)
    path = tmp_path / "out.png"
    with pytest.raises(ImageError) as excinfo:
        io.write_image(path, random_pixels(rng, "RGB"))
    assert one_line_error(excinfo, path).endswith("No space left on device")
    assert calls, "the stand-in was not used"
    assert list(tmp_path.iterdir()) == []


def test_failed_write_over_the_input_leaves_it_intact(tmp_path, rng, monkeypatch):
    path = tmp_path / "photo.png"
    io.write_image(path, random_pixels(rng, "RGB"))
    before = path.read_bytes()
    data = read(path)
    save, _ = failing_save(ValueError("encoder error -2"))
    monkeypatch.setattr(Image.Image, "save", save)
    with pytest.raises(ImageError, match="encoder error"):
        io.write_image(path, 255 - data.pixels, like=data)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


def test_interrupted_write_leaves_no_temporary(tmp_path, rng, monkeypatch):
    save, _ = failing_save(KeyboardInterrupt())
    monkeypatch.setattr(Image.Image, "save", save)
    with pytest.raises(KeyboardInterrupt):
        io.write_image(tmp_path / "out.tif", random_pixels(rng, "L"))
    assert list(tmp_path.iterdir()) == []


def test_temporary_file_name(tmp_path, rng, monkeypatch):
    seen = []
    real_save = Image.Image.save

    def spying_save(self, fp, format=None, **params):
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        return real_save(self, fp, format=format, **params)

    monkeypatch.setattr(Image.Image, "save", spying_save)
    io.write_image(tmp_path / "result.WebP", random_pixels(rng, "RGB"))
    [[temp]] = seen  # while writing, the folder held the temporary file only
    assert temp.startswith(".") and "imgconv-tmp" in temp and temp.endswith(".WebP")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.WebP"]
    assert not io.is_image_path(tmp_path / temp)


def test_overwrite_in_place(tmp_path, rng, strict):
    path = tmp_path / "photo.png"
    first = random_pixels(rng, "RGBA")
    io.write_image(path, first)
    data = read(path)
    io.write_image(path, 255 - data.pixels, like=data)
    np.testing.assert_array_equal(read(path).pixels, 255 - first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


def test_permissions_kept_on_overwrite_and_umask_for_new(tmp_path, rng):
    path = tmp_path / "shared.png"
    io.write_image(path, random_pixels(rng, "L"))
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0o600
    path.chmod(0o640)
    io.write_image(path, random_pixels(rng, "L"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


# ---------------------------------------------------------------------------
# decompression bombs


def test_huge_header_refused_fast(tmp_path, monkeypatch):
    monkeypatch.delenv(io.MAX_PIXELS_ENV, raising=False)
    monkeypatch.setattr(memory, "available_memory", lambda: 16 * 2**30)  # the same answer on any machine
    path = tmp_path / "bomb.png"
    path.write_bytes(handmade_png(None, color_type=2, bit_depth=8, width=100000, height=100000, idat=False))
    start = time.perf_counter()
    with pytest.raises(ImageError) as excinfo:
        io.read_image(path)
    assert time.perf_counter() - start < 1.0
    message = one_line_error(excinfo, path)
    assert "100000x100000" in message
    # The guard is sized by memory (it was Pillow's MAX_IMAGE_PIXELS): 30 GB of RGB does not fit in 16 GiB.
    assert "27.9 GiB decoded" in message and "memory" in message
    assert io.MAX_PIXELS_ENV in message


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.delenv(io.MAX_PIXELS_ENV, raising=False)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    return 100


@pytest.mark.parametrize("ext", [".png", ".tif", ".gif"])
def test_memory_not_pillow_limit_is_the_default(tmp_path, rng, small_limit, monkeypatch, ext):
    """Pillow's MAX_IMAGE_PIXELS (patched to 100 here) no longer decides: the memory guard does.
    (This test used to assert Pillow's constant as the default limit: the defect of issue 9.)"""
    path = tmp_path / f"over{ext}"
    pixels = random_pixels(rng, "L", shape=(30, 40))  # 1200 pixels: beyond 2x Pillow's limit, its hard error
    io.write_image(path, pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning gets through
        np.testing.assert_array_equal(read(path).pixels, pixels)
        # 8-bit grey through a single filter: the decoded image and the output, 2 bytes a pixel
        monkeypatch.setattr(memory, "memory_budget", lambda: 2 * 1200 - 1)
        with pytest.raises(ImageError, match=r"40x30 grey, 8-bit = 1200 pixels \(1.17 KiB decoded\) needs about 2.34 KiB of memory"):
            io.read_image(path)
        monkeypatch.setattr(memory, "memory_budget", lambda: 2 * 1200)
        read(path)  # just fits
    assert Image.MAX_IMAGE_PIXELS == 100  # restored


@pytest.mark.parametrize("ext", [".png", ".tif", ".gif"])
def test_environment_raises_the_limit(tmp_path, rng, small_limit, monkeypatch, ext):
    pixels = random_pixels(rng, "L", shape=(30, 40))  # 1200 pixels: beyond 2x Pillow's limit, its hard error
    path = tmp_path / f"big{ext}"
    io.write_image(path, pixels)
    monkeypatch.setenv(io.MAX_PIXELS_ENV, "1200")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read(path).pixels, pixels)
    monkeypatch.setenv(io.MAX_PIXELS_ENV, "0")
    np.testing.assert_array_equal(read(path).pixels, pixels)
    monkeypatch.setenv(io.MAX_PIXELS_ENV, "1199")
    with pytest.raises(ImageError, match="exceeds the limit of 1199"):
        io.read_image(path)
    assert Image.MAX_IMAGE_PIXELS == 100


def test_environment_lowers_the_limit(tmp_path, rng, monkeypatch):
    path = tmp_path / "small.png"
    io.write_image(path, random_pixels(rng, "L", shape=(8, 8)))
    monkeypatch.setenv(io.MAX_PIXELS_ENV, " 63 ")
    with pytest.raises(ImageError, match="8x8 = 64 pixels exceeds the limit of 63"):
        io.read_image(path)


def test_no_limit_at_all(tmp_path, rng, monkeypatch):
    monkeypatch.delenv(io.MAX_PIXELS_ENV, raising=False)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    path = tmp_path / "any.png"
    io.write_image(path, random_pixels(rng, "L"))
    read(path)


@pytest.mark.parametrize("value", ["lots", "-1", "1e9", "12.5"])
def test_bad_environment_value(tmp_path, rng, monkeypatch, value):
    path = tmp_path / "x.png"
    io.write_image(path, random_pixels(rng, "L"))
    monkeypatch.setenv(io.MAX_PIXELS_ENV, value)
    with pytest.raises(ImageError) as excinfo:
        io.read_image(path)
    message = str(excinfo.value)
    assert io.MAX_PIXELS_ENV in message and repr(value) in message and "\n" not in message


def test_concurrent_reads_keep_pillow_limit(tmp_path, rng, small_limit, monkeypatch):
    """Reads in threads switch Pillow's own limit off and on; it must end as it began."""
    monkeypatch.setenv(io.MAX_PIXELS_ENV, "0")
    paths = []
    for i in range(8):
        paths.append(tmp_path / f"t{i}.tif")
        io.write_image(paths[-1], random_pixels(rng, "RGB", shape=(40, 50)))
    errors = []

    def work():
        try:
            for _ in range(10):
                for path in paths:
                    io.read_image(path)
        except ImageError as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Image.MAX_IMAGE_PIXELS == 100


# ---------------------------------------------------------------------------
# EXIF orientation: kept as a tag, never applied to the pixels


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("layout", ["L", "RGB", "RGBA", "I;16", "F"])
def test_tiff_orientation_not_applied(tmp_path, rng, strict, layout, orientation):
    """Pillow's TIFF loader rotates by Orientation; read_image gives the stored pixels."""
    pixels = random_pixels(rng, layout, shape=(5, 9))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = pillow_save(tmp_path / "turned.tif", Image.fromarray(pixels), exif=exif.tobytes())
    data = read(path)
    np.testing.assert_array_equal(data.pixels, pixels)
    parsed = Image.Exif()
    parsed.load(data.exif)
    assert parsed[0x0112] == orientation
    # and written back, the tag is still there for viewers to apply
    io.write_image(tmp_path / "again.tif", data.pixels, like=data)
    again = read(tmp_path / "again.tif")
    np.testing.assert_array_equal(again.pixels, pixels)
    assert again.exif == data.exif


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp"])
def test_orientation_not_applied_elsewhere(tmp_path, rng, strict, ext):
    pixels = random_pixels(rng, "RGB", shape=(6, 10))
    path = pillow_save(tmp_path / f"turned{ext}", Image.fromarray(pixels), exif=make_exif(), **({"lossless": True} if ext == ".webp" else {}))
    data = read(path)
    assert data.pixels.shape == (6, 10, 3)
    if ext != ".jpg":
        np.testing.assert_array_equal(data.pixels, pixels)
    assert_exif_tags(data.exif)


# ---------------------------------------------------------------------------
# small promises


def test_warnings_point_at_the_caller(tmp_path, rng):
    # The warning read here was "16-bit RGB is read as 8-bit", which no longer
    # happens (issue 9): 32-bit integers outside 16 bits still warn.
    path = pillow_save(tmp_path / "wide.tif", Image.fromarray(np.array([[-5, 70000, 3, 4]] * 3, dtype=np.int32)))
    with pytest.warns(ImgconvWarning) as record:
        data = io.read_image(path)
    assert record[0].filename == __file__
    data.pixels = np.dstack([data.pixels.astype(np.uint8)] * 3)
    with pytest.warns(ImgconvWarning) as record:
        io.write_image(tmp_path / "out.jpg", np.dstack([data.pixels, data.pixels[..., :1]]))
    assert record[0].filename == __file__
    assert str(record[0].message).startswith(f"'{tmp_path / 'out.jpg'}': ")


def test_grey_alpha_to_gif(tmp_path, strict):
    pixels = np.array([[[10, 255], [20, 0]], [[30, 255], [10, 255]]], dtype=np.uint8)
    io.write_image(tmp_path / "la.gif", pixels)
    data = read(tmp_path / "la.gif")
    assert data.mode == "RGBA"
    np.testing.assert_array_equal(data.pixels[..., 3], pixels[..., 1])
    visible = pixels[..., 1] == 255
    np.testing.assert_array_equal(data.pixels[..., 0][visible], pixels[..., 0][visible])


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # Pillow's own note
def test_damaged_exif_costs_the_metadata_not_the_image(tmp_path, rng):
    """A JPEG whose EXIF is garbage: the pixels read and are written; the EXIF is
    carried as is where it need not be parsed, and dropped, saying so, where it must."""
    pixels = random_pixels(rng, "RGB")
    path = tmp_path / "odd.jpg"
    garbage = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff garbage"
    Image.fromarray(pixels).save(path, exif=garbage)
    data = read(path)
    assert data.exif == garbage
    io.write_image(tmp_path / "copy.png", data.pixels, like=data)
    assert read(tmp_path / "copy.png").exif == garbage
    with pytest.warns(ImgconvWarning, match="EXIF holds no readable tags; not written"):
        io.write_image(tmp_path / "copy.tif", data.pixels, like=data)
    assert read(tmp_path / "copy.tif").exif is None


def test_image_data_repr_is_short(rng):
    data = io.ImageData(random_pixels(rng, "RGB", shape=(300, 400)), "RGB", False, "PNG", exif=b"Exif\x00\x00" + bytes(10000))
    text = repr(data)
    assert "(300, 400, 3)" in text and "exif" in text and len(text) < 200
