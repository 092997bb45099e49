"""The one place that decides how to convolve: which strategy, which backend.

``make_plan`` looks at the kernel (its size, its non-zero taps, its rank), the
image and the requested backend, and returns a :class:`Plan` that the backends
execute.  Nothing else in imgconv chooses a strategy or a backend.

Strategies:

- ``direct``: every non-zero tap, once per output pixel.
- ``separable``: a kernel of rank r <= 3 (found by SVD within float32
  round-off, or declared by its family, like ``gaussian`` and ``box``) as the
  sum of r pairs of 1-D passes.
- ``fft``: tiled FFT convolution (overlap-save), for large dense kernels.

The choice comes from a cost model, nanoseconds per output pixel and channel
on one thread, whose constants were fitted to ``bench/calibrate.py`` runs (see
docs/performance.md); ``--explain`` prints the estimates.
"""

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from imgconv.errors import BackendError

STRATEGIES = ("auto", "direct", "separable", "fft")
BACKENDS = ("auto", "cpu", "cuda")
MAX_RANK = 3

# A low-rank approximation is used only when what it drops is below float32
# round-off of the result: the dropped singular values, spread over every tap,
# stay under this fraction of the kernel's absolute sum.
RANK_TOLERANCE = 1e-7

# Cost model (ns per output pixel and channel, one thread), from bench/calibrate.py.
# The FFT's own measured table is in imgconv/fft.py.
DIRECT_PIXEL_NS = 0.50  # reading, converting and writing a pixel
DIRECT_TAP_NS = 0.0275  # one non-zero tap
PASS_SUM_NS = 0.30  # adding one more separable pair's result


@dataclass(frozen=True)
class Plan:
    """How a convolution will run, and why.

    ``factors`` is a tuple of ``(column, row)`` pairs for the separable
    strategy (their outer products sum to the kernel), else empty.
    """

    strategy: Literal["direct", "separable", "fft"]
    backend: Literal["cpu", "cuda"]
    reason: str
    factors: tuple = field(default=(), repr=False)

    def explain(self):
        return f"{self.strategy} on {self.backend}: {self.reason}"


def low_rank_factors(kernel, max_rank=MAX_RANK):
    """``[(column, row), ...]`` whose outer products sum to ``kernel`` within
    float32 round-off, with as few pairs as possible (at most ``max_rank``);
    None when the kernel needs more."""
    kernel = np.asarray(kernel, dtype=np.float64)
    total = np.abs(kernel).sum()
    if total == 0 or min(kernel.shape) == 1:
        return None
    u, s, vt = np.linalg.svd(kernel)
    limit = RANK_TOLERANCE * total / np.sqrt(kernel.size)
    for rank in range(1, min(max_rank, len(s)) + 1):
        if np.sqrt(np.sum(s[rank:] ** 2)) <= limit:
            scales = np.sqrt(s[:rank])
            return [(u[:, i] * scales[i], vt[i] * scales[i]) for i in range(rank)]
    return None


def rank1_factors(kernel):
    """``(column, row)`` with ``outer(column, row)`` equal to ``kernel`` within
    float32 round-off, or None when the kernel is not rank 1."""
    factors = low_rank_factors(kernel, max_rank=1)
    return factors[0] if factors else None


def direct_cost(kernel):
    return DIRECT_PIXEL_NS + DIRECT_TAP_NS * np.count_nonzero(kernel)


def separable_cost(kernel_shape, rank):
    kh, kw = kernel_shape
    return rank * (2 * DIRECT_PIXEL_NS + DIRECT_TAP_NS * (kh + kw)) + (rank - 1) * PASS_SUM_NS


def fft_cost(image_shape, kernel_shape):
    from imgconv.engine.fft import fft_ns_per_pixel

    return fft_ns_per_pixel(image_shape, kernel_shape)


# --- backend choice -----------------------------------------------------------------------------
# backend="auto" computes on a GPU only for images of at least this many values
# (pixels x channels).  NOT MEASURED (no GPU was available when it was set): an
# estimate from PCIe transfer (~25 GB/s: 4 Mvalues go up as uint8 in ~0.2 ms and
# come down as float32 in ~0.7 ms) against the CPU's ~2 ms for a 5x5 on two
# cores (the cost model above), plus the GPU's one-off start per process.
# bench/gpu.py --threshold measures the crossover; docs/performance.md, "GPU".
CUDA_AUTO_MIN_VALUES = 4 * 1024 * 1024

# Strategy choice on the GPU, in tap-equivalents per output value.  NOT MEASURED:
# a pass reads and writes the image once through global memory, taken as worth
# this many taps summed from shared memory.
CUDA_PASS_TAPS = 8

# backend="auto" leaves work costing more than this many taps per value on the
# GPU (a dense kernel beyond about 128x128) to the CPU's FFT, the GPU having no
# FFT route.  NOT MEASURED: tiled direct on a GPU sums some 10^12 taps a second,
# so 8192^2 values at this cost take ~0.1-0.2 s, about the CPU FFT's time.
CUDA_AUTO_MAX_TAPS = 128 * 128

CUDA_INSTALL_HINT = (
    "install the GPU backend with pip install 'imgconv[cuda12]' (or 'imgconv[cuda13]' for a CUDA 13 driver) "
    "on a machine with an NVIDIA GPU, or use backend 'cpu' (--backend cpu)"
)


def _simulator_enabled():
    """Whether numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM, read as numba reads it)."""
    import os
    import sys

    module = sys.modules.get("numba.cuda")
    if module is not None and hasattr(module, "config"):
        return bool(module.config.ENABLE_CUDASIM)
    try:
        return int(os.environ.get("NUMBA_ENABLE_CUDASIM", "0") or 0) != 0
    except ValueError:
        return False


_device_reason = []  # the probe's answer, once per process


def _probe_device():
    """None when numba-cuda and a CUDA GPU are there, else why not.  Cheap where
    there is no driver: numba.cuda is imported only once the driver library loads."""
    import ctypes
    import importlib.util
    import sys

    if importlib.util.find_spec("numba_cuda") is None:
        return "numba-cuda is not installed"
    library = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        ctypes.CDLL(library)
    except OSError:
        return f"no CUDA driver ({library}) found"
    from numba import cuda

    if not cuda.is_available():
        return f"no CUDA GPU found ({cuda.cuda_error() or 'the driver reports none'})"
    from numba.cuda.cudadrv import nvvm

    if not nvvm.is_available():  # numba-cuda without its cu12/cu13 extra: nothing compiles kernels
        return "a CUDA GPU is there but not the CUDA toolkit's NVVM compiler"
    return None


def cuda_unavailable_reason(*, simulator=True):
    """Why the CUDA backend cannot run here, or None when it can.

    ``simulator``: whether numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) counts
    as a device -- it does for ``backend="cuda"`` (the tests run the kernels on
    it), never for ``backend="auto"``.
    """
    import importlib.util

    if _simulator_enabled():
        if not simulator:
            return "numba's CUDA simulator is enabled (NUMBA_ENABLE_CUDASIM)"
        if importlib.util.find_spec("numba_cuda") is None:
            return "numba-cuda is not installed"
        return None
    if not _device_reason:
        _device_reason.append(_probe_device())
    return _device_reason[0]


def choose_backend(backend, image_shape=None, strategy="auto"):
    """Resolve ``backend`` to the one that will run.

    ``auto``: the GPU when one is really there (not the simulator), the image
    has at least ``CUDA_AUTO_MIN_VALUES`` values and the strategy can run on
    it (the FFT runs on the CPU only); else the CPU.

    Raises
    ------
    BackendError
        For ``cuda`` where numba-cuda or a GPU is missing, saying how to install or fall back.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "cuda":
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise BackendError(f"backend 'cuda' is not available: {reason}; {CUDA_INSTALL_HINT}")
        if strategy == "fft":
            raise ValueError(
                "strategy 'fft' runs on the CPU only (large kernels run tiled on the GPU): "
                "use backend 'cpu' for the FFT, or strategy 'auto' or 'direct' on 'cuda'"
            )
        return "cuda"
    if backend == "auto" and strategy != "fft" and image_shape is not None:
        if int(np.prod(image_shape)) >= CUDA_AUTO_MIN_VALUES and cuda_unavailable_reason(simulator=False) is None:
            return "cuda"
    return "cpu"


def _cuda_plan(kernel, factors, size):
    """The strategy on the GPU (``auto``): direct or separable, by taps summed per value."""
    kh, kw = kernel.shape
    taps = int(np.count_nonzero(kernel))
    costs = {"direct": CUDA_PASS_TAPS + taps}
    if kh > 1 and kw > 1:
        if factors is None and 2 * CUDA_PASS_TAPS + kh + kw < costs["direct"]:
            factors = low_rank_factors(kernel)
        if factors:
            costs["separable"] = len(factors) * (2 * CUDA_PASS_TAPS + kh + kw)
    best = min(costs, key=costs.get)
    estimates = ", ".join(f"{name} {cost}" for name, cost in sorted(costs.items(), key=lambda item: item[1]))
    rank = f"rank {len(factors)}, " if best == "separable" else ""
    reason = f"{size} kernel, {rank}{taps} non-zero taps; estimated GPU cost in taps per value (unmeasured): {estimates}"
    return Plan(best, "cuda", reason, tuple(factors) if best == "separable" else ()), costs[best]


def make_plan(kernel, image_shape, *, backend="auto", strategy="auto", factors=None):
    """Choose the strategy and backend for convolving an image with ``kernel``.

    Parameters
    ----------
    kernel : ndarray, 2-D
    image_shape : tuple of int
        (H, W) or (H, W, C); the FFT's cost depends on it.
    backend : {"auto", "cpu", "cuda"}
    strategy : {"auto", "direct", "separable", "fft"}
        Force a strategy; "separable" needs a kernel of rank <= 3.
    factors : sequence of (column, row), optional
        The kernel's separable factors when the caller knows them (a Gaussian,
        a box): the rank test is skipped.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    chosen_backend = choose_backend(backend, image_shape, strategy)
    kernel = np.asarray(kernel)
    kh, kw = kernel.shape
    size = f"{kh}x{kw}"
    if factors is not None and len(factors) == 2 and isinstance(factors[0], np.ndarray):
        factors = [tuple(factors)]  # a single (column, row) pair
    if strategy == "direct":
        return Plan("direct", chosen_backend, "requested")
    if strategy == "fft":
        return Plan("fft", chosen_backend, "requested")
    if strategy == "separable":
        factors = factors or low_rank_factors(kernel)
        if factors is None:
            if kh == 1 or kw == 1:
                return Plan("direct", chosen_backend, "a one-row or one-column kernel is already a single pass")
            raise ValueError(f"strategy 'separable' needs a kernel of rank {MAX_RANK} or less; this {size} kernel is not")
        return Plan("separable", chosen_backend, f"requested, rank {len(factors)}", tuple(factors))

    if chosen_backend == "cuda":
        cuda_plan, cuda_cost = _cuda_plan(kernel, factors, size)
        if backend == "cuda" or cuda_cost <= CUDA_AUTO_MAX_TAPS:
            return cuda_plan
        chosen_backend = "cpu"  # auto: too much for tiled direct on the GPU; the CPU has the FFT
    costs = {"direct": direct_cost(kernel)}
    if kh > 1 and kw > 1:
        if factors is None and separable_cost(kernel.shape, 1) < costs["direct"]:
            factors = low_rank_factors(kernel)
        if factors:
            costs["separable"] = separable_cost(kernel.shape, len(factors))
        if kh * kw >= 49:
            costs["fft"] = fft_cost(image_shape, kernel.shape)
    best = min(costs, key=costs.get)
    estimates = ", ".join(f"{name} {ns:.1f}" for name, ns in sorted(costs.items(), key=lambda item: item[1]))
    rank = f"rank {len(factors)}, " if best == "separable" else ""
    reason = f"{size} kernel, {rank}{np.count_nonzero(kernel)} non-zero taps; estimated ns/pixel: {estimates}"
    return Plan(best, chosen_backend, reason, tuple(factors) if best == "separable" else ())
