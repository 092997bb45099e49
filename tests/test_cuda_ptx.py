"""The CUDA backend's device path compiled to PTX without a GPU, and its promises read in the code.

test_cuda.py runs the kernels under numba's simulator where there is no GPU,
and the simulator runs a different ``_mul``/``_add`` (plain float32 operations,
not ``libdevice.fmul_rn``/``fadd_rn``).  Here a child process
(``cuda_ptx_driver.py``, with ``NUMBA_ENABLE_CUDASIM`` unset) compiles every
kernel of ``imgconv.engine.cuda`` -- and with them every device function --
for every signature the backend launches (each native input dtype, the
direct and both separable passes), to PTX for sm_80 (A100) and sm_90
(H100/H200).  Needs NVIDIA's NVVM and NVRTC: ``pip install '.[ptx]'`` brings
them as wheels (no driver, no GPU); without them these tests skip, saying so.

Then, in the PTX:

- no fused multiply-add (``fma``), and no contractable ``mul.f32``/``add.f32``
  (which ptxas would fuse): every product and sum is ``mul.rn``/``add.rn``, as
  the bit-for-bit match with the CPU backend needs.  A control kernel with a
  plain ``a * b + c`` shows the check finds an ``fma`` where there is one.
- where ``ptxas`` is found: registers per thread at most ``MAX_REGISTERS`` and
  no spills (see there).
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CCS = ("8.0", "9.0")
MUST_MATCH_CPU = ("_correlate_kernel",)  # kernels whose sums must equal the CPU backend's bit for bit

# Registers per thread, the ceiling.  A block is tunables.CUDA_BLOCK = 32 x 8 =
# 256 threads (8 warps); sm_80 and sm_90 have 65536 registers per SM, allocated
# per warp in units of 256 (8 per thread).  At 64 registers a warp takes 2048,
# so 32 warps = 4 blocks fit by registers: half of the 64 warps an SM can hold.
# At 65 (allocated as 72) only 3 blocks fit.  Measured: 48 (sm_80), 54 (sm_90).
MAX_REGISTERS = 64

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None, reason="numba-cuda is not installed (pip install '.[test]')"),
]

FMA = re.compile(r"^\s*(?:@!?%p\d+\s+)?fma\.", re.MULTILINE)
CONTRACTABLE = re.compile(r"^\s*(?:@!?%p\d+\s+)?(?:mul|add|sub)\.f32\b", re.MULTILINE)  # no rounding modifier


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("ptx")
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_ENABLE_CUDASIM"}
    env["NUMBA_CACHE_DIR"] = str(outdir / "numba-cache")
    import imgconv

    package_root = str(Path(imgconv.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-P", str(HERE / "cuda_ptx_driver.py"), str(outdir), *CCS]
    child = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, f"compiling the CUDA kernels to PTX failed:\n{child.stdout[-4000:]}{child.stderr[-8000:]}"
    manifest = json.loads((outdir / "manifest.json").read_text())
    if "skip" in manifest:
        pytest.skip(manifest["skip"])
    for entry in manifest["entries"]:
        entry["text"] = (outdir / entry["ptx"]).read_text()
        entry["path"] = outdir / entry["ptx"]
    return manifest


def test_every_kernel_and_device_function_compiles_for_every_launch(compiled):
    from imgconv.choices import NATIVE_DTYPES

    assert compiled["kernels"], "no @cuda.jit kernel found in imgconv.engine.cuda"
    assert compiled["compiled_device_functions"] == compiled["device_functions"], "a device function no kernel calls"
    launched = {name for name, _ in compiled["launches"]}
    assert launched == set(compiled["kernels"]), f"kernels never launched by the backend: {set(compiled['kernels']) - launched}"
    for kernel in compiled["kernels"]:
        got = {(entry["src"], tuple(entry["cc"])) for entry in compiled["entries"] if entry["kernel"] == kernel}
        want = {(str(dtype), tuple(int(p) for p in cc.split("."))) for dtype in NATIVE_DTYPES for cc in CCS}
        assert want <= got, f"{kernel}: not compiled for {want - got}"
    for entry in compiled["entries"]:
        cc = "".join(str(part) for part in entry["cc"])
        assert f".target sm_{cc}" in entry["text"], entry["ptx"]


def test_no_fused_multiply_add_where_the_sums_must_match_the_cpu(compiled):
    controls = [entry for entry in compiled["entries"] if entry["kernel"] == "control"]
    assert controls and all(FMA.search(entry["text"]) for entry in controls), "the fma check finds nothing in a*b+c"
    for entry in compiled["entries"]:
        if entry["kernel"] not in MUST_MATCH_CPU:
            continue
        text = entry["text"]
        fused = FMA.findall(text) + CONTRACTABLE.findall(text)
        assert not fused, f"{entry['ptx']}: {len(fused)} contractable or fused float ops ({fused[:3]}): are _mul/_add still fmul_rn/fadd_rn?"
        assert "mul.rn.f32" in text and "add.rn.f32" in text, entry["ptx"]


def _ptxas():
    try:
        from cuda.pathfinder import find_nvidia_binary_utility
    except ImportError:
        return None
    return find_nvidia_binary_utility("ptxas")


def test_registers_and_no_spills(compiled):
    ptxas = _ptxas()
    if ptxas is None:
        pytest.skip("ptxas not found (pip install '.[ptx]' brings it)")
    rows = []
    for entry in compiled["entries"]:
        if entry["kernel"] == "control":
            continue
        cc = "".join(str(part) for part in entry["cc"])
        result = subprocess.run([ptxas, f"-arch=sm_{cc}", "-v", str(entry["path"]), "-o", os.devnull], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        info = result.stdout + result.stderr
        registers = int(re.search(r"Used (\d+) registers", info).group(1))
        stores, loads = (int(n) for n in re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", info).groups())
        stack = int(re.search(r"(\d+) bytes stack frame", info).group(1))
        rows.append(f"{entry['kernel']} {entry['src']} sm_{cc}: {registers} registers, {stack} bytes stack, {stores}/{loads} bytes spilled")
        assert stores == 0 and loads == 0, f"{entry['ptx']} spills: {info}"
        assert registers <= MAX_REGISTERS, f"{entry['ptx']}: {registers} registers > {MAX_REGISTERS}: fewer blocks fit an SM"
    print("\n".join(rows))
