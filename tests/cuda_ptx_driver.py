"""The child process of test_cuda_ptx.py: the real CUDA path compiled to PTX, with no GPU.

    python tests/cuda_ptx_driver.py OUTDIR 8.0 9.0

Runs with ``NUMBA_ENABLE_CUDASIM`` unset (the parent sees to it), so
``imgconv.engine.cuda`` takes its device branch: ``_mul``/``_add`` are
``libdevice.fmul_rn``/``fadd_rn``.  It

1. records the argument types of every kernel launch the backend makes
   (``run`` for the direct and the separable strategy, every native input
   dtype, grey and colour), by running the host code against stand-ins for
   numba-cuda's stream and device arrays (numpy arrays) and a recorder in
   place of each kernel;
2. compiles every ``@cuda.jit`` kernel of ``imgconv.engine.cuda`` with
   ``numba.cuda.compile_ptx`` for each recorded signature and each compute
   capability, and a control kernel whose plain ``a * b + c`` NVVM contracts
   (so the parent's check for fused multiply-adds is shown to find one);
3. writes the PTX files and ``manifest.json`` (or ``{"skip": reason}`` where
   NVVM or NVRTC cannot be loaded) to OUTDIR.

The one workaround for compiling without a driver: numba-cuda's device-function
dispatchers ask ``get_current_device().compute_capability`` when a kernel that
calls them is typed (``CUDADispatcher.compile_device``); ``compile_ptx`` itself
needs no device.  Here, and only in this process, the name
``numba.cuda.dispatcher.get_current_device`` answers with an object carrying the
compute capability being compiled for.  No public option replaces it
(``NUMBA_FORCE_CUDA_CC`` only picks NVRTC's arch; numba's maintainers noted in
numba/numba#8387 that kernels calling ``device=True`` functions need a device to
compile).  A child process keeps those device-function overloads, compiled for a
pretended device, out of any process that later launches on a real GPU.
"""

import json
import sys
import types as pytypes
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np


def skip(outdir, reason):
    (outdir / "manifest.json").write_text(json.dumps({"skip": reason}))
    sys.exit(0)


class _Stream:
    def synchronize(self):
        pass


class _DeviceArray(np.ndarray):
    """A numpy array standing in for a numba-cuda device array."""

    def copy_to_device(self, array, stream=None):
        self[...] = array

    def copy_to_host(self, array, stream=None):
        array[...] = self


def _device_array(shape, dtype, stream=None):
    return np.zeros(shape, dtype).view(_DeviceArray)


def _to_device(array, stream=None):
    return np.array(array).view(_DeviceArray)


class _Recorder:
    """In place of a kernel: ``kernel[grid, block, stream, shared](*args)`` records the types."""

    def __init__(self, name, launches):
        self.name, self.launches = name, launches

    def __getitem__(self, config):
        from numba import typeof

        def launch(*args):
            self.launches.append((self.name, tuple(typeof(np.asarray(a) if isinstance(a, np.ndarray) else a) for a in args)))

        return launch


@contextmanager
def _recording(gpu, kernels, launches):
    """Host code of ``gpu`` against numpy stand-ins, kernels replaced by recorders."""
    fake_cuda = pytypes.SimpleNamespace(stream=_Stream, device_array=_device_array, to_device=_to_device)
    with mock.patch.object(gpu, "cuda", fake_cuda), mock.patch.object(gpu, "_workspace", gpu._Workspace()):
        with mock.patch.multiple(gpu, **{name: _Recorder(name, launches) for name in kernels}):
            yield


def record_launches(gpu, kernels):
    from imgconv.choices import NATIVE_DTYPES
    from imgconv.engine.plan import Plan

    rng = np.random.default_rng(0)
    direct = rng.normal(size=(3, 3))
    column, row = rng.normal(size=5), rng.normal(size=5)
    plans = [
        Plan("direct", "cuda", "ptx test", kernel=direct),
        Plan("separable", "cuda", "ptx test", factors=((column, row),), kernel=np.outer(column, row)),
        # a kernel cut into several shared-memory chunks
        Plan("direct", "cuda", "ptx test", kernel=rng.normal(size=(80, 80))),
    ]
    launches = []
    with _recording(gpu, kernels, launches):
        for dtype in NATIVE_DTYPES:
            for channels in (1, 3):
                rows = np.zeros((9, 7 * channels), dtype)
                for plan in plans:
                    gpu.run(plan, rows, channels, "reflect", 0.0, None, 1)
    return launches


def main():
    outdir = Path(sys.argv[1])
    ccs = [tuple(int(part) for part in text.split(".")) for text in sys.argv[2:]]
    outdir.mkdir(parents=True, exist_ok=True)

    from numba import cuda

    if cuda.config.ENABLE_CUDASIM:
        raise SystemExit("NUMBA_ENABLE_CUDASIM is set: this compiles the device path, not the simulator's")
    from numba.cuda.cudadrv import nvvm

    if not nvvm.is_available():
        skip(outdir, "NVIDIA's NVVM compiler cannot be loaded (pip install '.[ptx]' brings it as a wheel)")
    try:
        from numba.cuda.cudadrv.nvrtc import get_supported_ccs

        supported = get_supported_ccs()
    except Exception as error:  # noqa: BLE001 - any failure to load NVRTC is the reason to skip
        reason = str(error).splitlines()[0] if str(error) else ""
        skip(outdir, f"NVIDIA's NVRTC cannot be loaded ({type(error).__name__}: {reason}); pip install '.[ptx]'")
    missing = [cc for cc in ccs if cc not in supported]
    if missing:
        raise SystemExit(f"this CUDA toolkit does not compile for {missing} (it does {supported})")

    import numba.cuda.dispatcher as cuda_dispatcher

    from imgconv.engine import cuda as gpu

    assert not gpu.SIMULATOR
    dispatchers = {name: value for name, value in vars(gpu).items() if isinstance(value, cuda_dispatcher.CUDADispatcher)}
    kernels = sorted(name for name, d in dispatchers.items() if not d.targetoptions.get("device"))
    devices = sorted(name for name, d in dispatchers.items() if d.targetoptions.get("device"))

    launches = record_launches(gpu, kernels)
    signatures = {}
    for name, sig in launches:
        signatures.setdefault(name, [])
        if sig not in signatures[name]:
            signatures[name].append(sig)

    def control(x, y, z, out):  # NVVM contracts this multiply and add into one fma
        out[0] = x * y + z

    from numba import types

    entries = []
    for cc in ccs:
        device = pytypes.SimpleNamespace(compute_capability=cc)
        with mock.patch.object(cuda_dispatcher, "get_current_device", lambda device=device: device):
            jobs = [(name, sig, getattr(gpu, name).py_func) for name in kernels for sig in signatures.get(name, [])]
            jobs.append(("control", (types.float32,) * 3 + (types.float32[::1],), control))
            for name, sig, pyfunc in jobs:
                ptx, _ = cuda.compile_ptx(pyfunc, sig, cc=cc)
                src = str(sig[0].dtype) if name != "control" else "float32"
                path = outdir / f"{name}-{src}-sm_{cc[0]}{cc[1]}.ptx"
                path.write_text(ptx)
                entries.append({"kernel": name, "src": src, "cc": list(cc), "signature": str(sig), "ptx": path.name})

    manifest = {
        "kernels": kernels,
        "device_functions": devices,
        "compiled_device_functions": sorted(name for name in devices if dispatchers[name].overloads),
        "launches": [[name, str(sig)] for name, sig in launches],
        "entries": entries,
        "nvvm": list(nvvm.NVVM().get_version()),
    }
    (outdir / "manifest.json").write_text(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
