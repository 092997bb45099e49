"""The guard against decompression bombs, sized by memory (imgconv.memory).

An image is accepted when reading and filtering it fits in the memory the
platform reports as available (with a margin), whatever its pixel count; a
header claiming more is refused before any pixel is decoded, in one line.
The available memory is patched here, so no test needs (or decodes) 100 MP.
Inputs are written by hand or with Pillow, never with imgconv.
"""

import dataclasses
import os
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from imgconv import io, memory
from imgconv.chain import Chain, float_copies, parse_chain
from imgconv.cli import cli
from imgconv.errors import ImageError
from imgconv.kernels import load_catalog
from imgconv.pipeline import Job, filter_file

GiB = 2**30
MiB = 2**20


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(use_env=False)


@pytest.fixture
def machine(monkeypatch):
    """Set the memory the platform reports as available: ``machine(16 * GiB)``."""
    monkeypatch.delenv(memory.MAX_PIXELS_ENV, raising=False)

    def set_available(amount):
        monkeypatch.setattr(memory, "available_memory", lambda: amount)

    return set_available


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header(path, width, height, color_type=2, bit_depth=8, idat=b""):
    """A PNG that claims width x height over a few bytes (Pillow opens it; decoding fails)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + (chunk(b"IDAT", zlib.compress(idat)) if idat else b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b""))
    return path


def one_line(excinfo, path):
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message
    return message


def refused_fast(path):
    """The one-line ImageError reading ``path`` gives, in well under a second."""
    start = time.perf_counter()
    with pytest.raises(ImageError) as excinfo:
        io.read_image(path)
    assert time.perf_counter() - start < 1.0
    return one_line(excinfo, path)


# ---------------------------------------------------------------------------
# the estimate


def test_memory_needed_follows_its_reasoning():
    n = 10000 * 10000
    # 100 MP RGB, a single filter: Pillow's 4-byte RGB and the array while reading (7 bytes
    # a pixel), then input and output (6): 7 bytes a pixel, 2.33x the decoded 3.
    assert memory.memory_needed(10000, 10000, 3, decode_bytes_per_pixel=4) == 7 * n
    # 8-bit grey: 2x.  Float32 copies cost 4 bytes a channel each.
    assert memory.memory_needed(10000, 10000, 1) == 2 * n
    assert memory.memory_needed(10000, 10000, 3, channels=3, float_copies=2, decode_bytes_per_pixel=4) == (3 + 3 + 24) * n
    # frames: every frame's input and output held, one frame's transient
    assert memory.memory_needed(100, 100, 1, frames=5) == 5 * 10000 + 10000 * max(1, 5)


def test_float_copies_by_route(catalog):
    gaussian = Chain.of(catalog.resolve("gaussian", {"sigma": 2}))
    assert float_copies(gaussian, has_alpha=False, dtype=np.uint8) == 0  # fused: output written directly
    sobel = Chain.of(catalog.resolve("sobel"))
    chain = parse_chain("blur,sharpen", catalog)
    # Band by band (engine/stream.py): no full-size float image on uint8, uint16, float32.
    for dtype in (np.uint8, np.uint16, np.float32):
        assert float_copies(gaussian, has_alpha=True, dtype=dtype) == 0
        assert float_copies(sobel, has_alpha=False, dtype=dtype) == 0
        for options in ({}, {"strength": 0.5}, {"linear": True}, {"repeat": 3}):
            assert float_copies(dataclasses.replace(chain, **options), has_alpha=True, dtype=dtype) == 0
    # Other dtypes: the whole-image route.
    assert float_copies(gaussian, has_alpha=True, dtype=np.float64) == 2.25  # premultiplied alpha (measured 2.6)
    assert float_copies(sobel, has_alpha=False, dtype=np.float64) == 4  # two results, their total, r * r (measured 3.8)
    assert float_copies(chain, has_alpha=False, dtype=np.float64) == 2  # the work image and a step's result
    assert float_copies(dataclasses.replace(chain, strength=0.5), has_alpha=False, dtype=np.float64) == 4
    assert float_copies(dataclasses.replace(chain, linear=True), has_alpha=False, dtype=np.float64) == 11


def test_memory_is_read_from_the_platform():
    available = memory.available_memory()
    if sys.platform.startswith("linux"):
        assert available is not None and available > 0
    assert memory.memory_budget() >= 0


def test_meminfo_and_cgroup_files(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  16000000 kB\nMemFree: 1000 kB\nMemAvailable:   8000000 kB\n")
    assert memory._meminfo_available(str(meminfo)) == 8000000 * 1024
    assert memory._meminfo_available(str(tmp_path / "none")) is None
    # cgroup v2: a limit on the process's own group, page cache it can drop not counted
    group = tmp_path / "job" / "step"
    group.mkdir(parents=True)
    (group / "memory.max").write_text(f"{2 * GiB}\n")
    (group / "memory.current").write_text(f"{GiB}\n")
    (group / "memory.stat").write_text(f"anon 100\ninactive_file {256 * MiB}\n")
    (tmp_path / "job" / "memory.max").write_text("max\n")
    monkeypatch.setattr(memory, "_own_cgroups", lambda: {"": "/job/step"})
    assert memory._cgroup_available(str(tmp_path)) == 2 * GiB - (GiB - 256 * MiB)
    # cgroup v1 without a limit (the kernel's "unlimited")
    v1 = tmp_path / "memory"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    monkeypatch.setattr(memory, "_own_cgroups", lambda: {"memory": "/"})
    assert memory._cgroup_available(str(tmp_path)) is None


# ---------------------------------------------------------------------------
# accepted where memory allows, refused where it does not


def test_100_mp_header_accepted_where_memory_allows(tmp_path, machine):
    """A 100 MP photo is past Pillow's 89 478 485 pixels, but not past the memory guard:
    the header passes, and the missing data is what fails (no pixel is decoded here)."""
    machine(16 * GiB)
    path = png_header(tmp_path / "camera.png", 10000, 10000)
    assert 10000 * 10000 > Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError) as excinfo:
        io.read_image(path)
    message = one_line(excinfo, path)
    assert "memory" not in message and "limit" not in message  # not the guard: the data is missing
    guard = memory.guard_from_environment().bound(memory.Layout(3, 3, False, 4, "RGB, 8-bit"))
    guard.check("camera.png", 10000, 10000)  # accepted: about 668 MiB of 16 GiB
    assert guard.needed(10000, 10000) == 7 * 10**8


def test_100_mp_refused_when_memory_is_short(tmp_path, machine):
    machine(512 * MiB)
    message = refused_fast(png_header(tmp_path / "camera.png", 10000, 10000))
    assert "10000x10000 RGB, 8-bit = 100000000 pixels (286 MiB decoded) needs about 668 MiB of memory" in message
    assert f"more than the {memory.format_bytes(int(512 * MiB * 0.9) - 256 * MiB)}" in message
    assert memory.MAX_PIXELS_ENV in message and "0 for no limit" in message


def test_the_filter_counts(tmp_path, machine, catalog):
    """A filter's float32 copies count: a kernel that may run as two separable pairs (summed
    in two float32 images) is refused where a single filter, and a chain (band by band,
    engine/stream.py), fit."""
    path = tmp_path / "photo.png"
    Image.fromarray(np.full((100, 100, 3), 90, np.uint8)).save(path)
    single = 100 * 100 * 8  # RGB in Pillow's 4-byte rows (one kernel, compiled): input and output
    pairs = 100 * 100 * (3 + 3 + 2 * 12)  # packed RGB, and two float32 copies of 12 bytes
    machine(int((256 * MiB + (single + pairs) // 2) / 0.9) + 1)  # a budget between the two
    filter_file(Job(Chain.of(catalog.resolve("blur"))), path, tmp_path / "one.png")
    filter_file(Job(parse_chain("blur,sharpen", catalog)), path, tmp_path / "two.png")
    rank_two = np.outer(np.arange(1, 16), np.ones(15)) + np.outer(np.ones(15), np.arange(15, 0, -1) ** 2)
    text = "[" + "; ".join(" ".join(str(int(v)) for v in row) for row in rank_two) + "]:normalize=true"
    with pytest.raises(ImageError, match="needs about 293 KiB of memory"):
        filter_file(Job(parse_chain(text, catalog)), path, tmp_path / "three.png")
    assert not (tmp_path / "three.png").exists()


def test_65535_square_header_refused_fast(tmp_path, machine):
    path = png_header(tmp_path / "bomb.png", 65535, 65535, color_type=6, idat=b"\x00" * 100)
    this_machine = memory.available_memory() or 16 * GiB
    machine(16 * GiB)  # 16 GiB decoded, 48 GiB to filter: refused by the guard
    assert "65535x65535 RGBA, 8-bit = 4294836225 pixels (16 GiB decoded)" in refused_fast(path)
    machine(this_machine)  # refused by the guard here, or past it on a large machine: the missing data fails
    message = refused_fast(path)
    assert "65535x65535 RGBA, 8-bit" in message or "truncated" in message


def test_no_limit_and_no_memory_is_one_line(tmp_path):
    """IMGCONV_MAX_PIXELS=0 lets a 65535x65535 RGBA header (16 GiB) past the guard; a
    process that cannot allocate it gets one line, not a MemoryError traceback."""
    path = png_header(tmp_path / "bomb.png", 65535, 65535, color_type=6, idat=b"\x00" * 1000)
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from imgconv import io\n"
        "from imgconv.errors import ImageError\n"
        "try:\n"
        "    io.read_image(sys.argv[1])\n"
        "except ImageError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, memory.MAX_PIXELS_ENV: "0"}
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "MemoryError" not in done.stderr and "Traceback" not in done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0]
    assert "not enough memory to decode it (IMGCONV_MAX_PIXELS=0" in lines[0] or "truncated" in lines[0]


def test_out_of_memory_while_decoding_is_one_line(tmp_path, monkeypatch, machine):
    machine(16 * GiB)
    path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)

    def no_memory(self, *args):
        raise MemoryError

    monkeypatch.setattr(Image.Image, "load", no_memory)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_memory)
    with pytest.raises(ImageError, match=r"not enough memory to decode it$"):
        io.read_image(path)


# ---------------------------------------------------------------------------
# IMGCONV_MAX_PIXELS still overrides


def test_max_pixels_overrides_the_memory_guard(tmp_path, machine, monkeypatch):
    machine(0)  # nothing to spare: only an override reads anything
    path = tmp_path / "small.png"
    pixels = np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    with pytest.raises(ImageError, match="64x48 grey, 8-bit = 3072 pixels"):
        io.read_image(path)
    for value in ("3072", "0", " 100000 "):
        monkeypatch.setenv(memory.MAX_PIXELS_ENV, value)
        np.testing.assert_array_equal(io.read_image(path).pixels, pixels)
    monkeypatch.setenv(memory.MAX_PIXELS_ENV, "3071")
    with pytest.raises(ImageError, match="64x48 = 3072 pixels exceeds the limit of 3071"):
        io.read_image(path)
    result = CliRunner().invoke(cli, ["apply", "blur", str(path), str(tmp_path / "out.png")], env={memory.MAX_PIXELS_ENV: "10"})
    assert result.exit_code == 1 and "exceeds the limit of 10" in result.output and "Traceback" not in result.output


def test_cli_refusal_is_one_line(tmp_path, machine):
    machine(512 * MiB)
    path = png_header(tmp_path / "pano.png", 40000, 10000)
    result = CliRunner().invoke(cli, ["apply", "blur", str(path), str(tmp_path / "out.png")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "40000x10000" in lines[0] and memory.MAX_PIXELS_ENV in lines[0]
    assert not (tmp_path / "out.png").exists()


# ---------------------------------------------------------------------------
# reading holds Pillow's image and the array, not two more copies of the bytes


def test_reading_makes_no_full_size_byte_copies():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(1500, 2000, 3), dtype=np.uint8))
    tracemalloc.start()
    try:
        pixels = io._pixels_of(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(pixels, np.array(image))
    assert peak < pixels.nbytes + 5 * MiB  # the array and one chunk (np.array(im): 2-3x the array)
