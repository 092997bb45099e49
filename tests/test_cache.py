"""Where compiled kernels are cached when the package folder is read-only."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from imgconv.engine import _cache


def test_user_choice_is_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    _cache.configure_numba_cache()
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path)


def test_read_only_package_uses_a_per_user_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    writable = _cache._writable_dir
    monkeypatch.setattr(_cache, "_writable_dir", lambda path: "__pycache__" not in str(path) and writable(path))
    _cache.configure_numba_cache()
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "cache" / "imgconv" / "numba")


def test_no_writable_home_falls_back_to_temp(monkeypatch, tmp_path):
    monkeypatch.setattr(_cache, "_writable_dir", lambda path: str(path).startswith(str(tmp_path)))
    monkeypatch.setattr(_cache.tempfile, "gettempdir", lambda: str(tmp_path))
    assert _cache.user_cache_dir().startswith(str(tmp_path))


@pytest.mark.slow
def test_kernels_run_with_the_per_user_cache(tmp_path):
    # A fresh process whose package cache folder is refused: it must still compute.
    script = (
        "import numpy as np\n"
        "from imgconv.engine import _cache\n"
        "_cache._writable_dir = (lambda w: lambda p: '__pycache__' not in str(p) and w(p))(_cache._writable_dir)\n"
        "import imgconv, os\n"
        "out = imgconv.convolve(np.ones((5, 5)), np.ones((3, 3)))\n"
        "assert np.allclose(out, 9), out\n"
        "print(os.environ['NUMBA_CACHE_DIR'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "imgconv" / "numba")
    assert any((tmp_path / "imgconv" / "numba").rglob("*.nbi"))


# --- several processes saving into one cache -----------------------------------------------------

_MODULE = '''
from numba import njit

@njit(cache=True)
def scaled(x):
    return x + x + x
'''

# argv: cache folder, "guard" or "plain", a start time, then the values to compile for.
_DRIVER = '''
import sys, time
import numpy as np
folder, guard, start, *values = sys.argv[1:]
import numba
if guard == "guard":
    from imgconv.engine._cache import guard_numba_cache
    guard_numba_cache()
sys.path.insert(0, folder)
import kern
while time.time() < float(start):  # every process saves at about the same moment
    pass
for value in values:
    kind, number = value.split(":")
    argument = np.full(4, number, kind)
    result = kern.scaled(argument)
    print(result.dtype.name, result[3], kern.scaled.stats.cache_hits.get((numba.typeof(argument),), 0))
'''

_KINDS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "float32", "float64", "complex128")


def _run_driver(folder, guard, values, start=0.0):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(folder / "cache"))
    command = [sys.executable, "-c", _DRIVER, str(folder), guard, str(start), *values]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _index(folder):
    import pickle

    (path,) = (folder / "cache").rglob("kern.scaled-*.nbi")
    with open(path, "rb") as handle:
        version = pickle.load(handle)
        stamp, overloads = pickle.loads(handle.read())
    return path, version, stamp, overloads


def _expect(lines, values):
    for line, value in zip(lines, values):
        kind, number = value.split(":")
        name, result, _ = line.split(" ")
        assert (name, np.dtype(kind).type(result)) == (kind, np.dtype(kind).type(number) * 3), line


@pytest.mark.slow
def test_an_entry_saved_under_another_signature_is_compiled_afresh(tmp_path):
    # The state two unguarded processes can leave: the index names one signature's file for another.
    import pickle

    (tmp_path / "kern.py").write_text(_MODULE)
    values = ["int64:5", "float64:1.5"]
    first = _run_driver(tmp_path, "guard", values)
    assert first.wait(120) == 0, first.stderr.read()
    path, version, stamp, overloads = _index(tmp_path)
    assert len(overloads) == 2
    keys = list(overloads)
    overloads = {keys[0]: overloads[keys[1]], keys[1]: overloads[keys[0]]}
    path.write_bytes(pickle.dumps(version) + pickle.dumps((stamp, overloads)))
    second = _run_driver(tmp_path, "guard", values)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    _expect(out.splitlines(), values)
    third = _run_driver(tmp_path, "guard", values)  # the entries were rewritten: loaded now
    out, err = third.communicate(timeout=120)
    _expect(out.splitlines(), values)
    assert [line.split(" ")[2] for line in out.splitlines()] == ["1", "1"]


@pytest.mark.slow
def test_processes_saving_one_function_at_once_keep_the_index_right(tmp_path):
    (tmp_path / "kern.py").write_text(_MODULE)
    start = time.time() + 8  # after every process has imported numba
    values = [f"{kind}:7" for kind in _KINDS]
    workers = [_run_driver(tmp_path, "guard", [value], start) for value in values]
    for worker in workers:
        assert worker.wait(120) == 0, worker.stderr.read()
    overloads = _index(tmp_path)[3]
    assert len(overloads) == len(values) and len(set(overloads.values())) == len(values)
    again = _run_driver(tmp_path, "plain", values)  # numba's own loading, unchecked
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    _expect(out.splitlines(), values)
    assert [line.split(" ")[2] for line in out.splitlines()] == ["1"] * len(values)
