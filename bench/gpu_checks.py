"""The owed GPU checks as one prepared command, for a lent machine with an NVIDIA GPU.

    python bench/gpu_checks.py [OUT_DIR]        # default: $OUT, else ./gpu-checks

Runs, from this checkout (put on ``PYTHONPATH``; nothing is installed, nothing
is downloaded), each step in its own process with a time limit, and writes
every step's full output to a file in OUT_DIR:

1. ``environment.txt``: the GPU, driver, CUDA runtime, numba, numba-cuda, CuPy;
2. ``test_cuda.txt``: ``pytest tests/test_cuda.py`` on the device, unpatched
   (CPU == GPU bit for bit, every mode, dtype and strategy);
3. ``gpu_bench.txt``: ``python bench/gpu.py --threshold`` (the kernel table
   against CuPy and the device copy, and the cuda-against-cpu crossover that
   ``tunables.CUDA_AUTO_MIN_VALUES`` should take);
4. ``summary.txt``: one line per step, its exit code and seconds.

It expects numba, numba-cuda, numpy, Pillow, Click, PyYAML and scipy on the
machine (CuPy for the comparison, pytest and hypothesis for step 2; a missing
one is named in the summary, and the other steps still run).  On an H100 or
H200 the whole run takes about 2-4 minutes; each step is cut at its limit.
The exit code is 0 when every step passed.
"""

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

STEPS = [
    # (name, command, limit in seconds, modules it needs)
    ("test_cuda", [sys.executable, "-m", "pytest", "tests/test_cuda.py", "-q", "-rfEs", "-p", "no:cacheprovider"], 180, ("pytest",)),
    ("gpu_bench", [sys.executable, "bench/gpu.py", "--threshold"], 240, ("numba_cuda",)),
]

ENVIRONMENT = """
import platform, numba, numpy
print("python", platform.python_version(), "numba", numba.__version__, "numpy", numpy.__version__)
try:
    import numba_cuda
    print("numba-cuda", getattr(numba_cuda, "__version__", "?"))
    from numba import cuda
    device = cuda.get_current_device()
    print("device", device.name, "compute capability", device.compute_capability)
    print("driver", cuda.cudadrv.driver.driver.get_version(), "runtime", cuda.runtime.get_version())
except Exception as exc:  # the summary names it; the other steps still run
    print("numba-cuda / device:", type(exc).__name__, exc)
try:
    import cupy
    print("cupy", cupy.__version__)
except Exception as exc:
    print("cupy:", type(exc).__name__, exc)
"""


def run_step(name, command, limit, out_dir, env):
    started = time.monotonic()
    with open(out_dir / f"{name}.txt", "w") as log:
        try:
            done = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=limit)
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = "timed out"
            log.write(f"\n[gpu_checks] cut at {limit} s\n")
    return code, time.monotonic() - started


def main():
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("OUT") or "gpu-checks").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)  # the device, not the simulator
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    summary = []
    code, seconds = run_step("environment", [sys.executable, "-c", ENVIRONMENT], 120, out_dir, env)
    summary.append(("environment", code, seconds))
    for name, command, limit, needs in STEPS:
        missing = [module for module in needs if importlib.util.find_spec(module) is None]
        if missing:
            summary.append((name, f"not run: {', '.join(missing)} not installed", 0.0))
            continue
        code, seconds = run_step(name, command, limit, out_dir, env)
        summary.append((name, code, seconds))
    lines = [f"{name}: {code} ({seconds:.0f} s)" for name, code, seconds in summary]
    (out_dir / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"outputs in {out_dir}")
    return 0 if all(code == 0 for _, code, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
