"""imgconv: image convolution compiled with Numba, as a library and a command-line tool.

>>> import imgconv
>>> out = imgconv.convolve(image, [[0, -1, 0], [-1, 5, -1], [0, -1, 0]], mode="reflect")
>>> soft = imgconv.apply_filter(image, "gaussian", sigma=2.0)

Importing imgconv does not import numba; the first computation does.
"""

from imgconv.filtering import apply_filter, convolve
from imgconv.kernels import Catalog, Filter, load_catalog
from imgconv.errors import BackendError, CatalogError, ImageError, ImgconvError, ImgconvWarning

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
