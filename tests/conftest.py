"""Shared fixtures.

Compiled kernels are cached in ``<repo>/.numba-test-cache/<hash>`` (unless
``NUMBA_CACHE_DIR`` is set), kept between runs.  ``<hash>`` covers every source
file of the imported ``imgconv/engine/``, where all the numba code lives:
numba checks only the timestamp of a kernel's own file, so an edit to a helper
compiled into a kernel from another file (``borders.map_index``) would
otherwise load the stale kernel.  Any engine edit starts a fresh folder; the
newest few are kept, and any used within the last hour.
"""

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

CACHE_ROOT = Path(__file__).resolve().parent.parent / ".numba-test-cache"
KEEP_NEWEST = 4
KEEP_RECENT_S = 3600


def _engine_hash():
    """sha256 (16 hex) over the imported imgconv's engine/**/*.py and the Python and numba
    versions, found without importing imgconv (numba must not be imported yet)."""
    spec = importlib.util.find_spec("imgconv")
    if spec is None:
        raise ModuleNotFoundError("imgconv")
    digest = hashlib.sha256(f"{sys.version} numba {importlib.metadata.version('numba')}".encode())
    for location in spec.submodule_search_locations:
        engine = Path(location) / "engine"
        for path in sorted(engine.rglob("*.py")):
            digest.update(str(path.relative_to(engine)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _mtime(path):
    try:
        return path.stat().st_mtime
    except OSError:  # removed meanwhile by a concurrent run
        return 0.0


def _test_cache_dir():
    try:
        folder = CACHE_ROOT / _engine_hash()
        folder.mkdir(parents=True, exist_ok=True)
        os.utime(folder)  # marks it used now, for the pruning below
    except (OSError, ImportError):
        # A read-only checkout, or imgconv/numba not installed (the tests then say so).
        return tempfile.mkdtemp(prefix="imgconv-test-numba-")
    siblings = sorted((p for p in CACHE_ROOT.iterdir() if p.is_dir()), key=_mtime, reverse=True)
    for old in siblings[KEEP_NEWEST:]:
        if old != folder and time.time() - _mtime(old) > KEEP_RECENT_S:
            shutil.rmtree(old, ignore_errors=True)
    return str(folder)


if "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = _test_cache_dir()
# The tests exercise the compiled kernels; engine/vector.py (the numpy route used while
# they compile in the background) is tested against them explicitly.
os.environ.setdefault("IMGCONV_COMPILE", "foreground")
# Resident workers started by the commands the tests run (imgconv/resident.py) leave soon after.
os.environ.setdefault("IMGCONV_RESIDENT_IDLE", "60")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

MODES = ("reflect", "mirror", "nearest", "wrap", "constant")


@pytest.fixture(autouse=True)
def _no_kept_repeats():
    """Each test starts with no repeated calls kept (``imgconv.filtering._REPEATS``): a
    test that patches the planner or the routes sees its patch on every call; and with no
    dropped results' memory kept (``imgconv.engine.helpers``), so one test's results do not
    hold memory through the next."""
    filtering = sys.modules.get("imgconv.filtering")
    if filtering is not None:
        filtering._REPEATS.clear()
    helpers = sys.modules.get("imgconv.engine.helpers")
    if helpers is not None:
        helpers.release_recycled()
    yield


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
