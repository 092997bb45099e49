"""imgconv.io decoding into numpy's memory and encoding from it (no copies between
Pillow and the kernels where Pillow's rows are numpy's).

Every read is checked against pixels known independently of Pillow's decoders
(PNGs written by hand, lossless files of known arrays, OpenCV for JPEG), against
the plain path (Pillow's own memory, then a copy), and for the path it took;
every write against the file the plain path writes, byte for byte.
"""

import contextlib
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from imgconv import io
from imgconv.chain import parse_chain
from imgconv.engine import run
from imgconv.kernels import load_catalog
from imgconv.pipeline import Job, filter_file

SHAPE = (29, 43)  # odd: no row padding hides a stride bug


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def handmade_png(array, color_type, bit_depth=8, interlace=False):
    """A PNG written without Pillow (filter 0 rows; Adam7 passes when ``interlace``)."""
    h, w = array.shape[:2]
    sample = ">u2" if bit_depth == 16 else "u1"
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    if interlace:
        passes = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))
        raw = b""
        for y0, x0, dy, dx in passes:  # (start row, start column, row step, column step)
            part = array[y0::dy, x0::dx]
            if part.shape[0] and part.shape[1]:
                raw += b"".join(b"\x00" + row.astype(sample).tobytes() for row in part)
    else:
        raw = b"".join(b"\x00" + array[y].astype(sample).tobytes() for y in range(h))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _recording(monkeypatch, name):
    """Every value ``io.<name>`` returns, in a list, as it is called."""
    given = []
    original = getattr(io, name)

    def spy(*args):
        value = original(*args)
        given.append(value)
        return value

    monkeypatch.setattr(io, name, spy)
    return given


@pytest.fixture
def storages(monkeypatch):
    """What io._numpy_storage gave each read (None where it declined)."""
    return _recording(monkeypatch, "_numpy_storage")


def plain_read(monkeypatch, path):
    """read_image by Pillow's own memory (the path before decoding into numpy's)."""
    with monkeypatch.context() as patch:
        patch.setattr(io, "_numpy_storage", lambda im: None)
        return io.read_image(path)


def check_canonical(pixels):
    assert type(pixels) is np.ndarray
    if pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.dtype == np.uint8 and not pixels.flags.c_contiguous:
        # 8-bit RGB decoded into numpy's memory: Pillow's 4-byte rows, read by the kernels as
        # they are -- a plain C-contiguous uint8 array of whole rows, pad bytes 255
        rows, channels, stride = run.padded_rows(pixels)
        assert (channels, stride) == (3, 4) and run.pads_set(pixels)
        assert (rows.reshape(pixels.shape[0], -1, 4)[..., 3] == 255).all()
        pixels = rows
    assert pixels.flags.c_contiguous and pixels.flags.writeable and pixels.dtype.isnative
    assert pixels.flags.aligned


def test_pixels_read_into_numpy_have_the_kernels_one_signature(tmp_path, rng):
    """The kernels compile one signature per numba type: a pixel array decoded into numpy's
    memory must be typed as a plain new array (C order, writable, aligned), never readonly."""
    numba = pytest.importorskip("numba")
    for mode, color_type, bits, channels in PNG_CASES:
        array = rng.integers(0, 2**bits, size=SHAPE + channels).astype(np.uint16 if bits == 16 else np.uint8)
        path = tmp_path / f"{color_type}-{bits}.png"
        path.write_bytes(handmade_png(array, color_type, bits))
        pixels = io.read_image(path, pillow_rows=True).pixels
        if mode == "RGB":  # Pillow's 4-byte rows, which the kernels are handed (engine.run)
            pixels, _, _ = run.padded_rows(pixels)
            array = np.empty((SHAPE[0], SHAPE[1] * 4), np.uint8)
        assert numba.typeof(pixels) == numba.typeof(np.empty_like(array)), mode


# PNG colour types: 0 grey, 2 RGB, 4 grey + alpha, 6 RGBA
PNG_CASES = [
    ("L", 0, 8, ()),
    ("LA", 4, 8, (2,)),
    ("RGB", 2, 8, (3,)),
    ("RGBA", 6, 8, (4,)),
    ("I;16", 0, 16, ()),
]
ZERO_COPY = ("L", "RGBA", "I;16")  # Pillow's rows are numpy's: the decoded array is the pixels


@pytest.mark.parametrize("interlace", [False, True], ids=["plain", "interlaced"])
@pytest.mark.parametrize("mode, color_type, bits, channels", PNG_CASES, ids=[c[0] for c in PNG_CASES])
def test_png_decoded_into_numpy_is_the_written_array(tmp_path, rng, storages, monkeypatch, mode, color_type, bits, channels, interlace):
    top = 65536 if bits == 16 else 256
    array = rng.integers(0, top, size=SHAPE + channels).astype(np.uint16 if bits == 16 else np.uint8)
    path = tmp_path / "x.png"
    path.write_bytes(handmade_png(array, color_type, bits, interlace))
    data = io.read_image(path, pillow_rows=True)
    assert data.mode == mode
    check_canonical(data.pixels)
    np.testing.assert_array_equal(data.pixels, array)
    assert data.pixels.dtype == array.dtype
    (storage,) = storages
    assert storage is not None, "decoded into numpy's memory"
    if mode in ZERO_COPY:
        assert data.pixels is storage.array  # no copy at all
    elif mode == "RGB":
        assert data.pixels.base is storage.array  # Pillow's 4-byte rows, not packed
    else:
        assert not np.shares_memory(data.pixels, storage.array)  # packed out of Pillow's 4-byte rows
    plain = plain_read(monkeypatch, path)
    np.testing.assert_array_equal(data.pixels, plain.pixels)
    assert (data.mode, data.has_alpha, data.format) == (plain.mode, plain.has_alpha, plain.format)
    packed = io.read_image(path)  # by default every layout is packed, RGB too
    assert packed.pixels.flags.c_contiguous
    np.testing.assert_array_equal(packed.pixels, array)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_decoded_into_numpy_matches_opencv_and_the_plain_path(tmp_path, rng, storages, monkeypatch, mode):
    base = rng.integers(0, 256, size=(61, 87, 3), dtype=np.uint8)
    path = tmp_path / "x.jpg"
    Image.fromarray(base).convert(mode).save(path, quality=90)
    data = io.read_image(path, pillow_rows=True)
    check_canonical(data.pixels)
    (storage,) = storages
    assert storage is not None
    assert (data.pixels is storage.array) == (mode == "L")
    assert (data.pixels.base is storage.array) == (mode == "RGB")  # RGB: a view of Pillow's rows
    plain = plain_read(monkeypatch, path)
    np.testing.assert_array_equal(data.pixels, plain.pixels)
    cv2 = pytest.importorskip("cv2")
    decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mode == "RGB":
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(data.pixels, decoded)


def test_mpo_first_image_decoded_into_numpy(tmp_path, rng, storages, monkeypatch):
    """A camera's MPO (a JPEG with previews after it) is read as its first image."""
    first, second = (rng.integers(0, 256, size=(61, 87, 3), dtype=np.uint8) for _ in range(2))
    path = tmp_path / "x.mpo"
    Image.fromarray(first).save(path, format="MPO", save_all=True, append_images=[Image.fromarray(second)])
    data = io.read_image(path, pillow_rows=True)
    assert storages[0] is not None and data.format == "JPEG"
    plain = plain_read(monkeypatch, path)
    np.testing.assert_array_equal(data.pixels, plain.pixels)
    cv2 = pytest.importorskip("cv2")
    np.testing.assert_array_equal(data.pixels, cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_bmp_decoded_into_numpy_is_the_written_array(tmp_path, rng, storages, monkeypatch, mode):
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    array = rng.integers(0, 256, size=SHAPE + channels, dtype=np.uint8)
    path = tmp_path / "x.bmp"
    Image.fromarray(array).save(path)
    data = io.read_image(path, pillow_rows=True)
    plain = plain_read(monkeypatch, path)
    np.testing.assert_array_equal(data.pixels, plain.pixels)
    expected = array[..., :3] if mode == "RGBA" else array  # Pillow writes BMP without alpha
    np.testing.assert_array_equal(data.pixels, expected)
    assert storages[0] is not None


@pytest.mark.parametrize(
    "make, ext",
    [
        (lambda a: Image.fromarray(a).convert("P"), "png"),  # palette: converted after decoding
        (lambda a: Image.fromarray(a).convert("1"), "png"),
        (lambda a: Image.fromarray(a).convert("1"), "bmp"),
        (lambda a: Image.fromarray(a).convert("CMYK"), "jpg"),
        (lambda a: Image.fromarray(a[..., 0]), "tif"),  # TIFF: Pillow's own memory
        (lambda a: Image.fromarray(a), "gif"),
        (lambda a: Image.fromarray(a), "webp"),
    ],
    ids=["P-png", "1-png", "1-bmp", "CMYK-jpg", "L-tif", "gif", "webp"],
)
@pytest.mark.filterwarnings("ignore::imgconv.errors.ImgconvWarning")  # CMYK without a profile
def test_other_modes_and_formats_read_as_before(tmp_path, rng, storages, monkeypatch, make, ext):
    array = rng.integers(0, 256, size=SHAPE + (3,), dtype=np.uint8)
    path = tmp_path / f"x.{ext}"
    params = {"lossless": True} if ext == "webp" else {}
    make(array).save(path, **params)
    data = io.read_image(path)
    check_canonical(data.pixels)
    plain = plain_read(monkeypatch, path)
    np.testing.assert_array_equal(data.pixels, plain.pixels)
    assert data.mode == plain.mode
    assert storages and all(s is None for s in storages)  # Pillow's own memory, as before


def test_png_with_a_transparent_colour_and_l_with_transparency(tmp_path, rng, storages, monkeypatch):
    array = rng.integers(0, 256, size=SHAPE + (3,), dtype=np.uint8)
    path = tmp_path / "key.png"
    Image.fromarray(array).save(path, transparency=tuple(int(v) for v in array[0, 0]))
    data = io.read_image(path)
    assert data.mode == "RGBA" and data.pixels[0, 0, 3] == 0
    np.testing.assert_array_equal(data.pixels[..., :3], array)
    np.testing.assert_array_equal(data.pixels, plain_read(monkeypatch, path).pixels)
    assert storages[0] is not None  # decoded into numpy's memory, then converted by Pillow


def test_animated_png_frames_are_not_decoded_into_numpy(tmp_path, rng, storages, monkeypatch):
    frames = [Image.fromarray(rng.integers(0, 256, size=SHAPE + (3,), dtype=np.uint8)) for _ in range(3)]
    path = tmp_path / "anim.png"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    data = io.read_image(path)
    assert data.frame_count == 3
    assert storages == []  # APNG frames are composited in Pillow's memory
    plain = plain_read(monkeypatch, path)
    for got, want in zip(data.all_frames(), plain.all_frames()):
        np.testing.assert_array_equal(got, want)


def test_without_map_buffer_reading_and_writing_fall_back(tmp_path, rng, monkeypatch):
    array = rng.integers(0, 256, size=SHAPE + (3,), dtype=np.uint8)
    path = tmp_path / "x.png"
    path.write_bytes(handmade_png(array, 2))

    def refuse(*args):
        raise ValueError("no mapping here")

    monkeypatch.setattr(Image.core, "map_buffer", refuse)
    data = io.read_image(path)
    np.testing.assert_array_equal(data.pixels, array)
    io.write_image(tmp_path / "y.png", array)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "y.png")), array)


@pytest.mark.parametrize("mode", ["RGB", "LA", "F"])
def test_images_for_the_encoder_match_fromarray(rng, mode):
    shape = SHAPE + {"RGB": (3,), "LA": (2,), "F": ()}[mode]
    array = rng.random(shape, dtype=np.float32) if mode == "F" else rng.integers(0, 256, size=shape, dtype=np.uint8)
    image = io._image_for(array)
    reference = Image.fromarray(array)
    assert image.mode == reference.mode == mode
    assert image.size == reference.size
    assert image.tobytes() == reference.tobytes()
    np.testing.assert_array_equal(np.asarray(image), array)
    assert image.im is not reference.im
    # made in numpy's memory, not fromarray's
    assert io._in_numpy_storage(io._owned(array), mode) is not None


WRITE_CASES = [
    ("RGB", np.uint8, "jpg"),
    ("RGB", np.uint8, "png"),
    ("RGB", np.uint8, "bmp"),
    ("RGB", np.uint8, "webp"),
    ("RGB", np.uint8, "tif"),
    ("LA", np.uint8, "png"),
    ("LA", np.uint8, "tif"),
    ("LA", np.uint8, "webp"),
    ("F", np.float32, "tif"),
    ("F", np.float32, "png"),
    ("L", np.uint8, "jpg"),
    ("RGBA", np.uint8, "png"),
    ("I;16", np.uint16, "png"),
]


@pytest.mark.parametrize("mode, dtype, ext", WRITE_CASES, ids=[f"{m}-{e}" for m, _, e in WRITE_CASES])
def test_written_files_are_those_of_the_plain_path(tmp_path, rng, monkeypatch, mode, dtype, ext):
    shape = SHAPE + {"RGB": (3,), "LA": (2,), "RGBA": (4,)}.get(mode, ())
    if dtype == np.float32:
        array = rng.random(shape, dtype=np.float32)
    else:
        array = rng.integers(0, np.iinfo(dtype).max + 1, size=shape).astype(dtype)
    fast, plain = tmp_path / f"fast.{ext}", tmp_path / f"plain.{ext}"
    lossy = mode == "F" and ext == "png"  # float written as 16-bit, with a warning
    with pytest.warns(io.ImgconvWarning) if lossy else contextlib.nullcontext():
        io.write_image(fast, array)
    with monkeypatch.context() as patch:
        patch.setattr(io, "_in_numpy_storage", lambda array, mode: None)
        with pytest.warns(io.ImgconvWarning) if lossy else contextlib.nullcontext():
            io.write_image(plain, array)
    assert fast.read_bytes() == plain.read_bytes()


@pytest.mark.parametrize(
    "name, ext, make",
    [
        ("rgb", "jpg", lambda a: Image.fromarray(a)),
        ("grey", "jpg", lambda a: Image.fromarray(a[..., 0])),
        ("rgba", "png", lambda a: Image.fromarray(np.dstack([a, a[..., :1]]))),
        ("la", "png", lambda a: Image.fromarray(np.dstack([a[..., 0], a[..., 1]]))),
        ("grey16", "png", lambda a: Image.fromarray(a[..., 0].astype(np.uint16) * 257)),
        ("rgb", "bmp", lambda a: Image.fromarray(a)),
    ],
)
def test_filter_file_writes_the_plain_paths_bytes(tmp_path, rng, monkeypatch, name, ext, make):
    array = rng.integers(0, 256, size=(37, 45, 3), dtype=np.uint8)
    source = tmp_path / f"{name}.{ext}"
    make(array).save(source, **({"quality": 92} if ext == "jpg" else {}))
    job = Job(chain=parse_chain(["gaussian"], load_catalog(), params=["sigma=1.5"]))
    filter_file(job, source, tmp_path / f"fast.{ext}")
    with monkeypatch.context() as patch:
        patch.setattr(io, "_numpy_storage", lambda im: None)
        patch.setattr(io, "_in_numpy_storage", lambda array, mode: None)
        filter_file(job, source, tmp_path / f"plain.{ext}")
    assert (tmp_path / f"fast.{ext}").read_bytes() == (tmp_path / f"plain.{ext}").read_bytes()


def _rgb_file(tmp_path, rng, ext, shape=(37, 45)):
    array = rng.integers(0, 256, size=shape + (3,), dtype=np.uint8)
    source = tmp_path / f"rgb.{ext}"
    if ext == "png":
        source.write_bytes(handmade_png(array, 2))
    else:
        Image.fromarray(array).save(source, **({"quality": 92} if ext == "jpg" else {}))
    return source


@pytest.mark.parametrize("ext", ["jpg", "png", "bmp"])
@pytest.mark.parametrize("spec", ["gaussian:sigma=1.5", "sharpen", "box:size=5", "emboss"])
def test_rgb_is_filtered_and_written_in_pillows_rows(tmp_path, rng, monkeypatch, ext, spec):
    """8-bit RGB: the kernels read the decoded 4-byte rows and write the encoder's, no
    packing pass either way (the kernels are handed the pixel stride, the encoder's image
    shares the kernels' output), and the file is the plain path's, byte for byte."""
    from imgconv.engine import cpu

    source = _rgb_file(tmp_path, rng, ext)
    name, *params = spec.split(":")
    job = Job(chain=parse_chain([name], load_catalog(), params=params))
    strides, shared = [], []
    for entry in ("run_direct", "run_separable"):
        original = getattr(cpu, entry)

        def spy(*args, _original=original, **kwargs):
            strides.append(kwargs.get("pixel_stride"))
            out, finished = _original(*args, **kwargs)
            shared.append(out)
            return out, finished

        monkeypatch.setattr(cpu, entry, spy)
    images = _recording(monkeypatch, "_image_for")
    filter_file(job, source, tmp_path / f"fast.{ext}")
    assert strides == [4]
    (out,) = shared
    assert out.shape == (37, 45 * 4) and (out.reshape(37, 45, 4)[..., 3] == 255).all()
    (image,) = images
    assert image.mode == "RGB" and image.tobytes() == np.ascontiguousarray(out.reshape(37, 45, 4)[..., :3]).tobytes()
    out[0, 0] ^= 0xFF  # the encoder's image is the kernels' output, not a copy of it
    assert image.getpixel((0, 0))[0] == out[0, 0]
    out[0, 0] ^= 0xFF
    with monkeypatch.context() as patch:
        patch.setattr(io, "_numpy_storage", lambda im: None)
        patch.setattr(io, "_in_numpy_storage", lambda array, mode: None)
        filter_file(job, source, tmp_path / f"plain.{ext}")
    assert strides[-1] is None  # the plain path: packed rows
    assert (tmp_path / f"fast.{ext}").read_bytes() == (tmp_path / f"plain.{ext}").read_bytes()
    if ext != "jpg":  # lossless: the file holds the kernels' result, as another library reads it
        cv2 = pytest.importorskip("cv2")
        written = cv2.cvtColor(cv2.imread(str(tmp_path / f"fast.{ext}"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(written, out.reshape(37, 45, 4)[..., :3])


def test_rgb_without_map_buffer_and_other_routes_are_packed(tmp_path, rng, monkeypatch):
    """Where Pillow refuses the mapping the pixels are packed as before; routes that do not
    take a pixel stride (numpy, FFT) get packed rows from the 4-byte ones: the same bits."""
    from imgconv.engine import compiled

    source = _rgb_file(tmp_path, rng, "png", shape=(23, 31))
    data = io.read_image(source, pillow_rows=True)
    assert run.padded_rows(data.pixels) is not None
    kernel = np.asarray(load_catalog().resolve("gaussian", {"sigma": 1.0}).kernels[0].matrix)
    expected = [imgconv_convolve(np.ascontiguousarray(data.pixels), kernel, strategy) for strategy in ("direct", "separable", "fft")]
    for strategy, want in zip(("direct", "separable", "fft"), expected):
        np.testing.assert_array_equal(imgconv_convolve(data.pixels, kernel, strategy), want)
    with monkeypatch.context() as patch:
        patch.setattr(compiled, "use_vector", lambda strategy, work: True)  # the numpy twin
        for strategy, want in zip(("direct", "separable"), expected):
            got = imgconv_convolve(data.pixels, kernel, strategy)
            assert got.flags.c_contiguous  # packed rows in, packed out
            np.testing.assert_array_equal(got, want)

    def refuse(*args):
        raise ValueError("no mapping here")

    monkeypatch.setattr(Image.core, "map_buffer", refuse)
    fallback = io.read_image(source, pillow_rows=True)
    check_canonical(fallback.pixels)
    assert fallback.pixels.flags.c_contiguous
    np.testing.assert_array_equal(fallback.pixels, data.pixels)
    io.write_image(tmp_path / "y.png", imgconv_convolve(data.pixels, kernel, "direct"))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "y.png")), expected[0])


def imgconv_convolve(pixels, kernel, strategy):
    """A uint8 result finished in the kernel, as the single-filter path runs it."""
    from imgconv.engine.finish import Finish

    out, _ = run.convolve_planned(pixels, kernel, mode="reflect", cval=0.0, strategy=strategy, finish=Finish(np.uint8))
    return out


def test_padded_views_are_recognised_only_where_whole(rng):
    storage = rng.integers(0, 256, size=(5, 7, 4), dtype=np.uint8)
    rows, channels, stride = run.padded_rows(storage[:, :, :3])
    assert rows.shape == (5, 28) and (channels, stride) == (3, 4) and np.shares_memory(rows, storage)
    assert not run.pads_set(storage[:, :, :3])  # not marked: its pad bytes are not known to be 255
    for other in (storage[:, 1:, :3], storage[1:, :, :3], storage[:, :, 1:], storage[..., :3].copy(), storage[:, ::2, :3]):
        found = run.padded_rows(other)
        assert found is None or (found[0].shape[0] == other.shape[0] and np.array_equal(found[0].reshape(other.shape[0], -1, 4)[..., :3], other))
    readonly = storage.copy()
    readonly.flags.writeable = False
    assert run.padded_rows(readonly[:, :, :3]) is None
    # Packed for the routes that take packed rows: by Pillow's packer once io registered it, else numpy.
    want = np.ascontiguousarray(storage[:, :, :3]).reshape(5, 21)
    np.testing.assert_array_equal(run.packed(rows, 3, 4), want)
    np.testing.assert_array_equal(io._pack_rgb(rows), want)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run, "_packer", None)
        np.testing.assert_array_equal(run.packed(rows, 3, 4), want)
        got, channels = run.canonical_rows(storage[:, :, :3])
        assert channels == 3 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)
    # A view of unmarked memory goes to the encoder packed (its pad bytes may be anything).
    image = io._image_for(storage[:, :, :3])
    assert image.tobytes() == np.ascontiguousarray(storage[:, :, :3]).tobytes()


@pytest.mark.parametrize("why", ["numpy route", "chain", "fft"])
def test_rgb_read_packed_where_the_kernels_would_not_take_pillows_rows(tmp_path, rng, monkeypatch, why):
    """Where the filtering would pack the rows anyway (the numpy twin, a chain, the FFT),
    filter_file reads them packed, as before (no packed copy beside Pillow's rows)."""
    from imgconv.engine import compiled

    source = _rgb_file(tmp_path, rng, "png")
    chain = parse_chain(["gaussian:sigma=1.5,sharpen"], load_catalog()) if why == "chain" else parse_chain(["gaussian"], load_catalog(), params=["sigma=1.5"])
    job = Job(chain=chain, strategy="fft" if why == "fft" else "auto")
    if why == "numpy route":
        monkeypatch.setattr(compiled, "would_use_vector", lambda strategy, work: True)
        monkeypatch.setattr(compiled, "use_vector", lambda strategy, work: True)
    read = []
    original = io.read_image

    def spy(*args, **kwargs):
        data = original(*args, **kwargs)
        read.append(data.pixels)
        return data

    monkeypatch.setattr(io, "read_image", spy)
    filter_file(job, source, tmp_path / "fast.png")
    (pixels,) = read
    assert pixels.flags.c_contiguous  # packed
    with monkeypatch.context() as patch:
        patch.setattr(io, "_numpy_storage", lambda im: None)
        patch.setattr(io, "_in_numpy_storage", lambda array, mode: None)
        filter_file(job, source, tmp_path / "plain.png")
    assert (tmp_path / "fast.png").read_bytes() == (tmp_path / "plain.png").read_bytes()


def test_a_route_without_pixel_strides_is_handed_packed_rows(rng, monkeypatch):
    """What the GPU route (or any route but the compiled CPU one) is handed for a view of
    Pillow's rows: packed, C-contiguous rows, and its packed result comes back shaped as the image."""
    import dataclasses

    from imgconv.engine.finish import Finish
    from imgconv.engine.plan import make_plan

    storage = rng.integers(0, 256, size=(9, 11, 4), dtype=np.uint8)
    seen = []

    def gpu_like(plan, rows, channels, mode, cval, finish, threads):
        seen.append(rows)
        return rows.copy(), True  # an identity, finished

    plan = dataclasses.replace(make_plan(np.ones((1, 1)), (9, 11, 3), strategy="direct"), backend="cuda")
    monkeypatch.setattr(run, "make_plan", lambda *args, **kwargs: plan)
    monkeypatch.setattr(run, "_entry", lambda plan, elements, taps=None: (gpu_like, False))
    out, _ = run.convolve_planned(storage[:, :, :3], np.ones((1, 1)), mode="reflect", cval=0.0, finish=Finish(np.uint8))
    (rows,) = seen
    assert rows.shape == (9, 33) and rows.flags.c_contiguous
    np.testing.assert_array_equal(out, storage[:, :, :3])
