"""The one place that decides how to convolve: which strategy, which backend.

``make_plan`` looks at the kernel (its size, whether it is rank 1), the image
and the requested backend, and returns a :class:`Plan` that the backends
execute.  Nothing else in imgconv chooses a strategy or a backend.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np

from imgconv.errors import BackendError

STRATEGIES = ("auto", "direct", "separable")
BACKENDS = ("auto", "cpu", "cuda")

# A rank-1 approximation is used only when what it drops is below float32
# round-off of the result: the dropped singular values, spread over every tap,
# stay under this fraction of the kernel's absolute sum.
RANK1_TOLERANCE = 1e-7


@dataclass(frozen=True)
class Plan:
    """How a convolution will run, and why.

    ``factors`` is ``(column, row)`` for the separable strategy, else None.
    """

    strategy: Literal["direct", "separable"]
    backend: Literal["cpu", "cuda"]
    reason: str
    factors: tuple | None = None

    def explain(self):
        return f"{self.strategy} on {self.backend}: {self.reason}"


def rank1_factors(kernel):
    """``(column, row)`` with ``outer(column, row)`` equal to ``kernel`` within
    float32 round-off, or None when the kernel is not rank 1."""
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.shape[0] == 1 or kernel.shape[1] == 1:
        return None
    u, s, vt = np.linalg.svd(kernel)
    total = np.abs(kernel).sum()
    if total == 0 or s[0] == 0:
        return None
    dropped = np.sqrt(np.sum(s[1:] ** 2)) * np.sqrt(kernel.size)
    if dropped > RANK1_TOLERANCE * total:
        return None
    scale = np.sqrt(s[0])
    return u[:, 0] * scale, vt[0] * scale


def _separable_pays(kh, kw):
    # Per output pixel: direct costs kh*kw multiply-adds plus kh line gathers;
    # separable costs kh + kw multiply-adds plus 1 + kh gathers and a second
    # pass over the image.  Counted in multiply-add units, a gather or a pass
    # costs about two.
    direct = kh * kw + 2 * kh
    separable = kh + kw + 2 * (1 + kh) + 2
    return separable < direct


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
    backend : {"auto", "cpu", "cuda"}
    strategy : {"auto", "direct", "separable"}
        Force a strategy; "separable" needs a rank-1 kernel.
    factors : (ndarray, ndarray) or None
        ``(column, row)`` when the caller knows the kernel is separable (a
        Gaussian, a box): the rank test is skipped.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    chosen_backend = choose_backend(backend)
    kh, kw = kernel.shape
    if strategy == "direct":
        return Plan("direct", chosen_backend, "requested")
    if factors is None and (strategy == "separable" or _separable_pays(kh, kw)):
        factors = rank1_factors(kernel)
    if strategy == "separable":
        if factors is None:
            if kh == 1 or kw == 1:
                return Plan("direct", chosen_backend, "a one-row or one-column kernel is already one pass")
            raise ValueError(f"strategy 'separable' needs a rank-1 kernel; this {kh}x{kw} kernel is not")
        return Plan("separable", chosen_backend, "requested", tuple(factors))
    if factors is not None and _separable_pays(kh, kw):
        return Plan(
            "separable", chosen_backend, f"{kh}x{kw} kernel is rank 1: {kh}+{kw} taps instead of {kh * kw}",
            tuple(factors),
        )
    if factors is not None:
        return Plan("direct", chosen_backend, f"{kh}x{kw} kernel is rank 1 but too small for two passes to pay")
    return Plan("direct", chosen_backend, f"{kh}x{kw} kernel, not rank 1")
