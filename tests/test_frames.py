"""Every frame and page: animated GIF, APNG, animated WebP and multi-page TIFF
are read whole, each frame filtered as that frame alone, and written back with
their timing where the output format holds it.

Inputs are written by Pillow (``save_all``) or tifffile, never by imgconv;
outputs are read back by Pillow or tifffile.  Images are tiny.
"""

import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageSequence

import imgconv
from imgconv import io
from imgconv.chain import Chain
from imgconv.cli import cli
from imgconv.errors import ImageError, ImgconvWarning
from imgconv.kernels import load_catalog
from imgconv.pipeline import Job, filter_frames, filter_image

DURATIONS = [40, 70, 110]


def run(*args, input=None, env=None):
    result = CliRunner().invoke(cli, [str(a) for a in args], input=input, env=env, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def random_frames(rng, layout, count=3, shape=(13, 17)):
    channels = {"L": (), "LA": (2,), "RGB": (3,), "RGBA": (4,)}[layout]
    frames = [rng.integers(0, 256, size=shape + channels, dtype=np.uint8) for _ in range(count)]
    if layout in ("LA", "RGBA"):
        for frame in frames:
            frame[..., -1] = rng.choice([0, 128, 255], size=shape)  # transparent, partial, opaque
    return frames


def save_animation(path, frames, **params):
    """An animation written by Pillow from full frames."""
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], **params)
    return path


def pillow_frames(path, mode=None):
    """(frames as Pillow shows them, durations, loop, format) of the file at ``path``."""
    with Image.open(path) as im:
        loop = im.info.get("loop")
        frames, durations = [], []
        for frame in ImageSequence.Iterator(im):
            frames.append(np.array(frame.convert(mode) if mode else frame))
            durations.append(frame.info.get("duration"))
        return frames, durations, loop, im.format


def filtered_alone(frames, name="blur", **params):
    return [imgconv.apply_filter(frame, name, **params) for frame in frames]


def assert_frames_equal(got, expected):
    assert len(got) == len(expected)
    for index, (one, other) in enumerate(zip(got, expected)):
        np.testing.assert_array_equal(one, other, err_msg=f"frame {index + 1}")


def one_line_error(result, path):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert str(path) in lines[0]


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


# ---------------------------------------------------------------------------
# reading: the data model


def test_apng_reads_every_frame_with_its_timing(tmp_path, rng):
    frames = random_frames(rng, "RGBA")
    path = save_animation(tmp_path / "anim.png", frames, duration=DURATIONS, loop=2)
    data = io.read_image(path)
    assert data.frame_count == 3 and len(data.more_frames) == 2
    assert_frames_equal(data.all_frames(), frames)
    assert data.pixels is data.all_frames()[0] and data.mode == "RGBA" and data.has_alpha
    for frame in data.more_frames:  # one canonical layout for every frame
        assert frame.dtype == data.pixels.dtype and frame.shape == data.pixels.shape
        assert frame.flags.c_contiguous and frame.flags.writeable
    assert data.animation.durations == tuple(DURATIONS) and data.animation.loop == 2
    assert data.animation.disposals == (0, 0, 0) and data.animation.blends == (0, 0, 0)


def test_gif_frames_are_composited_as_shown(tmp_path, rng):
    """Pillow's writer stores later frames as deltas (a bounding box, unchanged pixels
    transparent); each frame read is the full canvas a viewer shows."""
    base = rng.integers(0, 4, size=(12, 16, 3), dtype=np.uint8) * 80
    frames = []
    for step in range(3):
        frame = base.copy()
        frame[2:5, 3 * step : 3 * step + 4] = [255, 0, 0]
        frames.append(frame)
    path = save_animation(tmp_path / "anim.gif", frames, duration=DURATIONS, loop=0)
    data = io.read_image(path)
    assert data.mode == "RGB" and data.frame_count == 3
    assert_frames_equal(data.all_frames(), frames)
    assert data.animation.durations == tuple(DURATIONS) and data.animation.loop == 0


def test_gif_without_loop_extension_plays_once(tmp_path, rng):
    path = save_animation(tmp_path / "once.gif", random_frames(rng, "L"), duration=50)
    data = io.read_image(path)
    assert data.frame_count == 3 and data.animation.loop is None


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_tiff_stack_reads_every_page(tmp_path, rng, dtype):
    stack = (rng.integers(0, 65536, size=(4, 9, 11)) / (1 if dtype == np.uint16 else 65535)).astype(dtype)
    path = tmp_path / "stack.tif"
    try:
        import tifffile

        tifffile.imwrite(path, stack, photometric="minisblack")
    except ImportError:
        save_animation(path, list(stack))
    data = io.read_image(path)
    assert data.frame_count == 4 and data.pixels.dtype == dtype and data.animation is None
    assert_frames_equal(data.all_frames(), list(stack))


def test_tiff_pages_of_other_sizes_and_layouts(tmp_path, rng):
    """Pages may differ in size; 8-bit grey and colour pages widen to one layout, exactly."""
    grey = rng.integers(0, 256, size=(6, 7), dtype=np.uint8)
    colour = rng.integers(0, 256, size=(8, 5, 3), dtype=np.uint8)
    path = tmp_path / "pages.tif"
    Image.fromarray(grey).save(path, save_all=True, append_images=[Image.fromarray(colour)])
    data = io.read_image(path)
    assert data.mode == "RGB" and data.frame_count == 2
    np.testing.assert_array_equal(data.pixels, np.stack([grey] * 3, axis=-1))
    np.testing.assert_array_equal(data.more_frames[0], colour)


def test_single_frame_files_are_read_as_before(tmp_path, rng):
    pixels = rng.integers(0, 256, size=(9, 10, 3), dtype=np.uint8)
    for ext in ("png", "gif", "tif", "webp"):
        path = tmp_path / f"one.{ext}"
        Image.fromarray(pixels).save(path, **({"lossless": True} if ext == "webp" else {}))
        with warnings.catch_warnings():
            warnings.simplefilter("error", ImgconvWarning)
            data = io.read_image(path)
        assert data.frame_count == 1 and data.more_frames == () and data.animation is None, ext


# ---------------------------------------------------------------------------
# apply: each frame filtered as that frame alone, written with its timing


@pytest.mark.parametrize("layout", ["RGB", "RGBA", "L"])
def test_apng_each_frame_filtered_alone(tmp_path, rng, layout):
    frames = random_frames(rng, layout)
    source = save_animation(tmp_path / "anim.png", frames, duration=DURATIONS, loop=3)
    out = tmp_path / "out.png"
    result = run("apply", "sharpen", source, out)
    assert result.exit_code == 0 and not result.output, result.output
    got, durations, loop, fmt = pillow_frames(out)
    assert fmt == "PNG" and durations == DURATIONS and loop == 3
    assert_frames_equal(got, filtered_alone(frames, "sharpen", has_alpha=layout.endswith("A")))


def test_gif_each_frame_filtered_alone(tmp_path, rng):
    """Grey frames keep at most 256 levels when filtered: exact in a GIF."""
    frames = random_frames(rng, "L")
    source = save_animation(tmp_path / "anim.gif", frames, duration=DURATIONS, loop=0, optimize=False)
    out = tmp_path / "out.gif"
    result = run("apply", "blur", source, out)
    assert result.exit_code == 0 and not result.output, result.output
    got, durations, loop, fmt = pillow_frames(out, "L")
    assert fmt == "GIF" and durations == DURATIONS and loop == 0
    assert_frames_equal(got, filtered_alone(frames))


def test_gif_transparency_survives_as_shown(tmp_path, rng):
    """Frames with holes that move: written as full frames disposed to the
    background, each shows as it was (an opaque pixel never shows through)."""
    frames = []
    for step in range(3):
        frame = np.zeros((10, 14, 4), np.uint8)
        frame[..., :3] = rng.integers(0, 3, size=(10, 14, 3)) * 100
        frame[..., 3] = 255
        frame[2:6, 2 + 3 * step : 6 + 3 * step, 3] = 0
        frame[frame[..., 3] == 0, :3] = 0
        frames.append(frame)
    source = save_animation(tmp_path / "holes.gif", frames, duration=DURATIONS, loop=0, disposal=2)
    out = tmp_path / "out.gif"
    assert run("apply", "identity", source, out).exit_code == 0
    got, durations, _, _ = pillow_frames(out, "RGBA")
    for frame in got:
        frame[frame[..., 3] == 0, :3] = 0
    assert_frames_equal(got, frames)
    assert durations == DURATIONS


def test_tiff_16bit_stack_each_page_filtered_alone(tmp_path, rng):
    tifffile = pytest.importorskip("tifffile")
    stack = rng.integers(0, 65536, size=(3, 12, 15), dtype=np.uint16)
    source = tmp_path / "stack.tif"
    tifffile.imwrite(source, stack, photometric="minisblack")
    out = tmp_path / "out.tif"
    result = run("apply", "gaussian", "-p", "sigma=1.5", source, out)
    assert result.exit_code == 0 and not result.output, result.output
    got = tifffile.imread(out, key=range(3))
    assert got.shape == stack.shape and got.dtype == np.uint16
    assert_frames_equal(list(got), filtered_alone(stack, "gaussian", sigma=1.5))


def _unfilter(raw, width, height, depth, channels):
    """PNG scanlines (filter byte + bytes) back to pixels, every row filter undone."""
    step = max(1, channels * depth // 8)
    stride = width * channels * depth // 8
    previous, rows = bytearray(stride), []
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - step] if i >= step else 0
            b = previous[i]
            c = previous[i - step] if i >= step else 0
            p = a + b - c
            paeth = a if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c) else b if abs(p - b) <= abs(p - c) else c
            line[i] = (line[i] + (0, a, b, (a + b) // 2, paeth)[kind]) & 255
        rows.append(bytes(line))
        previous = line
    return np.frombuffer(b"".join(rows), ">u2" if depth == 16 else np.uint8).reshape(height, width, channels)


def apng_frames(data):
    """Every frame of an APNG whose frames are full canvases, decoded independently of
    imgconv and Pillow (checksums checked): the IDAT image when an fcTL precedes it, then each fdAT run."""
    import struct
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        body = data[at + 8 : at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0] == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks.append((kind, body))
        at += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", chunks[0][1][:10])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    frames, current, default_is_frame = [], None, False
    for kind, body in chunks[1:]:
        if kind == b"fcTL":
            if current is not None:
                frames.append(current)
            current = []
            frame_width, frame_height = struct.unpack(">II", body[4:12])
            assert (frame_width, frame_height) == (width, height)  # full canvases
        elif kind == b"IDAT":
            default_is_frame = current is not None and not frames
            if default_is_frame:
                current.append(body)
        elif kind == b"fdAT":
            current.append(body[4:])
    if current:
        frames.append(current)
    return [_unfilter(zlib.decompress(b"".join(parts)), width, height, depth, channels).astype(np.uint16) for parts in frames]


def test_16bit_colour_stack_each_page_filtered_alone(tmp_path, rng):
    """16-bit RGB pages (the codec's) stay 16-bit, into TIFF pages and APNG frames."""
    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("pyvips")
    stack = rng.integers(0, 65536, size=(3, 10, 12, 3), dtype=np.uint16)
    source = tmp_path / "rgb16.tif"
    tifffile.imwrite(source, stack, photometric="rgb")
    expected = filtered_alone(list(stack))
    assert run("apply", "blur", source, tmp_path / "out.tif").exit_code == 0
    assert_frames_equal(list(tifffile.imread(tmp_path / "out.tif", key=range(3))), expected)
    assert run("apply", "blur", source, tmp_path / "out.png").exit_code == 0
    assert_frames_equal(apng_frames((tmp_path / "out.png").read_bytes()), expected)


def test_16bit_frames_into_apng_all_kept(tmp_path):
    """Frames that differ only beyond 8 bits stay distinct (Pillow's own APNG
    writer would merge them) and stay 16-bit."""
    stack = [np.full((5, 6), value, np.uint16) for value in (1000, 2000, 3000)]
    source = save_animation(tmp_path / "stack.tif", stack)
    out = tmp_path / "out.png"
    assert run("apply", "identity", source, out).exit_code == 0
    got, durations, loop, _ = pillow_frames(out)
    assert_frames_equal(got, stack)
    assert durations == [io.DEFAULT_FRAME_MS] * 3 and loop == 0  # pages have no timing: the default


def test_animation_into_webp_keeps_frames_and_timing(tmp_path, rng):
    frames = random_frames(rng, "RGB")
    source = save_animation(tmp_path / "anim.png", frames, duration=DURATIONS, loop=0)
    out = tmp_path / "out.webp"
    assert run("apply", "blur", source, out).exit_code == 0
    got, durations, loop, fmt = pillow_frames(out, "RGB")
    assert fmt == "WEBP" and durations == DURATIONS and loop == 0 and len(got) == 3
    for one, expected in zip(got, filtered_alone(frames)):
        assert np.abs(one.astype(int) - expected).mean() < 3  # lossy or lossless, as WebP output is


def test_animation_into_tiff_keeps_pages_and_says_timing_is_lost(tmp_path, rng):
    frames = random_frames(rng, "RGB")
    source = save_animation(tmp_path / "anim.gif", frames, duration=DURATIONS)
    data = io.read_image(source)
    out = tmp_path / "out.tif"
    result = run("apply", "blur", source, out)
    assert result.exit_code == 0 and "durations and loop were not written" in result.output
    got, _, _, _ = pillow_frames(out)
    assert_frames_equal(got, filtered_alone(data.all_frames()))


@pytest.mark.parametrize("ext", ["jpg", "bmp"])
def test_multi_frame_into_one_frame_format_warns(tmp_path, rng, ext):
    frames = random_frames(rng, "RGB")
    source = save_animation(tmp_path / "anim.png", frames, duration=DURATIONS)
    out = tmp_path / f"out.{ext}"
    result = run("apply", "blur", source, out)
    assert result.exit_code == 0
    assert result.output.count("only the first of 3 frames was written") == 1
    with Image.open(out) as im:
        assert getattr(im, "n_frames", 1) == 1
        if ext == "bmp":
            np.testing.assert_array_equal(np.array(im), filtered_alone(frames[:1])[0])


def test_write_image_warns_for_one_frame_formats(tmp_path, rng):
    frames = random_frames(rng, "RGB")
    with pytest.warns(ImgconvWarning, match="only the first of 3 frames"):
        io.write_image(tmp_path / "out.jpg", frames[0], more_frames=frames[1:])


def test_write_image_refuses_frames_of_another_layout(tmp_path, rng):
    frames = random_frames(rng, "RGB")
    with pytest.raises(ValueError, match="more_frames"):
        io.write_image(tmp_path / "out.png", frames[0], more_frames=[frames[1][..., 0]])


def test_apng_default_image_kept_in_apng(tmp_path, rng):
    default, *animation = random_frames(rng, "RGB", count=3)
    source = tmp_path / "default.png"
    Image.fromarray(default).save(
        source, save_all=True, default_image=True, append_images=[Image.fromarray(f) for f in animation], duration=[60, 90]
    )
    data = io.read_image(source)
    assert data.animation.default_image and data.frame_count == 3
    out = tmp_path / "out.png"
    assert run("apply", "identity", source, out).exit_code == 0
    with Image.open(out) as im:
        assert im.info.get("default_image") and im.n_frames == 3
    result = run("apply", "identity", source, tmp_path / "out.gif")
    assert result.exit_code == 0 and "default image" in result.output
    got, durations, _, _ = pillow_frames(tmp_path / "out.gif", "RGB")
    assert durations == [60, 90] and len(got) == 2


def test_single_frame_files_are_written_as_before(tmp_path, rng):
    pixels = rng.integers(0, 256, size=(9, 10, 3), dtype=np.uint8)
    source = tmp_path / "one.png"
    Image.fromarray(pixels).save(source)
    out = tmp_path / "out.png"
    result = run("apply", "blur", source, out)
    assert result.exit_code == 0 and not result.output
    assert b"acTL" not in out.read_bytes()  # a plain PNG
    np.testing.assert_array_equal(np.array(Image.open(out)), filtered_alone([pixels])[0])


# ---------------------------------------------------------------------------
# the pipeline, batch, standard input and output, gallery


def test_filter_frames_reports_the_plans_once(tmp_path, rng, catalog):
    frames = random_frames(rng, "RGB")
    data = io.read_image(save_animation(tmp_path / "anim.png", frames, duration=DURATIONS))
    job = Job(Chain.of(catalog.resolve("sobel")))
    filtered, plans = filter_frames(job, data)
    first, first_plans = filter_image(job, data)
    assert plans == first_plans and len(plans) == 2  # sobel: two kernels, run on every frame
    np.testing.assert_array_equal(filtered[0], first)
    assert_frames_equal(filtered, [imgconv.apply_filter(frame, "sobel") for frame in frames])
    result = run("apply", "sobel", tmp_path / "anim.png", tmp_path / "out.png", "--explain")
    assert result.output.count("sobel: kernel") == 2


def test_stdin_and_stdout_keep_frames(tmp_path, rng):
    frames = random_frames(rng, "RGB")
    data = save_animation(tmp_path / "anim.png", frames, duration=DURATIONS, loop=1).read_bytes()
    result = CliRunner().invoke(cli, ["apply", "blur", "-", "-"], input=data, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    (tmp_path / "back.png").write_bytes(result.stdout_bytes)
    got, durations, loop, fmt = pillow_frames(tmp_path / "back.png")
    assert fmt == "PNG" and durations == DURATIONS and loop == 1
    assert_frames_equal(got, filtered_alone(frames))
    grey = random_frames(rng, "L")
    data = save_animation(tmp_path / "anim.gif", grey, duration=DURATIONS, optimize=False).read_bytes()
    result = CliRunner().invoke(cli, ["apply", "blur", "-", "-"], input=data, catch_exceptions=False)
    (tmp_path / "back.gif").write_bytes(result.stdout_bytes)
    got, durations, _, fmt = pillow_frames(tmp_path / "back.gif", "L")
    assert fmt == "GIF" and durations == DURATIONS
    assert_frames_equal(got, filtered_alone(grey))


def test_batch_keeps_frames(tmp_path, rng):
    folder = tmp_path / "in"
    folder.mkdir()
    frames = random_frames(rng, "RGB")
    save_animation(folder / "anim.png", frames, duration=DURATIONS, loop=0)
    grey = random_frames(rng, "L")
    save_animation(folder / "anim.gif", grey, duration=DURATIONS, optimize=False)
    stack = [rng.integers(0, 65536, size=(7, 8), dtype=np.uint16) for _ in range(3)]
    save_animation(folder / "stack.tif", stack)
    result = run("batch", "blur", folder, tmp_path / "out", "-j", "1")
    assert result.exit_code == 0, result.output
    got, durations, loop, _ = pillow_frames(tmp_path / "out" / "anim.png")
    assert durations == DURATIONS and loop == 0
    assert_frames_equal(got, filtered_alone(frames))
    got, durations, _, _ = pillow_frames(tmp_path / "out" / "anim.gif", "L")
    assert durations == DURATIONS
    assert_frames_equal(got, filtered_alone(grey))
    got, _, _, _ = pillow_frames(tmp_path / "out" / "stack.tif")
    assert_frames_equal(got, filtered_alone(stack))


def test_gallery_says_once_it_shows_the_first_frame(tmp_path, rng):
    source = save_animation(tmp_path / "anim.png", random_frames(rng, "RGB"), duration=DURATIONS)
    result = run("gallery", source, tmp_path / "sheet.png", "-k", "blur,sharpen")
    assert result.exit_code == 0
    assert result.output.count("first of its 3 frames") == 1


# ---------------------------------------------------------------------------
# bounds and bad input: one line naming the file, exit 1, nothing written


def gif_claiming(frames, width=1000, height=1000):
    """A GIF of ``frames`` 1x1 images on a large canvas: a few bytes each, a full canvas each once composited."""
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x21\xf9\x04\x00\x0a\x00\x00\x00" + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return header + frame * frames + b"\x3b"


def test_gif_claiming_100000_frames_is_refused_at_once(tmp_path):
    source = tmp_path / "bomb.gif"
    source.write_bytes(gif_claiming(100_000))
    out = tmp_path / "out.gif"
    started = time.perf_counter()
    result = run("apply", "blur", source, out)
    assert time.perf_counter() - started < 5
    one_line_error(result, source)
    assert "frames" in result.output and "IMGCONV_MAX_PIXELS" in result.output
    assert not out.exists()


def test_frames_count_against_the_pixel_limit(tmp_path, rng, monkeypatch):
    """Three 10x10 frames are 300 pixels: over a limit of 250 that one frame is under."""
    frames = random_frames(rng, "RGB", shape=(10, 10))
    single = tmp_path / "one.png"
    Image.fromarray(frames[0]).save(single)
    monkeypatch.setenv(io.MAX_PIXELS_ENV, "250")
    io.read_image(single)
    for name in ("anim.png", "anim.gif", "anim.webp", "pages.tif"):
        path = save_animation(tmp_path / name, frames, duration=DURATIONS)
        with pytest.raises(ImageError, match="frames"):
            io.read_image(path)


def with_chunk_body(data, kind, which, edit):
    """The PNG ``data`` with the body of its ``which``-th ``kind`` chunk replaced by
    ``edit(body)`` (its CRC made right: the damage is in the content)."""
    found, position = [], 8
    while position + 8 <= len(data):
        length = struct.unpack(">I", data[position : position + 4])[0]
        if data[position + 4 : position + 8] == kind:
            found.append((position, length))
        position += 12 + length
    at, length = found[which]
    body = edit(bytearray(data[at + 8 : at + 8 + length]))
    chunk = struct.pack(">I", len(body)) + kind + bytes(body) + struct.pack(">I", zlib.crc32(kind + bytes(body)))
    return data[:at] + chunk + data[at + 12 + length :]


def refused_and_nothing_written(tmp_path, data, name):
    source = tmp_path / name
    source.write_bytes(data)
    out = tmp_path / f"out{source.suffix}"
    one_line_error(run("apply", "blur", source, out), source)
    assert not out.exists()


def test_apng_claiming_many_frames_is_refused_before_decoding(tmp_path):
    """acTL says 100 000 frames of 1000x1000: refused from the header."""
    frames = [np.zeros((1000, 1000), np.uint8), np.ones((1000, 1000), np.uint8)]
    data = save_animation(tmp_path / "two.png", frames, duration=50).read_bytes()

    def claim(body):
        body[0:4] = struct.pack(">I", 100_000)
        return body

    refused_and_nothing_written(tmp_path, with_chunk_body(data, b"acTL", 0, claim), "bomb.png")


@pytest.mark.parametrize("damage", ["sequence", "outside the canvas", "truncated"])
@pytest.mark.parametrize("which", [0, 1])
def test_apng_with_broken_frame_control_chunk(tmp_path, rng, damage, which):
    data = save_animation(tmp_path / "anim.png", random_frames(rng, "RGB"), duration=DURATIONS).read_bytes()

    def broken(body):
        if damage == "sequence":
            body[0:4] = struct.pack(">I", 7)
        elif damage == "outside the canvas":
            body[4:8] = struct.pack(">I", 5000)
        else:
            body = body[:10]
        return body

    refused_and_nothing_written(tmp_path, with_chunk_body(data, b"fcTL", which, broken), "broken.png")


def test_truncated_later_gif_frame(tmp_path, rng):
    data = save_animation(tmp_path / "anim.gif", random_frames(rng, "RGB", shape=(40, 40)), duration=DURATIONS).read_bytes()
    source = tmp_path / "cut.gif"
    source.write_bytes(data[: len(data) * 3 // 4])
    out = tmp_path / "out.gif"
    result = run("apply", "blur", source, out)
    if result.exit_code == 0:  # Pillow may take the cut as the end of the animation
        assert io.read_image(out).frame_count >= 1
    else:
        one_line_error(result, source)
        assert not out.exists()


def test_stdin_bomb_is_refused(tmp_path):
    result = CliRunner().invoke(cli, ["apply", "blur", "-", "-"], input=gif_claiming(100_000), catch_exceptions=False)
    assert result.exit_code == 1 and "<stdin>" in result.stderr and not result.stdout_bytes


def test_reading_many_small_frames_is_quick(tmp_path):
    """Counting needs no decoding: 3 000 frames of a small canvas read in well under a few seconds."""
    source = tmp_path / "many.gif"
    source.write_bytes(gif_claiming(3000, 8, 8))
    started = time.perf_counter()
    data = io.read_image(source)
    assert data.frame_count == 3000 and time.perf_counter() - started < 5
