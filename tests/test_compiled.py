"""The compiled kernels off the user's wait: numpy while they are not cached, a
background compile, a marker keyed on what the cached code depends on."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from imgconv import tunables
from imgconv.engine import compiled


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A process state as at start-up, with an empty cache folder and the default policy."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    monkeypatch.delenv(compiled.COMPILE_ENV, raising=False)
    monkeypatch.setattr(compiled, "_ready", False)
    monkeypatch.setattr(compiled, "_started", False)
    monkeypatch.setattr(compiled, "_vector_work", 0.0)
    started = []

    class Child:
        pid, returncode = 2**22 + 7, None  # no such child: reaping it finds none

        def __init__(self, argv, **kwargs):
            started.append((argv, kwargs))

    monkeypatch.setattr(compiled.subprocess, "Popen", Child)
    monkeypatch.setattr(compiled, "_child", None)
    return started


def test_policy_reads_the_environment(monkeypatch):
    for value, expected in (("foreground", "foreground"), (" Foreground ", "foreground"), ("background", "background"), ("", "background"), ("nonsense", "background")):
        monkeypatch.setenv(compiled.COMPILE_ENV, value)
        assert compiled.policy() == expected


def test_the_key_follows_code_generation_settings(monkeypatch):
    monkeypatch.delenv("NUMBA_CPU_NAME", raising=False)
    plain = compiled.cache_key()
    assert compiled.cache_key() == plain
    monkeypatch.setenv("NUMBA_CPU_NAME", "generic")
    assert compiled.cache_key() != plain


def test_not_cached_runs_numpy_and_starts_one_compile(fresh):
    assert not compiled.ready()
    assert compiled.use_vector("direct", 1e12)
    assert compiled.use_vector("separable", 1e12)
    assert len(fresh) == 1  # started once per process
    argv, options = fresh[0]
    assert argv[1] == "-P" and "from imgconv.engine.compiled import main" in argv[-1]  # not the working folder's modules
    assert str(Path(compiled.__file__).resolve().parents[2]) in argv[-1]  # this very imgconv
    assert options["close_fds"] and options["start_new_session"]
    assert compiled.use_vector("direct", 1.0)  # reaping a child that is gone is harmless


def test_cached_runs_compiled_after_a_budget_of_numpy_work_before_numba(fresh, monkeypatch):
    marker, _, _ = compiled._paths()
    marker.write_text("{}")
    assert compiled.ready()
    assert not compiled.use_vector("direct", tunables.VECTOR_MAX_WORK * 2)
    assert not compiled.use_vector("fft", 1.0)
    modules = dict(sys.modules)
    modules.pop("numba", None)
    monkeypatch.setattr(compiled.sys, "modules", modules)
    assert compiled.use_vector("direct", tunables.VECTOR_MAX_WORK / 2)
    assert not compiled.use_vector("direct", tunables.VECTOR_MAX_WORK / 2 + 1)  # the budget is spent
    assert compiled.use_vector("direct", tunables.VECTOR_MAX_WORK / 4)
    modules["numba"] = object()
    assert not compiled.use_vector("direct", 1.0)
    assert fresh == []


def test_a_resident_copy_runs_small_work_in_numpy_until_its_budget(fresh, monkeypatch):
    marker, _, _ = compiled._paths()
    marker.write_text("{}")
    monkeypatch.setattr(compiled, "_numba_preloaded", False)
    modules = dict(sys.modules, numba=object())  # numba imported (by the worker)
    monkeypatch.setattr(compiled.sys, "modules", modules)
    assert not compiled.use_vector("direct", 1.0)  # an ordinary process: compiled, once numba is in
    compiled.numba_preloaded()
    assert compiled.use_vector("direct", tunables.VECTOR_COPY_MAX_WORK / 2)
    assert not compiled.use_vector("fft", 1.0)
    assert not compiled.use_vector("direct", tunables.VECTOR_COPY_MAX_WORK)  # over budget: load them
    assert not compiled.use_vector("direct", 1.0)  # and from then on run them
    assert fresh == []


def test_a_missing_cache_folder_is_made(fresh, monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "not" / "yet"))
    assert not compiled.ready() and compiled.use_vector("direct", 1.0)
    assert (tmp_path / "not" / "yet").is_dir() and len(fresh) == 1


def test_an_unwritable_cache_folder_runs_compiled(fresh, monkeypatch):
    # No marker can be left there: numba caches where it can, as it always did.
    monkeypatch.setattr(compiled.os, "access", lambda path, mode: False)
    assert compiled.ready()
    assert not compiled.use_vector("direct", 1e12)
    assert fresh == []


def test_the_key_follows_the_install(monkeypatch, tmp_path):
    plain = compiled.cache_key()
    copy = tmp_path / "imgconv" / "engine"
    shutil.copytree(Path(compiled.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(compiled, "__file__", str(copy / "compiled.py"))
    assert compiled.cache_key() != plain  # numba caches the other install's kernels apart


def test_foreground_always_runs_compiled(fresh, monkeypatch):
    monkeypatch.setenv(compiled.COMPILE_ENV, "foreground")
    assert not compiled.use_vector("direct", 1.0)
    assert fresh == []


def test_a_running_compile_is_not_started_twice(fresh):
    fcntl = pytest.importorskip("fcntl")
    _, lock, _ = compiled._paths()
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        assert compiled.use_vector("direct", 1.0)
        assert fresh == []
        assert compiled.main() == 0  # the second compiler leaves at once
    assert not compiled._paths()[0].exists()


def test_a_failed_compile_is_recorded_and_not_retried(fresh, monkeypatch):
    def broken():
        raise RuntimeError("no compiler today")

    monkeypatch.setattr(compiled, "compile_kernels", broken)
    monkeypatch.setattr(compiled.os, "nice", lambda increment: 0)
    assert compiled.main() == 0
    record = json.loads(compiled._paths()[0].read_text())
    assert "no compiler today" in record["failed"]
    assert compiled.ready()  # from now on numba compiles where it is used
    assert not compiled.use_vector("direct", 1e12)


@pytest.mark.slow
def test_first_run_after_install(tmp_path):
    # A copy of the tests' warm numba cache without the marker: the first process filters
    # in numpy without importing numba and starts the compile, which writes the marker;
    # then the compiled kernels run. Both give the bits the compiled kernels give here.
    cache = tmp_path / "cache"
    shutil.copytree(os.environ["NUMBA_CACHE_DIR"], cache, ignore=shutil.ignore_patterns("imgconv-compile*"))
    env = {k: v for k, v in os.environ.items() if k != compiled.COMPILE_ENV}
    env["NUMBA_CACHE_DIR"] = str(cache)
    side = int(np.sqrt(1.2 * tunables.VECTOR_MAX_WORK / (3 * 34))) + 1  # sigma 2: 17 + 17 taps; beyond the numpy budget
    image = np.random.default_rng(7).integers(0, 256, (side, side, 3), np.uint8)
    np.save(tmp_path / "in.npy", image)
    script = (
        "import sys, numpy as np, imgconv\n"
        f"image = np.load({str(tmp_path / 'in.npy')!r})\n"
        "out = imgconv.apply_filter(image, 'gaussian', sigma=2)\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, out)\n"
        "print('numba' in sys.modules)\n"
    )
    import imgconv

    expected = imgconv.apply_filter(image, "gaussian", sigma=2)  # compiled (foreground here)
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "False"
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)
    markers = lambda: list(cache.glob("imgconv-compiled-*.json"))  # noqa: E731
    deadline = time.monotonic() + 600
    while not markers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert markers(), (cache / "compile.log").read_text() if (cache / "compile.log").exists() else "no log"
    record = json.loads(markers()[0].read_text())
    assert "failed" not in record and len(record["signatures"]) >= 10, record
    second = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "True"
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)


# --- whole commands: the numpy route writes the files the compiled kernels write ---------------


def _inputs(folder):
    """Files of every kind the pipeline treats differently, written by Pillow and tifffile."""
    from PIL import Image

    tifffile = pytest.importorskip("tifffile")
    rng = np.random.default_rng(11)
    paths = {}
    paths["rgb.png"] = folder / "rgb.png"
    Image.fromarray(rng.integers(0, 256, (37, 51, 3), np.uint8)).save(paths["rgb.png"])
    paths["rgba.png"] = folder / "rgba.png"
    Image.fromarray(rng.integers(0, 256, (29, 40, 4), np.uint8)).save(paths["rgba.png"])
    paths["grey.jpg"] = folder / "grey.jpg"
    Image.fromarray(rng.integers(0, 256, (33, 45), np.uint8)).save(paths["grey.jpg"], quality=90)
    paths["rgb16.tif"] = folder / "rgb16.tif"
    tifffile.imwrite(paths["rgb16.tif"], rng.integers(0, 65536, (31, 26, 3), np.uint16), photometric="rgb")
    paths["float.tif"] = folder / "float.tif"
    tifffile.imwrite(paths["float.tif"], rng.normal(0.5, 0.3, (27, 35, 3)).astype(np.float32), photometric="rgb")
    return paths


COMMANDS = [
    ("rgb.png", ["sharpen"]),
    ("rgb.png", ["gaussian", "-p", "sigma=2"]),
    ("rgb.png", ["edge"]),
    ("rgb.png", ["emboss", "--mode", "constant", "--cval", "40"]),
    ("rgb.png", ["unsharp", "--strength", "0.5"]),
    ("rgb.png", ["sharpen", "--repeat", "2", "--mode", "wrap"]),
    ("rgb.png", ["gaussian,sharpen", "--linear"]),
    ("rgb.png", ["box", "-p", "size=15", "--strategy", "fft"]),
    ("rgb.png", ["box", "-p", "size=61"]),  # a kernel larger than the image
    ("rgba.png", ["sharpen"]),
    ("rgba.png", ["blur", "--alpha", "separate"]),
    ("grey.jpg", ["laplacian", "--mode", "mirror"]),
    ("rgb16.tif", ["gaussian", "-p", "sigma=1.5"]),
    ("rgb16.tif", ["sobel"]),
    ("float.tif", ["sharpen", "--mode", "nearest"]),
    ("float.tif", ["kirsch"]),
]


@pytest.mark.parametrize("source, arguments", COMMANDS, ids=[" ".join([s, *a]) for s, a in COMMANDS])
def test_numpy_route_writes_the_same_file(tmp_path, monkeypatch, source, arguments):
    from click.testing import CliRunner

    from imgconv.cli import cli

    paths = _inputs(tmp_path)
    outputs = {}
    for route, vector in (("compiled", False), ("numpy", True)):
        monkeypatch.setattr(compiled, "use_vector", lambda strategy, work, vector=vector: vector)
        out = tmp_path / f"{route}-{Path(source).stem}{Path(source).suffix}"
        result = CliRunner().invoke(cli, ["apply", arguments[0], str(paths[source]), str(out), *arguments[1:]], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        outputs[route] = out.read_bytes()
    assert outputs["numpy"] == outputs["compiled"]
