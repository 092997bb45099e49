"""Runs the CUDA tests (test_cuda.py) under numba's CUDA simulator, in a child process.

The simulator has to be switched on (``NUMBA_ENABLE_CUDASIM=1``) before numba is
imported, and switching it on in this process would take the CPU tests' numba
with it; so a child pytest runs test_cuda.py with it on, against the same
imgconv this process imported.  Where a real GPU is present test_cuda.py has
already run on it, and this test says so and skips.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import imgconv
from imgconv.engine.plan import _simulator_enabled, cuda_unavailable_reason

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None, reason="numba-cuda is not installed (pip install '.[test]')")
def test_cuda_kernels_under_the_simulator():
    if _simulator_enabled():
        pytest.skip("this run is under the simulator already: test_cuda.py ran in it")
    if cuda_unavailable_reason(simulator=False) is None:
        pytest.skip("a CUDA GPU is present: test_cuda.py ran on it")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    # The child imports the imgconv this process imported (a checkout or an install).
    package_root = str(Path(imgconv.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-P", "-m", "pytest", str(HERE / "test_cuda.py"), "-q", "-p", "no:cacheprovider", "-rfEs"]
    child = subprocess.run(command, cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=900)
    report = child.stdout[-12000:] + child.stderr[-4000:]
    assert child.returncode == 0, f"CUDA tests under the simulator failed:\n{report}"
    summary = child.stdout.strip().splitlines()[-1]
    print(f"under NUMBA_ENABLE_CUDASIM=1: {summary}")
    # Nothing may be skipped there: a broken numba-cuda would otherwise pass as all-skipped.
    assert " passed" in summary and "skipped" not in summary and "deselected" not in summary, report
