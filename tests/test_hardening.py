"""Hostile input never crashes, hangs, reads without end, backtracks for ever or
shows a traceback: each case gets one line naming the culprit and an exit code."""

import io as stdio
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import imgconv
from imgconv.cli import cli
from imgconv.errors import CatalogError, KernelFileError
from imgconv.kernels import load_catalog, parse_inline_kernel, read_kernel_file

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray((np.arange(12 * 10 * 3).reshape(12, 10, 3) % 251).astype(np.uint8)).save(path)
    return path


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def one_line(result):
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("kernel", ["[[]]", "[[], []]", "[[[]]]", "[]", "[;]"])
def test_empty_kernels_are_usage_errors(photo, tmp_path, kernel):
    out = tmp_path / "o.png"
    result = run("apply", "--kernel", kernel, photo, out)
    assert result.exit_code == 2, result.output
    one_line(result)
    result = run("apply", kernel, photo, out)
    assert result.exit_code == 2, result.output
    assert not out.exists()


def test_kernel_type_refuses_what_compiled_code_cannot_take():
    for matrix in (np.zeros((1, 0)), np.zeros((0, 0)), np.array([[1.0, np.nan]]), np.zeros(3)):
        with pytest.raises(ValueError):
            imgconv.kernels.Kernel(matrix)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_devices_are_not_read_without_end(photo, tmp_path):
    with pytest.raises(KernelFileError, match="not a regular file"):
        read_kernel_file("/dev/zero")
    with pytest.raises(CatalogError, match="not a regular file"):
        load_catalog(["/dev/zero"], use_env=False)
    result = run("apply", "--kernel", "/dev/zero", photo, tmp_path / "o.png")
    assert result.exit_code in (1, 2) and "regular file" in one_line(result)
    result = run("--catalog", "/dev/zero", "list")
    assert result.exit_code in (1, 2) and "regular file" in one_line(result)
    result = run("list", env={"IMGCONV_CATALOG": "/dev/zero"})
    assert result.exit_code in (1, 2) and "regular file" in one_line(result)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_never_blocks(tmp_path):
    fifo = tmp_path / "k.txt"
    os.mkfifo(fifo)
    with pytest.raises(KernelFileError, match="not a regular file"):
        read_kernel_file(fifo)  # no writer: an ordinary open would block for ever
    catalog_fifo = tmp_path / "c.yaml"
    os.mkfifo(catalog_fifo)
    with pytest.raises(CatalogError, match="not a regular file"):
        load_catalog([catalog_fifo], use_env=False)


def test_the_byte_cap_counts_what_is_read(tmp_path, monkeypatch):
    from imgconv.kernels import files

    path = tmp_path / "big.txt"
    path.write_text("1 " * 600)
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 1000)
    with pytest.raises(KernelFileError, match="too large"):
        read_kernel_file(path)


def test_kernel_header_parsing_is_linear():
    # Quadratic or cubic backtracking would take hours on this; linear parsing takes milliseconds.
    code = (
        "from imgconv.kernels import parse_inline_kernel\n"
        "from imgconv.errors import CatalogError\n"
        "for text in ['3' + ' ' * 200000, '3x3' + ' ' * 200000 + '+1', ' ' * 200000 + '3x']:\n"
        "    try:\n"
        "        parse_inline_kernel(text)\n"
        "    except CatalogError:\n"
        "        pass\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=REPO)


def test_show_repeat_is_bounded():
    result = run("show", "gaussian:sigma=127", "--repeat", "100")
    assert result.exit_code == 0, result.output
    assert "larger than the 1025x1025 limit" in result.output
    result = run("show", "box:size=1025", "--repeat", "2")
    assert result.exit_code == 0 and "2049x2049" in result.output


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_cval_is_a_usage_error(photo, tmp_path, value):
    result = run("apply", "blur", photo, tmp_path / "o.png", "--cval", value)
    assert result.exit_code == 2 and "--cval" in one_line(result)
    result = run("batch", "blur", photo.parent, tmp_path / "out", "--cval", value)
    assert result.exit_code == 2 and "--cval" in one_line(result)


@pytest.mark.parametrize(
    "body, words",
    [
        ("family: [gaussian]", "unknown family"),
        ("family: {a: 1}", "unknown family"),
        ("matrix: [[" + "9" * 400 + "]]", "finite"),
        ("matrix: " + "[" * 5000 + "1" + "]" * 5000, "nest"),
    ],
    ids=["family-list", "family-map", "huge-integer", "nested"],
)
def test_hostile_catalog_entries_are_one_line(tmp_path, body, words):
    path = tmp_path / "c.yaml"
    path.write_text(f"kernels:\n  bad:\n    description: x\n    {body}\n")
    with pytest.raises(CatalogError, match=words) as info:
        load_catalog([path], use_env=False)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    result = run("--catalog", path, "list")
    assert result.exit_code in (1, 2)
    one_line(result)


def _npy_header(shape, dtype="<f8"):
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - len(header) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "empty file"),
        (b"PK\x03\x04 not a zip at all", "not a plain .npy array"),
        (b"\x93NUMPY\x01\x00\x10\x00{'descr': <f8 ", "not a plain .npy array"),
        (_npy_header((100000, 100000)) + b"\x00" * 64, "larger than the 1025x1025 limit"),
        (_npy_header((3, 3)) + b"\x00" * 16, "shorter"),
    ],
    ids=["empty", "pk", "malformed-header", "huge-shape", "short-data"],
)
def test_hostile_npy_files_are_one_line(tmp_path, photo, data, words):
    path = tmp_path / "k.npy"
    path.write_bytes(data)
    with pytest.raises(KernelFileError, match=words):
        read_kernel_file(path)
    result = run("apply", "--kernel", path, photo, tmp_path / "o.png")
    assert result.exit_code == 1 and "k.npy" in one_line(result)
    assert "Aborted" not in result.output


def test_deeply_nested_brackets_in_a_chain_are_one_line(photo, tmp_path):
    text = "[" * 5000 + "1" + "]" * 5000
    result = run("apply", text, photo, tmp_path / "o.png")
    assert result.exit_code == 2
    one_line(result)
    with pytest.raises(CatalogError):
        parse_inline_kernel("[[" + "[" * 5000 + "]]")


def test_a_closed_pipe_ends_quietly():
    env = dict(os.environ, PYTHONPATH=str(Path(imgconv.__file__).resolve().parent.parent))
    command = f"set -o pipefail; {sys.executable} -m imgconv list | head -1 > /dev/null"
    done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_unexpected_errors_are_one_line_unless_debugging(photo, tmp_path, monkeypatch):
    from imgconv import pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(pipeline, "filter_file", broken)
    result = run("apply", "blur", photo, tmp_path / "o.png")
    assert result.exit_code == 1
    line = one_line(result)
    assert "internal error" in line and "RuntimeError" in line and "IMGCONV_DEBUG" in line
    result = run("apply", "blur", photo, tmp_path / "o.png", env={"IMGCONV_DEBUG": "1"})
    assert isinstance(result.exception, RuntimeError)


def test_file_names_with_newlines_stay_on_one_line(tmp_path):
    bad = tmp_path / "two\nlines.png"
    bad.write_bytes(b"not an image")
    result = run("apply", "blur", bad, tmp_path / "o.png")
    assert result.exit_code == 1
    assert "\\n" in one_line(result)


def _start_long_apply(tmp_path):
    """An `imgconv apply` whose compiled kernel runs for minutes: a dense 1025x1025 kernel forced direct."""
    source = tmp_path / "big.png"
    Image.fromarray((np.random.default_rng(0).random((1200, 1200)) * 255).astype(np.uint8)).save(source)
    kernel = tmp_path / "k.npy"
    np.save(kernel, np.random.default_rng(1).random((1025, 1025)))
    env = dict(os.environ, PYTHONPATH=str(Path(imgconv.__file__).resolve().parent.parent))
    out = tmp_path / "out.png"
    command = [sys.executable, "-m", "imgconv", "apply", "--kernel", str(kernel), str(source), str(out), "--strategy", "direct"]
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return child, out


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(2, 130), (15, 143)], ids=["SIGINT", "SIGTERM"])
def test_signals_stop_a_long_kernel_at_once(tmp_path, signum, code):
    import signal
    import time

    child, out = _start_long_apply(tmp_path)
    time.sleep(6)  # imports, and the kernel under way (about 1.5e12 taps: minutes)
    assert child.poll() is None, child.communicate()
    sent = time.monotonic()
    child.send_signal(signum)
    _, stderr = child.communicate(timeout=30)
    assert time.monotonic() - sent < 5, "the signal was not acted on promptly"
    assert child.returncode == code, stderr
    assert "Traceback" not in stderr
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_command_line_manners(tmp_path, photo):
    # A missing --catalog file is a usage error, like a missing input or kernel file.
    result = run("--catalog", tmp_path / "missing.yaml", "list")
    assert result.exit_code == 2
    # A catalog key typo gets a suggestion.
    path = tmp_path / "c.yaml"
    path.write_text("kernels:\n  soft:\n    descripton: x\n    matrix: [[1]]\n")
    with pytest.raises(CatalogError, match="did you mean 'description'"):
        load_catalog([path], use_env=False)
    # Long inline kernels are abbreviated in --explain and in errors.
    big = "; ".join(" ".join(["1"] * 41) for _ in range(41))
    result = run("apply", "--kernel", big, photo, tmp_path / "o.png", "--explain")
    assert result.exit_code == 0 and max(len(line) for line in result.output.splitlines()) < 400
    result = run("apply", "--kernel", big + "; 1", photo, tmp_path / "o.png")
    assert result.exit_code == 2 and len(one_line(result)) < 300
    # Every command summary is whole in the top-level help; gallery's --format speaks of gallery.
    listing = run("--help").output
    assert "..." not in listing.split("Commands:")[1]
    gallery_help = run("gallery", "--help").output
    assert "(apply)" not in gallery_help and "default is PNG" in " ".join(gallery_help.split())


@pytest.mark.parametrize("name", ["scharr", "scharr-x", "log", "laplacian", "kirsch"])
def test_gallery_tiles_of_responses_are_readable(name):
    from imgconv import plot
    from imgconv.chain import Chain, apply_chain

    photo = np.asarray(Image.open(REPO / "samples" / "coffee.png").convert("RGB"))
    small = plot.thumbnail(photo, 128)
    chain = Chain.of(load_catalog(use_env=False).resolve(name))
    assert plot.needs_stretch(chain)
    unit, _ = plot.unit_float(small, False)
    tile = plot.to_display(plot.stretch_for_display(apply_chain(unit, chain), chain, False))
    saturated = np.mean((tile == 0) | (tile == 255))
    assert saturated < 0.25, f"{name}: {saturated:.0%} of the tile is blown out or black"
    assert tile.std() > 20, f"{name}: the tile is nearly flat"
    assert not plot.needs_stretch(Chain.of(load_catalog(use_env=False).resolve("blur")))


class _Trickle:
    """A raw stream that takes at most ``step`` bytes a write, as an unbuffered
    standard output on a nearly full disk does, then nothing once ``room`` is used."""

    def __init__(self, step, room=None):
        self.step, self.room, self.data = step, room, bytearray()

    def write(self, view):
        take = min(self.step, len(view)) if self.room is None else min(self.step, len(view), self.room - len(self.data))
        self.data += bytes(view[:take])
        return take

    def flush(self):
        pass


def test_every_byte_reaches_an_unbuffered_output():
    from imgconv import io

    payload = bytes(range(256)) * 40
    trickle = _Trickle(1000)
    io.write_all(trickle, payload)
    assert bytes(trickle.data) == payload
    with pytest.raises(OSError):
        io.write_all(_Trickle(1000, room=5000), payload)  # the disk fills up: an error, not a short file


def test_standard_output_short_writes_are_completed(photo, monkeypatch, capfdbinary):
    from imgconv import io

    trickle = _Trickle(997)
    monkeypatch.setattr(sys, "stdout", type("Out", (), {"buffer": trickle, "flush": lambda self: None})())
    io.write_image("-", np.zeros((40, 30, 3), np.uint8), format="png")
    assert Image.open(stdio.BytesIO(bytes(trickle.data))).size == (30, 40)
    full = _Trickle(997, room=50)  # the PNG is about 80 bytes
    monkeypatch.setattr(sys, "stdout", type("Out", (), {"buffer": full, "flush": lambda self: None})())
    with pytest.raises(imgconv.ImageError, match="cannot write"):
        io.write_image("-", np.zeros((40, 30, 3), np.uint8), format="png")


def test_names_as_long_as_the_file_system_allows_can_be_written(tmp_path, monkeypatch):
    from imgconv import io

    name = "n" * (io.NAME_MAX - 4) + ".png"  # 255 bytes: the longest name there is
    made = []
    real_open = os.open

    def spying_open(path, *args, **kwargs):
        made.append(os.path.basename(os.fsdecode(path)))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spying_open)
    io.write_image(tmp_path / name, np.zeros((4, 4), np.uint8))
    monkeypatch.undo()
    assert Image.open(tmp_path / name).size == (4, 4)
    temporaries = [m for m in made if ".imgconv-tmp" in m]
    assert temporaries and all(len(os.fsencode(m)) <= io.NAME_MAX for m in temporaries)
    # and a temporary left by a killed process is still found for that name
    left = tmp_path / temporaries[0]
    left.write_bytes(b"partial")
    assert io.temporary_files(tmp_path / name) == [left]


def test_native_decoder_chatter_is_folded_into_the_one_line(tmp_path):
    source = tmp_path / "bad.tif"
    buffer = stdio.BytesIO()
    Image.fromarray((np.random.default_rng(3).random((64, 64, 3)) * 255).astype(np.uint8)).save(
        buffer, format="TIFF", compression="tiff_deflate"
    )
    data = bytearray(buffer.getvalue())
    for at in range(200, 600, 7):
        data[at] ^= 0x55
    source.write_bytes(bytes(data))
    env = dict(os.environ, PYTHONPATH=str(Path(imgconv.__file__).resolve().parent.parent))
    done = subprocess.run(
        [sys.executable, "-m", "imgconv", "apply", "blur", str(source), str(tmp_path / "o.png")],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: cannot read"), done.stderr
    assert not (tmp_path / "o.png").exists()


@pytest.mark.slow
def test_sigterm_stops_a_batch_cleanly(tmp_path):
    import signal
    import time

    source = tmp_path / "in"
    source.mkdir()
    picture = Image.fromarray((np.random.default_rng(5).random((1500, 2000, 3)) * 255).astype(np.uint8))
    for index in range(24):
        picture.save(source / f"p{index:02d}.png")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(Path(imgconv.__file__).resolve().parent.parent))
    command = [sys.executable, "-m", "imgconv", "batch", "gaussian", "-p", "sigma=3", str(source), str(out), "--jobs", "2"]
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.rglob("*.png")):
        time.sleep(0.05)
    time.sleep(0.3)  # the workers are decoding, filtering and writing
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode in (143, -signal.SIGTERM), stderr
    assert "Traceback" not in stderr
    time.sleep(1.5)  # the workers notice their parent is gone
    assert not [p for p in out.rglob("*") if ".imgconv-tmp" in p.name]
    for path in out.rglob("*.png"):
        Image.open(path).load()  # every output there is whole
