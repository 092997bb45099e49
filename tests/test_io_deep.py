"""16-bit and float colour: PNG and TIFF through imgconv.codec, exactly.

Every input here is written by another writer (tifffile for TIFF; the small
PNG writer below, zlib + struct), and every output is read back by another
reader (tifffile; the small PNG reader below), never by imgconv itself, so a
bug shared by imgconv's reader and writer cannot hide.  Images are small.
"""

import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageCms

from conftest import scipy_convolve

import imgconv
from imgconv import codec, io
from imgconv.cli import cli
from imgconv.errors import ImageError, ImgconvWarning

tifffile = pytest.importorskip("tifffile")

SHAPE = (13, 17)  # odd sizes: no row padding hides a bug
CHANNELS = {"LA": 2, "RGB": 3, "RGBA": 4}
PNG_COLOUR_TYPES = {"LA": 4, "RGB": 2, "RGBA": 6}
TIFF_PARAMS = {"LA": dict(photometric="minisblack", extrasamples=[2]), "RGB": dict(photometric="rgb"), "RGBA": dict(photometric="rgb", extrasamples=[2])}


@pytest.fixture
def strict():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImgconvWarning)
        yield


def run(*args, env=None):
    result = CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def pixels16(rng, layout, shape=SHAPE):
    array = rng.integers(0, 65536, size=shape + (CHANNELS[layout],), dtype=np.uint16)
    array[0, 0, :] = 0
    array[0, 1, :] = 65535
    return array


# ---------------------------------------------------------------------------
# an independent PNG writer and reader (the PNG specification, zlib and struct)


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def write_png(array, colour_type, extra=(), idat_length_error=0):
    """A 16-bit PNG of ``array`` (rows unfiltered), with ``extra`` chunks (type, body) before the data."""
    height, width = array.shape[:2]
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))
    data = zlib.compress(raw)
    idat = chunk(b"IDAT", data)
    if idat_length_error:
        idat = struct.pack(">I", len(data) + idat_length_error) + idat[4:]
    body = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))
    body += b"".join(chunk(kind, content) for kind, content in extra)
    return b"\x89PNG\r\n\x1a\n" + body + idat + chunk(b"IEND", b"")


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def read_png(data):
    """(pixels, chunks) of a PNG: every CRC checked, every row filter undone."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, position = [], 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        chunks.append((kind, body))
        position += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", chunks[0][1][:10])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    step = channels * depth // 8
    stride = width * step
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    previous, rows = bytearray(stride), []
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - step] if i >= step else 0
            b = previous[i]
            c = previous[i - step] if i >= step else 0
            line[i] = (line[i] + (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]) & 255
        rows.append(bytes(line))
        previous = line
    pixels = np.frombuffer(b"".join(rows), ">u2" if depth == 16 else np.uint8).reshape(height, width, channels)
    return pixels.astype(np.uint16 if depth == 16 else np.uint8), chunks


def srgb_profile():
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/>deep-marker</x:xmpmeta>'


def make_exif():
    exif = Image.Exif()
    exif[0x010F] = "deep-make"
    exif.get_ifd(0x8769)[0x9003] = "2021:02:03 04:05:06"  # DateTimeOriginal, in the EXIF directory
    return exif.tobytes()


# ---------------------------------------------------------------------------
# identity reproduces the file


@pytest.mark.parametrize("layout", ["RGB", "RGBA", "LA"])
def test_identity_16bit_png_is_exact(tmp_path, rng, layout):
    pixels = pixels16(rng, layout)
    source, out = tmp_path / "in.png", tmp_path / "out.png"
    source.write_bytes(write_png(pixels, PNG_COLOUR_TYPES[layout]))
    result = run("apply", "identity", source, out)
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    got, chunks = read_png(out.read_bytes())
    assert struct.unpack(">B", chunks[0][1][8:9]) == (16,)  # 16 bits in the file
    np.testing.assert_array_equal(got, pixels)


@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("layout", ["RGB", "RGBA", "LA"])
def test_identity_16bit_tiff_is_exact(tmp_path, rng, layout, compression):
    pixels = pixels16(rng, layout)
    source, out = tmp_path / "in.tif", tmp_path / "out.tif"
    extra = dict(compression="zlib", predictor=True) if compression else {}
    tifffile.imwrite(source, pixels, **TIFF_PARAMS[layout], **extra)
    result = run("apply", "identity", source, out)
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    got = tifffile.imread(out)
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, pixels)


@pytest.mark.parametrize("layout", ["RGB", "RGBA", "LA"])
def test_identity_float_tiff_is_exact(tmp_path, rng, layout):
    pixels = rng.normal(0.4, 0.7, size=SHAPE + (CHANNELS[layout],)).astype(np.float32)
    pixels[0, 0, 0] = -3.5  # float stays float: nothing clipped
    pixels[0, 1, 0] = 1e9
    if layout != "RGB":
        pixels[..., -1] = rng.random(SHAPE, dtype=np.float32)  # alpha in 0..1
    source, out = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(source, pixels, **TIFF_PARAMS[layout])
    data = io.read_image(source)
    assert data.mode == f"{layout};F"
    np.testing.assert_array_equal(data.pixels, pixels)
    io.write_image(tmp_path / "copy.tif", data.pixels, like=data)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "copy.tif"), pixels)
    result = run("apply", "identity", source, out)
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    got = tifffile.imread(out)
    assert got.dtype == np.float32
    if layout == "RGB":
        np.testing.assert_array_equal(got, pixels)
    else:
        # colour is filtered premultiplied by alpha: in float32, c * a / a is c to round-off
        np.testing.assert_allclose(got, pixels, rtol=3e-7, atol=0)


@pytest.mark.parametrize("layout, mode", [("RGB", "RGB;16"), ("RGBA", "RGBA;16"), ("LA", "LA;16")])
def test_read_and_write_in_process(tmp_path, rng, strict, layout, mode):
    pixels = pixels16(rng, layout)
    (tmp_path / "in.png").write_bytes(write_png(pixels, PNG_COLOUR_TYPES[layout]))
    data = io.read_image(tmp_path / "in.png")
    assert data.mode == mode and data.has_alpha == (layout != "RGB") and data.format == "PNG"
    assert data.pixels.flags.writeable and data.pixels.flags.c_contiguous
    np.testing.assert_array_equal(data.pixels, pixels)
    io.write_image(tmp_path / "out.tif", data.pixels, like=data)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), pixels)


def test_transparent_colour_of_a_16bit_png_becomes_alpha(tmp_path, rng, strict):
    pixels = pixels16(rng, "RGB")
    key = pixels[2, 3]
    (tmp_path / "key.png").write_bytes(write_png(pixels, 2, extra=[(b"tRNS", key.astype(">u2").tobytes())]))
    data = io.read_image(tmp_path / "key.png")
    assert data.mode == "RGBA;16"
    np.testing.assert_array_equal(data.pixels[..., :3], pixels)
    transparent = np.all(pixels == key, axis=-1)
    np.testing.assert_array_equal(data.pixels[..., 3], np.where(transparent, 0, 65535))


def test_associated_alpha_is_read_as_straight(tmp_path):
    straight = np.array([[[40000, 20000, 0, 65535], [30000, 30000, 30000, 32768], [1, 2, 3, 0]]], dtype=np.uint16)
    alpha = straight[..., 3:].astype(np.float64) / 65535
    premultiplied = np.dstack([np.rint(straight[..., :3] * alpha), straight[..., 3:]]).astype(np.uint16)
    path = tmp_path / "assoc.tif"
    tifffile.imwrite(path, premultiplied, photometric="rgb", extrasamples=[1])
    with pytest.warns(ImgconvWarning, match="associated .*straight alpha"):
        data = io.read_image(path)
    assert data.mode == "RGBA;16"
    expected = straight.copy()
    expected[0, 2, :3] = 0  # no colour under alpha 0
    assert np.abs(data.pixels.astype(int) - expected).max() <= 1


def test_pages_of_a_16bit_tiff(tmp_path, rng, strict):
    pages = [pixels16(rng, "RGB"), pixels16(rng, "RGB"), pixels16(rng, "RGB", shape=(150, 7))]  # several strips
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tif:
        for page in pages:
            tif.write(page, photometric="rgb")
    data = io.read_image(path)
    assert data.mode == "RGB;16" and data.frame_count == 3
    for got, expected in zip(data.all_frames(), pages):
        np.testing.assert_array_equal(got, expected)
    io.write_image(tmp_path / "out.tif", data.pixels, like=data, more_frames=data.more_frames)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert len(tif.pages) == 3
        for page, expected in zip(tif.pages, pages):
            np.testing.assert_array_equal(page.asarray(), expected)


# ---------------------------------------------------------------------------
# filtered in their own units


def gaussian_reference(image, sigma, top):
    kernel = imgconv.load_catalog().resolve("gaussian", {"sigma": sigma}).kernels[0].matrix
    return np.clip(np.rint(scipy_convolve(image, kernel, "reflect")), 0, top)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_gaussian_on_16bit_rgb_matches_scipy(tmp_path, rng, ext):
    image = pixels16(rng, "RGB", shape=(23, 31))
    source, out = tmp_path / f"in{ext}", tmp_path / f"out{ext}"
    if ext == ".png":
        source.write_bytes(write_png(image, 2))
    else:
        tifffile.imwrite(source, image, photometric="rgb")
    result = run("apply", "gaussian", "-p", "sigma=2", source, out)
    assert result.exit_code == 0, result.output
    got = read_png(out.read_bytes())[0] if ext == ".png" else tifffile.imread(out)
    assert got.dtype == np.uint16
    expected = gaussian_reference(image, 2, 65535)
    assert np.abs(got.astype(np.int64) - expected).max() <= 1


def test_apply_filter_on_16bit_rgb_matches_scipy(rng):
    image = pixels16(rng, "RGB", shape=(23, 31))
    got = imgconv.apply_filter(image, "gaussian", sigma=2)
    assert got.dtype == np.uint16
    assert np.abs(got.astype(np.int64) - gaussian_reference(image, 2, 65535)).max() <= 1


def test_float_rgb_is_filtered_unclipped(tmp_path, rng):
    image = rng.normal(0.5, 1.0, size=(19, 21, 3)).astype(np.float32)
    source, out = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(source, image, photometric="rgb")
    assert run("apply", "gaussian", "-p", "sigma=2", source, out).exit_code == 0
    kernel = imgconv.load_catalog().resolve("gaussian", {"sigma": 2}).kernels[0].matrix
    np.testing.assert_allclose(tifffile.imread(out), scipy_convolve(image, kernel, "reflect"), atol=1e-5)


# ---------------------------------------------------------------------------
# into 8-bit formats: rounded, with a warning


def test_16bit_to_jpeg_rounds(tmp_path):
    # 25854 / 257 = 100.6: rounding gives 101, the old cut (>> 8) gave 100
    pixels = np.full((16, 16, 3), 25854, np.uint16)
    source, out = tmp_path / "in.png", tmp_path / "out.jpg"
    source.write_bytes(write_png(pixels, 2))
    result = run("apply", "identity", source, out)
    assert result.exit_code == 0
    assert "JPEG cannot hold 16-bit samples; written as 8-bit (value / 257, rounded)" in result.output
    with Image.open(out) as im:
        got = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(got, 101)


@pytest.mark.parametrize("ext", [".bmp", ".webp", ".gif"])
def test_16bit_colour_to_other_8bit_formats_rounds(tmp_path, rng, ext):
    pixels = pixels16(rng, "RGB", shape=(5, 6))
    pixels[0, :4, 0] = [128, 129, 25854, 65535]
    with pytest.warns(ImgconvWarning, match=f"{io.output_format('x' + ext)} cannot hold 16-bit samples; written as 8-bit"):
        io.write_image(tmp_path / f"out{ext}", pixels)
    with Image.open(tmp_path / f"out{ext}") as im:
        got = np.asarray(im.convert("RGB"))
    if ext != ".gif":  # GIF may quantise 30 colours' neighbours; the first row is checked below
        np.testing.assert_array_equal(got, (pixels.astype(np.uint32) + 128) // 257)
    assert list(got[0, :4, 0]) == [0, 1, 101, 255]


# ---------------------------------------------------------------------------
# metadata kept


def test_png_metadata_kept(tmp_path, rng):
    pixels = pixels16(rng, "RGBA")
    icc = srgb_profile()
    metres = round(300 / 0.0254)
    extra = [
        (b"iCCP", b"profile\x00\x00" + zlib.compress(icc)),
        (b"pHYs", struct.pack(">IIB", metres, metres, 1)),
        (b"eXIf", make_exif()[6:]),
        (b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + XMP),
        (b"tEXt", b"Author\x00deep-author"),
    ]
    source, out = tmp_path / "in.png", tmp_path / "out.png"
    source.write_bytes(write_png(pixels, 6, extra=extra))
    result = run("apply", "identity", source, out)
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    got, chunks = read_png(out.read_bytes())
    np.testing.assert_array_equal(got, pixels)
    found = dict(chunks)
    name, _, compressed = found[b"iCCP"].partition(b"\x00")
    assert zlib.decompress(compressed[1:]) == icc
    assert found[b"pHYs"] == struct.pack(">IIB", metres, metres, 1)
    exif = Image.Exif()
    exif.load(found[b"eXIf"])
    assert exif[0x010F] == "deep-make" and exif.get_ifd(0x8769)[0x9003] == "2021:02:03 04:05:06"
    assert any(kind == b"iTXt" and XMP in body for kind, body in chunks)
    assert any(kind in (b"tEXt", b"iTXt") and b"deep-author" in body for kind, body in chunks)
    kinds = [kind for kind, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and kinds.index(b"iCCP") < kinds.index(b"IDAT")


def test_tiff_metadata_kept(tmp_path, rng):
    pixels = pixels16(rng, "RGB")
    icc = srgb_profile()
    source, out = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(
        source, pixels, photometric="rgb", iccprofile=icc, resolution=(300, 300), resolutionunit="INCH",
        extratags=[(700, 1, len(XMP), XMP, True), (0x010F, 2, 0, "deep-make", True), (0x0112, 3, 1, 6, True)],
        metadata=None,
    )
    result = run("apply", "identity", source, out)
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    with tifffile.TiffFile(out) as tif:
        page = tif.pages[0]
        np.testing.assert_array_equal(page.asarray(), pixels)
        tags = page.tags
        assert tags["InterColorProfile"].value == icc
        assert tags["XResolution"].value == (300, 1) and tags["ResolutionUnit"].value == 2
        assert bytes(tags["XMP"].value) == XMP
        assert tags["Make"].value == "deep-make"
        assert tags["Orientation"].value == 6  # kept as stored: viewers still turn it


def test_exif_directory_written_into_a_16bit_tiff(tmp_path, rng):
    """A JPEG's EXIF (with its EXIF directory) carried into a 16-bit TIFF: Pillow's
    tags, joined to the directory libvips wrote."""
    pixels = pixels16(rng, "RGB")
    like = io.ImageData(pixels, "RGB;16", False, "JPEG", exif=make_exif(), icc_profile=srgb_profile(), xmp=XMP, dpi=(72.0, 96.0))
    io.write_image(tmp_path / "out.tif", pixels, like=like)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        tags = tif.pages[0].tags
        np.testing.assert_array_equal(tif.pages[0].asarray(), pixels)
        assert tags["ExifTag"].value["DateTimeOriginal"] == "2021:02:03 04:05:06"
        assert tags["Make"].value == "deep-make"
        assert tags["InterColorProfile"].value == like.icc_profile
        assert tags["XResolution"].value == (72, 1) and tags["YResolution"].value == (96, 1)
    with Image.open(tmp_path / "out.tif") as im:  # and Pillow reads the same
        assert im.getexif().get_ifd(0x8769)[0x9003] == "2021:02:03 04:05:06"


def test_no_dpi_in_no_dpi_out(tmp_path, rng, strict):
    pixels = pixels16(rng, "RGB")
    io.write_image(tmp_path / "out.tif", pixels)
    io.write_image(tmp_path / "out.png", pixels)
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        assert "XResolution" not in tif.pages[0].tags and "Orientation" not in tif.pages[0].tags
    assert b"pHYs" not in dict(read_png((tmp_path / "out.png").read_bytes())[1])


def test_grey_profile_on_16bit_grey_alpha(tmp_path, rng):
    profile = bytearray(srgb_profile())
    profile[16:20] = b"GRAY"
    pixels = pixels16(rng, "LA")
    like = io.ImageData(pixels, "LA;16", True, "PNG", icc_profile=bytes(profile))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImgconvWarning)  # a grey profile fits grey + alpha
        io.write_image(tmp_path / "out.png", pixels, like=like)
    assert b"iCCP" in dict(read_png((tmp_path / "out.png").read_bytes())[1])
    with pytest.warns(ImgconvWarning, match="GRAY|grey ICC profile does not fit the RGB output"):
        io.write_image(tmp_path / "rgb.png", pixels16(rng, "RGB"), like=like)


# ---------------------------------------------------------------------------
# bad input: one line, exit 1, nothing written, nothing printed by a library


def test_truncated_16bit_tiff(tmp_path, rng, capfd):
    path, out = tmp_path / "cut.tif", tmp_path / "out.tif"
    tifffile.imwrite(path, pixels16(rng, "RGB", shape=(40, 50)), photometric="rgb", metadata=None)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as excinfo:
        io.read_image(path)
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message and "truncated or corrupt" in message
    result = run("apply", "blur", path, out)
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1 and "cut.tif" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.tif"]
    assert capfd.readouterr().err == ""  # libvips printed nothing


@pytest.mark.parametrize("error", [1000, -7])
def test_16bit_png_with_a_wrong_chunk_length(tmp_path, rng, capfd, error):
    path, out = tmp_path / "bad.png", tmp_path / "out.png"
    path.write_bytes(write_png(pixels16(rng, "RGB"), 2, idat_length_error=error))
    with pytest.raises(ImageError) as excinfo:
        io.read_image(path)
    assert "\n" not in str(excinfo.value) and str(path) in str(excinfo.value)
    result = run("apply", "blur", path, out)
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1 and "bad.png" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.png"]
    assert capfd.readouterr().err == ""


def test_damaged_files_raise_only_image_error(tmp_path, rng, capfd):
    """Bytes of 16-bit and float files changed at random: ImageError or an image, never another exception."""
    pixels = pixels16(rng, "RGBA", shape=(9, 11))
    sources = [write_png(pixels, 6, extra=[(b"tEXt", b"Author\x00someone")])]
    for data in (pixels, rng.random((9, 11, 3), dtype=np.float32)):
        tifffile.imwrite(tmp_path / "src.tif", data, photometric="rgb", **({"extrasamples": [2]} if data.shape[2] == 4 else {}))
        sources.append((tmp_path / "src.tif").read_bytes())
    path = tmp_path / "damaged.img"
    for source in sources:
        for _ in range(40):
            data = bytearray(source)
            for at in rng.integers(0, len(data), size=rng.integers(1, 6)):
                data[at] = rng.integers(0, 256)
            cut = len(data) if rng.random() < 0.7 else rng.integers(8, len(data))
            path.write_bytes(bytes(data[:cut]))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    io.read_image(path)
                except ImageError as exc:
                    assert "\n" not in str(exc) and str(path) in str(exc)
    assert capfd.readouterr().err == ""


def test_pixel_limit_applies_before_decoding(tmp_path, rng, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded before the limit was applied")

    (tmp_path / "big.png").write_bytes(write_png(pixels16(rng, "RGB", shape=(30, 40)), 2))
    tifffile.imwrite(tmp_path / "big.tif", rng.random((30, 40, 3), dtype=np.float32), photometric="rgb")
    monkeypatch.setattr(codec, "decode", no_decoding)
    monkeypatch.setenv(io.MAX_PIXELS_ENV, "1199")
    for name in ("big.png", "big.tif"):
        with pytest.raises(ImageError, match=r"40x30 = 1200 pixels exceeds the limit of 1199"):
            io.read_image(tmp_path / name)


def test_huge_16bit_header_refused_fast(tmp_path, monkeypatch):
    monkeypatch.delenv(io.MAX_PIXELS_ENV, raising=False)
    header = struct.pack(">IIBBBBB", 100000, 100000, 16, 2, 0, 0, 0)
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    start = time.perf_counter()
    with pytest.raises(ImageError, match="100000x100000"):
        io.read_image(tmp_path / "bomb.png")
    assert time.perf_counter() - start < 1.0


def test_a_float_tiff_claiming_many_pages_is_refused_from_its_directories(tmp_path, rng, monkeypatch):
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tif:
        for _ in range(5):
            tif.write(rng.random((10, 10, 3), dtype=np.float32), photometric="rgb")
    monkeypatch.setenv(io.MAX_PIXELS_ENV, "399")
    with pytest.raises(ImageError, match="exceeds the limit of 399"):
        io.read_image(path)
    monkeypatch.setenv(io.MAX_PIXELS_ENV, "500")
    assert io.read_image(path).frame_count == 5


def test_missing_codec_is_one_line_naming_the_install(tmp_path, rng, monkeypatch):
    def missing():
        raise codec.CodecMissing(f"16-bit and float colour need libvips through pyvips ({codec.INSTALL_HINT})")

    monkeypatch.setattr(codec, "_pyvips", missing)
    (tmp_path / "in.png").write_bytes(write_png(pixels16(rng, "RGB"), 2))
    with pytest.raises(ImageError) as excinfo:
        io.read_image(tmp_path / "in.png")
    assert "pip install pyvips pyvips-binary" in str(excinfo.value) and "\n" not in str(excinfo.value)
    with pytest.raises(ImageError, match="pip install pyvips"):
        io.write_image(tmp_path / "out.png", pixels16(rng, "RGB"))
    assert not (tmp_path / "out.png").exists()


def test_8bit_files_never_load_the_codec(tmp_path, rng, monkeypatch):
    def no_codec():
        raise AssertionError("the codec was used for an 8-bit image")

    monkeypatch.setattr(codec, "_pyvips", no_codec)
    pixels = rng.integers(0, 256, size=(9, 11, 3), dtype=np.uint8)
    for ext in (".png", ".tif"):
        io.write_image(tmp_path / f"a{ext}", pixels)
        np.testing.assert_array_equal(io.read_image(tmp_path / f"a{ext}").pixels, pixels)
    grey = rng.integers(0, 65536, size=(9, 11), dtype=np.uint16)  # 16-bit grey stays Pillow's
    io.write_image(tmp_path / "g.png", grey)
    np.testing.assert_array_equal(io.read_image(tmp_path / "g.png").pixels, grey)
