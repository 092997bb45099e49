"""Choosing the CUDA backend, with or without a GPU: plan.py's backend part.

These need no device: where a GPU's presence matters it is patched in or out.
"""

import subprocess
import sys

import numpy as np
import pytest

import imgconv
from imgconv.engine import plan as planner
from imgconv.errors import BackendError
from imgconv.engine.plan import CUDA_AUTO_MIN_VALUES, make_plan


@pytest.fixture
def gpu_present(monkeypatch):
    monkeypatch.setattr(planner, "cuda_unavailable_reason", lambda simulator=True: None)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(planner, "cuda_unavailable_reason", lambda simulator=True: "no CUDA driver (libcuda.so.1) found")


def test_cuda_without_a_gpu_says_how_to_install_or_fall_back(no_gpu):
    with pytest.raises(BackendError) as info:
        imgconv.convolve(np.zeros((4, 4)), np.ones((3, 3)), backend="cuda")
    message = str(info.value)
    assert "no CUDA driver" in message
    assert "pip install 'imgconv[cuda12]'" in message and "cuda13" in message
    assert "backend 'cpu'" in message and "--backend cpu" in message
    assert "\n" not in message


def test_missing_numba_cuda_is_named(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(planner, "_simulator_enabled", lambda: False)
    monkeypatch.setattr(planner, "_device_reason", [])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "numba_cuda" else real_find_spec(name, *a))
    with pytest.raises(BackendError, match="numba-cuda is not installed"):
        make_plan(np.ones((3, 3)), (4, 4), backend="cuda")


def test_auto_uses_a_gpu_only_for_large_images(gpu_present):
    side = int(np.ceil(np.sqrt(CUDA_AUTO_MIN_VALUES)))
    assert make_plan(np.ones((3, 3)), (side, side), backend="auto").backend == "cuda"
    assert make_plan(np.ones((3, 3)), (side // 2, side // 2, 3), backend="auto").backend == "cpu"
    assert make_plan(np.ones((3, 3)), (1, 1), backend="auto").backend == "cpu"  # the CLI's early check
    # The FFT runs on the CPU only: asking for it keeps auto there.
    assert make_plan(np.ones((9, 9)), (side, side), backend="auto", strategy="fft").backend == "cpu"


def test_auto_leaves_huge_dense_kernels_to_the_cpu_fft(gpu_present, rng):
    side = int(np.ceil(np.sqrt(CUDA_AUTO_MIN_VALUES)))
    dense = rng.normal(size=(151, 151))
    assert make_plan(dense, (side, side), backend="auto").backend == "cpu"
    assert make_plan(dense, (side, side), backend="cuda").strategy == "direct"  # asked for: it runs there
    wide = imgconv.load_catalog().resolve("gaussian", {"sigma": 60.0}).kernels[0]  # 481 taps a side, separable
    plan = make_plan(wide.matrix, (side, side), backend="auto", factors=wide.factors)
    assert (plan.strategy, plan.backend) == ("separable", "cuda")


def test_auto_stays_on_the_cpu_without_a_gpu(no_gpu):
    assert make_plan(np.ones((3, 3)), (8192, 8192, 3), backend="auto").backend == "cpu"


def test_auto_ignores_the_simulator(monkeypatch):
    monkeypatch.setattr(planner, "_simulator_enabled", lambda: True)
    assert planner.cuda_unavailable_reason(simulator=False) is not None
    assert make_plan(np.ones((3, 3)), (8192, 8192, 3), backend="auto").backend == "cpu"


def test_strategies_on_the_gpu(gpu_present, rng):
    gaussian = imgconv.load_catalog().resolve("gaussian", {"sigma": 3.0}).kernels[0]
    plan = make_plan(gaussian.matrix, (64, 64), backend="cuda", factors=gaussian.factors)
    assert (plan.strategy, plan.backend) == ("separable", "cuda")
    rank1 = np.outer(rng.normal(size=9), rng.normal(size=9))
    assert make_plan(rank1, (64, 64), backend="cuda").strategy == "separable"
    for shape in [(3, 3), (31, 31), (101, 101)]:  # never the FFT on the GPU
        plan = make_plan(rng.normal(size=shape), (64, 64), backend="cuda")
        assert (plan.strategy, plan.backend) == ("direct", "cuda")
        assert "direct on cuda" in plan.explain() and "unmeasured" in plan.explain()
    assert make_plan(rank1, (64, 64), backend="cuda", strategy="direct").strategy == "direct"


def test_fft_on_cuda_is_refused(gpu_present):
    with pytest.raises(ValueError, match="'fft' runs on the CPU only"):
        make_plan(np.ones((3, 3)), (64, 64), backend="cuda", strategy="fft")


def test_cli_fft_on_cuda_is_a_usage_error(gpu_present, tmp_path):
    from click.testing import CliRunner

    from imgconv.cli import cli

    from PIL import Image

    Image.new("L", (4, 3)).save(tmp_path / "in.png")
    result = CliRunner().invoke(cli, ["apply", "blur", str(tmp_path / "in.png"), str(tmp_path / "o.png"), "--backend", "cuda", "--strategy", "fft"])
    assert result.exit_code == 2 and "CPU only" in result.output


@pytest.mark.slow
def test_the_cpu_path_never_imports_numba_cuda():
    import os
    from pathlib import Path

    code = (
        "import sys, numpy as np, imgconv\n"
        "assert 'numba.cuda' not in sys.modules\n"
        "imgconv.convolve(np.ones((40, 30)), np.ones((3, 3)))\n"
        "if sys.argv[1] == 'no-gpu':\n"
        "    # auto, an image large enough for a GPU, none there: the probe stops before numba.cuda\n"
        "    imgconv.convolve(np.ones((2100, 2100), np.float32), np.ones((3, 3)), strategy='direct')\n"
        "assert 'numba.cuda' not in sys.modules and 'numba_cuda' not in sys.modules, 'numba.cuda imported'\n"
    )
    gpu = "gpu" if planner.cuda_unavailable_reason(simulator=False) is None else "no-gpu"
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(imgconv.__file__).resolve().parent.parent), env.get("PYTHONPATH")) if p)
    child = subprocess.run([sys.executable, "-P", "-c", code, gpu], env=env, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-4000:]
