"""imgconv: image convolution compiled with Numba, as a library and a command-line tool.

>>> import imgconv
>>> out = imgconv.convolve(image, [[0, -1, 0], [-1, 5, -1], [0, -1, 0]], mode="reflect")
>>> soft = imgconv.apply_filter(image, "gaussian", sigma=2.0)

Importing imgconv does not import numba (the first computation does), nor numpy
until a name below is first used: the ``imgconv`` command hands ``apply`` to a
resident worker (``imgconv.resident``) before anything heavy is imported.
"""

import importlib
import sys

from imgconv.errors import BackendError, CatalogError, ImageError, ImgconvError, ImgconvWarning

if "numba" in sys.modules:  # a caller that may start numba's threads itself (set_num_threads) before computing
    from imgconv.engine._threads import prefer_tbb

    prefer_tbb()

_LAZY = {
    "convolve": "imgconv.filtering",
    "apply_filter": "imgconv.filtering",
    "load_catalog": "imgconv.kernels",
    "Catalog": "imgconv.kernels",
    "Filter": "imgconv.kernels",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'imgconv' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "convolve",
    "apply_filter",
    "load_catalog",
    "Catalog",
    "Filter",
    "ImgconvError",
    "CatalogError",
    "ImageError",
    "BackendError",
    "ImgconvWarning",
    "__version__",
]
