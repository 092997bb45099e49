"""Shared fixtures.

Compiled kernels are cached in a folder private to this test run: numba keys its
cache on the source file of the kernel, so a stale cache from an earlier
checkout can never answer for the code under test.
"""

import os
import tempfile

if "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="imgconv-test-numba-")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

MODES = ("reflect", "mirror", "nearest", "wrap", "constant")


@pytest.fixture
def rng():
    """A generator with a fresh seed, printed so a failure can be replayed."""
    seed = np.random.SeedSequence().entropy
    print(f"random seed: {seed}")
    return np.random.default_rng(seed)


# numpy.pad's names for the border modes.
NUMPY_PAD_MODES = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge", "wrap": "wrap", "constant": "constant"}


def _convolve_plane(plane, kernel, mode, cval):
    """scipy.ndimage.convolve of one plane, with the border built by numpy.pad.

    scipy's own ``reflect`` border reads outside its line buffer once the
    kernel's reach exceeds about four image widths (it returns garbage), so
    the extended image comes from numpy.pad, padded by a whole kernel on every
    side, and scipy only computes the sums; ``plain_scipy_convolve`` checks
    the two agree wherever scipy is right."""
    from scipy import ndimage

    kh, kw = kernel.shape
    pad_options = {"constant_values": cval} if mode == "constant" else {}
    padded = np.pad(plane, ((kh, kh), (kw, kw)), mode=NUMPY_PAD_MODES[mode], **pad_options)
    return ndimage.convolve(padded, kernel, mode="constant", cval=np.nan)[kh:-kh, kw:-kw]


def scipy_convolve(image, kernel, mode, cval=0.0):
    """The reference: scipy.ndimage.convolve in float64, channel by channel."""
    image = np.asarray(image, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    if image.ndim == 2:
        return _convolve_plane(image, kernel, mode, cval)
    return np.stack([_convolve_plane(image[..., c], kernel, mode, cval) for c in range(image.shape[2])], axis=-1)


def plain_scipy_convolve(image, kernel, mode, cval=0.0):
    from scipy import ndimage

    return ndimage.convolve(np.asarray(image, np.float64), np.asarray(kernel, np.float64), mode=mode, cval=cval)


def assert_close_to_reference(got, image, kernel, mode, cval=0.0):
    """float32 results against the float64 reference, within float32 round-off
    of the largest possible sum (sum |k| * max |x|)."""
    ref = scipy_convolve(image, kernel, mode, cval)
    assert got.dtype == np.float32
    assert got.shape == ref.shape
    magnitude = np.abs(np.asarray(kernel, np.float64)).sum() * max(np.abs(np.asarray(image, np.float64)).max(), abs(cval), 1e-30)
    np.testing.assert_allclose(got, ref, rtol=0, atol=3e-6 * magnitude + 1e-30)
