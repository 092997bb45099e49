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

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from imgconv import choices, tunables
from imgconv.engine.sweeps import in_registers
from imgconv.errors import BackendError

STRATEGIES = choices.STRATEGIES
BACKENDS = choices.BACKENDS
MAX_RANK = choices.MAX_RANK

# A low-rank approximation is used only when what it drops is below float32
# round-off of the result: the dropped part, spread over every tap, stays under
# this fraction of the kernel's absolute sum.
RANK_TOLERANCE = 1e-7

# Re-exported for callers that read them from the planner (tests patch tunables).
CUDA_AUTO_MIN_VALUES = tunables.CUDA_AUTO_MIN_VALUES


def _shape_text(shape) -> str:
    return "x".join(str(int(n)) for n in shape)


@dataclass(frozen=True)
class Plan:
    """How one convolution pass runs, and why.

    ``factors`` is a tuple of ``(column, row)`` pairs for the separable
    strategy (their outer products sum to the kernel), else empty.
    ``image_shape`` is the shape it was planned for (and, once run, ran on);
    ``kernel`` the weights it convolves with.
    """

    strategy: Literal["direct", "separable", "fft"]
    backend: Literal["cpu", "cuda"]
    reason: str
    factors: tuple = field(default=(), repr=False)
    image_shape: tuple = ()
    kernel: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def kernel_shape(self) -> tuple:
        return () if self.kernel is None else tuple(self.kernel.shape)

    def explain(self) -> str:
        """``"separable on cpu: 13x13 kernel, rank 1, ..."``: what runs and why."""
        return f"{self.strategy} on {self.backend}: {self.reason}"

    def describe(self) -> str:
        """:meth:`explain` with the kernel and image shapes: ``3x3 kernel on 512x512x3: direct on cpu: ...``."""
        where = f" on {_shape_text(self.image_shape)}" if self.image_shape else ""
        return f"{_shape_text(self.kernel_shape)} kernel{where}: {self.explain()}"


def _truncated_svd(kernel, rank):
    """The top ``rank`` singular triplets of ``kernel`` (float64): an exact thin
    SVD for small kernels, a randomized range finder with power iterations for
    large ones (a rank-r kernel is captured to round-off either way)."""
    if min(kernel.shape) <= tunables.RANK_EXACT_SVD_SIDE:
        u, s, vt = np.linalg.svd(kernel, full_matrices=False)
        return u[:, :rank], s[:rank], vt[:rank]
    # Seeded: the same kernel always gets the same factors (and the same pixels).
    probe = np.random.default_rng(0).standard_normal((kernel.shape[1], rank + tunables.RANK_OVERSAMPLE))
    basis, _ = np.linalg.qr(kernel @ probe)
    for _ in range(tunables.RANK_POWER_ITERATIONS):
        basis, _ = np.linalg.qr(kernel.T @ basis)
        basis, _ = np.linalg.qr(kernel @ basis)
    small_u, s, vt = np.linalg.svd(basis.T @ kernel, full_matrices=False)
    return (basis @ small_u)[:, :rank], s[:rank], vt[:rank]


_rank_memo: OrderedDict = OrderedDict()  # (kernel digest, max_rank) -> factors or None


def low_rank_factors(kernel, max_rank: int = MAX_RANK):
    """``[(column, row), ...]`` whose outer products sum to ``kernel`` within
    float32 round-off, with as few pairs as possible (at most ``max_rank``);
    None when the kernel needs more.

    Only the top ``max_rank`` singular vectors are computed (a 3x6000 kernel
    takes milliseconds), and what each candidate rank leaves out is measured
    on the kernel itself, not inferred from singular values.  Memoised per kernel.

    >>> factors = low_rank_factors(np.outer([1.0, 2.0, 1.0], [1.0, 0.0, -1.0]))
    >>> len(factors)
    1
    """
    kernel = np.ascontiguousarray(kernel, dtype=np.float64)
    key = (_digest(kernel), max_rank)
    if key in _rank_memo:
        _rank_memo.move_to_end(key)
        return _rank_memo[key]
    factors = _low_rank_factors(kernel, max_rank)
    _rank_memo[key] = factors
    if len(_rank_memo) > tunables.PLAN_CACHE_SIZE:
        _rank_memo.popitem(last=False)
    return factors


def _low_rank_factors(kernel, max_rank):
    total = np.abs(kernel).sum()
    if total == 0 or min(kernel.shape) == 1:
        return None
    rank_limit = min(max_rank, *kernel.shape)
    u, s, vt = _truncated_svd(kernel, rank_limit)
    limit = RANK_TOLERANCE * total / np.sqrt(kernel.size)
    residual = kernel.copy()
    for rank in range(1, rank_limit + 1):
        residual -= np.outer(u[:, rank - 1] * s[rank - 1], vt[rank - 1])
        if np.sqrt(np.sum(residual * residual)) <= limit:
            scales = np.sqrt(s[:rank])
            return [(u[:, i] * scales[i], vt[i] * scales[i]) for i in range(rank)]
    return None


def rank1_factors(kernel):
    """``(column, row)`` with ``outer(column, row)`` equal to ``kernel`` within
    float32 round-off, or None when the kernel is not rank 1."""
    factors = low_rank_factors(kernel, max_rank=1)
    return factors[0] if factors else None


def _tap_ns(shape, taps) -> float:
    """ns per element of ``taps`` non-zero taps of a kernel of ``shape`` in a direct sweep:
    ``DIRECT_TAP_NS`` each where its sweeps hold every tap in registers
    (``sweeps.in_registers``), else ``DIRECT_GROUP_TAP_NS`` (summed four taps a sweep)."""
    return taps * (tunables.DIRECT_TAP_NS if in_registers(shape, taps) else tunables.DIRECT_GROUP_TAP_NS)


def direct_cost(kernel, taps=None) -> float:
    """ns per output element of the direct pass (``taps``: the kernel's non-zero taps, where known)."""
    return tunables.DIRECT_PIXEL_NS + _tap_ns(np.shape(kernel), np.count_nonzero(kernel) if taps is None else taps)


def separable_cost(kernel_shape, rank) -> float:
    """ns per output element of ``rank`` separable pairs: each a row pass of ``kw`` taps and a
    column pass of ``kh``, their taps costed as the direct sweeps that sum them."""
    kh, kw = kernel_shape
    pair = tunables.SEPARABLE_PIXEL_NS + _tap_ns((kh, 1), kh) + _tap_ns((1, kw), kw)
    return rank * pair + (rank - 1) * tunables.PASS_SUM_NS


def fft_cost(image_shape, kernel_shape) -> float:
    from imgconv.engine.fft import fft_ns_per_pixel

    return fft_ns_per_pixel(image_shape, kernel_shape)


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
        if math.prod(image_shape) >= tunables.CUDA_AUTO_MIN_VALUES and cuda_unavailable_reason(simulator=False) is None:
            return "cuda"
    return "cpu"


def _cuda_plan(kernel, factors, size):
    """The strategy on the GPU (``auto``): direct or separable, by taps summed per value."""
    kh, kw = kernel.shape
    taps = int(np.count_nonzero(kernel))
    pass_taps = tunables.CUDA_PASS_TAPS
    costs = {"direct": pass_taps + taps}
    if kh > 1 and kw > 1:
        if factors is None and 2 * pass_taps + kh + kw < costs["direct"]:
            factors = low_rank_factors(kernel)
        if factors:
            costs["separable"] = len(factors) * (2 * pass_taps + kh + kw)
    best = min(costs, key=costs.get)
    estimates = ", ".join(f"{name} {cost}" for name, cost in sorted(costs.items(), key=lambda item: item[1]))
    rank = f"rank {len(factors)}, " if best == "separable" else ""
    reason = f"{size} kernel, {rank}{taps} non-zero taps; estimated GPU cost in taps per value (unmeasured): {estimates}"
    return (best, "cuda", reason, tuple(factors) if best == "separable" else ()), costs[best]


def _as_factor_pairs(factors):
    """A family's factors as a list of ``(column, row)`` pairs (one pair is given bare)."""
    if factors is None:
        return None
    if len(factors) == 2 and isinstance(factors[0], np.ndarray) and factors[0].ndim == 1:
        return [tuple(factors)]
    return [tuple(pair) for pair in factors]


def check_request(backend: str = "auto", strategy: str = "auto") -> None:
    """Refuse an unknown backend or strategy, a ``cuda`` backend that is not
    there, and the FFT on the GPU -- what can be checked before any image is read.

    Raises
    ------
    ValueError
        An unknown name, or a combination that cannot run.
    BackendError
        ``backend="cuda"`` where numba-cuda or a GPU is missing.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    choose_backend(backend, None, strategy)


def check_kernel(kernel, strategy: str = "auto", factors=None) -> None:
    """Refuse a forced ``separable`` strategy for a kernel of rank above
    ``MAX_RANK`` (ValueError), before any image is read.  The rank test is
    memoised, so the plan made later reuses it."""
    if strategy != "separable":
        return
    kernel = np.asarray(kernel)
    if (_as_factor_pairs(factors) or low_rank_factors(kernel)) is None and min(kernel.shape) > 1:
        raise ValueError(
            f"strategy 'separable' needs a kernel of rank {MAX_RANK} or less; "
            f"this {_shape_text(kernel.shape)} kernel is not"
        )


_plan_memo: OrderedDict = OrderedDict()


def make_plan(kernel, image_shape, *, backend: str = "auto", strategy: str = "auto", factors=None) -> Plan:
    """Choose the strategy and backend for convolving an image with ``kernel``.

    Plans are memoised per (kernel, image shape, backend, strategy): the alpha
    passes, every kernel of a chain's steps and every repeat reuse one plan.

    Parameters
    ----------
    kernel : ndarray, 2-D
    image_shape : tuple of int
        (H, W) or (H, W, C); the FFT's cost and the GPU's threshold depend on it.
    backend : {"auto", "cpu", "cuda"}
    strategy : {"auto", "direct", "separable", "fft"}
        Force a strategy; "separable" needs a kernel of rank <= 3.
    factors : sequence of (column, row), optional
        The kernel's separable factors when the caller knows them (a Gaussian,
        a box): the rank test is skipped.

    Returns
    -------
    Plan

    Examples
    --------
    >>> make_plan(np.ones((13, 13)), (512, 512)).strategy
    'separable'
    >>> make_plan(np.eye(3), (512, 512)).describe()
    '3x3 kernel on 512x512: direct on cpu: 3x3 kernel, 3 non-zero taps; estimated ns/pixel: direct ...'
    """
    kernel = np.ascontiguousarray(kernel, dtype=np.float64)
    image_shape = tuple(int(n) for n in image_shape)
    pairs = _as_factor_pairs(factors)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    # The device probe is part of the key: the same request plans anew where a GPU comes or goes.
    chosen_backend = choose_backend(backend, image_shape, strategy)
    key = (_digest(kernel), image_shape, backend, chosen_backend, strategy, pairs is not None)
    plan = _plan_memo.get(key)
    if plan is not None:
        _plan_memo.move_to_end(key)
        return plan
    strategy_, backend_, reason, chosen = _choose(kernel, image_shape, backend, chosen_backend, strategy, pairs)
    plan = Plan(strategy_, backend_, reason, chosen, image_shape, kernel)
    if kernel.size <= tunables.PLAN_MEMO_MAX_TAPS:
        _plan_memo[key] = plan
        if len(_plan_memo) > tunables.PLAN_CACHE_SIZE:
            _plan_memo.popitem(last=False)
    return plan


def _digest(kernel):
    """A short key for a float64 kernel (its shape and every weight's bits)."""
    return kernel.shape, hashlib.blake2b(kernel.tobytes(), digest_size=16).digest()


def _choose(kernel, image_shape, backend, chosen_backend, strategy, factors):
    """``(strategy, backend, reason, factors)`` for :func:`make_plan`."""
    kh, kw = kernel.shape
    size = f"{kh}x{kw}"
    if strategy == "direct":
        return "direct", chosen_backend, "requested", ()
    if strategy == "fft":
        return "fft", chosen_backend, "requested", ()
    if strategy == "separable":
        factors = factors or low_rank_factors(kernel)
        if factors is None:
            if kh == 1 or kw == 1:
                return "direct", chosen_backend, "a one-row or one-column kernel is already a single pass", ()
            raise ValueError(f"strategy 'separable' needs a kernel of rank {MAX_RANK} or less; this {size} kernel is not")
        return "separable", chosen_backend, f"requested, rank {len(factors)}", tuple(factors)

    if chosen_backend == "cuda":
        cuda_choice, cuda_cost = _cuda_plan(kernel, factors, size)
        if backend == "cuda" or cuda_cost <= tunables.CUDA_AUTO_MAX_TAPS:
            return cuda_choice
        chosen_backend = "cpu"  # auto: too much for tiled direct on the GPU; the CPU has the FFT
    costs = {"direct": direct_cost(kernel)}
    if kh > 1 and kw > 1:
        if factors is None and separable_cost(kernel.shape, 1) < costs["direct"]:
            factors = low_rank_factors(kernel)
        if factors:
            costs["separable"] = separable_cost(kernel.shape, len(factors))
        if kh * kw >= tunables.FFT_MIN_TAPS:
            costs["fft"] = fft_cost(image_shape, kernel.shape)
    best = min(costs, key=costs.get)
    estimates = ", ".join(f"{name} {ns:.1f}" for name, ns in sorted(costs.items(), key=lambda item: item[1]))
    rank = f"rank {len(factors)}, " if best == "separable" else ""
    reason = f"{size} kernel, {rank}{np.count_nonzero(kernel)} non-zero taps; estimated ns/pixel: {estimates}"
    return best, chosen_backend, reason, tuple(factors) if best == "separable" else ()
