"""The parametric kernel families: gaussian, box, unsharp, log and motion.

Each family declares its parameters (with the limits that keep its kernels
within :data:`imgconv.choices.MAX_KERNEL_SIDE`) and builds a :class:`Kernel`
from their values.  :data:`FAMILIES` is the registry a catalog's ``family:``
entries name.

Imports only numpy and the standard library (never numba).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from imgconv.choices import MAX_KERNEL_SIDE
from imgconv.kernels.types import Kernel, Param

__all__ = ["FAMILIES"]


@dataclass(frozen=True)
class _Family:
    name: str
    description: str
    params: tuple[Param, ...]
    build: Callable[..., Kernel]


def _gaussian_1d(sigma, radius=0):
    """scipy.ndimage's Gaussian: truncated at int(4 * sigma + 0.5), sum 1."""
    if radius <= 0:
        radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (x / sigma) ** 2)
    return weights / weights.sum()


def _build_gaussian(sigma, radius):
    g = _gaussian_1d(sigma, radius)
    return Kernel(np.outer(g, g), (g, g))


def _build_box(size):
    ones = np.full(size, 1.0 / size)
    return Kernel(np.outer(ones, ones), (ones, ones))


def _build_unsharp(amount, sigma):
    g = _gaussian_1d(sigma)
    matrix = -amount * np.outer(g, g)
    centre = g.size // 2
    matrix[centre, centre] += 1.0 + amount
    return Kernel(matrix)


def _build_log(sigma):
    radius = max(1, int(4.0 * sigma + 0.5))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    r2 = x[:, None] ** 2 + x[None, :] ** 2
    matrix = (r2 - 2.0 * sigma**2) / sigma**4 * np.exp(-r2 / (2.0 * sigma**2))
    matrix -= matrix.mean()  # exactly zero-sum: flat areas give 0
    # Scaled so that on any quadratic image it returns the exact Laplacian,
    # like the 3x3 ``laplacian`` (sum of k * (u^2 + v^2) = 4).
    matrix *= 4.0 / float((matrix * r2).sum())
    return Kernel(matrix)


_MOTION_SUBSAMPLES = 8  # per pixel, along and across the line (even: no sample on a cell edge)


def _build_motion(length, angle):
    """A line ``length`` pixels long and one pixel wide through the centre,
    ``angle`` degrees counter-clockwise from horizontal (as seen on screen),
    rasterised by area: each tap is the fraction of the line's area in its
    pixel (supersampled), so a horizontal line of integer odd length is an
    exact box row."""
    s = _MOTION_SUBSAMPLES
    n_along = max(1, math.ceil(length * s))
    along = (np.arange(n_along) + 0.5) * (length / n_along) - length / 2.0
    across = (np.arange(s) + 0.5) / s - 0.5
    theta = math.radians(angle)
    cos, sin = math.cos(theta), math.sin(theta)
    cos = 0.0 if abs(cos) < 1e-12 else cos
    sin = 0.0 if abs(sin) < 1e-12 else sin
    x = along[:, None] * cos - across[None, :] * sin
    y = along[:, None] * sin + across[None, :] * cos
    cols = np.rint(x).astype(np.int64).ravel()
    rows = np.rint(-y).astype(np.int64).ravel()  # rows grow downward
    half_h, half_w = int(np.abs(rows).max()), int(np.abs(cols).max())
    h, w = 2 * half_h + 1, 2 * half_w + 1
    counts = np.bincount((rows + half_h) * w + (cols + half_w), minlength=h * w)
    return Kernel(counts.reshape(h, w) / counts.sum())


_SIGMA_MAX = 127.0  # int(4 * 127 + 0.5) = 508: the kernel stays under MAX_KERNEL_SIDE

FAMILIES: dict[str, _Family] = {
    family.name: family
    for family in (
        _Family(
            "gaussian",
            "Gaussian blur, truncated at 4 sigma like scipy.ndimage.gaussian_filter, sum 1, separable",
            (
                Param("sigma", "float", 1.0, 0.1, _SIGMA_MAX, None, "standard deviation in pixels"),
                Param("radius", "int", 0, 0, 512, None, "half-width in pixels; 0 = automatic, int(4 * sigma + 0.5)"),
            ),
            _build_gaussian,
        ),
        _Family(
            "box",
            "Mean of a size x size square, separable",
            (Param("size", "int", 3, 1, MAX_KERNEL_SIDE, None, "width and height in pixels (odd or even)"),),
            _build_box,
        ),
        _Family(
            "unsharp",
            "Unsharp mask: identity + amount * (identity - gaussian(sigma)), sum 1",
            (
                Param("amount", "float", 1.0, 0.0, 10.0, None, "strength of the sharpening"),
                Param("sigma", "float", 1.0, 0.1, _SIGMA_MAX, None, "standard deviation of the blur, pixels"),
            ),
            _build_unsharp,
        ),
        _Family(
            "log",
            "Laplacian of Gaussian (negative on bright spots), zero-sum, exact on quadratic images",
            (Param("sigma", "float", 1.4, 0.5, _SIGMA_MAX, None, "standard deviation in pixels"),),
            _build_log,
        ),
        _Family(
            "motion",
            "Motion blur: an anti-aliased line through the centre, sum 1",
            (
                Param("length", "float", 9.0, 1.0, float(MAX_KERNEL_SIDE), None, "length of the line in pixels"),
                Param("angle", "float", 0.0, -360.0, 360.0, None, "degrees counter-clockwise from horizontal"),
            ),
            _build_motion,
        ),
    )
}
