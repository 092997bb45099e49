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
    from imgconv.fft import fft_ns_per_pixel

    return fft_ns_per_pixel(image_shape, kernel_shape)


def choose_backend(backend):
    """Resolve ``backend`` to the one that will run."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "cuda":
        raise BackendError(
            "backend 'cuda' is not available in this version of imgconv; use backend 'cpu' (or 'auto')"
        )
    return "cpu"


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
    chosen_backend = choose_backend(backend)
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
