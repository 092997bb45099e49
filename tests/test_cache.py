"""Where compiled kernels are cached when the package folder is read-only."""

import os
import subprocess
import sys

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
