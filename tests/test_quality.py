"""Quality kept, and controllable; text kept (imgconv.filemeta through io, pipeline, cli).

Inputs are written by Pillow directly (never by imgconv's write_image) and
outputs are read back by Pillow, and by a chunk reader written here, so neither
side of a check is the code under test.
"""

import io as bytes_io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, JpegImagePlugin, PngImagePlugin

from imgconv import filemeta, io
from imgconv.chain import Chain
from imgconv.cli import cli
from imgconv.errors import ImgconvWarning
from imgconv.kernels import load_catalog
from imgconv.pipeline import Job, filter_file

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def photo(size=(96, 64)):
    """A real photograph, small: JPEG and WebP behave on it as on camera files."""
    return Image.open(SAMPLES / "astronaut.png").convert("RGB").resize(size, Image.LANCZOS)


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def apply_identity(source, target, *options):
    result = run("apply", "identity", source, target, *options)
    assert result.exit_code == 0, result.output
    return result


def levels(a, b):
    """Largest and mean absolute difference, in levels, of two image files as Pillow decodes them."""
    x = np.asarray(Image.open(a).convert("RGB"), dtype=np.int16)
    y = np.asarray(Image.open(b).convert("RGB"), dtype=np.int16)
    d = np.abs(x - y)
    return int(d.max()), float(d.mean())


def riff_chunks(path):
    """The fourccs of a WebP file's chunks, frames' sub-chunks included."""
    data = Path(path).read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    found, pos = [], 12
    while pos + 8 <= len(data):
        kind, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        found.append(kind.decode())
        pos += 8 + size + (size & 1)
    return found


def png_text_chunks(path):
    """(chunk type, keyword, compression flag or None) of every PNG text chunk."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    found, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I", data[pos : pos + 4])[0], data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            keyword, _, rest = body.partition(b"\x00")
            flag = rest[0] if kind == b"iTXt" else None
            found.append((kind.decode(), keyword.decode("latin-1"), flag))
        pos += 12 + length
    return found


def recorded(call):
    """Run ``call()``, returning the ImgconvWarning messages it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImgconvWarning)
        call()
    return [str(w.message) for w in caught if issubclass(w.category, ImgconvWarning)]


@pytest.fixture
def q100_444(tmp_path):
    path = tmp_path / "q100.jpg"
    photo().save(path, quality=100, subsampling=0)
    return path


# ---------------------------------------------------------------------------
# JPEG


def test_jpeg_identity_keeps_tables_and_subsampling(tmp_path, q100_444):
    out = tmp_path / "out.jpg"
    apply_identity(q100_444, out)
    worst, mean = levels(q100_444, out)
    assert worst <= 4 and mean < 0.3  # quality 95 with 4:2:0 (the old default) gave 52 and 2.0
    with Image.open(q100_444) as before, Image.open(out) as after:
        assert JpegImagePlugin.get_sampling(after) == 0  # 4:4:4
        assert after.quantization == before.quantization
        assert not after.info.get("progressive")


@pytest.mark.parametrize("subsampling", [1, 2])
def test_jpeg_keeps_other_subsamplings(tmp_path, subsampling):
    source = tmp_path / "in.jpg"
    photo().save(source, quality=80, subsampling=subsampling)
    out = tmp_path / "out.jpg"
    apply_identity(source, out)
    with Image.open(out) as after, Image.open(source) as before:
        assert JpegImagePlugin.get_sampling(after) == subsampling
        assert after.quantization == before.quantization


def test_grey_jpeg_keeps_its_table(tmp_path):
    source = tmp_path / "grey.jpg"
    photo().convert("L").save(source, quality=60)
    out = tmp_path / "out.jpg"
    apply_identity(source, out)
    with Image.open(out) as after, Image.open(source) as before:
        assert after.mode == "L" and after.quantization == before.quantization


def test_progressive_stays_progressive(tmp_path):
    source = tmp_path / "progressive.jpg"
    photo().save(source, quality=85, progressive=True)
    out = tmp_path / "out.jpg"
    apply_identity(source, out)
    with Image.open(out) as after:
        assert after.info.get("progressive")
    # and with --quality too
    apply_identity(source, tmp_path / "q.jpg", "--quality", "50")
    with Image.open(tmp_path / "q.jpg") as after:
        assert after.info.get("progressive")


def test_quality_sets_jpeg_quality(tmp_path, q100_444):
    sizes = {}
    for quality in (30, 90):
        out = tmp_path / f"q{quality}.jpg"
        apply_identity(q100_444, out, "--quality", quality)
        sizes[quality] = out.stat().st_size
        with Image.open(out) as after:
            assert filemeta.jpeg_quality_of(after.quantization[0]) == quality  # libjpeg's tables for Q
            assert JpegImagePlugin.get_sampling(after) == 0  # the input's subsampling is kept
    assert sizes[30] < sizes[90] < q100_444.stat().st_size


def test_other_inputs_become_quality_95_444_jpeg(tmp_path):
    source = tmp_path / "in.png"
    photo().save(source)
    out = tmp_path / "out.jpg"
    apply_identity(source, out)
    with Image.open(out) as after:
        assert filemeta.jpeg_quality_of(after.quantization[0]) == io.JPEG_QUALITY == 95
        assert JpegImagePlugin.get_sampling(after) == 0
    worst, mean = levels(source, out)
    assert mean < 2.5


@pytest.mark.parametrize("quality", [1, 10, 49, 50, 75, 95, 100])
def test_jpeg_quality_estimate_is_exact_for_libjpeg(quality):
    buffer = bytes_io.BytesIO()
    photo((16, 16)).save(buffer, "JPEG", quality=quality)
    assert filemeta.jpeg_quality_of(Image.open(buffer).quantization[0]) == quality


# ---------------------------------------------------------------------------
# WebP


def test_quality_sets_webp_quality(tmp_path):
    source = tmp_path / "in.png"
    photo().save(source)
    sizes = {}
    for quality in (20, 90):
        out = tmp_path / f"q{quality}.webp"
        apply_identity(source, out, "--quality", quality)
        sizes[quality] = out.stat().st_size
        assert "VP8 " in riff_chunks(out)  # lossy
    assert sizes[20] < sizes[90]


def test_lossy_webp_stays_lossy_at_a_comparable_quality(tmp_path):
    source = tmp_path / "lossy.webp"
    photo((160, 120)).save(source, quality=80)
    data = io.read_image(source)
    assert data.encoding.lossless is False and abs(data.encoding.quality - 80) <= 3
    out = tmp_path / "out.webp"
    apply_identity(source, out)
    assert "VP8 " in riff_chunks(out) and "VP8L" not in riff_chunks(out)
    assert out.stat().st_size < 1.5 * source.stat().st_size  # lossless would be several times larger
    worst, mean = levels(source, out)
    assert mean < 3.0  # a second generation at quality 80 (2.0 on this detailed thumbnail)


def test_lossless_webp_stays_lossless(tmp_path):
    source = tmp_path / "lossless.webp"
    photo().save(source, lossless=True)
    out = tmp_path / "out.webp"
    apply_identity(source, out)
    assert "VP8L" in riff_chunks(out) and "VP8 " not in riff_chunks(out)
    assert levels(source, out) == (0, 0.0)


def test_lossy_webp_with_alpha_stays_lossy(tmp_path):
    source = tmp_path / "alpha.webp"
    picture = photo().convert("RGBA")
    picture.putalpha(200)
    picture.save(source, quality=70)
    assert "ALPH" in riff_chunks(source)
    out = tmp_path / "out.webp"
    apply_identity(source, out)
    assert "VP8 " in riff_chunks(out)
    with Image.open(out) as after:
        assert after.mode == "RGBA"


def test_jpeg_to_webp_is_lossy_and_png_to_webp_lossless(tmp_path, q100_444):
    out = tmp_path / "from-jpeg.webp"
    apply_identity(q100_444, out)
    assert "VP8 " in riff_chunks(out)
    png = tmp_path / "in.png"
    photo().save(png)
    apply_identity(png, tmp_path / "from-png.webp")
    assert "VP8L" in riff_chunks(tmp_path / "from-png.webp")


@pytest.mark.parametrize("quality", [30, 60, 85, 95])
def test_webp_quality_estimate(quality):
    buffer = bytes_io.BytesIO()
    photo((160, 120)).save(buffer, "WEBP", quality=quality)
    data = buffer.getvalue()
    start = data.index(b"VP8 ") + 8
    estimate = filemeta.webp_quality_of(data[start:])
    assert abs(estimate - quality) <= 6


def test_a_damaged_webp_header_is_not_an_error():
    assert filemeta.webp_quality_of(b"\x00" * 20) is None
    assert filemeta.webp_quality_of(b"") is None


# ---------------------------------------------------------------------------
# --quality: range, every command, the library


def test_quality_is_checked(tmp_path, q100_444):
    for bad in ("0", "101", "high"):
        result = run("apply", "identity", q100_444, tmp_path / "x.jpg", "--quality", bad)
        assert result.exit_code == 2 and "--quality" in result.output
    assert not (tmp_path / "x.jpg").exists()
    with pytest.raises(ValueError, match="quality must be a whole number from 1 to 100, got 0"):
        io.write_image(tmp_path / "y.jpg", np.zeros((4, 4), np.uint8), quality=0)
    with pytest.raises(ValueError, match="quality"):
        Job(Chain.of(load_catalog().resolve("identity")), quality=True)
    assert not (tmp_path / "y.jpg").exists()


def test_quality_has_no_effect_on_lossless_formats(tmp_path):
    pixels = np.asarray(photo())
    io.write_image(tmp_path / "a.png", pixels, quality=10)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), pixels)


def test_quality_in_gallery_and_standard_output(tmp_path, q100_444):
    sizes = []
    for quality in ("20", "95"):
        out = tmp_path / f"sheet{quality}.jpg"
        result = run("gallery", q100_444, out, "-k", "blur", "--size", "64", "--quality", quality)
        assert result.exit_code == 0, result.output
        sizes.append(out.stat().st_size)
    assert sizes[0] < sizes[1]
    runner = CliRunner()
    result = runner.invoke(cli, ["apply", "identity", "-", "-", "--quality", "20"], input=q100_444.read_bytes())
    assert result.exit_code == 0
    assert Image.open(bytes_io.BytesIO(result.stdout_bytes)).format == "JPEG"
    assert len(result.stdout_bytes) < q100_444.stat().st_size / 3


def test_quality_in_batch(tmp_path, q100_444):
    (tmp_path / "in").mkdir()
    q100_444.rename(tmp_path / "in" / "a.jpg")
    result = run("batch", "identity", tmp_path / "in", tmp_path / "out", "--quality", "20", "-j", "1", "-q")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out" / "a.jpg") as after:
        assert filemeta.jpeg_quality_of(after.quantization[0]) == 20


def test_a_job_carries_its_quality(tmp_path, q100_444):
    job = Job(Chain.of(load_catalog().resolve("identity")), quality=40)
    filter_file(job, q100_444, tmp_path / "out.webp")
    assert "VP8 " in riff_chunks(tmp_path / "out.webp")


# ---------------------------------------------------------------------------
# text


def texty_png(path, picture=None):
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Ada Lovelace")
    info.add_text("Description", "a long description, " * 20, zip=True)
    info.add_itxt("Comment", "Grüße aus Köln", lang="de", tkey="Kommentar", zip=True)
    info.add_itxt("Title", "plain iTXt", lang="en-GB", tkey="Titel")
    (picture or photo((24, 16))).save(path, pnginfo=info)
    return path


def test_png_text_chunks_kept_with_their_kind(tmp_path):
    source = texty_png(tmp_path / "in.png")
    out = tmp_path / "out.png"
    result = apply_identity(source, out)
    assert "warning" not in result.output
    assert png_text_chunks(out) == [
        ("tEXt", "Author", None),
        ("zTXt", "Description", None),
        ("iTXt", "Comment", 1),
        ("iTXt", "Title", 0),
    ]
    with Image.open(out) as after:
        after.load()
        text = after.text
        assert text["Author"] == "Ada Lovelace" and text["Description"] == "a long description, " * 20
        assert text["Comment"] == "Grüße aus Köln"
        assert (text["Comment"].lang, text["Comment"].tkey) == ("de", "Kommentar")
        assert (text["Title"].lang, text["Title"].tkey) == ("en-GB", "Titel")


def chunk(kind, body):
    """One PNG chunk, CRC included."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_with(chunks, *, after_image=False):
    """A small PNG written by Pillow, with ``chunks`` (bytes) spliced in before its
    first IDAT chunk, or before IEND."""
    buffer = bytes_io.BytesIO()
    photo((8, 8)).save(buffer, "PNG")
    data = buffer.getvalue()
    at = (data.rindex(b"IEND") if after_image else data.index(b"IDAT")) - 4
    return data[:at] + chunks + data[at:]


def test_png_text_after_the_image_data_and_repeated_keywords(tmp_path):
    """Text chunks after IDAT, and a keyword twice (PNG allows it): all kept, in order."""
    path = tmp_path / "late.png"
    path.write_bytes(png_with(chunk(b"tEXt", b"Comment\x00first") + chunk(b"tEXt", b"Comment\x00second"), after_image=True))
    out = tmp_path / "out.png"
    apply_identity(path, out)
    assert png_text_chunks(out) == [("tEXt", "Comment", None), ("tEXt", "Comment", None)]
    assert [t.value for t in io.read_image(out).text] == ["first", "second"]


def test_damaged_or_oversized_text_is_left_out(tmp_path):
    fine = chunk(b"tEXt", b"Fine\x00ok")
    path = tmp_path / "odd.png"
    path.write_bytes(png_with(chunk(b"zTXt", b"Broken\x00\x00not zlib") + chunk(b"iTXt", b"Cut\x00\x01\x00en") + fine))
    assert [(t.keyword, t.value) for t in io.read_image(path).text] == [("Fine", "ok")]
    # A text bomb (Pillow refuses one before the image data; here, the parser alone).
    bomb = chunk(b"zTXt", b"Bomb\x00\x00" + zlib.compress(b"A" * (PngImagePlugin.MAX_TEXT_CHUNK + 10)))
    with Image.open(bytes_io.BytesIO(png_with(fine))) as im:
        found = filemeta.read_text(im, bytes_io.BytesIO(png_with(bomb + fine)))
    assert [(t.keyword, t.value) for t in found] == [("Fine", "ok")]


def test_jpeg_comment_kept(tmp_path):
    source = tmp_path / "in.jpg"
    photo().save(source, quality=90, comment="shot on a Tuesday, 20 °C".encode())
    out = tmp_path / "out.jpg"
    result = apply_identity(source, out)
    assert "warning" not in result.output
    with Image.open(out) as after:
        assert after.info["comment"].decode("utf-8") == "shot on a Tuesday, 20 °C"


def test_text_maps_between_formats(tmp_path):
    # JPEG COM -> PNG Comment
    jpeg = tmp_path / "in.jpg"
    photo().save(jpeg, comment=b"from the camera")
    apply_identity(jpeg, tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as im:
        im.load()
        assert im.text == {"Comment": "from the camera"}
    # PNG Description (no Comment) -> JPEG COM; the others are named in a warning
    png = tmp_path / "in.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("Description", "harbour at dawn")
    info.add_text("Author", "Ada")
    photo().save(png, pnginfo=info)
    result = apply_identity(png, tmp_path / "b.jpg")
    with Image.open(tmp_path / "b.jpg") as im:
        assert im.info["comment"] == b"harbour at dawn"
    assert "JPEG cannot hold the text Author" in result.output
    # PNG -> TIFF: Description, Author -> ImageDescription, Artist (as UTF-8 where not ASCII)
    info = PngImagePlugin.PngInfo()
    info.add_text("Description", "harbour at dawn")
    info.add_itxt("Author", "Zoë")
    info.add_text("Software", "darktable")
    info.add_text("Copyright", "CC BY 4.0")
    photo().save(png, pnginfo=info)
    result = apply_identity(png, tmp_path / "c.tif")
    assert "warning" not in result.output
    with Image.open(tmp_path / "c.tif") as im:
        tags = im.tag_v2
        assert tags[270] == "harbour at dawn" and tags[305] == "darktable" and tags[33432] == "CC BY 4.0"
        assert tags[315].encode("latin-1").decode("utf-8") == "Zoë"
    # TIFF -> PNG: the tags come back under PNG's keywords
    apply_identity(tmp_path / "c.tif", tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as im:
        im.load()
        assert im.text == {"Description": "harbour at dawn", "Author": "Zoë", "Software": "darktable", "Copyright": "CC BY 4.0"}


def test_tiff_text_to_jpeg_keeps_what_the_exif_holds(tmp_path):
    """A TIFF's Artist and Copyright travel in the EXIF a JPEG gets: no warning for them."""
    source = tmp_path / "in.tif"
    tags = {270: "a scanned page", 315: "Ada", 33432: "(c) Ada"}
    photo().save(source, tiffinfo=tags)
    out = tmp_path / "out.jpg"
    result = apply_identity(source, out)
    assert "warning" not in result.output
    with Image.open(out) as im:
        assert im.info["comment"] == b"a scanned page"
        assert im.getexif()[315] == "Ada" and im.getexif()[33432] == "(c) Ada"


@pytest.mark.parametrize("ext", [".webp", ".bmp"])
def test_text_a_format_cannot_hold_warns(tmp_path, ext):
    source = texty_png(tmp_path / "in.png")
    data = io.read_image(source)
    messages = recorded(lambda: io.write_image(tmp_path / f"out{ext}", data.pixels, like=data))
    assert any("cannot hold the text Author, Description, Comment, Title" in m for m in messages), messages
    result = apply_identity(source, tmp_path / f"cli{ext}")
    assert "warning:" in result.output and "Author" in result.output


def test_text_is_kept_in_gif_comment(tmp_path):
    source = tmp_path / "in.gif"
    photo((16, 16)).convert("P").save(source, comment=b"a small animation")
    out = tmp_path / "out.gif"
    apply_identity(source, out)
    with Image.open(out) as im:
        assert im.info.get("comment") == b"a small animation"


def test_xmp_chunk_is_metadata_not_text(tmp_path):
    """PNG's XMP iTXt chunk is carried as XMP (once), not as text as well."""
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp.decode())
    source = tmp_path / "in.png"
    photo().save(source, pnginfo=info)
    data = io.read_image(source)
    assert data.text == () and data.xmp == xmp
    out = tmp_path / "out.png"
    apply_identity(source, out)
    assert [k for _, k, _ in png_text_chunks(out)] == ["XML:com.adobe.xmp"]


def test_text_on_the_16_bit_colour_path(tmp_path):
    """16-bit RGB goes through the codec (imgconv.codec); its text is kept the same way."""
    tifffile = pytest.importorskip("tifffile")
    pixels = np.random.default_rng(7).integers(0, 65536, (12, 20, 3), dtype=np.uint16)
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    ihdr = struct.pack(">IIBBBBB", 20, 12, 16, 2, 0, 0, 0)
    after = chunk(b"tEXt", b"Author\x00Ada") + chunk(b"zTXt", b"Description\x00\x00" + zlib.compress(b"deep"))
    source = tmp_path / "deep.png"  # the text after the pixels, which Pillow does not decode here
    source.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + after + chunk(b"IEND", b"")
    )
    out = tmp_path / "out.png"
    result = apply_identity(source, out)
    assert "warning" not in result.output
    assert png_text_chunks(out) == [("tEXt", "Author", None), ("zTXt", "Description", None)]
    apply_identity(source, tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        page = tif.pages[0]
        assert page.dtype == np.uint16
        assert page.tags[270].value == "deep" and page.tags[315].value == "Ada"
