"""The one per-file path (imgconv.pipeline) and the atomic write it shares with the batch report."""

import json
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgconv
from imgconv import io, pipeline
from imgconv.batch import Report
from imgconv.chain import Chain, parse_chain
from imgconv.errors import ImageError, ImgconvError
from imgconv.kernels import load_catalog
from imgconv.pipeline import Job, check_linear_light, filter_file, output_format, read_checked

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(use_env=False)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.open(SAMPLES / "astronaut.png").resize((40, 30)).save(path)
    return path


def test_a_job_holds_a_chain_and_pickles(catalog):
    with pytest.raises(TypeError, match="Chain.of"):
        Job(catalog.resolve("blur"))
    job = Job(Chain.of(catalog.resolve("blur")), mode="wrap", threads=1)
    assert pickle.loads(pickle.dumps(job)) == job


def test_filter_file_is_apply_filter_and_says_what_it_did(catalog, photo, tmp_path):
    done = filter_file(Job(Chain.of(catalog.resolve("sharpen"))), photo, tmp_path / "out.webp")
    assert done.shape == (30, 40, 3) and done.format == "WEBP" and done.megapixels == pytest.approx(30 * 40 / 1e6)
    expected = imgconv.apply_filter(np.asarray(Image.open(photo)), "sharpen")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.webp")), expected)  # lossless WebP
    # --format wins over the extension; the output may replace the input.
    again = filter_file(Job(parse_chain("blur", catalog)), photo, photo, out_format="jpg")
    assert again.format == "JPEG" and Image.open(photo).format == "JPEG"


def test_the_output_format():
    jpeg = io.ImageData(np.zeros((2, 2), np.uint8), "L", False, format="JPEG")
    mpo = io.ImageData(np.zeros((2, 2), np.uint8), "L", False, format="MPO")
    assert output_format("-", jpeg) == "JPEG"  # standard output: the input's format ...
    assert output_format("-", mpo) == "PNG" and output_format("-") == "PNG"  # ... when imgconv writes it
    assert output_format("-", jpeg, "tif") == "TIFF" and output_format("a.GIF", jpeg) == "GIF"
    with pytest.raises(ImageError, match="unknown"):
        output_format("a.xyz")
    with pytest.raises(ImageError, match="unknown image format"):
        output_format("a.png", out_format="xyz")


def test_linear_light_refuses_a_profile_it_would_misread(catalog, photo):
    image = io.ImageData(np.zeros((2, 2, 3), np.uint8), "RGB", False, icc_profile=b"not a profile")
    blur = Chain.of(catalog.resolve("blur"))
    check_linear_light(image, "x.png", blur)  # not in linear light: no question
    with pytest.raises(ImageError, match=r"cannot filter 'x.png' in linear light: .*leave out --linear"):
        check_linear_light(image, "x.png", Chain.of(catalog.resolve("blur"), linear=True))
    assert read_checked(photo, blur, Chain.of(catalog.resolve("blur"), linear=True)).pixels.shape == (30, 40, 3)


def test_running_out_of_memory_names_the_file_and_its_size(catalog, photo, tmp_path, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(pipeline, "apply_chain", no_memory)
    with pytest.raises(ImgconvError, match=r"not enough memory to filter '.*photo.png' \(40x30\)"):
        filter_file(Job(Chain.of(catalog.resolve("blur"))), photo, tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()


def test_write_atomically_is_all_or_nothing(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)

    def fails(stream):
        stream.write(b"half")
        raise RuntimeError("encoder failed")

    with pytest.raises(RuntimeError):
        io.write_atomically(target, fails)
    assert target.read_bytes() == b"old" and io.temporary_files(target) == []
    io.write_atomically(target, lambda stream: stream.write(b"new"))
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    leftover = tmp_path / ".data.imgconv-tmp-0123abcd.bin"  # as a killed writer leaves it
    leftover.write_bytes(b"x")
    assert io.temporary_files(target) == [leftover]
    with pytest.raises(FileNotFoundError):
        io.write_atomically(tmp_path / "nope" / "x.bin", lambda stream: None)


def test_the_report_is_written_atomically(tmp_path):
    path = tmp_path / "report.json"
    Report(started="now").write_json(path)
    assert json.loads(path.read_text())["counts"]["done"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    with pytest.raises(ImgconvError, match="cannot write the report"):
        Report().write_json(tmp_path / "nope" / "report.json")
