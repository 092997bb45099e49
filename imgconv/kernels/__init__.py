"""What to convolve with: kernels, filters and where they come from.

==============  ===========================================================
module          holds
==============  ===========================================================
``types``       the data types: Param, Kernel, Filter, Entry
``families``    the parametric families (gaussian, box, unsharp, log, motion)
``catalog``     the YAML catalog: schema, loading, merging, Catalog, and the
                command line's ``KEY=VALUE`` parsing
``files``       kernels typed inline or read from ImageMagick, libvips .mat,
                CSV and .npy files
``algebra``     composing, centring and scaling kernels; turning them by an
                EXIF orientation; kernels as text
==============  ===========================================================

This package imports only numpy, yaml and the standard library, never numba:
``imgconv list`` and ``imgconv show`` start without it.
"""

from imgconv.kernels.algebra import centre_on, compose, format_matrix, orient_array, orient_filter, orient_kernel
from imgconv.kernels.catalog import ENV_VAR, Catalog, builtin_catalog_path, load_catalog, parse_assignments
from imgconv.kernels.families import FAMILIES
from imgconv.kernels.files import (
    KERNEL_FILE_EXTENSIONS,
    LoadedKernel,
    load_kernel,
    looks_like_path,
    parse_inline_kernel,
    read_kernel_file,
)
from imgconv.kernels.types import Entry, Filter, Kernel, Param

__all__ = [
    "Param",
    "Kernel",
    "Filter",
    "Entry",
    "Catalog",
    "load_catalog",
    "builtin_catalog_path",
    "parse_assignments",
    "ENV_VAR",
    "FAMILIES",
    "LoadedKernel",
    "load_kernel",
    "read_kernel_file",
    "parse_inline_kernel",
    "looks_like_path",
    "KERNEL_FILE_EXTENSIONS",
    "compose",
    "centre_on",
    "format_matrix",
    "orient_array",
    "orient_kernel",
    "orient_filter",
]
